// The boundary between the torch-facing launchers (exchange_cuda.cpp, built
// by the host compiler) and the kernel launches (*.cu, built by nvcc).
//
// Nothing here includes torch: the .cu files then compile only the kernels
// and a little host code, which keeps nvcc's share of the build small.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "interp.h"

namespace hrnet_fast {
namespace cuda {

constexpr int kMaxLaunchInputs = 8;  // == kMaxInputs in kernels/exchange_cuda.cuh

enum class DType : int { Float, Half, BFloat16, Double };

// A 4-D (N, C, H, W) tensor as raw pointer, sizes and element strides.
struct View {
  void* data;
  int64_t size[4];
  int64_t stride[4];
};

struct ForwardArgs {
  DType dtype;
  Mode mode;
  bool align_corners;
  bool relu;
  bool channels_last;  // output layout: picks the kernel's thread mapping
  int k;
  View inputs[kMaxLaunchInputs];
  const void* scales;  // (K, C) dense, float (double for DType::Double)
  const void* shifts;
  View out;
};

// Enqueues the forward on `stream`. Launch errors are left for the caller's
// cudaGetLastError (C10_CUDA_KERNEL_LAUNCH_CHECK).
void launch_forward(const ForwardArgs& a, cudaStream_t stream);

// Gradient pass of one input.
struct BackwardArgs {
  DType dtype;
  Mode mode;
  bool align_corners;
  bool relu;
  bool channels_last;  // layout of x / grad_x: picks the kernel's thread mapping
  View grad;           // dense output gradient, output size
  View out;            // forward output, same strides as grad
  View x;
  View grad_x;         // same sizes as x
  const void* scale;   // this input's row of scales (C entries)
  void* part_gx;       // partials, laid out as PartialShape says
  void* part_g;        // partials of G, or nullptr
  int64_t n_begin;     // this launch covers images [n_begin, n_end); the
  int64_t n_end;       // partials are laid out for all of them
};

// Shape of one pass's partial sums: element [n][t][c] at
// n * sn + t * st + c * sc of a buffer of `numel` accumulators.
struct PartialShape {
  int64_t n, t, c;
  int64_t sn, st, sc;
  int64_t numel;
};

PartialShape backward_partials(const BackwardArgs& a);
void launch_backward_input(const BackwardArgs& a, cudaStream_t stream);

// One per-channel reduction: out[r * channels + c] = the sum of the
// partials of channel c, for r < rows.
struct SumJob {
  const void* part;
  PartialShape shape;
  void* out;
  int rows;
};

// Runs up to kMaxLaunchInputs + 1 reductions in one launch, each in a fixed
// order. Accumulators are float (double for DType::Double).
void launch_channel_sums(DType dtype, const SumJob* jobs, int count, int64_t channels, cudaStream_t stream);

}  // namespace cuda
}  // namespace hrnet_fast
