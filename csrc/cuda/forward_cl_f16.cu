// Forward kernels, f16, channels_last: every compiled pattern and the run-time fallback.
#include "forward_launch.cuh"

template void hrnet_fast::cuda::forward_cl<__half>(const hrnet_fast::cuda::ForwardDesc&,
                                             const hrnet_fast::cuda::ForwardPlan&, cudaStream_t);
