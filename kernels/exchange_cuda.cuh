// The CUDA-only pieces of the exchange kernels: half-precision element
// conversion and the block executor the backward bodies run under.
//
// Framework-free (no torch headers) so kernels/tests/*.cu compile it
// standalone; everything else the kernels use is host-device and lives in
// exchange_common.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "exchange_common.h"

namespace hrnet_fast {
namespace cuda {

template <> struct Elem<__half> {
  static HF_HOST_DEVICE float load(__half v) { return __half2float(v); }
  static HF_HOST_DEVICE __half store(float v) { return __float2half_rn(v); }
};
template <> struct Elem<__nv_bfloat16> {
  static HF_HOST_DEVICE float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static HF_HOST_DEVICE __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

// The executor of a block on the GPU: each() is this thread's share of a
// phase, barrier() the block-wide __syncthreads() between phases. The
// members are host-device only so that host-device bodies may call them;
// they are only ever run on the device.
struct GpuBlock {
  unsigned char* mem;

  HF_HOST_DEVICE unsigned char* smem() const { return mem; }
  HF_HOST_DEVICE int block() const {
#if defined(__CUDA_ARCH__)
    return static_cast<int>(blockIdx.x);
#else
    return 0;
#endif
  }
  HF_HOST_DEVICE int grid() const {
#if defined(__CUDA_ARCH__)
    return static_cast<int>(gridDim.x);
#else
    return 1;
#endif
  }
  template <typename F>
  HF_HOST_DEVICE void each(F&& f) const {
#if defined(__CUDA_ARCH__)
    f(static_cast<int>(threadIdx.x));
#else
    (void)f;
#endif
  }
  HF_HOST_DEVICE void barrier() const {
#if defined(__CUDA_ARCH__)
    __syncthreads();
#endif
  }
};

}  // namespace cuda
}  // namespace hrnet_fast
