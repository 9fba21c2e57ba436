// Autograd of hrnet_fast::exchange and hrnet_fast::exchange_lists, registered
// under the Autograd key for every backend (the torchvision csrc/ops/autograd
// pattern).
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
#include <tuple>
#include <vector>

#include "op_calls.h"

namespace hrnet_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Whether this call needs the autograd Function: a graph to record, or a
// forward-mode tangent on an argument (Function::apply then raises that
// the C++ API has no jvp, rather than the tangent being dropped). When not
// (no_grad, inference, nothing requires grad) the kernels skip
// Function::apply and its context: about 1.5 us of a 5 us call on small
// tensors.
bool needs_autograd(std::initializer_list<at::TensorList> lists) {
  const bool grad_mode = at::GradMode::is_enabled();
  for (const at::TensorList& list : lists)
    for (const at::Tensor& t : list)
      if ((grad_mode && t.requires_grad()) || t._fw_grad(/*level=*/0).defined()) return true;
  return false;
}

// What both Functions keep for the backward: the output (its sign is the
// ReLU mask), the dense scales and the inputs (the scale gradients). Shifts
// are not needed: their gradient is the masked sum.
void save_for_backward(AutogradContext* ctx, const at::Tensor& out, const at::Tensor& dense_scales,
                       at::TensorList inputs, c10::string_view mode, bool align_corners, bool relu) {
  std::vector<at::Tensor> saved{out, dense_scales};
  saved.insert(saved.end(), inputs.begin(), inputs.end());
  ctx->save_for_backward(saved);
  ctx->saved_data["mode"] = std::string(mode);
  ctx->saved_data["align_corners"] = align_corners;
  ctx->saved_data["relu"] = relu;
}

// exchange_backward on what save_for_backward kept: grads of every input,
// and the dense (K, C) scale and shift gradients.
std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> saved_backward(AutogradContext* ctx,
                                                                             const at::Tensor& grad) {
  const variable_list saved = ctx->get_saved_variables();
  const std::vector<at::Tensor> inputs(saved.begin() + 2, saved.end());
  const std::string mode = ctx->saved_data["mode"].toStringRef();
  return exchange_backward_call(grad, saved[0], inputs, saved[1], mode, ctx->saved_data["align_corners"].toBool(),
                                ctx->saved_data["relu"].toBool());
}

class ExchangeFunction : public torch::autograd::Function<ExchangeFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, const at::Tensor& scales,
                               const at::Tensor& shifts, c10::SymIntArrayRef size, c10::string_view mode,
                               bool align_corners, bool relu) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = exchange_call(inputs, scales, shifts, size, mode, align_corners, relu);
    save_for_backward(ctx, out, scales, inputs, mode, align_corners, relu);
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto [grad_inputs, grad_scales, grad_shifts] = saved_backward(ctx, grad_outputs[0]);
    // One entry per forward argument, tensors of the list flattened:
    // inputs..., scales, shifts, then size, mode, align_corners, relu.
    variable_list grads(grad_inputs.begin(), grad_inputs.end());
    grads.push_back(grad_scales);
    grads.push_back(grad_shifts);
    grads.resize(grads.size() + 4);
    return grads;
  }
};

// exchange_lists: rows built below autograd; the gradient rows go back as
// views, one per scale / shift tensor given.
class ExchangeListsFunction : public torch::autograd::Function<ExchangeListsFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, at::TensorList scales,
                               at::TensorList shifts, c10::SymIntArrayRef size, c10::string_view mode,
                               bool align_corners, bool relu) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const at::Tensor dense_scales = affine_rows(inputs, scales, 1.0, "scales");
    at::Tensor out = exchange_call(inputs, dense_scales, affine_rows(inputs, shifts, 0.0, "shifts"), size, mode,
                                   align_corners, relu);
    save_for_backward(ctx, out, dense_scales, inputs, mode, align_corners, relu);
    ctx->saved_data["scale_rows"] = !scales.empty();
    ctx->saved_data["shift_rows"] = !shifts.empty();
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto [grad_inputs, grad_scales, grad_shifts] = saved_backward(ctx, grad_outputs[0]);
    // One entry per flattened argument: inputs..., scales... and shifts...
    // (none for an empty list), then size, mode, align_corners, relu.
    variable_list grads(grad_inputs.begin(), grad_inputs.end());
    if (ctx->saved_data["scale_rows"].toBool()) {
      for (const at::Tensor& row : grad_scales.unbind(0)) grads.push_back(row);
    }
    if (ctx->saved_data["shift_rows"].toBool()) {
      for (const at::Tensor& row : grad_shifts.unbind(0)) grads.push_back(row);
    }
    grads.resize(grads.size() + 4);
    return grads;
  }
};

at::Tensor exchange_autograd(at::TensorList inputs, const at::Tensor& scales, const at::Tensor& shifts,
                             c10::SymIntArrayRef size, c10::string_view mode, bool align_corners, bool relu) {
  if (!needs_autograd({inputs, scales, shifts})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return exchange_call(inputs, scales, shifts, size, mode, align_corners, relu);
  }
  return ExchangeFunction::apply(inputs, scales, shifts, size, mode, align_corners, relu)[0];
}

at::Tensor exchange_lists_autograd(at::TensorList inputs, at::TensorList scales, at::TensorList shifts,
                                   c10::SymIntArrayRef size, c10::string_view mode, bool align_corners, bool relu) {
  if (!needs_autograd({inputs, scales, shifts})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return exchange_lists_forward(inputs, scales, shifts, size, mode, align_corners, relu);
  }
  return ExchangeListsFunction::apply(inputs, scales, shifts, size, mode, align_corners, relu)[0];
}

}  // namespace
}  // namespace hrnet_fast

TORCH_LIBRARY_IMPL(hrnet_fast, Autograd, m) {
  m.impl("exchange", &hrnet_fast::exchange_autograd);
  m.impl("exchange_lists", &hrnet_fast::exchange_lists_autograd);
}
