// Forward kernels, f64, channels_last: the run-time kernel (no compiled patterns for float64).
#include "forward_launch.cuh"

template void hrnet_fast::cuda::forward_cl<double>(const hrnet_fast::cuda::ForwardDesc&,
                                             const hrnet_fast::cuda::ForwardPlan&, cudaStream_t);
