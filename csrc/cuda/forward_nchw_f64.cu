// Forward kernels, f64, NCHW: the run-time kernel (no compiled patterns for float64).
#include "forward_launch.cuh"

template void hrnet_fast::cuda::forward_nchw<double>(const hrnet_fast::cuda::ForwardDesc&,
                                             const hrnet_fast::cuda::ForwardPlan&, cudaStream_t);
