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

// channels_last pixels p in [begin, end) of `channels` values each:
// out[p][c] = act(shift[c] + sum_k scale[k][c] * x[k][p][c]), in blocks of
// 16 channels whose scales stay in registers across the pixels.
void same_size_sum_cl_f32(float* out, const float* const* x, const float* const* scale, const float* shift, int m,
                          int64_t begin, int64_t end, int64_t channels, bool relu);

// Backward of a channels_last row of `width` pixels x `channels` when every
// input has the output's size: gm = grad masked by the ReLU (out <= 0), and
// for each input k: gx[k] = scale[k][c] * gm, scale_acc[k][c] += gm * x[k],
// shift_acc[c] += gm, pixels in order. The same arithmetic as
// cpu::grad_same<M, 1>, without storing gm.
void same_size_grad_rows_f32(const float* grad, const float* out, float* const* gx, const float* const* x,
                             const float* const* scale, float* shift_acc, float* const* scale_acc, int m,
                             int64_t width, int64_t channels, bool relu);

}  // namespace cpu
}  // namespace hrnet_fast
