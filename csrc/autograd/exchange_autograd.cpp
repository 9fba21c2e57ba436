// Autograd of hrnet_fast::exchange, registered under the Autograd key for
// every C++ backend (the torchvision csrc/ops/autograd pattern).
//
// Why C++ and not torch.library.register_autograd: the Python layer cost
// about 6 us per forward call under no_grad and 150-200 us per backward call
// (the Python backward wrapper and the garbage collection its objects
// trigger), more than the kernels themselves at HRNet's small branches.
// The backward calls exchange_backward through the dispatcher, so fake
// tensors, functionalisation and torch.compile see an ordinary op.
#include <ATen/core/grad_mode.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "op_calls.h"

namespace hrnet_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The given rows of an optional list and the input each belongs to.
struct GivenRows {
  std::vector<at::Tensor> tensors;
  std::vector<int64_t> slots;
};

GivenRows given_rows(const OptionalTensors& rows) {
  GivenRows g;
  for (size_t k = 0; k < rows.size(); ++k) {
    std::optional<at::Tensor> r = rows.get(k);
    if (r.has_value() && r->defined()) {
      g.tensors.push_back(std::move(*r));
      g.slots.push_back(static_cast<int64_t>(k));
    }
  }
  return g;
}

// The op's optional list again: `count` entries, the given tensors in
// place (an empty list when none is given and `empty_if_none`: the
// identity affine).
OptionalTensors rebuild(at::TensorList tensors, const std::vector<int64_t>& slots, size_t count,
                        bool empty_if_none = true) {
  OptionalTensors rows;
  if (tensors.empty() && empty_if_none) return rows;
  rows.reserve(count);
  for (size_t k = 0; k < count; ++k) rows.push_back(std::nullopt);
  for (size_t i = 0; i < tensors.size(); ++i) rows.set(static_cast<size_t>(slots[i]), tensors[i]);
  return rows;
}

// What a call needs of autograd: a graph to record (grad), a forward-mode
// tangent on an argument (tangent). With neither (no_grad, inference,
// nothing requires grad) the kernel skips Function::apply and its context:
// about 1.5 us of a 5 us call.
struct Needs {
  bool grad = false;
  bool tangent = false;
};

Needs needs_of(at::TensorList inputs, const OptionalTensors& scales, const OptionalTensors& shifts) {
  const bool grad_mode = at::GradMode::is_enabled();
  Needs n;
  auto visit = [&](const at::Tensor& t) {
    if (!t.defined()) return;
    n.grad = n.grad || (grad_mode && t.requires_grad());
    n.tangent = n.tangent || t._fw_grad(/*level=*/0).defined();
  };
  for (const at::Tensor& t : inputs) visit(t);
  for (const OptionalTensors* list : {&scales, &shifts})
    for (size_t k = 0; k < list->size(); ++k) {
      const std::optional<at::Tensor> r = list->get(k);
      if (r.has_value()) visit(*r);
    }
  return n;
}

class ExchangeFunction : public torch::autograd::Function<ExchangeFunction> {
 public:
  // Tensors reach apply() as TensorLists (the only list form autograd
  // tracks); which input each affine row belongs to travels beside them.
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, at::TensorList scales,
                               at::TensorList shifts, const std::vector<int64_t>& scale_slots,
                               const std::vector<int64_t>& shift_slots, c10::SymIntArrayRef size,
                               c10::string_view mode, bool align_corners, bool relu) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const size_t K = inputs.size();
    at::Tensor out = exchange_call(inputs, rebuild(scales, scale_slots, K), rebuild(shifts, shift_slots, K), size,
                                   mode, align_corners, relu);
    // What the backward reads and nothing more, as eager keeps for the
    // same sum: the output when there is a ReLU (its sign is the mask), the
    // scales, and the inputs that have one (the scale's gradient reads
    // them). Every other input is kept as its size and layout, so it may
    // be edited in place before backward or be an inference tensor.
    std::vector<at::Tensor> saved{relu ? out : at::Tensor()};
    for (int64_t k : scale_slots) saved.push_back(inputs[static_cast<size_t>(k)]);
    saved.insert(saved.end(), scales.begin(), scales.end());
    ctx->save_for_backward(saved);
    std::vector<c10::SymInt> sizes;
    c10::List<bool> channels_last;
    for (const at::Tensor& x : inputs) {
      sizes.push_back(x.sym_size(2));
      sizes.push_back(x.sym_size(3));
      channels_last.push_back(output_format(x) == at::MemoryFormat::ChannelsLast);
    }
    ctx->saved_data["sizes"] = std::move(sizes);
    ctx->saved_data["channels_last"] = std::move(channels_last);
    ctx->saved_data["scale_slots"] = c10::List<int64_t>(scale_slots);
    ctx->saved_data["shifts"] = static_cast<int64_t>(shifts.size());
    ctx->saved_data["mode"] = std::string(mode);
    ctx->saved_data["align_corners"] = align_corners;
    ctx->saved_data["relu"] = relu;
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const std::vector<int64_t> slots = ctx->saved_data["scale_slots"].toIntVector();
    const std::vector<c10::SymInt> sizes = ctx->saved_data["sizes"].toSymIntVector();
    const size_t K = sizes.size() / 2;
    const std::vector<at::Tensor> scaled(saved.begin() + 1, saved.begin() + 1 + slots.size());
    const std::vector<at::Tensor> scales(saved.begin() + 1 + slots.size(), saved.end());
    const bool relu = ctx->saved_data["relu"].toBool();
    auto [grad_inputs, grad_scales, grad_shift] = exchange_backward_call(
        grad_outputs[0], relu ? std::optional<at::Tensor>(saved[0]) : std::nullopt, rebuild(scaled, slots, K, false), sizes,
        ctx->saved_data["channels_last"].toBoolList(), rebuild(scales, slots, K), ctx->saved_data["mode"].toStringRef(),
        ctx->saved_data["align_corners"].toBool(), relu);
    // One entry per forward argument, the tensors of each list flattened:
    // inputs..., scales..., shifts..., then the six other arguments.
    variable_list grads(grad_inputs.begin(), grad_inputs.end());
    for (size_t i = 0; i < scales.size(); ++i) grads.push_back(grad_scales[slots[i]].to(scales[i].scalar_type()));
    const int64_t n_shifts = ctx->saved_data["shifts"].toInt();
    for (int64_t i = 0; i < n_shifts; ++i) grads.push_back(grad_shift);
    grads.resize(grads.size() + 6);
    return grads;
  }
};

at::Tensor exchange_autograd(at::TensorList inputs, const OptionalTensors& scales, const OptionalTensors& shifts,
                             c10::SymIntArrayRef size, c10::string_view mode, bool align_corners, bool relu) {
  const Needs needs = needs_of(inputs, scales, shifts);
  // The fused kernels have no jvp: a tangent takes the definition's ATen
  // ops, which carry it (and record the graph when one is wanted too).
  if (needs.tangent)
    return exchange_composite(inputs, scales, shifts, size, std::string_view(mode.data(), mode.size()),
                              align_corners, relu);
  if (!needs.grad) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return exchange_call(inputs, scales, shifts, size, mode, align_corners, relu);
  }
  const GivenRows s = given_rows(scales);
  const GivenRows b = given_rows(shifts);
  return ExchangeFunction::apply(inputs, at::TensorList(s.tensors), at::TensorList(b.tensors), s.slots, b.slots,
                                 size, mode, align_corners, relu)[0];
}

}  // namespace
}  // namespace hrnet_fast

TORCH_LIBRARY_IMPL(hrnet_fast, Autograd, m) {
  m.impl("exchange", &hrnet_fast::exchange_autograd);
}
