// The boundary between the torch-facing launchers (exchange_cuda.cpp, built
// by the host compiler) and the kernel launches (*.cu, built by nvcc).
//
// Nothing here includes torch: the .cu files then compile only the kernels
// and a little host code, which keeps nvcc's share of the build small. The
// tensor descriptions and launch plans are kernels/exchange_plan.h's.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "exchange_plan.h"

namespace hrnet_fast {
namespace cuda {

constexpr int kMaxLaunchInputs = kMaxInputs;

// Shared memory a block of backward_tiles may use on the current device:
// the device's opt-in limit, capped so that several blocks share an SM.
int backward_smem_budget();

// Plans and enqueues the forward on `stream`: one kernel. Launch errors are
// left for the caller's cudaGetLastError (C10_CUDA_KERNEL_LAUNCH_CHECK).
void launch_forward(const ForwardDesc& d, cudaStream_t stream);

// Enqueues the backward of a plan from plan_backward(d,
// backward_smem_budget()): two or three kernels. `scratch` holds
// plan.scratch_bytes, 256-byte aligned.
void launch_backward(const BackwardDesc& d, const BackwardPlan& plan, void* scratch, cudaStream_t stream);

// Per storage type and layout, in their own translation units (build time).
template <typename T>
void forward_cl(const ForwardDesc& d, const ForwardPlan& plan, cudaStream_t stream);
template <typename T>
void forward_nchw(const ForwardDesc& d, const ForwardPlan& plan, cudaStream_t stream);
template <typename T>
void backward_typed(const BackwardDesc& d, const BackwardPlan& plan, void* scratch, cudaStream_t stream);

}  // namespace cuda
}  // namespace hrnet_fast
