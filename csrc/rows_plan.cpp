// A converted module's eval exchange as one call from Python: RowsPlan and
// the functions hrnet_fast._C.rows_plan / hrnet_fast._C.run_rows.
//
// In eval under no_grad every summand of a module's exchange is a fixed
// chain of library calls on folded weights (hrnet_fast/inference_rows.py);
// run from Python, the chain's twenty-odd calls cost several times their
// own host time in interpreter work. A RowsPlan holds that chain as a small
// program over registers (built once by hrnet_fast/native_rows.py, after a
// first call of the same inputs has run every check) and runs it here.
//
// It is entered straight from Python (METH_FASTCALL, no op schema, no
// pybind): after the convolutions have pushed the interpreter out of the
// caches, every Python-level step of a call costs microseconds, so the
// entry does as few as it can. The calls inside are ordinary ATen and
// hrnet_fast::exchange calls through the dispatcher: profilers, dispatch
// modes (FLOP counters) and device dispatch see them as they would from
// Python.
//
// It owns the checks that keep it valid: grad mode off, inference mode as it
// was built, no autocast, no trace, no torch-function mode; the inputs have the shapes, dtype,
// device and layout it was built for; every tensor a fold was made from is
// unmodified (its version counter) and where it was (its storage); and the
// Python state (python_state_allows below): every BN in eval, no hooks. When they do
// not hold, run_rows returns None and the caller takes its general path,
// which rebuilds the plan.
#include <torch/csrc/python_headers.h>

#include <ATen/ATen.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "op_calls.h"
#include "rows_plan.h"

namespace hrnet_fast {
namespace {

// Opcodes; operands follow each in `program` (register, constant and
// integer operands, counts first where they vary). Registers 0..B-1 are the
// module's inputs; every later register is written once and read once,
// and a read releases it, so intermediates live no longer than in Python.
enum Opcode : int64_t {
  kConv = 0,      // dst src weight bias(-1: none) stride[2] padding[2] dilation[2] groups
  kConv1x1 = 1,   // dst src weight bias(-1: none)  -- hrnet_fast.pointwise.conv1x1
  kSplit = 2,     // src k (dst size)*k             -- split_with_sizes along channels
  kRelu = 3,      // reg                            -- in place
  kExchange = 4,  // k reg*k height width           -- one output row
};

// hrnet_fast.pointwise.conv1x1, statement for statement: a 1x1 conv as one
// GEMM on the CPU (NCHW: batched over the images; channels_last: pixels as
// rows), F.conv2d elsewhere. The same calls, so the same bits.
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

class RowsPlan {
 public:
  RowsPlan(std::vector<at::Tensor> constants, std::vector<int64_t> program, int64_t registers,
           std::vector<at::Tensor> like, std::vector<at::Tensor> sources, std::vector<int64_t> versions,
           std::vector<at::Tensor> placed, std::vector<int64_t> places, std::string mode, bool align_corners,
           bool relu)
      : constants_(std::move(constants)),
        program_(std::move(program)),
        registers_(registers),
        sources_(std::move(sources)),
        versions_(std::move(versions)),
        placed_(std::move(placed)),
        places_(std::move(places)),
        mode_(std::move(mode)),
        align_corners_(align_corners),
        relu_(relu) {
    TORCH_CHECK(!like.empty() && registers_ >= static_cast<int64_t>(like.size()) && registers_ <= (1 << 20),
                "RowsPlan: needs the inputs it is built for, a register for each, and a sane register count");
    TORCH_CHECK(sources_.size() == versions_.size() && placed_.size() == places_.size(),
                "RowsPlan: one version per source tensor and one address per placed tensor");
    // Metadata only: the plan keeps no reference to the inputs themselves.
    for (const at::Tensor& x : like) {
      shapes_.push_back(x.sizes().vec());
      contiguous_.push_back(x.is_contiguous());
    }
    dtype_ = like[0].scalar_type();
    device_ = like[0].device();
    inference_ = c10::InferenceMode::is_enabled();
    validate_program();
  }

  // Whether the plan may run on `xs` now (see the file's comment).
  bool fits(const std::vector<at::Tensor>& xs) const {
    // A torch-function mode would see the Python rows' calls, not these.
    if (at::GradMode::is_enabled() || c10::InferenceMode::is_enabled() != inference_ ||
        at::autocast::is_autocast_enabled(device_.type()) || torch::jit::tracer::isTracing() ||
        at::impl::torch_function_mode_enabled())
      return false;
    if (xs.size() != shapes_.size()) return false;
    for (size_t k = 0; k < xs.size(); ++k) {
      const at::Tensor& x = xs[k];
      if (!x.defined() || x.scalar_type() != dtype_ || x.device() != device_ || !x.sizes().equals(shapes_[k]) ||
          x.is_contiguous() != contiguous_[k])
        return false;
    }
    for (size_t k = 0; k < sources_.size(); ++k)
      if (static_cast<int64_t>(sources_[k]._version()) != versions_[k]) return false;
    for (size_t k = 0; k < placed_.size(); ++k)
      if (reinterpret_cast<int64_t>(placed_[k].data_ptr()) != places_[k]) return false;
    return true;
  }

  // The rows' outputs for inputs that fit.
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& xs) const {
    RECORD_FUNCTION("hrnet_fast::run_rows", std::vector<c10::IValue>());
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
          const int64_t dst = p[0];
          const at::Tensor x = take(p[1]);
          regs[dst] = at::conv2d(x, constants_[p[2]], constant(p[3]), {p[4], p[5]}, {p[6], p[7]}, {p[8], p[9]},
                                 p[10]);
          p += 11;
          break;
        }
        case kConv1x1: {
          const int64_t dst = p[0];
          const at::Tensor x = take(p[1]);
          regs[dst] = conv1x1(x, constants_[p[2]], constant(p[3]));
          p += 4;
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
        case kExchange: {
          const int64_t k = p[0];
          std::vector<at::Tensor> row;
          row.reserve(k);
          for (int64_t m = 0; m < k; ++m) row.push_back(take(p[1 + m]));
          const c10::SymInt size[2] = {c10::SymInt(p[1 + k]), c10::SymInt(p[2 + k])};
          outs.push_back(exchange_call(row, no_rows_, no_rows_, c10::SymIntArrayRef(size, 2), mode_,
                                       align_corners_, relu_));
          p += 3 + k;
          break;
        }
        default:
          TORCH_INTERNAL_ASSERT(false, "RowsPlan: unknown opcode");
      }
    }
    return outs;
  }

 private:
  // The program is built in Python: check once that every operand is in
  // range, so a bad one fails here and never reads out of bounds in run().
  void validate_program() const {
    constexpr int64_t kMaxParts = 1 << 16;  // far above any module; keeps the arithmetic below in range
    const int64_t nreg = registers_, nconst = static_cast<int64_t>(constants_.size());
    const size_t size = program_.size();
    auto reg = [&](int64_t r) { TORCH_CHECK(r >= 0 && r < nreg, "RowsPlan: register ", r, " out of range"); };
    auto cst = [&](int64_t c, bool optional) {
      TORCH_CHECK((optional && c == -1) || (c >= 0 && c < nconst), "RowsPlan: constant ", c, " out of range");
    };
    size_t i = 0;
    auto need = [&](size_t n) { TORCH_CHECK(i + n <= size, "RowsPlan: program ends inside an instruction"); };
    while (i < size) {
      const int64_t op = program_[i++];
      const int64_t* p = program_.data() + i;
      switch (op) {
        case kConv: need(11); reg(p[0]); reg(p[1]); cst(p[2], false); cst(p[3], true); i += 11; break;
        case kConv1x1: need(4); reg(p[0]); reg(p[1]); cst(p[2], false); cst(p[3], true); i += 4; break;
        case kSplit: {
          need(2);
          reg(p[0]);
          const int64_t k = p[1];
          TORCH_CHECK(k >= 1 && k <= kMaxParts, "RowsPlan: a split of ", k, " parts");
          need(2 + 2 * k);
          for (int64_t m = 0; m < k; ++m) reg(p[2 + 2 * m]);
          i += 2 + 2 * k;
          break;
        }
        case kRelu: need(1); reg(p[0]); i += 1; break;
        case kExchange: {
          need(1);
          const int64_t k = p[0];
          TORCH_CHECK(k >= 1 && k <= kMaxParts, "RowsPlan: a row of ", k, " inputs");
          need(3 + k);
          for (int64_t m = 0; m < k; ++m) reg(p[1 + m]);
          i += 3 + k;
          break;
        }
        default: TORCH_CHECK(false, "RowsPlan: unknown opcode ", op);
      }
    }
  }

  std::vector<at::Tensor> constants_;
  std::vector<int64_t> program_;
  int64_t registers_;
  std::vector<std::vector<int64_t>> shapes_;
  std::vector<bool> contiguous_;
  at::ScalarType dtype_;
  at::Device device_{at::kCPU};
  bool inference_ = false;
  std::vector<at::Tensor> sources_;
  std::vector<int64_t> versions_;
  std::vector<at::Tensor> placed_;
  std::vector<int64_t> places_;
  std::string mode_;
  bool align_corners_;
  bool relu_;
  const OptionalTensors no_rows_;
};

// The Python state a plan rests on that the dispatcher cannot see: no BN
// of the plan in training mode, and no forward or backward hook on any
// module it stands for (nor on the calling module, nor global ones). The
// modules and hook dicts come with each call, in the state tuple the
// caller keeps (hrnet_fast/native_rows.py), so that the garbage collector
// sees every reference: a hook closing over the model would otherwise
// make a cycle through this plan that is never freed. Every hook
// registration creates a torch.utils.hooks.RemovableHandle, whose class
// counts them: while the count is what it was when the hooks were last
// seen absent, none was added, and the dicts need not be read.
//
// 1: the plan may run; 0: it may not; -1: a Python error is set.
int python_state_allows(PyObject* bns, PyObject* hook_dicts, PyObject* handle_class, long long& handles) {
  static PyObject* training = PyUnicode_InternFromString("training");
  static PyObject* next_id = PyUnicode_InternFromString("next_id");
  if (training == nullptr || next_id == nullptr) return -1;
  if (!PyTuple_Check(bns) || !PyTuple_Check(hook_dicts)) {
    PyErr_SetString(PyExc_TypeError, "run_rows: the state's modules and hook dicts must be tuples");
    return -1;
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
        PyErr_SetString(PyExc_TypeError, "run_rows: hook dicts must be dicts");
        return -1;
      }
      if (PyDict_GET_SIZE(d) != 0) return 0;
    }
    handles = count;
  }
  return 1;
}

constexpr const char* kCapsule = "hrnet_fast.RowsPlan";

struct Plan {
  RowsPlan rows;
  long long handles = -1;  // RemovableHandle.next_id when the hooks were last seen absent
};

void delete_plan(PyObject* capsule) {
  delete static_cast<Plan*>(PyCapsule_GetPointer(capsule, kCapsule));
}

// Items of a list or tuple: tensors (false if one is not; with `exact`,
// also for a Tensor subclass, whose __torch_function__ the Python rows
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
  TORCH_CHECK_TYPE(tensors_of(seq, out), "rows_plan: ", what, " must be tensors");
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

// rows_plan(constants, program, registers, like, sources, versions, placed,
//           places, mode, align_corners, relu) -> capsule
PyObject* rows_plan(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 11, "rows_plan: takes 11 arguments, got ", nargs);
  const int64_t registers = PyLong_AsLongLong(args[2]);
  if (registers == -1 && PyErr_Occurred()) throw python_error();
  const char* mode = PyUnicode_AsUTF8(args[8]);
  if (mode == nullptr) throw python_error();
  auto plan = std::unique_ptr<Plan>(new Plan{
      RowsPlan(tensor_list(args[0], "constants"), int_list(args[1]), registers, tensor_list(args[3], "like"),
               tensor_list(args[4], "sources"), int_list(args[5]), tensor_list(args[6], "placed"), int_list(args[7]),
               std::string(mode), PyObject_IsTrue(args[9]) == 1, PyObject_IsTrue(args[10]) == 1)});
  PyObject* capsule = PyCapsule_New(plan.get(), kCapsule, delete_plan);
  if (capsule == nullptr) throw python_error();
  plan.release();
  return capsule;
  END_HANDLE_TH_ERRORS
}

// run_rows(state, xs) -> list of the rows' outputs, or None when the plan
// does not fit (then nothing ran). state: (plan, BN modules, hook dicts,
// RemovableHandle), see python_state_allows.
PyObject* run_rows(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 2, "run_rows: takes 2 arguments, got ", nargs);
  PyObject* state = args[0];
  TORCH_CHECK_TYPE(PyTuple_Check(state) && PyTuple_GET_SIZE(state) == 4,
                   "run_rows: state must be (plan, modules, hook dicts, RemovableHandle)");
  auto* plan = static_cast<Plan*>(PyCapsule_GetPointer(PyTuple_GET_ITEM(state, 0), kCapsule));
  if (plan == nullptr) throw python_error();
  // Anything but a list or tuple of tensors is for the general path to
  // refuse, with its own message.
  std::vector<at::Tensor> xs;
  if (!(PyList_Check(args[1]) || PyTuple_Check(args[1])) || !tensors_of(args[1], xs, true) || !plan->rows.fits(xs))
    Py_RETURN_NONE;
  const int allowed = python_state_allows(PyTuple_GET_ITEM(state, 1), PyTuple_GET_ITEM(state, 2),
                                          PyTuple_GET_ITEM(state, 3), plan->handles);
  if (allowed < 0) throw python_error();
  if (allowed == 0) Py_RETURN_NONE;
  std::vector<at::Tensor> outs;
  {
    // As torch's own bindings do: other Python threads run meanwhile.
    pybind11::gil_scoped_release no_gil;
    outs = plan->rows.run(xs);
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

PyMethodDef rows_plan_methods[] = {
    {"rows_plan", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(&rows_plan)), METH_FASTCALL,
     "rows_plan(constants, program, registers, like, sources, versions, placed, places, mode, align_corners, "
     "relu): a converted module's eval exchange as one program (hrnet_fast.native_rows)"},
    {"run_rows", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(&run_rows)), METH_FASTCALL,
     "run_rows((plan, bns, hook_dicts, RemovableHandle), xs): the plan's outputs, or None when it does not fit "
     "xs or the state it was built for"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace hrnet_fast
