// CPU kernels of hrnet_fast::exchange and hrnet_fast::exchange_backward.
//
// Forward is one pass: every output element reads each same-size input once
// and gathers the 1 (nearest) or 4 (bilinear) source pixels of each smaller
// input, applies the per-channel affine, sums in the accumulation type and
// writes once. Index math comes from kernels/interp.h, precomputed per output
// row and column, so it matches the CUDA kernels and F.interpolate exactly.
//
// Backward is deterministic: the adjoint of interpolation is a gather over
// the output pixels that read each source pixel, and per-channel reductions
// go through partial sums over a partition fixed by the shapes (never by the
// thread count), reduced in order.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/cpu_common.h"
#include "cpu/vec_ops.h"
#include "exchange.h"

namespace hrnet_fast {
namespace {

using cpu::AxisTaps;
using cpu::grain_for;

// One input of the exchange, with its taps when it is interpolated.
template <typename scalar_t, typename acc_t>
struct Source {
  at::Tensor tensor;  // keeps the (possibly converted) data alive
  const scalar_t* data;
  int64_t h, w;
  const acc_t* scale;  // C entries
  bool same;           // already of the output size: read directly
  AxisTaps<acc_t> rows, cols;
  // Nearest upsampling by exactly 2, 4 or 8 along W (HRNet's case): a
  // plane's rows are widened in one flat loop (repeat_each) rather than a
  // gather per source row.
  int repeat = 0;
  // ... and by the same factor along H: the whole plane in one loop nest
  // (upsample_axpy), no per-row passes.
  bool both_axes = false;

  Source(const at::Tensor& x, at::MemoryFormat fmt, const acc_t* scale_row, int64_t H, int64_t W, Mode mode,
         bool align_corners)
      : tensor(x.contiguous(fmt)),
        data(tensor.const_data_ptr<scalar_t>()),
        h(x.size(2)),
        w(x.size(3)),
        scale(scale_row),
        same(h == H && w == W) {
    if (!same) {
      // Nearest picks its sources as F.interpolate does on x's layout.
      const bool near64 = nearest_uses_double(x.scalar_type() == at::kDouble,
                                              output_format(x) == at::MemoryFormat::ChannelsLast, x.size(1), H, W);
      rows = AxisTaps<acc_t>(h, H, mode, align_corners, near64);
      cols = AxisTaps<acc_t>(w, W, mode, align_corners, near64);
      repeat = cpu::exact_nearest_factor(w, W, mode);
      both_axes = repeat != 0 && cpu::exact_nearest_factor(h, H, mode) == repeat;
    }
  }
};

// Two row buffers keyed by the source row they hold. Output rows read
// source rows in non-decreasing order, so two slots hold both taps of the
// current output row and each source row is computed about once per task.
template <typename acc_t>
struct SourceRows {
  std::vector<acc_t> data[2];
  int64_t key[2] = {-1, -1};
  int next = 0;

  explicit SourceRows(int64_t size) : data{std::vector<acc_t>(size), std::vector<acc_t>(size)} {}

  template <typename Fill>
  const acc_t* get(int64_t k, Fill&& fill) {
    for (int i = 0; i < 2; ++i)
      if (key[i] == k) {
        next = 1 - i;  // keep this one, replace the other next
        return data[i].data();
      }
    const int i = next;
    fill(data[i].data());
    key[i] = k;
    next = 1 - i;
    return data[i].data();
  }
};

// The forward on per-input rows of C scale and shift values (acc_t).
template <typename scalar_t>
at::Tensor forward_rows(TensorList inputs, const at::opmath_type<scalar_t>* const* scale_rows,
                        const at::opmath_type<scalar_t>* const* shift_rows, int64_t H, int64_t W, Mode mode,
                        bool align_corners, bool relu) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto& x0 = inputs[0];
  const int64_t N = x0.size(0), C = x0.size(1), K = static_cast<int64_t>(inputs.size());
  const auto fmt = output_format(x0);
  auto out = at::empty({N, C, H, W}, x0.options().memory_format(fmt));
  if (out.numel() == 0) return out;

  // The shifts of all inputs add up to one constant per channel: interpolation
  // weights sum to one, so interp(x * s + b) = s * interp(x) + b.
  std::vector<acc_t> shift_sum(C, acc_t(0));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) shift_sum[c] += shift_rows[k][c];

  std::vector<Source<scalar_t, acc_t>> src;
  src.reserve(K);
  for (int64_t k = 0; k < K; ++k) src.emplace_back(inputs[k], fmt, scale_rows[k], H, W, mode, align_corners);
  // Same-size inputs are summed with the shifts in one pass (affine_sum),
  // which writes the output directly when no input is interpolated; the
  // interpolated inputs are summed into an accumulator that pass adds
  // (NCHW) or added to its result (channels_last).
  std::vector<const Source<scalar_t, acc_t>*> same, smaller;
  for (const auto& s : src) (s.same ? same : smaller).push_back(&s);
  const int m = static_cast<int>(same.size());
  const bool direct = smaller.empty();
  scalar_t* out_p = out.mutable_data_ptr<scalar_t>();
  const bool nearest = mode == Mode::Nearest;

  if (fmt == at::MemoryFormat::ChannelsLast) {
    // One task = output rows (n, h); the inner loops run over contiguous
    // channel vectors, or whole rows of W * C. A bilinear smaller input is
    // interpolated along W once per source row (SourceRows keeps it while
    // consecutive output rows read it) and blended along H as whole rows.
    at::parallel_for(0, N * H, grain_for(W * C), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(direct ? 0 : W * C);
      std::vector<const acc_t*> scale(m);
      std::vector<const scalar_t*> x(m);
      for (int j = 0; j < m; ++j) scale[j] = same[j]->scale;
      // Per smaller input: two W-interpolated, scaled source rows and the
      // (n, source row) each holds, -1 when empty.
      std::vector<SourceRows<acc_t>> cache(nearest ? 0 : smaller.size(), SourceRows<acc_t>(W * C));
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, h = row % H;
        scalar_t* o = out_p + row * W * C;
        if (!direct) {
          // As in NCHW: the interpolated inputs into acc (the first writes
          // it), then one pass with the shifts and same-size inputs.
          for (size_t i = 0; i < smaller.size(); ++i) {
            const auto* s = smaller[i];
            const bool first = i == 0;
            const scalar_t* base = s->data + n * s->h * s->w * C;
            if (nearest) {
              const scalar_t* src_row = base + s->rows.i0[h] * s->w * C;
              for (int64_t w = 0; w < W; ++w) {
                acc_t* a = acc.data() + w * C;
                const scalar_t* px = src_row + s->cols.i0[w] * C;
                if (first) {
                  cpu::mul_channels(a, s->scale, px, C);
                } else {
                  cpu::axpy_channels(a, s->scale, px, C);
                }
              }
              continue;
            }
            auto interpolated = [&](int64_t r) {
              return cache[i].get(n * s->h + r, [&](acc_t* t) {
                const scalar_t* src_row = base + r * s->w * C;
                for (int64_t w = 0; w < W; ++w)
                  cpu::scaled_lerp_channels(t + w * C, s->scale, s->cols.l0[w], src_row + s->cols.i0[w] * C,
                                            s->cols.l1[w], src_row + s->cols.i1[w] * C, C);
              });
            };
            const acc_t* t0 = interpolated(s->rows.i0[h]);
            const acc_t* t1 = interpolated(s->rows.i1[h]);
            if (first) {
              cpu::lerp(acc.data(), s->rows.l0[h], t0, s->rows.l1[h], t1, W * C);
            } else {
              cpu::axpby(acc.data(), s->rows.l0[h], t0, s->rows.l1[h], t1, W * C);
            }
          }
        }
        // The shifts and same-size inputs, pixel by pixel over the
        // channels (plus acc).
        for (int64_t w = 0; w < W; ++w) {
          for (int j = 0; j < m; ++j) x[j] = same[j]->data + (row * W + w) * C;
          if (direct) {
            cpu::affine_sum_any<1>(o + w * C, shift_sum.data(), scale.data(), x.data(), m, C, relu);
          } else {
            cpu::affine_sum_add<1>(o + w * C, shift_sum.data(), acc.data() + w * C, scale.data(), x.data(), m, C,
                                   relu);
          }
        }
      }
    });
    return out;
  }

  // NCHW: one task = planes (n, c). A smaller input upsampled by an exact
  // factor (nearest, 2/4/8) is added in one loop nest over its plane;
  // otherwise it is first interpolated along W for each of its rows (1/f of
  // the output rows), then blended along H with whole-row vector operations.
  at::parallel_for(0, N * C, grain_for(H * W), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(direct ? 0 : H * W), rows_w;
    std::vector<const acc_t*> scale(m);
    std::vector<const scalar_t*> x(m);
    int64_t c = begin % C;  // advanced with the plane: no division per plane
    for (int64_t plane = begin; plane < end; ++plane, c = c + 1 == C ? 0 : c + 1) {
      for (int j = 0; j < m; ++j) scale[j] = same[j]->scale + c, x[j] = same[j]->data + plane * H * W;
      if (direct) {
        cpu::affine_sum_any<0>(out_p + plane * H * W, &shift_sum[c], scale.data(), x.data(), m, H * W, relu);
        continue;
      }
      // The interpolated inputs are summed first into acc (the first one
      // writes it), then one pass adds the shifts and the same-size inputs
      // and writes the output: two passes over acc rather than three.
      bool first = true;
      for (const auto* s : smaller) {
        const scalar_t* base = s->data + plane * s->h * s->w;
        const acc_t scale_c = s->scale[c];
        if (s->both_axes) {
          cpu::with_factor(s->repeat, [&](auto F) {
            if (first) {
              cpu::upsample_axpy<decltype(F)::value, true>(acc.data(), scale_c, base, s->h, s->w);
            } else {
              cpu::upsample_axpy<decltype(F)::value, false>(acc.data(), scale_c, base, s->h, s->w);
            }
          });
          first = false;
          continue;
        }
        if (first) std::fill(acc.begin(), acc.end(), acc_t(0));
        first = false;
        rows_w.resize(s->h * W);
        cpu::with_factor(s->repeat, [&](auto F) {
          cpu::repeat_each<decltype(F)::value>(rows_w.data(), base, s->h * s->w);
        });
        for (int64_t qh = 0; qh < s->h && !s->repeat; ++qh) {
          const scalar_t* r = base + qh * s->w;
          acc_t* t = rows_w.data() + qh * W;
          if (nearest) {
            for (int64_t w = 0; w < W; ++w) t[w] = static_cast<acc_t>(r[s->cols.i0[w]]);
          } else {
            for (int64_t w = 0; w < W; ++w)
              t[w] = s->cols.l0[w] * static_cast<acc_t>(r[s->cols.i0[w]]) +
                     s->cols.l1[w] * static_cast<acc_t>(r[s->cols.i1[w]]);
          }
        }
        for (int64_t h = 0; h < H; ++h) {
          acc_t* a = acc.data() + h * W;
          if (nearest) {
            cpu::axpy(a, scale_c, rows_w.data() + s->rows.i0[h] * W, W);
          } else {
            cpu::axpby(a, scale_c * s->rows.l0[h], rows_w.data() + s->rows.i0[h] * W, scale_c * s->rows.l1[h],
                       rows_w.data() + s->rows.i1[h] * W, W);
          }
        }
      }
      cpu::affine_sum_add<0>(out_p + plane * H * W, &shift_sum[c], acc.data(), scale.data(), x.data(), m, H * W,
                             relu);
    }
  });
  return out;
}

// The forward on the op's optional per-input rows: given rows are read in
// place (converted once when another dtype), absent ones read a row of ones
// (scales) or zeros (shifts).
template <typename scalar_t>
at::Tensor forward_affine(TensorList inputs, const OptionalTensors& scales, const OptionalTensors& shifts, int64_t H,
                          int64_t W, Mode mode, bool align_corners, bool relu) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
  const size_t K = inputs.size();
  const int64_t C = inputs[0].size(1);
  const AffineRows sc = affine_rows(scales, K, acc_type);
  const AffineRows sh = affine_rows(shifts, K, acc_type);
  std::vector<acc_t> ones, zeros;
  std::vector<const acc_t*> scale_rows(K), shift_rows(K);
  for (size_t k = 0; k < K; ++k) {
    if (sc.ptr[k] == nullptr && ones.empty()) ones.assign(C, acc_t(1));
    if (sh.ptr[k] == nullptr && zeros.empty()) zeros.assign(C, acc_t(0));
    scale_rows[k] = sc.ptr[k] != nullptr ? static_cast<const acc_t*>(sc.ptr[k]) : ones.data();
    shift_rows[k] = sh.ptr[k] != nullptr ? static_cast<const acc_t*>(sh.ptr[k]) : zeros.data();
  }
  return forward_rows<scalar_t>(inputs, scale_rows.data(), shift_rows.data(), H, W, mode, align_corners, relu);
}

at::Tensor exchange_cpu(at::TensorList inputs, const OptionalTensors& scales, const OptionalTensors& shifts,
                        c10::IntArrayRef size, c10::string_view mode, bool align_corners, bool relu) {
  const std::string_view mode_name(mode.data(), mode.size());
  check_exchange(inputs, scales, shifts, c10::fromIntArrayRefSlow(size), mode_name);
  const Mode m = parse_mode(mode_name);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, inputs[0].scalar_type(), "hrnet_fast::exchange", [&] {
    out = forward_affine<scalar_t>(inputs, scales, shifts, size[0], size[1], m, align_corners, relu);
  });
  return out;
}

}  // namespace
}  // namespace hrnet_fast

// Backward lives in exchange_backward_cpu.cpp; both register here.
namespace hrnet_fast {
std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> exchange_backward_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& out, const OptionalTensors& inputs,
    c10::IntArrayRef input_sizes, const c10::List<bool>& channels_last, const OptionalTensors& scales,
    c10::string_view mode, bool align_corners, bool relu);
}

TORCH_LIBRARY_IMPL(hrnet_fast, CPU, m) {
  m.impl("exchange", &hrnet_fast::exchange_cpu);
  m.impl("exchange_backward", &hrnet_fast::exchange_backward_cpu);
}
