// Vectorised loops over contiguous runs (an NCHW row or plane, a channels_last
// channel vector) used by the CPU kernels. Values are loaded in the storage
// type and computed in the accumulation type acc_t (float for float, half and
// bfloat16; double for double).
//
// These are plain loops written for the compiler's vectoriser (`omp simd`),
// not at::vec::Vectorized: an extension is compiled for baseline x86-64, where
// Vectorized falls back to its generic array implementation, whose compares
// and blends come out as scalar branches (measured 3-10x slower here than the
// loops below, which GCC turns into SSE, or AVX with -march flags passed via
// HRNET_FAST_CXXFLAGS). Reductions use `omp simd reduction`, whose order is
// fixed at compile time, so they are deterministic.
#pragma once

#include <cstdint>

namespace hrnet_fast {
namespace cpu {

// acc[i] += s * x[i]
template <typename acc_t, typename scalar_t>
inline void axpy(acc_t* __restrict acc, acc_t s, const scalar_t* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += s * static_cast<acc_t>(x[i]);
}

// acc[i] += scale[i] * x[i]
template <typename acc_t, typename scalar_t>
inline void axpy_channels(acc_t* __restrict acc, const acc_t* __restrict scale, const scalar_t* __restrict x,
                          int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += scale[i] * static_cast<acc_t>(x[i]);
}

// dst[i] = act(shift + sum_k s_k[i] * x_k[i]) over M same-size inputs read in
// one pass (M a compile-time count, so the k loop unrolls inside the vector
// loop). Stride selects the scale: 0 for one scalar per input (an NCHW
// plane), 1 for a per-element vector (a channels_last channel run); the
// shift likewise. dst is either the output (act applied) or an accumulator
// that smaller inputs are added to afterwards (relu false).
template <int M, int Stride, typename acc_t, typename scalar_t, typename dst_t>
inline void affine_sum(dst_t* __restrict dst, const acc_t* __restrict shift, const acc_t* const* scale,
                       const scalar_t* const* x, int64_t n, bool relu) {
  const acc_t* __restrict s[M];
  const scalar_t* __restrict p[M];
  for (int k = 0; k < M; ++k) s[k] = scale[k], p[k] = x[k];
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    acc_t v = shift[i * Stride];
    for (int k = 0; k < M; ++k) v += s[k][i * Stride] * static_cast<acc_t>(p[k][i]);
    if (relu) v = v < acc_t(0) ? acc_t(0) : v;
    dst[i] = static_cast<dst_t>(v);
  }
}

// affine_sum over a run-time count m >= 0 of inputs.
template <int Stride, typename acc_t, typename scalar_t, typename dst_t>
inline void affine_sum_any(dst_t* __restrict dst, const acc_t* shift, const acc_t* const* scale,
                           const scalar_t* const* x, int m, int64_t n, bool relu) {
  switch (m) {
    case 0: return affine_sum<0, Stride>(dst, shift, scale, x, n, relu);
    case 1: return affine_sum<1, Stride>(dst, shift, scale, x, n, relu);
    case 2: return affine_sum<2, Stride>(dst, shift, scale, x, n, relu);
    case 3: return affine_sum<3, Stride>(dst, shift, scale, x, n, relu);
    case 4: return affine_sum<4, Stride>(dst, shift, scale, x, n, relu);
    default: break;
  }
  // More than four same-size inputs (not an HRNet shape): the same sum with
  // a run-time inner loop.
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    acc_t v = shift[i * Stride];
    for (int k = 0; k < m; ++k) v += scale[k][i * Stride] * static_cast<acc_t>(x[k][i]);
    if (relu) v = v < acc_t(0) ? acc_t(0) : v;
    dst[i] = static_cast<dst_t>(v);
  }
}

// acc[i] += a * x[i] + b * y[i]
template <typename acc_t>
inline void axpby(acc_t* __restrict acc, acc_t a, const acc_t* __restrict x, acc_t b, const acc_t* __restrict y,
                  int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += a * x[i] + b * y[i];
}

// out[i] = relu ? relu(acc[i]) : acc[i], with torch.relu's NaN behaviour
// (NaN < 0 is false, so NaN stays NaN).
template <typename acc_t, typename scalar_t>
inline void store_activated(scalar_t* __restrict out, const acc_t* __restrict acc, int64_t n, bool relu) {
  if (relu) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(acc[i] < acc_t(0) ? acc_t(0) : acc[i]);
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(acc[i]);
  }
}

// gm[i] = (relu && out[i] <= 0) ? 0 : grad[i]: torch.relu's backward mask
// (threshold_backward), under which a NaN output passes its gradient.
template <typename acc_t, typename scalar_t>
inline void masked_grad(acc_t* __restrict gm, const scalar_t* __restrict grad, const scalar_t* __restrict out,
                        int64_t n, bool relu) {
  if (relu) {
    // Both loads unconditional: a select vectorises, a conditional load does not.
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const acc_t g = static_cast<acc_t>(grad[i]);
      const acc_t o = static_cast<acc_t>(out[i]);
      gm[i] = o <= acc_t(0) ? acc_t(0) : g;
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) gm[i] = static_cast<acc_t>(grad[i]);
  }
}

// out[i] = s * x[i]
template <typename acc_t, typename scalar_t>
inline void scale_store(scalar_t* __restrict out, acc_t s, const acc_t* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(s * x[i]);
}

// out[i] = scale[i] * x[i]
template <typename acc_t, typename scalar_t>
inline void scale_store_channels(scalar_t* __restrict out, const acc_t* __restrict scale, const acc_t* __restrict x,
                                 int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(scale[i] * x[i]);
}

// acc[i] += x[i]
template <typename acc_t>
inline void add_into(acc_t* __restrict acc, const acc_t* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
}

// acc[i] += x[i] * y[i]
template <typename acc_t, typename scalar_t>
inline void add_product_into(acc_t* __restrict acc, const acc_t* __restrict x, const scalar_t* __restrict y,
                             int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i] * static_cast<acc_t>(y[i]);
}

// Reductions over a contiguous run: vector lanes in acc_t within chunks of
// kChunk elements, chunks added in double, so long planes keep their
// precision and the order depends only on n.
constexpr int64_t kChunk = 1024;

// sum_i x[i] * y[i]
template <typename acc_t, typename scalar_t>
inline double dot(const acc_t* __restrict x, const scalar_t* __restrict y, int64_t n) {
  double result = 0.0;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t end = start + kChunk < n ? start + kChunk : n;
    acc_t total = 0;
#pragma omp simd reduction(+ : total)
    for (int64_t i = start; i < end; ++i) total += x[i] * static_cast<acc_t>(y[i]);
    result += static_cast<double>(total);
  }
  return result;
}

// sum_i x[i]
template <typename acc_t>
inline double sum(const acc_t* __restrict x, int64_t n) {
  double result = 0.0;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t end = start + kChunk < n ? start + kChunk : n;
    acc_t total = 0;
#pragma omp simd reduction(+ : total)
    for (int64_t i = start; i < end; ++i) total += x[i];
    result += static_cast<double>(total);
  }
  return result;
}

}  // namespace cpu
}  // namespace hrnet_fast
