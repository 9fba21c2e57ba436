// Compile check of the CUDA kernel templates without torch: one instance of
// each kernel in each storage type's packed or scalar form, built by
// CMakeLists.txt with -DHRNET_FAST_CUDA=ON (seconds, versus minutes for the
// extension).
#include "exchange_backward.cuh"
#include "exchange_forward.cuh"

namespace hrnet_fast {
namespace cuda {

static_assert(sizeof(Pack<__half, 8>) == 16 && alignof(Pack<__half, 8>) == 16, "fp16 pack is one 16-byte access");
static_assert(sizeof(Pack<__nv_bfloat16, 8>) == 16 && alignof(Pack<__nv_bfloat16, 8>) == 16,
              "bf16 pack is one 16-byte access");
static_assert(sizeof(Pack<float, 4>) == 16 && alignof(Pack<float, 4>) == 16, "fp32 pack is one 16-byte access");

template __global__ void forward_cl<float, 4, Mode::Bilinear>(const ForwardParams<float>);
template __global__ void forward_cl<__nv_bfloat16, 8, Mode::Nearest>(const ForwardParams<float>);
template __global__ void forward_nchw<__half, Mode::Bilinear>(const ForwardParams<float>);
template __global__ void forward_nchw<double, Mode::Nearest>(const ForwardParams<double>);
template __global__ void backward_cl<__half, 8, Mode::Bilinear>(const BackwardParams<float>);
template __global__ void backward_cl<double, 1, Mode::Nearest>(const BackwardParams<double>);
template __global__ void backward_nchw<float, Mode::Bilinear>(const BackwardParams<float>);
template __global__ void backward_nchw<__nv_bfloat16, Mode::Nearest>(const BackwardParams<float>);
template __global__ void channel_sums<float>(const SumJobs<float>);

}  // namespace cuda
}  // namespace hrnet_fast
