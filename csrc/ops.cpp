// Op schemas of the hrnet_fast library and the Python module hrnet_fast._C.
// Backends register kernels for these schemas under their dispatch keys
// (cpu/exchange_cpu.cpp, cuda/exchange_cuda.cpp; exchange_lists.cpp once for
// every backend), autograd under the
// Autograd key (autograd/exchange_autograd.cpp); fake kernels are registered
// from Python (hrnet_fast/ops.py).
#include <Python.h>
#include <torch/library.h>

#include "exchange.h"

namespace hrnet_fast {

Mode parse_mode(std::string_view mode) {
  if (mode == "nearest") return Mode::Nearest;
  if (mode == "bilinear") return Mode::Bilinear;
  TORCH_CHECK_VALUE(false, "hrnet_fast.exchange: mode must be 'nearest' or 'bilinear', got '", mode, "'");
}

void check_exchange_inputs(TensorList inputs, c10::IntArrayRef size) {
  TORCH_CHECK_VALUE(!inputs.empty(), "hrnet_fast.exchange: needs at least one input");
  TORCH_CHECK_VALUE(size.size() == 2 && size[0] > 0 && size[1] > 0,
                    "hrnet_fast.exchange: size must be two positive ints, got ", size);
  const auto& x0 = inputs[0];
  for (size_t k = 0; k < inputs.size(); ++k) {
    const auto& x = inputs[k];
    TORCH_CHECK_VALUE(x.dim() == 4, "hrnet_fast.exchange: inputs[", k, "] must be 4-D (N, C, H, W), got ",
                      x.dim(), "-D");
    TORCH_CHECK_VALUE(x.size(0) == x0.size(0) && x.size(1) == x0.size(1),
                      "hrnet_fast.exchange: inputs[", k, "] has N, C = ", x.size(0), ", ", x.size(1),
                      " but inputs[0] has ", x0.size(0), ", ", x0.size(1));
    TORCH_CHECK_VALUE(x.scalar_type() == x0.scalar_type(), "hrnet_fast.exchange: inputs[", k, "] is ",
                      x.scalar_type(), " but inputs[0] is ", x0.scalar_type());
    TORCH_CHECK_VALUE(x.device() == x0.device(), "hrnet_fast.exchange: inputs[", k, "] is on ", x.device(),
                      " but inputs[0] is on ", x0.device());
    TORCH_CHECK_VALUE(x.size(2) >= 1 && x.size(3) >= 1 && x.size(2) <= size[0] && x.size(3) <= size[1],
                      "hrnet_fast.exchange: inputs[", k, "] is ", x.size(2), "x", x.size(3),
                      ", which does not fit in the output size ", size[0], "x", size[1]);
  }
}

void check_exchange_args(TensorList inputs, const at::Tensor& scales, const at::Tensor& shifts,
                         c10::IntArrayRef size) {
  check_exchange_inputs(inputs, size);
  const auto& x0 = inputs[0];
  const auto K = static_cast<int64_t>(inputs.size());
  for (const auto* t : {&scales, &shifts}) {
    TORCH_CHECK_VALUE(t->dim() == 2 && t->size(0) == K && t->size(1) == x0.size(1),
                      "hrnet_fast.exchange: scales and shifts must be (", K, ", ", x0.size(1), "), got ",
                      t->sizes());
    TORCH_CHECK_VALUE(t->device() == x0.device(), "hrnet_fast.exchange: scales/shifts are on ", t->device(),
                      " but the inputs are on ", x0.device());
  }
}

at::MemoryFormat output_format(const at::Tensor& first) {
  // The same rule as hrnet_fast/ops.py's fake kernels, so real and fake
  // outputs agree on strides: channels_last only when unambiguous.
  return first.is_contiguous(at::MemoryFormat::ChannelsLast) && !first.is_contiguous()
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

}  // namespace hrnet_fast

TORCH_LIBRARY(hrnet_fast, m) {
  m.def(
      "exchange(Tensor[] inputs, Tensor scales, Tensor shifts, SymInt[2] size, str mode, bool align_corners, "
      "bool relu) -> Tensor");
  // The same with one (C,) scale and shift tensor per input, or empty lists
  // for the identity (exchange_lists.cpp): the Python wrapper's fast path.
  m.def(
      "exchange_lists(Tensor[] inputs, Tensor[] scales, Tensor[] shifts, SymInt[2] size, str mode, "
      "bool align_corners, bool relu) -> Tensor");
  // Gradients of every input, of scales and of shifts. `out` is the saved
  // forward output: its sign is the ReLU mask.
  m.def(
      "exchange_backward(Tensor grad_out, Tensor out, Tensor[] inputs, Tensor scales, str mode, "
      "bool align_corners, bool relu) -> (Tensor[], Tensor, Tensor)");
}

#ifndef HRNET_FAST_WITH_CUDA
#define HRNET_FAST_WITH_CUDA 0
#endif

// A plain module with a few constants: importing it registers the ops above.
static PyModuleDef hrnet_fast_module = {PyModuleDef_HEAD_INIT, "_C", "hrnet_fast C++/CUDA kernels", -1, nullptr};

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
