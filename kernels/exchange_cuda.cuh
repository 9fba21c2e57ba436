// Device building blocks shared by the CUDA forward and backward kernels:
// element conversion, packed loads/stores and the kernel parameter structs.
//
// Framework-free (no torch headers) so kernels/tests/*.cu can compile it
// standalone. Every tensor is described by a data pointer and element strides,
// so any layout is correct; the channels_last kernels are only *fast* when the
// channel stride is 1 and a pixel's channels form aligned 16-byte packs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "interp.h"

namespace hrnet_fast {
namespace cuda {

// HRNet needs four branches plus up to three conv terms joined as inputs.
constexpr int kMaxInputs = 8;
constexpr int kThreads = 256;
// Pixels per thread of the channels_last kernels (a block covers blockDim.y
// times this many): several independent loads in flight per thread, but only
// two pixels for 8-wide packs, whose 8 float accumulators per pixel would
// otherwise cost occupancy (117 registers at four pixels on sm_90).
__host__ __device__ constexpr int pixels_per_thread(int vec) { return vec >= 8 ? 2 : 4; }

// float32 accumulation for every storage type but double.
template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename T> using acc_t = typename AccOf<T>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_acc(acc_t<T> v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// VEC consecutive elements moved as one access: 16 bytes for the fast path,
// a single element (any stride) otherwise.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ void load_pack(const T* p, acc_t<T> (&out)[VEC]) {
  const Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(p);
#pragma unroll
  for (int j = 0; j < VEC; ++j) out[j] = to_acc(pk.v[j]);
}

template <typename T, int VEC>
__device__ __forceinline__ void store_pack(T* p, const acc_t<T> (&in)[VEC]) {
  Pack<T, VEC> pk;
#pragma unroll
  for (int j = 0; j < VEC; ++j) pk.v[j] = from_acc<T>(in[j]);
  *reinterpret_cast<Pack<T, VEC>*>(p) = pk;
}

// VEC per-channel parameters (float or double) starting at p, in 16-byte
// loads where VEC allows: the launcher guarantees 16-byte alignment of the
// parameter rows and the packed kernels start each pack at a multiple of VEC.
template <typename A, int VEC>
__device__ __forceinline__ void load_params(const A* p, A (&out)[VEC]) {
  constexpr int W = static_cast<int>(16 / sizeof(A));
  if constexpr (VEC % W == 0) {
#pragma unroll
    for (int j = 0; j < VEC; j += W) {
      const Pack<A, W> pk = *reinterpret_cast<const Pack<A, W>*>(p + j);
#pragma unroll
      for (int l = 0; l < W; ++l) out[j + l] = pk.v[l];
    }
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) out[j] = __ldg(p + j);
  }
}

// One input of the forward. Axis constants are built on the host once per
// launch; `same` marks an input already at the output size (no interpolation,
// exactly as the reference skips F.interpolate for it).
template <typename A>
struct Source {
  const void* data;
  int64_t sn, sc, sh, sw;
  Axis<A> ay, ax;
  bool same;
};

template <typename A>
struct ForwardParams {
  Source<A> src[kMaxInputs];
  int k;
  const A* scales;  // (K, C) row-major
  const A* shifts;  // (K, C) row-major
  void* out;
  int64_t on, oc, oh, ow;
  int64_t n, c;
  int h, w;  // output size
  bool relu;
  // channels_last geometry: channel packs, channel tiles
  int cvs, nct;
};

// Passed by value as kernel parameters, which are limited to 4 KiB.
static_assert(sizeof(ForwardParams<double>) <= 4096, "forward parameters exceed the kernel parameter limit");

// Gradient pass of one input. grad and out share strides (the launcher makes
// both dense in the output's format).
template <typename A>
struct BackwardParams {
  const void* grad;
  const void* out;
  int64_t gn, gc, gh, gw;
  const void* x;
  int64_t xn, xc, xh, xw;
  void* gx;
  int64_t dn, dc, dh, dw;
  Axis<A> ay, ax;
  bool same;
  const A* scale;  // this input's row of scales, C entries
  // Per-block partial sums of G * x and (input 0 only) of G, laid out as
  // [n][tile][c] with strides pn, pt, pc; reduced by channel_sums.
  A* part_gx;
  A* part_g;
  int64_t pn, pt, pc;
  int64_t n0, n1;  // images [n0, n1) of this launch
  int64_t c;
  int h, w;  // this input's size
  bool relu;
  int cvs, nct;
};

// Fixed-shape block reduction: shuffles in a fixed pattern, then one thread
// adds the warp sums in order, so the result is the same on every run.
template <typename A>
__device__ __forceinline__ A block_sum(A v, A* shared /* >= 32 entries */) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int tid = threadIdx.x + threadIdx.y * blockDim.x;
  const int warps = (blockDim.x * blockDim.y + 31) / 32;
  if ((tid & 31) == 0) shared[tid >> 5] = v;
  __syncthreads();
  A total = 0;
  if (tid == 0) {
    for (int i = 0; i < warps; ++i) total += shared[i];
  }
  __syncthreads();
  return total;  // valid in thread 0
}

}  // namespace cuda
}  // namespace hrnet_fast
