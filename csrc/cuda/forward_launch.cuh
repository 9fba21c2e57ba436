// The forward launch of one storage type and layout: the instantiation the
// plan picked, its parameters, a grid of at most one wave of resident
// blocks (the kernels loop over their tiles). Included by one small .cu
// per (type, layout) so the instantiations compile in parallel.
#pragma once

#include <cuda_runtime.h>

#include "device.h"
#include "launch.h"

namespace hrnet_fast {
namespace cuda {

template <typename T, bool CL>
void forward_launch(const ForwardDesc& d, const ForwardPlan& plan, cudaStream_t stream) {
  using A = acc_t<T>;
  dispatch_forward<T>(plan, [&](auto vec, auto pat, auto idx) {
    constexpr int VEC = decltype(vec)::value;
    using Pat = decltype(pat);
    using I = index_of<decltype(idx)>;
    auto launch = [&](auto kernel) {
      const int64_t grid = forward_grid(plan, resident_blocks(reinterpret_cast<const void*>(kernel), 0));
      kernel<<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(forward_params<A, I>(d, plan));
    };
    if constexpr (CL)
      launch(forward_cl_kernel<T, VEC, Pat, I>);
    else
      launch(forward_nchw_kernel<T, VEC, Pat, I>);
  });
}

template <typename T>
void forward_cl(const ForwardDesc& d, const ForwardPlan& plan, cudaStream_t stream) {
  forward_launch<T, true>(d, plan, stream);
}

template <typename T>
void forward_nchw(const ForwardDesc& d, const ForwardPlan& plan, cudaStream_t stream) {
  forward_launch<T, false>(d, plan, stream);
}

}  // namespace cuda
}  // namespace hrnet_fast
