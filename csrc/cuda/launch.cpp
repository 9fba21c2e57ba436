// Plans and dispatch on the storage type and layout (torch-free host code;
// the kernels themselves are in the forward_*.cu / backward_*.cu units).
#include "launch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "device.h"

namespace hrnet_fast {
namespace cuda {

// A backward_tiles block of HRNet's widest case (W48 row 0: 48 bf16
// channels, three coarser inputs) needs 60 KiB for nearest and 64.2 KiB for
// bilinear; 72 KiB keeps whole pixels there and three blocks per SM on
// H100/H200 (two on A100). A larger cap would cost blocks per SM.
constexpr int kBackwardSmemCap = 72 * 1024;

int backward_smem_budget() { return std::max(48 * 1024, std::min(shared_memory_optin(), kBackwardSmemCap)); }

void launch_forward(const ForwardDesc& d, cudaStream_t stream) {
  const ForwardPlan plan = plan_forward(d);
  switch (d.dtype) {
    case DType::Float: return plan.cl ? forward_cl<float>(d, plan, stream) : forward_nchw<float>(d, plan, stream);
    case DType::Half: return plan.cl ? forward_cl<__half>(d, plan, stream) : forward_nchw<__half>(d, plan, stream);
    case DType::BFloat16:
      return plan.cl ? forward_cl<__nv_bfloat16>(d, plan, stream) : forward_nchw<__nv_bfloat16>(d, plan, stream);
    case DType::Double: return plan.cl ? forward_cl<double>(d, plan, stream) : forward_nchw<double>(d, plan, stream);
  }
}

void launch_backward(const BackwardDesc& d, const BackwardPlan& plan, void* scratch, cudaStream_t stream) {
  switch (d.dtype) {
    case DType::Float: return backward_typed<float>(d, plan, scratch, stream);
    case DType::Half: return backward_typed<__half>(d, plan, scratch, stream);
    case DType::BFloat16: return backward_typed<__nv_bfloat16>(d, plan, scratch, stream);
    case DType::Double: return backward_typed<double>(d, plan, scratch, stream);
  }
}

}  // namespace cuda
}  // namespace hrnet_fast
