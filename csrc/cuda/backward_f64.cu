// Backward kernels, f64: tiles, finish and sums, 16-byte packs, single
// elements and the 64-bit fallback.
#include "backward_launch.cuh"

template void hrnet_fast::cuda::backward_typed<double>(const hrnet_fast::cuda::BackwardDesc&,
                                                   const hrnet_fast::cuda::BackwardPlan&, void*, cudaStream_t);
