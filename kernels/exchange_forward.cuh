// Forward of the exchange in one pass: every output element reads each
// same-size input once and the 1 (nearest) or 4 (bilinear) source pixels of
// each smaller input, applies the per-channel affine, sums in the
// accumulation type, applies ReLU and is written once.
//
// The source pixels and weights come from interp.h (the code the CPU backend
// and the CTest tests use), selected at compile time by mode M exactly as
// tap() selects them at run time.
#pragma once

#include "exchange_cuda.cuh"

namespace hrnet_fast {
namespace cuda {

// Interpolated value of source s at output pixel (h, w) for VEC channels
// starting at element offset `base` (n and channel already applied).
template <typename T, int VEC, Mode M>
__device__ __forceinline__ void sample(const Source<acc_t<T>>& s, int64_t base, int h, int w,
                                       acc_t<T> (&v)[VEC]) {
  using A = acc_t<T>;
  const T* x = static_cast<const T*>(s.data) + base;
  if (s.same) {
    load_pack<T, VEC>(x + h * s.sh + w * s.sw, v);
    return;
  }
  if constexpr (M == Mode::Nearest) {
    const int64_t ih = nearest_source(s.ay, h);
    const int64_t iw = nearest_source(s.ax, w);
    load_pack<T, VEC>(x + ih * s.sh + iw * s.sw, v);
  } else {
    const Tap<A> th = linear_tap(s.ay, h);
    const Tap<A> tw = linear_tap(s.ax, w);
    A a[VEC], b[VEC], c[VEC], d[VEC];
    load_pack<T, VEC>(x + th.i0 * s.sh + tw.i0 * s.sw, a);
    load_pack<T, VEC>(x + th.i0 * s.sh + tw.i1 * s.sw, b);
    load_pack<T, VEC>(x + th.i1 * s.sh + tw.i0 * s.sw, c);
    load_pack<T, VEC>(x + th.i1 * s.sh + tw.i1 * s.sw, d);
    // ATen's order of operations for upsample_bilinear2d.
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = th.l0 * (tw.l0 * a[j] + tw.l1 * b[j]) + th.l1 * (tw.l0 * c[j] + tw.l1 * d[j]);
  }
}

template <typename A, int VEC>
__device__ __forceinline__ void relu_inplace(A (&v)[VEC]) {
#pragma unroll
  for (int j = 0; j < VEC; ++j) v[j] = v[j] > A(0) || v[j] != v[j] ? v[j] : A(0);  // NaN stays NaN
}

// channels_last: block (channel packs, pixels). blockIdx.x = pixel tile *
// nct + channel tile, blockIdx.y = image (strided when N > 65535). Adjacent
// threads touch adjacent 16-byte packs of one pixel, then the next pixel.
// A thread keeps one channel pack and P pixels, so each
// input's scale and shift are loaded once for all of them.
template <typename T, int VEC, Mode M>
__global__ void __launch_bounds__(kThreads) forward_cl(const ForwardParams<acc_t<T>> p) {
  using A = acc_t<T>;
  constexpr int P = pixels_per_thread(VEC);
  const int ct = blockIdx.x % p.nct;
  const int64_t tile = blockIdx.x / p.nct;
  const int cv = ct * blockDim.x + threadIdx.x;
  if (cv >= p.cvs) return;
  const int64_t c0 = static_cast<int64_t>(cv) * VEC;
  const int hw = p.h * p.w;
  int hs[P], ws[P];
  int count = 0;  // valid pixels form a prefix: q grows with i
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int64_t q = (tile * P + i) * blockDim.y + threadIdx.y;
    hs[i] = q < hw ? static_cast<int>(q) / p.w : 0;
    ws[i] = q < hw ? static_cast<int>(q) - hs[i] * p.w : 0;
    count += q < hw;
  }
  for (int64_t n = blockIdx.y; n < p.n; n += gridDim.y) {
    A acc[P][VEC];
#pragma unroll
    for (int i = 0; i < P; ++i)
#pragma unroll
      for (int j = 0; j < VEC; ++j) acc[i][j] = 0;
    for (int k = 0; k < p.k; ++k) {
      const Source<A>& s = p.src[k];
      A sc[VEC], sh[VEC];
      load_params<A, VEC>(p.scales + k * p.c + c0, sc);
      load_params<A, VEC>(p.shifts + k * p.c + c0, sh);
      const int64_t base = n * s.sn + c0 * s.sc;
#pragma unroll
      for (int i = 0; i < P; ++i) {
        if (i < count) {
          A v[VEC];
          sample<T, VEC, M>(s, base, hs[i], ws[i], v);
#pragma unroll
          for (int j = 0; j < VEC; ++j) acc[i][j] += sc[j] * v[j] + sh[j];
        }
      }
    }
#pragma unroll
    for (int i = 0; i < P; ++i) {
      if (i < count) {
        if (p.relu) relu_inplace<A, VEC>(acc[i]);
        store_pack<T, VEC>(static_cast<T*>(p.out) + n * p.on + c0 * p.oc + hs[i] * p.oh + ws[i] * p.ow, acc[i]);
      }
    }
  }
}

// NCHW: block (32 columns, 8 rows) of one (n, c) plane, kRows rows per
// thread; blockIdx.z walks the planes. Scale and shift are loaded once per
// input for the thread's rows.
constexpr int kRows = 4;

template <typename T, Mode M>
__global__ void __launch_bounds__(kThreads) forward_nchw(const ForwardParams<acc_t<T>> p) {
  using A = acc_t<T>;
  const int w = blockIdx.x * blockDim.x + threadIdx.x;
  if (w >= p.w) return;
  const int64_t planes = p.n * p.c;
  for (int64_t pl = blockIdx.z; pl < planes; pl += gridDim.z) {
    const int64_t n = pl / p.c;
    const int64_t c = pl - n * p.c;
    A acc[kRows][1];
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[r][0] = 0;
    for (int k = 0; k < p.k; ++k) {
      const Source<A>& s = p.src[k];
      const A sc = __ldg(p.scales + k * p.c + c);
      const A sh = __ldg(p.shifts + k * p.c + c);
      const int64_t base = n * s.sn + c * s.sc;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int h = (blockIdx.y * kRows + r) * blockDim.y + threadIdx.y;
        if (h < p.h) {
          A v[1];
          sample<T, 1, M>(s, base, h, w, v);
          acc[r][0] += sc * v[0] + sh;
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int h = (blockIdx.y * kRows + r) * blockDim.y + threadIdx.y;
      if (h < p.h) {
        if (p.relu) relu_inplace<A, 1>(acc[r]);
        store_pack<T, 1>(static_cast<T*>(p.out) + n * p.on + c * p.oc + h * p.oh + w * p.ow, acc[r]);
      }
    }
  }
}

}  // namespace cuda
}  // namespace hrnet_fast
