// CPU kernel of hrnet_fast::exchange_backward.
//
// With gm = grad * (out > 0) (torch.relu's mask: NaN outputs pass the
// gradient, as threshold_backward does) and G_k = interp_k^T(gm):
//   grad_x_k     = scale_k * G_k
//   grad_scale_k = sum over n, pixels of G_k * x_k     (per channel)
//   grad_shift_k = sum over n, pixels of gm            (the same for every k)
// Pass 1 reads grad and out once, writes gm only when a smaller input needs
// it, and finishes every same-size input. Pass 2 gathers G_k for each smaller
// input over the output pixels that read each source pixel (no atomics).
// Per-channel sums are accumulated in double over a partition fixed by the
// shapes, then reduced in order, so results do not depend on thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>

#include <tuple>
#include <vector>

#include "cpu/cpu_common.h"
#include "exchange.h"

namespace hrnet_fast {
namespace {

using cpu::AdjointTaps;
using cpu::grain_for;
using cpu::load;

// Masked gradient value: torch.relu's backward zeroes where out <= 0.
template <typename scalar_t, typename acc_t>
inline acc_t masked(const scalar_t* g, const scalar_t* o, bool relu) {
  const acc_t gv = load<scalar_t, acc_t>(g);
  return relu && load<scalar_t, acc_t>(o) <= acc_t(0) ? acc_t(0) : gv;
}

template <typename scalar_t>
std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> backward_impl(const at::Tensor& grad_out,
                                                                          const at::Tensor& out,
                                                                          TensorList inputs, const at::Tensor& scales,
                                                                          Mode mode, bool align_corners, bool relu) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto& x0 = inputs[0];
  const int64_t N = x0.size(0), C = x0.size(1), H = out.size(2), W = out.size(3);
  const int64_t K = static_cast<int64_t>(inputs.size());
  const auto fmt = output_format(x0);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;

  std::vector<at::Tensor> grads(K);
  for (int64_t k = 0; k < K; ++k) grads[k] = at::empty(inputs[k].sizes(), x0.options().memory_format(fmt));
  auto grad_scales = at::zeros({K, C}, scales.options());
  auto grad_shifts = at::zeros({K, C}, scales.options());
  if (out.numel() == 0) {
    for (auto& g : grads) g.zero_();
    return {grads, grad_scales, grad_shifts};
  }

  const auto g = grad_out.contiguous(fmt);
  const auto o = out.contiguous(fmt);
  const at::Tensor sc = scales.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
  const acc_t* sc_p = sc.const_data_ptr<acc_t>();
  std::vector<at::Tensor> xs(K);
  std::vector<bool> same(K);
  bool any_smaller = false;
  for (int64_t k = 0; k < K; ++k) {
    xs[k] = inputs[k].contiguous(fmt);
    same[k] = inputs[k].size(2) == H && inputs[k].size(3) == W;
    any_smaller = any_smaller || !same[k];
  }
  const scalar_t* g_p = g.const_data_ptr<scalar_t>();
  const scalar_t* o_p = o.const_data_ptr<scalar_t>();
  // gm is only materialised when smaller inputs gather from it repeatedly.
  at::Tensor gm_t = relu && any_smaller ? at::empty_like(g) : g;
  scalar_t* gm_w = relu && any_smaller ? gm_t.mutable_data_ptr<scalar_t>() : nullptr;

  // Partial sums: one row of C per partition unit (rows (n, h) for
  // channels_last, images n for NCHW, where a unit is a plane (n, c)).
  const int64_t units1 = cl ? N * H : N;
  std::vector<double> shift_part(units1 * C, 0.0);
  std::vector<std::vector<double>> scale_part(K);
  for (int64_t k = 0; k < K; ++k)
    if (same[k]) scale_part[k].assign(units1 * C, 0.0);

  // Same-size inputs are finished in pass 1.
  std::vector<scalar_t*> gx_same(K, nullptr);
  std::vector<const scalar_t*> x_same(K, nullptr);
  for (int64_t k = 0; k < K; ++k) {
    if (!same[k]) continue;
    gx_same[k] = grads[k].mutable_data_ptr<scalar_t>();
    x_same[k] = xs[k].const_data_ptr<scalar_t>();
  }

  if (cl) {
    at::parallel_for(0, N * H, grain_for(W * C), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        double* sp = shift_part.data() + row * C;
        for (int64_t e0 = row * W * C; e0 < (row + 1) * W * C; e0 += C) {
          for (int64_t c = 0; c < C; ++c) {
            const int64_t e = e0 + c;
            const acc_t gv = masked<scalar_t, acc_t>(g_p + e, o_p + e, relu);
            if (gm_w) gm_w[e] = static_cast<scalar_t>(gv);
            sp[c] += gv;
            for (int64_t k = 0; k < K; ++k) {
              if (!gx_same[k]) continue;
              gx_same[k][e] = static_cast<scalar_t>(sc_p[k * C + c] * gv);
              scale_part[k][row * C + c] += static_cast<double>(gv) * load<scalar_t, acc_t>(x_same[k] + e);
            }
          }
        }
      }
    });
  } else {
    at::parallel_for(0, N * C, grain_for(H * W), [&](int64_t begin, int64_t end) {
      std::vector<double> scale_acc(K);
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t c = plane % C;
        double shift_acc = 0.0;
        std::fill(scale_acc.begin(), scale_acc.end(), 0.0);
        for (int64_t i = plane * H * W; i < (plane + 1) * H * W; ++i) {
          const acc_t gv = masked<scalar_t, acc_t>(g_p + i, o_p + i, relu);
          if (gm_w) gm_w[i] = static_cast<scalar_t>(gv);
          shift_acc += gv;
          for (int64_t k = 0; k < K; ++k) {
            if (!gx_same[k]) continue;
            gx_same[k][i] = static_cast<scalar_t>(sc_p[k * C + c] * gv);
            scale_acc[k] += static_cast<double>(gv) * load<scalar_t, acc_t>(x_same[k] + i);
          }
        }
        shift_part[plane] = shift_acc;
        for (int64_t k = 0; k < K; ++k)
          if (same[k]) scale_part[k][plane] = scale_acc[k];
      }
    });
  }

  // Pass 2: the adjoint of each smaller input's interpolation, as a gather.
  const scalar_t* gm_p = gm_t.const_data_ptr<scalar_t>();
  for (int64_t k = 0; k < K; ++k) {
    if (same[k]) continue;
    const int64_t h = inputs[k].size(2), w = inputs[k].size(3);
    const AdjointTaps<acc_t> rows(h, H, mode, align_corners), cols(w, W, mode, align_corners);
    const scalar_t* x_p = xs[k].const_data_ptr<scalar_t>();
    scalar_t* gx_p = grads[k].mutable_data_ptr<scalar_t>();
    const acc_t* s_p = sc_p + k * C;
    if (cl) {
      const int64_t units = N * h;
      scale_part[k].assign(units * C, 0.0);
      at::parallel_for(0, units, grain_for(w * C * 4), [&](int64_t begin, int64_t end) {
        std::vector<acc_t> acc(C);
        for (int64_t unit = begin; unit < end; ++unit) {
          const int64_t n = unit / h, qh = unit % h;
          double* part = scale_part[k].data() + unit * C;
          for (int64_t qw = 0; qw < w; ++qw) {
            std::fill(acc.begin(), acc.end(), acc_t(0));
            for (int64_t i = rows.offset[qh]; i < rows.offset[qh + 1]; ++i) {
              const scalar_t* grow = gm_p + (n * H + rows.p[i]) * W * C;
              for (int64_t j = cols.offset[qw]; j < cols.offset[qw + 1]; ++j) {
                const acc_t wt = rows.w[i] * cols.w[j];
                const scalar_t* px = grow + cols.p[j] * C;
                for (int64_t c = 0; c < C; ++c) acc[c] += wt * load<scalar_t, acc_t>(px + c);
              }
            }
            const int64_t base = ((n * h + qh) * w + qw) * C;
            for (int64_t c = 0; c < C; ++c) {
              gx_p[base + c] = static_cast<scalar_t>(s_p[c] * acc[c]);
              part[c] += static_cast<double>(acc[c]) * load<scalar_t, acc_t>(x_p + base + c);
            }
          }
        }
      });
    } else {
      scale_part[k].assign(N * C, 0.0);
      at::parallel_for(0, N * C, grain_for(H * W), [&](int64_t begin, int64_t end) {
        for (int64_t plane = begin; plane < end; ++plane) {
          const acc_t s = s_p[plane % C];
          const scalar_t* gplane = gm_p + plane * H * W;
          double part = 0.0;
          for (int64_t qh = 0; qh < h; ++qh) {
            for (int64_t qw = 0; qw < w; ++qw) {
              acc_t acc = 0;
              for (int64_t i = rows.offset[qh]; i < rows.offset[qh + 1]; ++i) {
                const scalar_t* grow = gplane + rows.p[i] * W;
                acc_t racc = 0;
                for (int64_t j = cols.offset[qw]; j < cols.offset[qw + 1]; ++j)
                  racc += cols.w[j] * load<scalar_t, acc_t>(grow + cols.p[j]);
                acc += rows.w[i] * racc;
              }
              const int64_t e = (plane * h + qh) * w + qw;
              gx_p[e] = static_cast<scalar_t>(s * acc);
              part += static_cast<double>(acc) * load<scalar_t, acc_t>(x_p + e);
            }
          }
          scale_part[k][plane] = part;
        }
      });
    }
  }

  // Ordered reductions of the partials.
  auto reduce = [&](const std::vector<double>& part, int64_t units) {
    std::vector<double> total(C, 0.0);
    for (int64_t u = 0; u < units; ++u)
      for (int64_t c = 0; c < C; ++c) total[c] += part[u * C + c];
    return total;
  };
  const auto shift_total = reduce(shift_part, units1);
  auto gs = grad_scales.to(at::kDouble);
  auto gb = grad_shifts.to(at::kDouble);
  double* gs_p = gs.mutable_data_ptr<double>();
  double* gb_p = gb.mutable_data_ptr<double>();
  for (int64_t k = 0; k < K; ++k) {
    const int64_t units = same[k] ? units1 : (cl ? N * inputs[k].size(2) : N);
    const auto scale_total = reduce(scale_part[k], units);
    for (int64_t c = 0; c < C; ++c) {
      gs_p[k * C + c] = scale_total[c];
      gb_p[k * C + c] = shift_total[c];
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const auto want = output_format(inputs[k]);
    if (want != fmt) grads[k] = grads[k].contiguous(want);
  }
  return {grads, gs.to(scales.scalar_type()), gb.to(scales.scalar_type())};
}

}  // namespace

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> exchange_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& out, at::TensorList inputs, const at::Tensor& scales,
    c10::string_view mode, bool align_corners, bool relu) {
  TORCH_CHECK_VALUE(!inputs.empty(), "hrnet_fast.exchange_backward: needs at least one input");
  TORCH_CHECK_VALUE(grad_out.sizes() == out.sizes(), "hrnet_fast.exchange_backward: grad_out is ",
                    grad_out.sizes(), " but out is ", out.sizes());
  TORCH_CHECK_VALUE(out.dim() == 4, "hrnet_fast.exchange_backward: out must be 4-D");
  check_exchange_args(inputs, scales, scales, {out.size(2), out.size(3)});
  const Mode m = parse_mode(std::string_view(mode.data(), mode.size()));
  std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, inputs[0].scalar_type(), "hrnet_fast::exchange_backward",
                                  [&] { result = backward_impl<scalar_t>(grad_out, out, inputs, scales, m,
                                                                         align_corners, relu); });
  return result;
}

}  // namespace hrnet_fast
