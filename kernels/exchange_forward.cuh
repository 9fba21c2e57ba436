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

// y[n, c0:c0+VEC, h, w]: the whole op for one pixel and one channel pack.
template <typename T, int VEC, Mode M>
__device__ __forceinline__ void forward_pixel(const ForwardParams<acc_t<T>>& p, int64_t n, int64_t c0, int h,
                                              int w) {
  using A = acc_t<T>;
  A acc[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) acc[j] = 0;
  for (int k = 0; k < p.k; ++k) {
    const Source<A>& s = p.src[k];
    A v[VEC];
    sample<T, VEC, M>(s, n * s.sn + c0 * s.sc, h, w, v);
    const A* sc = p.scales + k * p.c + c0;
    const A* sh = p.shifts + k * p.c + c0;
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[j] += __ldg(sc + j) * v[j] + __ldg(sh + j);
  }
  if (p.relu) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[j] = acc[j] > A(0) ? acc[j] : (acc[j] != acc[j] ? acc[j] : A(0));
  }
  store_pack<T, VEC>(static_cast<T*>(p.out) + n * p.on + c0 * p.oc + h * p.oh + w * p.ow, acc);
}

// channels_last: block (channel packs, pixels). blockIdx.x = pixel tile *
// nct + channel tile, blockIdx.y = image (strided when N > 65535). Adjacent
// threads touch adjacent 16-byte packs of one pixel, then the next pixel.
template <typename T, int VEC, Mode M>
__global__ void __launch_bounds__(kThreads) forward_cl(const ForwardParams<acc_t<T>> p) {
  const int ct = blockIdx.x % p.nct;
  const int64_t tile = blockIdx.x / p.nct;
  const int cv = ct * blockDim.x + threadIdx.x;
  if (cv >= p.cvs) return;
  const int64_t c0 = static_cast<int64_t>(cv) * VEC;
  const int hw = p.h * p.w;
  for (int64_t n = blockIdx.y; n < p.n; n += gridDim.y) {
    for (int i = 0; i < p.ppt; ++i) {
      const int64_t q = (tile * p.ppt + i) * blockDim.y + threadIdx.y;
      if (q >= hw) break;
      const int h = static_cast<int>(q) / p.w;
      forward_pixel<T, VEC, M>(p, n, c0, h, static_cast<int>(q) - h * p.w);
    }
  }
}

// NCHW: block (32 columns, 8 rows) of one (n, c) plane, kRows rows per
// thread; blockIdx.z walks the planes.
constexpr int kRows = 4;

template <typename T, Mode M>
__global__ void __launch_bounds__(kThreads) forward_nchw(const ForwardParams<acc_t<T>> p) {
  const int w = blockIdx.x * blockDim.x + threadIdx.x;
  if (w >= p.w) return;
  const int64_t planes = p.n * p.c;
  for (int64_t pl = blockIdx.z; pl < planes; pl += gridDim.z) {
    const int64_t n = pl / p.c;
    const int64_t c = pl - n * p.c;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int h = (blockIdx.y * kRows + r) * blockDim.y + threadIdx.y;
      if (h < p.h) forward_pixel<T, 1, M>(p, n, c, h, w);
    }
  }
}

}  // namespace cuda
}  // namespace hrnet_fast
