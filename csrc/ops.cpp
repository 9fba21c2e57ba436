// Op schemas of the hrnet_fast library and the Python module hrnet_fast._C.
//
// One contract per backend family. The C++ family (this extension) is
//   exchange           the forward, per-input optional affines
//   exchange_backward  its gradients; not differentiable again (raises)
//   exchange_check     the argument rules (checks.cpp) as an op, so the fake
//                      kernels and the Python backends run the same rules
//   exchange_backward_check  the same for the backward's arguments
// with kernels under CPU / CUDA (cpu/, cuda/), autograd under Autograd
// (autograd/exchange_autograd.cpp) and fakes from Python
// (hrnet_fast/_library.py). The Triton family registers its own pair from
// Python with the same argument conventions.
#include <Python.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include "exchange.h"
#include "plan/executor.h"

namespace hrnet_fast {
namespace {

// Reads only metadata, so it runs unchanged on real, meta and fake tensors
// and under symbolic shapes, and (registered CompositeImplicitAutograd)
// dispatches nothing below it.
void exchange_check(at::TensorList inputs, const OptionalTensors& scales, const OptionalTensors& shifts,
                    at::TensorList conv_inputs, at::TensorList conv_weights, const OptionalTensors& conv_biases,
                    c10::SymIntArrayRef size, c10::string_view mode) {
  check_exchange(inputs, scales, shifts, size, std::string_view(mode.data(), mode.size()));
  if (!conv_inputs.empty() || !conv_weights.empty() || !conv_biases.empty())
    check_conv_terms(inputs, conv_inputs, conv_weights, conv_biases, size);
}

void exchange_backward_check(const at::Tensor& grad_out, const std::optional<at::Tensor>& out,
                             const OptionalTensors& inputs, c10::SymIntArrayRef input_sizes,
                             const c10::List<bool>& channels_last, const OptionalTensors& scales,
                             at::TensorList conv_inputs, at::TensorList conv_weights, c10::string_view mode,
                             bool relu) {
  check_exchange_backward(grad_out, out, inputs, input_sizes, channels_last, scales,
                          std::string_view(mode.data(), mode.size()), relu);
  if (!conv_inputs.empty() || !conv_weights.empty()) check_backward_conv_terms(grad_out, out, conv_inputs, conv_weights);
}

}  // namespace
}  // namespace hrnet_fast

TORCH_LIBRARY(hrnet_fast, m) {
  // scales / shifts: [] for the identity, else one entry per input, each
  // None (the identity) or a (C,) tensor.
  m.def(
      "exchange(Tensor[] inputs, Tensor?[] scales, Tensor?[] shifts, SymInt[2] size, str mode, bool align_corners, "
      "bool relu) -> Tensor");
  // Gradients of every input, the (K, C) gradient of the scales (rows of
  // absent scales are zero) and the (C,) gradient shared by every shift, in
  // the accumulation dtype (float64 for float64 inputs, else float32).
  // It reads only what autograd keeps: `out`, the forward's output (its
  // sign is the ReLU mask; None when relu is false), and inputs[k] where
  // scales[k] is given (its gradient reads it; the other entries may be
  // None). input_sizes holds (h_k, w_k) for every input, channels_last the
  // memory format of each input's gradient (the input's own).
  m.def(
      "exchange_backward(Tensor grad_out, Tensor? out, Tensor?[] inputs, SymInt[] input_sizes, "
      "bool[] channels_last, Tensor?[] scales, str mode, bool align_corners, bool relu) -> (Tensor[], Tensor, Tensor)");
  m.def(
      "exchange_check(Tensor[] inputs, Tensor?[] scales, Tensor?[] shifts, Tensor[] conv_inputs, "
      "Tensor[] conv_weights, Tensor?[] conv_biases, SymInt[2] size, str mode) -> ()");
  m.def(
      "exchange_backward_check(Tensor grad_out, Tensor? out, Tensor?[] inputs, SymInt[] input_sizes, "
      "bool[] channels_last, Tensor?[] scales, Tensor[] conv_inputs, Tensor[] conv_weights, str mode, bool relu) "
      "-> ()");
}

TORCH_LIBRARY_IMPL(hrnet_fast, CompositeImplicitAutograd, m) {
  m.impl("exchange_check", &hrnet_fast::exchange_check);
  m.impl("exchange_backward_check", &hrnet_fast::exchange_backward_check);
}

// Double backward is not implemented: a graph built with create_graph=True
// raises when differentiated through the backward, instead of silently
// treating it as a constant.
TORCH_LIBRARY_IMPL(hrnet_fast, Autograd, m) {
  m.impl("exchange_backward", torch::autograd::autogradNotImplementedFallback());
}

#ifndef HRNET_FAST_WITH_CUDA
#define HRNET_FAST_WITH_CUDA 0
#endif

// A plain module with a few constants and the eval-program executor's two
// functions (plan/executor.cpp): importing it registers the ops above.
static PyModuleDef hrnet_fast_module = {PyModuleDef_HEAD_INIT, "_C", "hrnet_fast C++/CUDA kernels", -1,
                                        hrnet_fast::plan_methods};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&hrnet_fast_module);
  if (m == nullptr) return nullptr;
  if (PyModule_AddIntConstant(m, "cuda_compiled", HRNET_FAST_WITH_CUDA) < 0 ||
      PyModule_AddStringConstant(m, "cuda_arch_list", HRNET_FAST_CUDA_ARCHS) < 0 ||
      PyModule_AddStringConstant(m, "torch_version", HRNET_FAST_TORCH_VERSION) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
