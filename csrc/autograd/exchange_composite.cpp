// The exchange as its definition (hrnet_fast/reference.py) in ATen ops, for
// calls that carry a forward-mode tangent (torch.autograd.forward_ad,
// torch.func.jvp): each op has its forward-AD formula, and its backward, so
// tangents and a graph for backward both flow through them. The fused
// kernels have no jvp; this path is the definition itself, so it agrees with
// the reference backend to rounding.
#include <ATen/ops/add.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/upsample_bilinear2d.h>
#include <ATen/ops/upsample_nearest2d.h>

#include "exchange.h"

namespace hrnet_fast {

at::Tensor exchange_composite(TensorList inputs, const OptionalTensors& scales, const OptionalTensors& shifts,
                              c10::SymIntArrayRef size, std::string_view mode, bool align_corners, bool relu) {
  check_exchange(inputs, scales, shifts, size, mode);
  const bool nearest = parse_mode(mode) == Mode::Nearest;
  at::Tensor total;
  for (size_t k = 0; k < inputs.size(); ++k) {
    at::Tensor t = inputs[k];
    const std::optional<at::Tensor> s = k < scales.size() ? scales.get(k) : std::nullopt;
    const std::optional<at::Tensor> b = k < shifts.size() ? shifts.get(k) : std::nullopt;
    if (s.has_value() && s->defined()) t = at::mul(t, s->to(t.scalar_type()).view({1, -1, 1, 1}));
    if (b.has_value() && b->defined()) t = at::add(t, b->to(t.scalar_type()).view({1, -1, 1, 1}));
    if (t.sym_size(2) != size[0] || t.sym_size(3) != size[1])
      t = nearest ? at::upsample_nearest2d_symint(t, size) : at::upsample_bilinear2d_symint(t, size, align_corners);
    total = total.defined() ? at::add(total, t) : t;
  }
  if (relu) return at::relu(total);
  // A new tensor, never an input (as every path returns).
  for (const at::Tensor& x : inputs)
    if (total.is_same(x)) return total.clone();
  return total;
}

}  // namespace hrnet_fast
