// Compile checks of the CUDA kernel headers without torch, built with
// -DHRNET_FAST_CUDA=ON (CMakeLists.txt) together with the torch-free
// launch units csrc/cuda/*.cu, which instantiate every kernel the extension
// ships. Here: the layout facts the kernels rely on.
#include "exchange_backward.cuh"
#include "exchange_forward.cuh"
#include "exchange_plan.h"

namespace hrnet_fast {
namespace cuda {

static_assert(sizeof(Pack<__half, 8>) == 16 && alignof(Pack<__half, 8>) == 16, "fp16 pack is one 16-byte access");
static_assert(sizeof(Pack<__nv_bfloat16, 8>) == 16 && alignof(Pack<__nv_bfloat16, 8>) == 16,
              "bf16 pack is one 16-byte access");
static_assert(sizeof(Pack<float, 4>) == 16 && alignof(Pack<float, 4>) == 16, "fp32 pack is one 16-byte access");
static_assert(sizeof(Pack<double, 2>) == 16 && alignof(Pack<double, 2>) == 16, "fp64 pack is one 16-byte access");
static_assert(sizeof(Pack<__half, 2>) == 4 && alignof(Pack<__half, 2>) == 4, "fp16 pair is one 4-byte access");
static_assert(sizeof(FwdParams<float, int32_t>) <= 4096 && sizeof(FwdParams<double, int64_t>) <= 4096,
              "forward parameters fit the kernel parameter space");
static_assert(sizeof(BwdParams<float, int32_t>) <= 4096 && sizeof(BwdParams<double, int64_t>) <= 4096,
              "backward parameters fit the kernel parameter space");
static_assert(sizeof(SumParams<double, int64_t>) <= 4096, "sum parameters fit the kernel parameter space");
// The shared memory plan (exchange_plan.h) sizes tables by these.
static_assert(sizeof(TileTab<float>) % 4 == 0 && sizeof(TileTab<double>) % 8 == 0, "tile tables stay aligned");

// One kernel of each family, so this unit alone catches a broken header.
template __global__ void forward_cl_kernel<__nv_bfloat16, 8, Pattern<1, 3, Kind::Lin>, int32_t>(
    const FwdParams<float, int32_t>);
template __global__ void forward_nchw_kernel<float, 4, RuntimePattern, int32_t>(const FwdParams<float, int32_t>);
template __global__ void backward_tiles_kernel<__half, 8, int32_t>(const BwdParams<float, int32_t>);
template __global__ void backward_finish_kernel<double, 1, int64_t>(const BwdParams<double, int64_t>);
template __global__ void backward_sums_kernel<float, int32_t>(const SumParams<float, int32_t>);

}  // namespace cuda
}  // namespace hrnet_fast
