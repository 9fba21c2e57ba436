// Declarations shared by the op registration (ops.cpp), the argument rules
// (checks.cpp), the autograd kernel and the backend kernels.
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <string_view>
#include <vector>

#include "interp.h"

namespace hrnet_fast {

// The op (schemas in ops.cpp):
//   y = act( sum_k interp(inputs[k] * scales[k] + shifts[k], size) )
// scales and shifts are per input: an empty list is the identity for every
// input, otherwise one entry per input, each None (the identity) or a (C,)
// tensor. No identity rows are ever built: a kernel reads a null row as
// scale 1 / shift 0.
using TensorList = c10::ArrayRef<at::Tensor>;
using OptionalTensors = c10::List<std::optional<at::Tensor>>;

// Parses the schema's mode string; throws ValueError for anything else.
Mode parse_mode(std::string_view mode);

// The op's argument rules, stated once (checks.cpp) and run by every way
// into the op: the CPU and CUDA kernels, the fake kernels (through the
// exchange_check op) and the public wrapper's other backends (the same op).
// ValueError for wrong values, TypeError for wrong dtypes. Sizes are
// SymInts so the rules also hold while tracing with symbolic shapes.
void check_exchange(TensorList inputs, const OptionalTensors& scales, const OptionalTensors& shifts,
                    c10::SymIntArrayRef size, std::string_view mode);
// Conv terms (a_m, w_m, b_m) of the Triton backend's one-pass kernel and of
// the conv lowering: each lands on `size` after a stride-2 3x3 conv.
void check_conv_terms(TensorList inputs, TensorList conv_inputs, TensorList conv_weights,
                      const OptionalTensors& conv_biases, c10::SymIntArrayRef size);
// The backward's arguments (ops.cpp's exchange_backward): inputs[k] may be
// None except where scales[k] is given, input_sizes holds (h_k, w_k) per
// input and channels_last the layout of each input's gradient; out may be
// None unless relu. And the conv terms of the Triton backward, against
// grad_out's frame.
void check_exchange_backward(const at::Tensor& grad_out, const std::optional<at::Tensor>& out,
                             const OptionalTensors& inputs, c10::SymIntArrayRef input_sizes,
                             const c10::List<bool>& channels_last, const OptionalTensors& scales,
                             std::string_view mode, bool relu);
void check_backward_conv_terms(const at::Tensor& grad_out, const std::optional<at::Tensor>& out,
                               TensorList conv_inputs, TensorList conv_weights);
// The inputs' dtype in the backward: out's, or grad_out's when out is not
// given (grad_out is cast to it).
at::ScalarType backward_dtype(const at::Tensor& grad_out, const std::optional<at::Tensor>& out);

// The op as its definition in ATen ops (autograd/exchange_composite.cpp):
// what a call with a forward-mode tangent runs, on every C++ backend.
at::Tensor exchange_composite(TensorList inputs, const OptionalTensors& scales, const OptionalTensors& shifts,
                              c10::SymIntArrayRef size, std::string_view mode, bool align_corners, bool relu);

// Memory format of an output (or gradient) that follows tensor `first`:
// channels_last when `first` is unambiguously channels_last. The same rule
// as hrnet_fast/_library.py's fake kernels, so real and fake strides agree.
at::MemoryFormat output_format(const at::Tensor& first);

// Per-input affine rows as a kernel reads them: a pointer to C contiguous
// values of `dtype` for each given row, nullptr for an absent one (the
// identity). Rows already in `dtype`, contiguous and aligned to `align`
// bytes are read where they are; others are converted once and kept alive
// here.
struct AffineRows {
  std::vector<const void*> ptr;
  std::vector<at::Tensor> keep;
  bool any = false;  // some row is given
};
AffineRows affine_rows(const OptionalTensors& rows, size_t count, at::ScalarType dtype, size_t align = 1);

// The accumulation dtype of the affine rows and of the reductions: float64
// for float64 inputs, else float32.
inline at::ScalarType affine_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace hrnet_fast
