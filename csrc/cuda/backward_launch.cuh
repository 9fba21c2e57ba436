// The backward launches of one storage type: backward_tiles, then
// backward_finish when the plan has straddling or gathered pixels, then
// backward_sums; each grid at most one wave of resident blocks (the
// kernels loop over their units). Included by one .cu per storage type.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include "device.h"
#include "launch.h"

namespace hrnet_fast {
namespace cuda {

template <typename T>
void backward_typed(const BackwardDesc& d, const BackwardPlan& plan, void* scratch, cudaStream_t stream) {
  using A = acc_t<T>;
  dispatch_backward<T>(plan, [&](auto vec, auto idx) {
    constexpr int VEC = decltype(vec)::value;
    using I = index_of<decltype(idx)>;
    const BwdParams<A, I> p = backward_params<A, I>(d, plan, scratch);
    const auto tiles = backward_tiles_kernel<T, VEC, I>;
    const int64_t g1 = std::min<int64_t>(
        plan.units1 * plan.nct, resident_blocks(reinterpret_cast<const void*>(tiles), plan.smem_tiles));
    tiles<<<static_cast<unsigned>(g1), kThreads, plan.smem_tiles, stream>>>(p);
    if (plan.need_finish) {
      const auto finish = backward_finish_kernel<T, VEC, I>;
      const int64_t g2 = std::min<int64_t>(
          plan.units2 * plan.nct, resident_blocks(reinterpret_cast<const void*>(finish), plan.smem_finish));
      finish<<<static_cast<unsigned>(g2), kThreads, plan.smem_finish, stream>>>(p);
    }
    const auto sums = backward_sums_kernel<A, I>;
    const int64_t g3 = std::min<int64_t>(plan.sum_blocks, resident_blocks(reinterpret_cast<const void*>(sums), 0));
    sums<<<static_cast<unsigned>(g3), kThreads, 0, stream>>>(sum_params<A, I>(d, plan, scratch));
  });
}

}  // namespace cuda
}  // namespace hrnet_fast
