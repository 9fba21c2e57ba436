// The C++ executor of an eval program (hrnet_fast/plan/program.py): one call
// from Python runs a whole HRNet module's exchange. hrnet_fast._C.plan_build
// takes a program encoded by hrnet_fast/plan/native.py (the only Python file
// that calls it) and hrnet_fast._C.plan_run runs it.
//
// Why C++: from Python, the program's twenty-odd calls per stage-4 module
// cost several times their own host time in interpreter work once the
// convolutions have pushed the interpreter out of the caches. The entry is
// METH_FASTCALL (no op schema, no pybind) so that it does as few Python-level
// steps as it can. The calls inside are ordinary ATen and hrnet_fast::exchange
// calls through the dispatcher: profilers, dispatch modes (FLOP counters) and
// device dispatch see them as they would from Python.
//
// It owns the checks that keep the program valid, the same facts as its
// Python Guard (hrnet_fast/plan/guard.py): grad mode off, inference mode as
// it was built, no autocast, no trace, no torch-function mode; the inputs
// have the shapes, dtype, device and layout it was built for; every tensor a
// fold was made from is the one its module holds (identity), unmodified
// (version counter) and where it was (storage); every BN is in eval and no
// module it stands for has a hook (python_state_allows below). When any of
// these does not hold, plan_run returns None and the caller takes its
// general path, which compiles again.
#include <torch/csrc/python_headers.h>

#include <ATen/ATen.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "op_calls.h"
#include "plan/executor.h"

namespace hrnet_fast {
namespace {

// Opcodes; operands follow each in `program` (register, constant and
// integer operands, counts first where they vary). Registers 0..B-1 are the
// module's inputs; every later register is written once and read once,
// and a read releases it, so intermediates live no longer than in Python.
enum Opcode : int64_t {
  kConv = 0,      // dst src weight bias(-1: none) engine relu stride[2] padding[2] dilation[2] groups
  kSplit = 1,     // src k (dst size)*k          -- split_with_sizes along channels
  kRelu = 2,      // reg                         -- in place
  kResample = 3,  // dst src height width mode align_corners
  kExchange = 4,  // k reg*k shift*k(-1: none) height width mode align_corners relu -- the next output
};
constexpr int64_t kConvOperands = 13;

// Conv engines, as hrnet_fast/plan/engines.py runs them.
enum Engine : int64_t { kAten = 0, kGemm = 1, kMkldnn = 2, kCudnn = 3 };
// Interpolation modes of kResample and kExchange.
constexpr const char* kModes[] = {"nearest", "bilinear"};

// hrnet_fast.pointwise.conv1x1, statement for statement: a 1x1 conv as one
// GEMM on the CPU (NCHW: batched over the images; channels_last: pixels as
// rows), at::conv2d elsewhere. The same calls, so the same bits.
at::Tensor conv1x1(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  if (!x.device().is_cpu() || x.dim() != 4 || weight.dim() != 4 || weight.size(2) != 1 || weight.size(3) != 1 ||
      x.size(1) != weight.size(1) || x.numel() == 0)
    return at::conv2d(x, weight, bias);
  const int64_t n = x.size(0), c_in = x.size(1), h = x.size(2), w = x.size(3), c_out = weight.size(0);
  const at::Tensor w2 = weight.view({c_out, c_in});
  if (x.is_contiguous()) {
    const at::Tensor x3 = x.view({n, c_in, h * w});
    const at::Tensor y = bias.has_value() ? at::baddbmm(bias->view({1, c_out, 1}), w2.expand({n, c_out, c_in}), x3)
                                          : at::matmul(w2, x3);
    return y.view({n, c_out, h, w});
  }
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    const at::Tensor rows = x.permute({0, 2, 3, 1}).reshape({n * h * w, c_in});
    const at::Tensor y = bias.has_value() ? at::addmm(*bias, rows, w2.t()) : at::mm(rows, w2.t());
    return y.view({n, h, w, c_out}).permute({0, 3, 1, 2});
  }
  return at::conv2d(x, weight, bias);
}

// oneDNN's convolution (mkldnn::_convolution_pointwise, which ATen registers
// without a C++ header) with no post-op: its fused ReLU maps NaN to 0, so the
// ReLU runs after it (hrnet_fast/plan/engines.py).
at::Tensor mkldnn_conv(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkldnn::_convolution_pointwise", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                         at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t, std::string_view,
                                         c10::List<std::optional<at::Scalar>>, std::optional<std::string_view>)>();
  return op.call(x, weight, bias, padding, stride, dilation, groups, "none", c10::List<std::optional<at::Scalar>>(),
                 std::string_view(""));
}

at::Tensor run_conv(int64_t engine, const at::Tensor& x, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                    at::IntArrayRef dilation, int64_t groups, bool relu) {
  if (engine == kCudnn && relu && bias.has_value()) {
    try {
      return at::cudnn_convolution_relu(x, weight, bias, stride, padding, dilation, groups);
    } catch (const c10::Error&) {
      // No fused cuDNN engine for this call: the plain form below.
    }
  }
  at::Tensor y = engine == kMkldnn ? mkldnn_conv(x, weight, bias, stride, padding, dilation, groups)
                 : engine == kGemm ? conv1x1(x, weight, bias)
                                   : at::conv2d(x, weight, bias, stride, padding, dilation, groups);
  return relu ? y.relu_() : y;
}

class Program {
 public:
  Program(std::vector<at::Tensor> constants, std::vector<int64_t> program, int64_t registers,
          std::vector<at::Tensor> like, std::vector<at::Tensor> sources, std::vector<int64_t> versions,
          std::vector<int64_t> places)
      : constants_(std::move(constants)),
        program_(std::move(program)),
        registers_(registers),
        sources_(std::move(sources)),
        versions_(std::move(versions)),
        places_(std::move(places)) {
    TORCH_CHECK(!like.empty() && registers_ >= static_cast<int64_t>(like.size()) && registers_ <= (1 << 20),
                "plan_build: needs the inputs it is built for, a register for each, and a sane register count");
    TORCH_CHECK(sources_.size() == versions_.size() && sources_.size() == places_.size(),
                "plan_build: one version and one address per guarded tensor");
    // Metadata only: the program keeps no reference to the inputs themselves.
    for (const at::Tensor& x : like) {
      shapes_.push_back(x.sizes().vec());
      formats_.push_back(format_of(x));
    }
    dtype_ = like[0].scalar_type();
    device_ = like[0].device();
    inference_ = c10::InferenceMode::is_enabled();
    validate();
  }

  // Whether the program may run on `xs` now (see the file's comment).
  bool fits(const std::vector<at::Tensor>& xs) const {
    // A torch-function mode would see the Python executor's calls, not these.
    if (at::GradMode::is_enabled() || c10::InferenceMode::is_enabled() != inference_ ||
        at::autocast::is_autocast_enabled(device_.type()) || torch::jit::tracer::isTracing() ||
        at::impl::torch_function_mode_enabled())
      return false;
    if (xs.size() != shapes_.size()) return false;
    for (size_t k = 0; k < xs.size(); ++k) {
      const at::Tensor& x = xs[k];
      if (!x.defined() || x.scalar_type() != dtype_ || x.device() != device_ || !x.sizes().equals(shapes_[k]) ||
          format_of(x) != formats_[k])
        return false;
    }
    for (size_t k = 0; k < sources_.size(); ++k)
      if (static_cast<int64_t>(sources_[k]._version()) != versions_[k] ||
          reinterpret_cast<int64_t>(sources_[k].data_ptr()) != places_[k])
        return false;
    return true;
  }

  // The program's outputs for inputs that fit.
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& xs) const {
    RECORD_FUNCTION("hrnet_fast::plan_run", std::vector<c10::IValue>());
    std::vector<at::Tensor> regs(registers_);
    const size_t inputs = xs.size();
    for (size_t k = 0; k < inputs; ++k) regs[k] = xs[k];
    // Reads release intermediates (registers past the inputs).
    auto take = [&](int64_t r) -> at::Tensor {
      if (static_cast<size_t>(r) < inputs) return regs[r];
      return std::move(regs[r]);
    };
    auto constant = [&](int64_t c) -> std::optional<at::Tensor> {
      if (c < 0) return std::nullopt;
      return constants_[c];
    };
    std::vector<at::Tensor> outs;
    const int64_t* p = program_.data();
    const int64_t* end = p + program_.size();
    while (p < end) {
      switch (*p++) {
        case kConv: {
          const at::Tensor x = take(p[1]);
          regs[p[0]] = run_conv(p[4], x, constants_[p[2]], constant(p[3]), {p[6], p[7]}, {p[8], p[9]},
                                {p[10], p[11]}, p[12], p[5] != 0);
          p += kConvOperands;
          break;
        }
        case kSplit: {
          const at::Tensor y = take(p[0]);
          const int64_t k = p[1];
          std::vector<int64_t> sizes(k);
          for (int64_t m = 0; m < k; ++m) sizes[m] = p[2 + 2 * m + 1];
          std::vector<at::Tensor> parts = y.split_with_sizes(sizes, 1);
          for (int64_t m = 0; m < k; ++m) regs[p[2 + 2 * m]] = std::move(parts[m]);
          p += 2 + 2 * k;
          break;
        }
        case kRelu: {
          regs[p[0]].relu_();
          p += 1;
          break;
        }
        case kResample: {
          const at::Tensor x = take(p[1]);
          const std::vector<int64_t> size{p[2], p[3]};
          regs[p[0]] = p[4] == 0 ? at::upsample_nearest2d(x, size, std::nullopt, std::nullopt)
                                 : at::upsample_bilinear2d(x, size, p[5] != 0, std::nullopt, std::nullopt);
          p += 6;
          break;
        }
        case kExchange: {
          const int64_t k = p[0];
          std::vector<at::Tensor> row;
          row.reserve(k);
          for (int64_t m = 0; m < k; ++m) row.push_back(take(p[1 + m]));
          OptionalTensors shifts;
          for (int64_t m = 0; m < k; ++m)
            if (p[1 + k + m] >= 0) {
              shifts.reserve(k);
              for (int64_t q = 0; q < k; ++q) shifts.push_back(constant(p[1 + k + q]));
              break;
            }
          const int64_t* tail = p + 1 + 2 * k;
          const c10::SymInt size[2] = {c10::SymInt(tail[0]), c10::SymInt(tail[1])};
          outs.push_back(exchange_call(row, no_rows_, shifts, c10::SymIntArrayRef(size, 2), kModes[tail[2]],
                                       tail[3] != 0, tail[4] != 0));
          p = tail + 5;
          break;
        }
        default:
          TORCH_INTERNAL_ASSERT(false, "plan: unknown opcode");
      }
    }
    return outs;
  }

 private:
  // 0: NCHW-contiguous, 1: channels_last, 2: anything else. The gemm
  // engine and the prepacked oneDNN weights depend on it.
  static int format_of(const at::Tensor& x) {
    if (x.is_contiguous()) return 0;
    return x.is_contiguous(at::MemoryFormat::ChannelsLast) ? 1 : 2;
  }

  // The program is encoded in Python: check once that every operand is in
  // range, so a bad one fails here and never reads out of bounds in run().
  void validate() const {
    constexpr int64_t kMaxParts = 1 << 16;  // far above any module; keeps the arithmetic below in range
    const int64_t nreg = registers_, nconst = static_cast<int64_t>(constants_.size());
    const size_t size = program_.size();
    auto reg = [&](int64_t r) { TORCH_CHECK(r >= 0 && r < nreg, "plan: register ", r, " out of range"); };
    auto cst = [&](int64_t c, bool optional) {
      TORCH_CHECK((optional && c == -1) || (c >= 0 && c < nconst), "plan: constant ", c, " out of range");
    };
    auto in = [&](int64_t v, int64_t lo, int64_t hi, const char* what) {
      TORCH_CHECK(v >= lo && v <= hi, "plan: ", what, " ", v, " out of range");
    };
    size_t i = 0;
    auto need = [&](size_t n) { TORCH_CHECK(i + n <= size, "plan: the program ends inside an instruction"); };
    while (i < size) {
      const int64_t op = program_[i++];
      const int64_t* p = program_.data() + i;
      switch (op) {
        case kConv:
          need(kConvOperands);
          reg(p[0]);
          reg(p[1]);
          cst(p[2], false);
          cst(p[3], true);
          in(p[4], kAten, kCudnn, "engine");
          i += kConvOperands;
          break;
        case kSplit: {
          need(2);
          reg(p[0]);
          const int64_t k = p[1];
          in(k, 1, kMaxParts, "split of");
          need(2 + 2 * k);
          for (int64_t m = 0; m < k; ++m) reg(p[2 + 2 * m]);
          i += 2 + 2 * k;
          break;
        }
        case kRelu: need(1); reg(p[0]); i += 1; break;
        case kResample:
          need(6);
          reg(p[0]);
          reg(p[1]);
          in(p[4], 0, 1, "mode");
          i += 6;
          break;
        case kExchange: {
          need(1);
          const int64_t k = p[0];
          in(k, 1, kMaxParts, "row of");
          need(1 + 2 * k + 5);
          for (int64_t m = 0; m < k; ++m) {
            reg(p[1 + m]);
            cst(p[1 + k + m], true);
          }
          in(p[1 + 2 * k + 2], 0, 1, "mode");
          i += 1 + 2 * k + 5;
          break;
        }
        default: TORCH_CHECK(false, "plan: unknown opcode ", op);
      }
    }
  }

  std::vector<at::Tensor> constants_;
  std::vector<int64_t> program_;
  int64_t registers_;
  std::vector<std::vector<int64_t>> shapes_;
  std::vector<int> formats_;
  at::ScalarType dtype_;
  at::Device device_{at::kCPU};
  bool inference_ = false;
  std::vector<at::Tensor> sources_;
  std::vector<int64_t> versions_;
  std::vector<int64_t> places_;
  const OptionalTensors no_rows_;
};

// The Python state a program rests on that the dispatcher cannot see: every
// guarded tensor still the one its module holds (a parameter swapped by
// torch.func.functional_call or setattr is another object), no BN of the
// program in training mode, and no forward or backward hook on any module
// it stands for (nor on the calling module, nor global ones). The objects
// come with each call, in the state tuple the caller keeps
// (hrnet_fast/plan/native.py), so that the garbage collector sees every
// reference: a hook closing over the model would otherwise make a cycle
// through this program that is never freed. Every hook registration creates
// a torch.utils.hooks.RemovableHandle, whose class counts them: while the
// count is what it was when the hooks were last seen absent, none was
// added, and the dicts need not be read.
//
// 1: the program may run; 0: it may not; -1: a Python error is set.
int python_state_allows(PyObject* owned, PyObject* bns, PyObject* hook_dicts, PyObject* handle_class,
                        long long& handles) {
  static PyObject* training = PyUnicode_InternFromString("training");
  static PyObject* next_id = PyUnicode_InternFromString("next_id");
  if (training == nullptr || next_id == nullptr) return -1;
  if (!PyTuple_Check(owned) || !PyTuple_Check(bns) || !PyTuple_Check(hook_dicts)) {
    PyErr_SetString(PyExc_TypeError, "plan_run: the state's tensors, modules and hook dicts must be tuples");
    return -1;
  }
  // (dict, name, tensor) triples, flattened.
  const Py_ssize_t n_owned = PyTuple_GET_SIZE(owned);
  for (Py_ssize_t k = 0; k + 2 < n_owned; k += 3) {
    PyObject* d = PyTuple_GET_ITEM(owned, k);
    if (!PyDict_Check(d)) {
      PyErr_SetString(PyExc_TypeError, "plan_run: guarded tensors must be (dict, name, tensor)");
      return -1;
    }
    PyObject* now = PyDict_GetItemWithError(d, PyTuple_GET_ITEM(owned, k + 1));
    if (now == nullptr && PyErr_Occurred()) return -1;
    if (now != PyTuple_GET_ITEM(owned, k + 2)) return 0;
  }
  for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(bns); ++k) {
    PyObject* flag = PyObject_GetAttr(PyTuple_GET_ITEM(bns, k), training);
    if (flag == nullptr) return -1;
    const int on = PyObject_IsTrue(flag);
    Py_DECREF(flag);
    if (on != 0) return on < 0 ? -1 : 0;
  }
  PyObject* count_obj = PyObject_GetAttr(handle_class, next_id);
  if (count_obj == nullptr) return -1;
  const long long count = PyLong_AsLongLong(count_obj);
  Py_DECREF(count_obj);
  if (count == -1 && PyErr_Occurred()) return -1;
  if (count != handles) {
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(hook_dicts); ++k) {
      PyObject* d = PyTuple_GET_ITEM(hook_dicts, k);
      if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "plan_run: hook dicts must be dicts");
        return -1;
      }
      if (PyDict_GET_SIZE(d) != 0) return 0;
    }
    handles = count;
  }
  return 1;
}

constexpr const char* kCapsule = "hrnet_fast.Program";

struct Built {
  Program program;
  long long handles = -1;  // RemovableHandle.next_id when the hooks were last seen absent
};

void delete_built(PyObject* capsule) {
  delete static_cast<Built*>(PyCapsule_GetPointer(capsule, kCapsule));
}

// Items of a list or tuple: tensors (false if one is not; with `exact`,
// also for a Tensor subclass, whose __torch_function__ the Python executor
// would honour), ints.
bool tensors_of(PyObject* seq, std::vector<at::Tensor>& out, bool exact = false) {
  PyObject* fast = PySequence_Fast(seq, "expected a list of tensors");
  if (fast == nullptr) throw python_error();
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  PyObject** items = PySequence_Fast_ITEMS(fast);
  out.reserve(n);
  bool ok = true;
  for (Py_ssize_t k = 0; k < n && ok; ++k) {
    ok = exact ? THPVariable_CheckExact(items[k]) : THPVariable_Check(items[k]);
    if (ok) out.push_back(THPVariable_Unpack(items[k]));
  }
  Py_DECREF(fast);
  return ok;
}

std::vector<at::Tensor> tensor_list(PyObject* seq, const char* what) {
  std::vector<at::Tensor> out;
  TORCH_CHECK_TYPE(tensors_of(seq, out), "plan_build: ", what, " must be tensors");
  return out;
}

std::vector<int64_t> int_list(PyObject* seq) {
  PyObject* fast = PySequence_Fast(seq, "expected a list of ints");
  if (fast == nullptr) throw python_error();
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  std::vector<int64_t> out(n);
  for (Py_ssize_t k = 0; k < n; ++k) {
    out[k] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast, k));
    if (out[k] == -1 && PyErr_Occurred()) {
      Py_DECREF(fast);
      throw python_error();
    }
  }
  Py_DECREF(fast);
  return out;
}

// plan_build(constants, program, registers, like, sources, versions, places)
//   -> capsule
PyObject* plan_build(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 7, "plan_build: takes 7 arguments, got ", nargs);
  const int64_t registers = PyLong_AsLongLong(args[2]);
  if (registers == -1 && PyErr_Occurred()) throw python_error();
  auto built = std::unique_ptr<Built>(new Built{Program(tensor_list(args[0], "constants"), int_list(args[1]),
                                                        registers, tensor_list(args[3], "like"),
                                                        tensor_list(args[4], "sources"), int_list(args[5]),
                                                        int_list(args[6]))});
  PyObject* capsule = PyCapsule_New(built.get(), kCapsule, delete_built);
  if (capsule == nullptr) throw python_error();
  built.release();
  return capsule;
  END_HANDLE_TH_ERRORS
}

// plan_run(state, xs) -> list of the program's outputs, or None when it
// does not fit (then nothing ran). state: (program, owned (dict, name,
// tensor) triples flattened, BN modules, hook dicts, RemovableHandle); see
// python_state_allows.
PyObject* plan_run(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 2, "plan_run: takes 2 arguments, got ", nargs);
  PyObject* state = args[0];
  TORCH_CHECK_TYPE(PyTuple_Check(state) && PyTuple_GET_SIZE(state) == 5,
                   "plan_run: state must be (program, owned tensors, modules, hook dicts, RemovableHandle)");
  auto* built = static_cast<Built*>(PyCapsule_GetPointer(PyTuple_GET_ITEM(state, 0), kCapsule));
  if (built == nullptr) throw python_error();
  // Anything but a list or tuple of tensors is for the general path to
  // refuse, with its own message.
  std::vector<at::Tensor> xs;
  if (!(PyList_Check(args[1]) || PyTuple_Check(args[1])) || !tensors_of(args[1], xs, true) ||
      !built->program.fits(xs))
    Py_RETURN_NONE;
  const int allowed = python_state_allows(PyTuple_GET_ITEM(state, 1), PyTuple_GET_ITEM(state, 2),
                                          PyTuple_GET_ITEM(state, 3), PyTuple_GET_ITEM(state, 4), built->handles);
  if (allowed < 0) throw python_error();
  if (allowed == 0) Py_RETURN_NONE;
  std::vector<at::Tensor> outs;
  {
    // As torch's own bindings do: other Python threads run meanwhile.
    pybind11::gil_scoped_release no_gil;
    outs = built->program.run(xs);
  }
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(outs.size()));
  if (list == nullptr) throw python_error();
  for (size_t k = 0; k < outs.size(); ++k) {
    PyObject* t = THPVariable_Wrap(std::move(outs[k]));
    if (t == nullptr) {
      Py_DECREF(list);
      throw python_error();
    }
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(k), t);
  }
  return list;
  END_HANDLE_TH_ERRORS
}

}  // namespace

PyMethodDef plan_methods[] = {
    {"plan_build", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(&plan_build)), METH_FASTCALL,
     "plan_build(constants, program, registers, like, sources, versions, places): an encoded eval program "
     "(hrnet_fast.plan.native)"},
    {"plan_run", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(&plan_run)), METH_FASTCALL,
     "plan_run((program, owned, bns, hook_dicts, RemovableHandle), xs): the program's outputs, or None when it "
     "does not fit xs or the state it was built for"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace hrnet_fast
