// Index math for size-based nearest / bilinear interpolation and its adjoint.
//
// Framework-free and usable from host and device code: the CPU backend, the
// CUDA kernels and the CTest unit tests all include this header, so the
// backends cannot disagree about which source pixels an output pixel reads.
//
// The forward formulas reproduce ATen's (aten/src/ATen/native/UpSample.h and
// cpu/UpSampleKernel.cpp) for F.interpolate(size=...) with
// scale_factor=None. Bilinear computes the source coordinate in the
// accumulation type T (float for float/half/bfloat16, double for double)
// exactly as area_pixel_compute_source_index does. Nearest has two formulas
// in ATen, both with the exact shortcuts for out == in and out == 2 * in:
//   float   floor(dst * ((float)in / out)) in float arithmetic: every CUDA
//           kernel and the CPU's vectorised kernels, for every dtype;
//   double  floorf((float)(dst * ((double)in / out))): the CPU's generic
//           kernel for float64 tensors (nearest_uses_double says when).
// The two differ where the float product rounds below an integer: 45 -> 129
// reads source 14 (float) or 15 (double) at output 43.
//
// Interpolation is separable, so everything here is one-dimensional: an
// output pixel (ph, pw) reads the product of a row tap and a column tap.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define HF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HF_HOST_DEVICE inline
#endif

namespace hrnet_fast {

enum class Mode : int { Nearest = 0, Bilinear = 1 };

// One output coordinate reads source i0 with weight l0 and source i1 with
// weight l1. Nearest sets i1 == i0 and l1 == 0. At the upper border bilinear
// has i1 == i0 and the two weights still sum to one, as in ATen. I is the
// index type: int64_t, or int32_t in kernels whose sizes fit in 31 bits
// (cheaper on a GPU; the floating point steps are the same, so for any
// coordinate below 2^31 the results are identical).
template <typename I, typename T>
struct TapI {
  I i0;
  I i1;
  T l0;
  T l1;
};
template <typename T>
using Tap = TapI<int64_t, T>;

// Per-dimension constants, computed once per (in, out) pair rather than per
// pixel: the kernels hoist this out of their loops.
template <typename T>
struct Axis {
  int64_t in;
  int64_t out;
  Mode mode;
  bool align_corners;
  // Nearest with ATen's double formula (see the top of this file). Host
  // code only: device code always takes the float formula, as ATen's CUDA
  // kernels do, and the CUDA launch plans never set it.
  bool nearest_double;
  T scale;         // bilinear: source units per output unit
  float nscale;    // nearest, float formula: (float)in / out
};

template <typename T>
HF_HOST_DEVICE Axis<T> make_axis(int64_t in, int64_t out, Mode mode, bool align_corners,
                                 bool nearest_double = false) {
  Axis<T> a;
  a.in = in;
  a.out = out;
  a.mode = mode;
  a.align_corners = align_corners;
  a.nearest_double = nearest_double;
  if (align_corners) {
    a.scale = out > 1 ? static_cast<T>(in - 1) / static_cast<T>(out - 1) : static_cast<T>(0);
  } else {
    a.scale = static_cast<T>(in) / static_cast<T>(out);
  }
  a.nscale = static_cast<float>(in) / static_cast<float>(out);
  return a;
}

// Whether F.interpolate(size=...) on the CPU picks the nearest sources of
// an input with the double formula: ATen's generic kernel in float64, which
// it runs unless its vectorised kernels take the call (input channels_last
// with more than three channels, or an output of at most 128 rows plus
// columns: _use_vectorized_kernel_cond_2d in cpu/UpSampleKernel.cpp).
HF_HOST_DEVICE bool nearest_uses_double(bool float64, bool channels_last, int64_t channels, int64_t out_h,
                                        int64_t out_w) {
  return float64 && !((channels_last && channels > 3) || out_h + out_w <= 128);
}

// The floating point source coordinate of nearest output dst, before floor.
template <typename I, typename T>
HF_HOST_DEVICE float nearest_real(const Axis<T>& a, I dst) {
#if !defined(__CUDA_ARCH__)
  if (a.nearest_double)
    return static_cast<float>(static_cast<double>(dst) * (static_cast<double>(a.in) / static_cast<double>(a.out)));
#endif
  return static_cast<float>(dst) * a.nscale;
}

// ATen's nearest_idx: exact shortcuts for equal size and 2x, else
// min(floor(real), in - 1).
template <typename I, typename T>
HF_HOST_DEVICE I nearest_source_as(const Axis<T>& a, I dst) {
  const I in = static_cast<I>(a.in);
  const I out = static_cast<I>(a.out);
  if (out == in) return dst;
  if (out == 2 * in) return dst >> 1;
  const I src = static_cast<I>(floorf(nearest_real(a, dst)));
  return src < in - 1 ? src : in - 1;
}

// ATen's area_pixel_compute_source_index + guard_index_and_lambda.
template <typename I, typename T>
HF_HOST_DEVICE TapI<I, T> linear_tap_as(const Axis<T>& a, I dst) {
  const I in = static_cast<I>(a.in);
  T real;
  if (a.align_corners) {
    real = a.scale * static_cast<T>(dst);
  } else {
    real = a.scale * (static_cast<T>(dst) + static_cast<T>(0.5)) - static_cast<T>(0.5);
    if (real < static_cast<T>(0)) real = static_cast<T>(0);
  }
  I i0 = static_cast<I>(floor(real));
  if (i0 > in - 1) i0 = in - 1;
  T l1 = real - static_cast<T>(i0);
  if (l1 < static_cast<T>(0)) l1 = static_cast<T>(0);
  if (l1 > static_cast<T>(1)) l1 = static_cast<T>(1);
  TapI<I, T> t;
  t.i0 = i0;
  t.i1 = i0 < in - 1 ? i0 + 1 : i0;
  t.l1 = l1;
  t.l0 = static_cast<T>(1) - l1;
  return t;
}

template <typename I, typename T>
HF_HOST_DEVICE TapI<I, T> tap_as(const Axis<T>& a, I dst) {
  if (a.mode == Mode::Nearest) {
    TapI<I, T> t;
    t.i0 = t.i1 = nearest_source_as<I>(a, dst);
    t.l0 = static_cast<T>(1);
    t.l1 = static_cast<T>(0);
    return t;
  }
  return linear_tap_as<I>(a, dst);
}

// The same with 64-bit indices, spelled out: written as the templates
// above with I = int64_t, ptxas gives most scalar finish kernels 6-10 more
// registers (benchmarks/RESULTS.md, "register counts").
template <typename T>
HF_HOST_DEVICE int64_t nearest_source(const Axis<T>& a, int64_t dst) {
  if (a.out == a.in) return dst;
  if (a.out == 2 * a.in) return dst >> 1;
  const int64_t src = static_cast<int64_t>(floorf(nearest_real(a, dst)));
  return src < a.in - 1 ? src : a.in - 1;
}

template <typename T>
HF_HOST_DEVICE Tap<T> linear_tap(const Axis<T>& a, int64_t dst) {
  T real;
  if (a.align_corners) {
    real = a.scale * static_cast<T>(dst);
  } else {
    real = a.scale * (static_cast<T>(dst) + static_cast<T>(0.5)) - static_cast<T>(0.5);
    if (real < static_cast<T>(0)) real = static_cast<T>(0);
  }
  int64_t i0 = static_cast<int64_t>(floor(real));
  if (i0 > a.in - 1) i0 = a.in - 1;
  T l1 = real - static_cast<T>(i0);
  if (l1 < static_cast<T>(0)) l1 = static_cast<T>(0);
  if (l1 > static_cast<T>(1)) l1 = static_cast<T>(1);
  Tap<T> t;
  t.i0 = i0;
  t.i1 = i0 < a.in - 1 ? i0 + 1 : i0;
  t.l1 = l1;
  t.l0 = static_cast<T>(1) - l1;
  return t;
}

template <typename T>
HF_HOST_DEVICE Tap<T> tap(const Axis<T>& a, int64_t dst) {
  if (a.mode == Mode::Nearest) {
    Tap<T> t;
    t.i0 = t.i1 = nearest_source(a, dst);
    t.l0 = static_cast<T>(1);
    t.l1 = static_cast<T>(0);
    return t;
  }
  return linear_tap(a, dst);
}

// Weight with which output coordinate p reads source coordinate q (zero when
// it does not read it). Row of the dense interpolation matrix, one entry.
template <typename T>
HF_HOST_DEVICE T weight(const Axis<T>& a, int64_t p, int64_t q) {
  const Tap<T> t = tap(a, p);
  T w = static_cast<T>(0);
  if (t.i0 == q) w += t.l0;
  if (t.i1 == q) w += t.l1;
  return w;
}

// The adjoint as a gather: the output coordinates that read source q form one
// contiguous range [begin, end), because i0 and i1 are non-decreasing in p.
// Found by binary search on the forward formula itself, so it is exact for
// every size and both align_corners settings, with no atomics anywhere.
struct Range {
  int64_t begin;
  int64_t end;
};

template <typename T>
HF_HOST_DEVICE Range readers(const Axis<T>& a, int64_t q) {
  // begin: first p with i1(p) >= q.
  int64_t lo = 0, hi = a.out;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (tap(a, mid).i1 >= q) hi = mid; else lo = mid + 1;
  }
  Range r;
  r.begin = lo;
  // end: first p with i0(p) > q.
  hi = a.out;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (tap(a, mid).i0 > q) hi = mid; else lo = mid + 1;
  }
  r.end = lo;
  return r;
}

// Upper bound on the number of output coordinates that read one source
// coordinate, for gather loops of static length. Bilinear taps reach one unit
// either side of the source coordinate (2 * out / (in - 1) with
// align_corners), and clamping at the low border adds out / (2 * in); a
// single source pixel is read by every output.
HF_HOST_DEVICE int64_t max_readers(int64_t in, int64_t out) {
  if (in <= 1) return out;
  const int64_t bound = 2 * ((out + in - 2) / (in - 1)) + 2;
  return bound < out ? bound : out;
}

// Whether output coordinate p reads source coordinate q at all (with any
// weight, zero included: the adjoint visits exactly these pairs, as ATen's
// backward does).
template <typename I, typename T>
HF_HOST_DEVICE bool reads(const Axis<T>& a, I p, I q) {
  const TapI<I, T> t = tap_as<I>(a, p);
  return t.i0 == q || t.i1 == q;
}

// s when out == in << s for 0 <= s <= max_shift and nearest mode: the
// source of output p is then p >> s (in / out is a power of two, exact in
// float, so ATen's floor(p * in / out) is that shift). -1 otherwise, and
// for axes past 2^24, where float no longer holds every coordinate exactly.
template <typename T>
HF_HOST_DEVICE int exact_shift(const Axis<T>& a, int max_shift) {
  if (a.mode != Mode::Nearest || a.out > (int64_t{1} << 24)) return -1;
  for (int s = 0; s <= max_shift; ++s)
    if (a.out == (a.in << s)) return s;
  return -1;
}

}  // namespace hrnet_fast
