// Calls of the registered ops through the dispatcher, for code above the
// backends (the autograd kernels, the list-taking composite): a call reaches
// whatever kernel the current dispatch keys select, so fake tensors,
// functionalisation and torch.compile see ordinary op calls.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <tuple>
#include <vector>

#include "exchange.h"

namespace hrnet_fast {

inline at::Tensor exchange_call(TensorList inputs, const at::Tensor& scales, const at::Tensor& shifts,
                                c10::SymIntArrayRef size, c10::string_view mode, bool align_corners, bool relu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("hrnet_fast::exchange", "")
                       .typed<at::Tensor(TensorList, const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef,
                                         c10::string_view, bool, bool)>();
  return op.call(inputs, scales, shifts, size, mode, align_corners, relu);
}

inline std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> exchange_backward_call(
    const at::Tensor& grad_out, const at::Tensor& out, TensorList inputs, const at::Tensor& scales,
    c10::string_view mode, bool align_corners, bool relu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("hrnet_fast::exchange_backward", "")
                       .typed<std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, TensorList, const at::Tensor&, c10::string_view,
                           bool, bool)>();
  return op.call(grad_out, out, inputs, scales, mode, align_corners, relu);
}

// exchange_lists' dense (K, C) rows from its per-input list: `rows` empty
// means the identity (every entry `fill`); otherwise one (C,) tensor per
// input, on the inputs' device, converted to the affine dtype (float64 for
// float64 inputs, else float32).
at::Tensor affine_rows(TensorList inputs, TensorList rows, double fill, const char* name);

// exchange_lists below autograd: `exchange` on the dense rows, or for plain
// CPU tensors the CPU kernel on the rows in place (exchange_cpu_lists).
at::Tensor exchange_lists_forward(TensorList inputs, TensorList scales, TensorList shifts, c10::SymIntArrayRef size,
                                  c10::string_view mode, bool align_corners, bool relu);

}  // namespace hrnet_fast
