// Autograd of hrnet_fast::exchange, registered under the Autograd key for
// every backend (the torchvision csrc/ops/autograd pattern).
//
// Why C++ and not torch.library.register_autograd: the Python layer cost
// about 6 us per forward call under no_grad and 150-200 us per backward call
// (the Python backward wrapper and the garbage collection its objects
// trigger), more than the kernels themselves at HRNet's small branches.
// The backward calls exchange_backward through the dispatcher, so fake
// tensors, functionalisation and torch.compile see an ordinary op.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "exchange.h"

namespace hrnet_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor exchange_call(at::TensorList inputs, const at::Tensor& scales, const at::Tensor& shifts,
                         c10::SymIntArrayRef size, c10::string_view mode, bool align_corners, bool relu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("hrnet_fast::exchange", "")
                       .typed<at::Tensor(at::TensorList, const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef,
                                         c10::string_view, bool, bool)>();
  return op.call(inputs, scales, shifts, size, mode, align_corners, relu);
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> exchange_backward_call(
    const at::Tensor& grad_out, const at::Tensor& out, at::TensorList inputs, const at::Tensor& scales,
    c10::string_view mode, bool align_corners, bool relu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("hrnet_fast::exchange_backward", "")
                       .typed<std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, at::TensorList, const at::Tensor&,
                           c10::string_view, bool, bool)>();
  return op.call(grad_out, out, inputs, scales, mode, align_corners, relu);
}

class ExchangeFunction : public torch::autograd::Function<ExchangeFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, const at::Tensor& scales,
                               const at::Tensor& shifts, c10::SymIntArrayRef size, c10::string_view mode,
                               bool align_corners, bool relu) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = exchange_call(inputs, scales, shifts, size, mode, align_corners, relu);
    // The output's sign is the ReLU mask; inputs and scales give the scale
    // gradients. Shifts are not needed: their gradient is the masked sum.
    std::vector<at::Tensor> saved{out, scales};
    saved.insert(saved.end(), inputs.begin(), inputs.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["mode"] = std::string(mode);
    ctx->saved_data["align_corners"] = align_corners;
    ctx->saved_data["relu"] = relu;
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& out = saved[0];
    const at::Tensor& scales = saved[1];
    const std::vector<at::Tensor> inputs(saved.begin() + 2, saved.end());
    const std::string mode = ctx->saved_data["mode"].toStringRef();
    auto [grad_inputs, grad_scales, grad_shifts] =
        exchange_backward_call(grad_outputs[0], out, inputs, scales, mode, ctx->saved_data["align_corners"].toBool(),
                               ctx->saved_data["relu"].toBool());
    // One entry per forward argument, tensors of the list flattened:
    // inputs..., scales, shifts, then size, mode, align_corners, relu.
    variable_list grads(grad_inputs.begin(), grad_inputs.end());
    grads.push_back(grad_scales);
    grads.push_back(grad_shifts);
    grads.resize(grads.size() + 4);
    return grads;
  }
};

at::Tensor exchange_autograd(at::TensorList inputs, const at::Tensor& scales, const at::Tensor& shifts,
                             c10::SymIntArrayRef size, c10::string_view mode, bool align_corners, bool relu) {
  return ExchangeFunction::apply(inputs, scales, shifts, size, mode, align_corners, relu)[0];
}

}  // namespace
}  // namespace hrnet_fast

TORCH_LIBRARY_IMPL(hrnet_fast, Autograd, m) {
  m.impl("exchange", &hrnet_fast::exchange_autograd);
}
