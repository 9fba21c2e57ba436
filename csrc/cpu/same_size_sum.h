// The NCHW forward when every input has the output's size (HRNet's coarsest
// output branch) for float32, compiled for several x86-64 instruction sets.
#pragma once

#include <cstdint>

namespace hrnet_fast {
namespace cpu {

// out[p][i] = act(shift[c] + sum_k scale[k][c] * x[k][p][i]) for the planes
// p in [begin, end) of `plane` elements each, c = p % channels, 1 <= m <= 4.
// The same summation order as cpu::affine_sum, and the same bits on every
// instruction set (setup.py builds with -ffp-contract=off).
void same_size_sum_f32(float* out, const float* const* x, const float* const* scale, const float* shift, int m,
                       int64_t begin, int64_t end, int64_t channels, int64_t plane, bool relu);

// channels_last rows: out[i] = act(shift[i] + sum_k scale[k][i] * x[k][i])
// for i < n, the scales and shifts tiled along the row (per element).
void same_size_sum_rows_f32(float* out, const float* const* x, const float* const* scale, const float* shift, int m,
                            int64_t n, bool relu);

}  // namespace cpu
}  // namespace hrnet_fast
