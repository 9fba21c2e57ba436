// Forward of the exchange in one pass: every output element reads each
// same-size input once and the 1 (nearest) or 4 (bilinear) source pixels of
// each other input, applies the per-channel affine, sums in the accumulation
// type, applies ReLU and is written once.
//
// Two thread mappings, one per output layout:
//   channels_last  a thread owns one pack of VEC channels (16 bytes) and
//                  walks pixels; its scales and the sum of its shifts are
//                  loaded once, before the pixel loop.
//   NCHW           a thread owns a pack of VEC consecutive columns of one
//                  output row (16-byte stores, 16-byte loads of the
//                  same-size inputs; interpolated inputs read per element).
// Every tensor is addressed through its own strides, so any layout is
// correct; VEC > 1 only where every packed access is aligned (launcher).
//
// With a compile-time Pattern the input loop is unrolled: every load of a
// pixel is issued before the arithmetic that uses it. RuntimePattern is the
// general fallback (any count and kinds). Index type I is int32_t where
// every offset fits, else int64_t.
//
// The bodies are host-device functions of (block, grid, thread) with no
// barriers, so the CTest emulation runs the very same code on the CPU.
#pragma once

#include "exchange_common.h"

#if defined(__CUDACC__)
#include "exchange_cuda.cuh"
#endif

namespace hrnet_fast {
namespace cuda {

template <typename A, typename I>
struct FwdInput {
  const void* data;
  I sn, sc, sh, sw;     // element strides
  const A* scale;       // C values, or nullptr (identity)
  const A* shift;       // C values, or nullptr (zero)
  Axis<A> ay, ax;       // Lin / Near
  int shift_h, shift_w; // Shift: source = (h >> shift_h, w >> shift_w)
  Kind kind;
};

template <typename A, typename I>
struct FwdParams {
  FwdInput<A, I> in[kMaxInputs];
  int k;
  void* out;
  I on, oc, oh, ow;
  I n, c, h, w;
  bool relu;
  // channels_last: channel packs, packs per channel tile (threads along C),
  // channel tiles, pixel lanes (threads along pixels).
  int cvs, ncp, nct, npl;
  // channels_last: pixels N*H*W; NCHW: packs N*C*H*(W/VEC).
  I items;
  I tiles;  // tiles of Pat::kItems pixel rows (cl) or thread rows (nchw)
  Divider<I> div_w;  // by W (cl) or W/VEC (nchw)
  Divider<I> div_h;
  Divider<I> div_c;  // nchw only
};

// Kernel parameters are limited to 4 KiB.
static_assert(sizeof(FwdParams<double, int64_t>) <= 4096, "forward parameters exceed the kernel parameter limit");

// body(k, i, kind) for every input k of the compile-time pattern Pat and
// every item i that exists, with k and the input's kind as compile-time
// constants (std::integral_constant): the loads of a pixel unrolled.
template <class Pat, int P, typename Body>
HF_HOST_DEVICE void pattern_items(const bool (&ok)[P], Body&& body) {
  static_for<Pat::kCount>([&](auto K) {
    constexpr Kind kind = decltype(K)::value < Pat::kSame ? Kind::Same : Pat::kCoarse;
HF_UNROLL
    for (int i = 0; i < P; ++i)
      if (ok[i]) body(K, i, std::integral_constant<Kind, kind>{});
  });
}

// The ReLU (when asked for) and the store of every item i that exists, at
// at(i) in the output.
template <typename T, int P, int VEC, typename A, typename I, typename At>
HF_HOST_DEVICE void store_items(const FwdParams<A, I>& p, const bool (&ok)[P], A (&acc)[P][VEC], At&& at) {
HF_UNROLL
  for (int i = 0; i < P; ++i) {
    if (ok[i]) {
      if (p.relu) {
HF_UNROLL
        for (int j = 0; j < VEC; ++j) acc[i][j] = relu_value(acc[i][j]);
      }
      store_pack<T, VEC>(at(i), acc[i]);
    }
  }
}

// --- channels_last ----------------------------------------------------------

// Input s interpolated at output pixel (h, w) for the VEC channels from c0
// of image n, in the accumulation type.
template <typename T, int VEC, Kind KIND, typename A, typename I>
HF_HOST_DEVICE void sample_cl(const FwdInput<A, I>& s, I n, I c0, I h, I w, A (&v)[VEC]) {
  const T* x = static_cast<const T*>(s.data) + n * s.sn + c0 * s.sc;
  if constexpr (KIND == Kind::Same) {
    load_pack<T, VEC>(x + h * s.sh + w * s.sw, v);
  } else if constexpr (KIND == Kind::Shift) {
    load_pack<T, VEC>(x + (h >> s.shift_h) * s.sh + (w >> s.shift_w) * s.sw, v);
  } else if constexpr (KIND == Kind::Near) {
    load_pack<T, VEC>(x + nearest_source_as<I>(s.ay, h) * s.sh + nearest_source_as<I>(s.ax, w) * s.sw, v);
  } else {
    const TapI<I, A> th = linear_tap_as<I>(s.ay, h);
    const TapI<I, A> tw = linear_tap_as<I>(s.ax, w);
    A a[VEC], b[VEC], c[VEC], d[VEC];
    load_pack<T, VEC>(x + th.i0 * s.sh + tw.i0 * s.sw, a);
    load_pack<T, VEC>(x + th.i0 * s.sh + tw.i1 * s.sw, b);
    load_pack<T, VEC>(x + th.i1 * s.sh + tw.i0 * s.sw, c);
    load_pack<T, VEC>(x + th.i1 * s.sh + tw.i1 * s.sw, d);
    // ATen's order of operations (upsample_bilinear2d).
HF_UNROLL
    for (int j = 0; j < VEC; ++j)
      v[j] = th.l0 * (tw.l0 * a[j] + tw.l1 * b[j]) + th.l1 * (tw.l0 * c[j] + tw.l1 * d[j]);
  }
}

template <typename T, int VEC, typename A, typename I>
HF_HOST_DEVICE void sample_cl_any(const FwdInput<A, I>& s, I n, I c0, I h, I w, A (&v)[VEC]) {
  with_kind(s.kind, [&](auto kind) { sample_cl<T, VEC, decltype(kind)::value>(s, n, c0, h, w, v); });
}

// One thread of the channels_last forward. The grid is a multiple of nct,
// so a block keeps one channel tile for all its pixel tiles.
template <typename T, int VEC, class Pat, typename I>
HF_HOST_DEVICE void forward_cl_thread(const FwdParams<acc_t<T>, I>& p, int block, int grid, int tid) {
  using A = acc_t<T>;
  constexpr int P = Pat::kItems;
  constexpr int KP = Pat::kRuntime ? 1 : (Pat::kCount > 0 ? Pat::kCount : 1);
  const int cp = tid % p.ncp;
  const int pl = tid / p.ncp;
  if (pl >= p.npl) return;
  const int cv = (block % p.nct) * p.ncp + cp;
  if (cv >= p.cvs) return;
  const I c0 = static_cast<I>(cv) * VEC;

  // Per-channel constants of this thread: every scale, and the sum of the
  // shifts (the shifts commute with the interpolation, whose weights sum
  // to one, so they are added once per output).
  A scale[KP][VEC];
  A shift[VEC];
HF_UNROLL
  for (int j = 0; j < VEC; ++j) shift[j] = A(0);
  if constexpr (!Pat::kRuntime) {
    static_for<Pat::kCount>([&](auto K) {
      constexpr int k = decltype(K)::value;
      load_row<A, VEC>(p.in[k].scale, c0, A(1), scale[k]);
      A s[VEC];
      load_row<A, VEC>(p.in[k].shift, c0, A(0), s);
HF_UNROLL
      for (int j = 0; j < VEC; ++j) shift[j] += s[j];
    });
  }

  const I step = static_cast<I>(grid / p.nct);
  for (I t = static_cast<I>(block / p.nct); t < p.tiles; t += step) {
    I n[P], h[P], w[P];
    bool ok[P];
HF_UNROLL
    for (int i = 0; i < P; ++i) {
      I q = (t * P + i) * p.npl + pl;
      ok[i] = q < p.items;
      if (!ok[i]) q = 0;
      const DivMod<I> a = p.div_w.divmod(q);
      const DivMod<I> b = p.div_h.divmod(a.quot);
      n[i] = b.quot, h[i] = b.rem, w[i] = a.rem;
    }
    A acc[P][VEC];
HF_UNROLL
    for (int i = 0; i < P; ++i)
HF_UNROLL
      for (int j = 0; j < VEC; ++j) acc[i][j] = shift[j];
    if constexpr (!Pat::kRuntime) {
      // Not pattern_items: through it ptxas gives some of these kernels
      // more registers.
      static_for<Pat::kCount>([&](auto K) {
        constexpr int k = decltype(K)::value;
        constexpr Kind kind = k < Pat::kSame ? Kind::Same : Pat::kCoarse;
HF_UNROLL
        for (int i = 0; i < P; ++i) {
          if (ok[i]) {
            A v[VEC];
            sample_cl<T, VEC, kind>(p.in[k], n[i], c0, h[i], w[i], v);
HF_UNROLL
            for (int j = 0; j < VEC; ++j) acc[i][j] += scale[k][j] * v[j];
          }
        }
      });
    } else {
      for (int k = 0; k < p.k; ++k) {
        const FwdInput<A, I>& s = p.in[k];
        A sc[VEC], sh[VEC];
        load_row<A, VEC>(s.scale, c0, A(1), sc);
        load_row<A, VEC>(s.shift, c0, A(0), sh);
HF_UNROLL
        for (int i = 0; i < P; ++i) {
          if (ok[i]) {
            A v[VEC];
            sample_cl_any<T, VEC>(s, n[i], c0, h[i], w[i], v);
HF_UNROLL
            for (int j = 0; j < VEC; ++j) acc[i][j] += sc[j] * v[j] + sh[j];
          }
        }
      }
    }
    store_items<T>(p, ok, acc, [&](int i) {
      return static_cast<T*>(p.out) + n[i] * p.on + c0 * p.oc + h[i] * p.oh + w[i] * p.ow;
    });
  }
}

// --- NCHW -------------------------------------------------------------------

// Input s at output columns w0 .. w0 + VEC - 1 of row h, channel c, image n.
template <typename T, int VEC, Kind KIND, typename A, typename I>
HF_HOST_DEVICE void sample_row(const FwdInput<A, I>& s, I n, I c, I h, I w0, A (&v)[VEC]) {
  const T* x = static_cast<const T*>(s.data) + n * s.sn + c * s.sc;
  if constexpr (KIND == Kind::Same) {
    load_pack<T, VEC>(x + h * s.sh + w0 * s.sw, v);
  } else if constexpr (KIND == Kind::Shift) {
    const T* row = x + (h >> s.shift_h) * s.sh;
HF_UNROLL
    for (int j = 0; j < VEC; ++j) v[j] = Elem<T>::load(row[((w0 + j) >> s.shift_w) * s.sw]);
  } else if constexpr (KIND == Kind::Near) {
    const T* row = x + nearest_source_as<I>(s.ay, h) * s.sh;
HF_UNROLL
    for (int j = 0; j < VEC; ++j) v[j] = Elem<T>::load(row[nearest_source_as<I>(s.ax, w0 + j) * s.sw]);
  } else {
    const TapI<I, A> th = linear_tap_as<I>(s.ay, h);
    const T* r0 = x + th.i0 * s.sh;
    const T* r1 = x + th.i1 * s.sh;
HF_UNROLL
    for (int j = 0; j < VEC; ++j) {
      const TapI<I, A> tw = linear_tap_as<I>(s.ax, w0 + j);
      const A a = Elem<T>::load(r0[tw.i0 * s.sw]), b = Elem<T>::load(r0[tw.i1 * s.sw]);
      const A c = Elem<T>::load(r1[tw.i0 * s.sw]), d = Elem<T>::load(r1[tw.i1 * s.sw]);
      v[j] = th.l0 * (tw.l0 * a + tw.l1 * b) + th.l1 * (tw.l0 * c + tw.l1 * d);
    }
  }
}

template <typename T, int VEC, typename A, typename I>
HF_HOST_DEVICE void sample_row_any(const FwdInput<A, I>& s, I n, I c, I h, I w0, A (&v)[VEC]) {
  with_kind(s.kind, [&](auto kind) { sample_row<T, VEC, decltype(kind)::value>(s, n, c, h, w0, v); });
}

template <typename A>
HF_HOST_DEVICE A row_value(const A* row, int64_t c, A fill) {
  return row != nullptr ? row[c] : fill;
}

// One thread of the NCHW forward: adjacent threads, adjacent packs of a row.
template <typename T, int VEC, class Pat, typename I>
HF_HOST_DEVICE void forward_nchw_thread(const FwdParams<acc_t<T>, I>& p, int block, int grid, int tid) {
  using A = acc_t<T>;
  constexpr int P = Pat::kItems;
  for (I t = static_cast<I>(block); t < p.tiles; t += static_cast<I>(grid)) {
    I n[P], c[P], h[P], w0[P];
    bool ok[P];
HF_UNROLL
    for (int i = 0; i < P; ++i) {
      I q = (t * P + i) * kThreads + tid;
      ok[i] = q < p.items;
      if (!ok[i]) q = 0;
      const DivMod<I> a = p.div_w.divmod(q);
      const DivMod<I> b = p.div_h.divmod(a.quot);
      const DivMod<I> d = p.div_c.divmod(b.quot);
      n[i] = d.quot, c[i] = d.rem, h[i] = b.rem, w0[i] = a.rem * VEC;
    }
    A acc[P][VEC];
HF_UNROLL
    for (int i = 0; i < P; ++i)
HF_UNROLL
      for (int j = 0; j < VEC; ++j) acc[i][j] = A(0);
    auto add = [&](const FwdInput<A, I>& s, int i, const A (&v)[VEC]) {
      const A sc = row_value<A>(s.scale, c[i], A(1));
      const A sh = row_value<A>(s.shift, c[i], A(0));
HF_UNROLL
      for (int j = 0; j < VEC; ++j) acc[i][j] += sc * v[j] + sh;
    };
    if constexpr (!Pat::kRuntime) {
      pattern_items<Pat>(ok, [&](auto k, int i, auto kind) {
        A v[VEC];
        sample_row<T, VEC, decltype(kind)::value>(p.in[k], n[i], c[i], h[i], w0[i], v);
        add(p.in[k], i, v);
      });
    } else {
      for (int k = 0; k < p.k; ++k) {
HF_UNROLL
        for (int i = 0; i < P; ++i) {
          if (ok[i]) {
            A v[VEC];
            sample_row_any<T, VEC>(p.in[k], n[i], c[i], h[i], w0[i], v);
            add(p.in[k], i, v);
          }
        }
      }
    }
    store_items<T>(p, ok, acc, [&](int i) {
      return static_cast<T*>(p.out) + n[i] * p.on + c[i] * p.oc + h[i] * p.oh + w0[i] * p.ow;
    });
  }
}

#if defined(__CUDACC__)
template <typename T, int VEC, class Pat, typename I>
__global__ void __launch_bounds__(kThreads) forward_cl_kernel(const FwdParams<acc_t<T>, I> p) {
  forward_cl_thread<T, VEC, Pat, I>(p, static_cast<int>(blockIdx.x), static_cast<int>(gridDim.x),
                                    static_cast<int>(threadIdx.x));
}

template <typename T, int VEC, class Pat, typename I>
__global__ void __launch_bounds__(kThreads) forward_nchw_kernel(const FwdParams<acc_t<T>, I> p) {
  forward_nchw_thread<T, VEC, Pat, I>(p, static_cast<int>(blockIdx.x), static_cast<int>(gridDim.x),
                                      static_cast<int>(threadIdx.x));
}
#endif

}  // namespace cuda
}  // namespace hrnet_fast
