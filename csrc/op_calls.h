// Calls of the registered ops through the dispatcher, for the autograd
// kernel: a call reaches whatever kernel the current dispatch keys select,
// so fake tensors, functionalisation and torch.compile see ordinary op calls.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <tuple>
#include <vector>

#include "exchange.h"

namespace hrnet_fast {

inline at::Tensor exchange_call(TensorList inputs, const OptionalTensors& scales, const OptionalTensors& shifts,
                                c10::SymIntArrayRef size, c10::string_view mode, bool align_corners, bool relu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("hrnet_fast::exchange", "")
                       .typed<at::Tensor(TensorList, const OptionalTensors&, const OptionalTensors&,
                                         c10::SymIntArrayRef, c10::string_view, bool, bool)>();
  return op.call(inputs, scales, shifts, size, mode, align_corners, relu);
}

inline std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> exchange_backward_call(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& out, const OptionalTensors& inputs,
    c10::SymIntArrayRef input_sizes, const c10::List<bool>& channels_last, const OptionalTensors& scales,
    c10::string_view mode, bool align_corners, bool relu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("hrnet_fast::exchange_backward", "")
                       .typed<std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor>(
                           const at::Tensor&, const std::optional<at::Tensor>&, const OptionalTensors&,
                           c10::SymIntArrayRef, const c10::List<bool>&, const OptionalTensors&, c10::string_view, bool,
                           bool)>();
  return op.call(grad_out, out, inputs, input_sizes, channels_last, scales, mode, align_corners, relu);
}

}  // namespace hrnet_fast
