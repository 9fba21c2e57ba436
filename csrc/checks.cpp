// The argument rules of hrnet_fast::exchange, stated once.
//
// Every way into the op runs these: the CPU and CUDA kernels call them
// directly, the fake kernels and the public wrapper's Python backends call
// them through the hrnet_fast::exchange_check op. The public wrapper checks
// only what the dispatcher cannot express (that arguments are lists of
// tensors), so a bad value gets this one message whichever backend runs.
// Sizes are read as SymInts: under symbolic tracing a comparison guards.
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <sstream>
#include <string>

#include "exchange.h"

namespace hrnet_fast {
namespace {

// torch's spelling of a dtype ("torch.float64"), as users write it.
std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    default: return std::string("torch.") + c10::toString(t);
  }
}

std::string shape_of(const at::Tensor& t) {
  std::ostringstream s;
  s << "(";
  const auto sizes = t.sym_sizes();
  for (size_t d = 0; d < sizes.size(); ++d) s << (d ? ", " : "") << sizes[d];
  s << (sizes.size() == 1 ? ",)" : ")");
  return s.str();
}

// What every tensor of a call agrees with: inputs[0]'s batch, channels,
// dtype and device in the forward, the output gradient's in the backward.
struct Frame {
  c10::SymInt n, c;
  at::ScalarType dtype;
  at::Device device;
};

Frame frame_of(const at::Tensor& t) { return {t.sym_size(0), t.sym_size(1), t.scalar_type(), t.device()}; }

void check_rows(const OptionalTensors& rows, const char* name, const Frame& f, size_t count) {
  if (rows.empty()) return;
  TORCH_CHECK_VALUE(rows.size() == count, "hrnet_fast.exchange: ", name, " has ", rows.size(), " entries for ",
                    count, " inputs");
  for (size_t k = 0; k < rows.size(); ++k) {
    const std::optional<at::Tensor> row = rows.get(k);
    if (!row.has_value() || !row->defined()) continue;
    const at::Tensor& r = *row;
    TORCH_CHECK_VALUE(r.dim() == 1 && r.sym_size(0) == f.c, "hrnet_fast.exchange: ", name, "[", k,
                      "] must have shape (", f.c, ",), got ", shape_of(r));
    TORCH_CHECK_TYPE(at::isFloatingType(r.scalar_type()), "hrnet_fast.exchange: ", name, "[", k,
                     "] must be floating point, got ", dtype_name(r.scalar_type()));
    TORCH_CHECK_VALUE(r.device() == f.device, "hrnet_fast.exchange: ", name, "[", k, "] is on ", r.device(),
                      " but the inputs are on ", f.device);
  }
}

// Input k of spatial size h x w against the output size.
void check_extent(size_t k, const c10::SymInt& h, const c10::SymInt& w, c10::SymIntArrayRef size, Mode m) {
  TORCH_CHECK_VALUE(h > 0 && w > 0, "hrnet_fast.exchange: inputs[", k, "] has an empty spatial size (", h, ", ", w,
                    ")");
  // Bilinear resizes down as F.interpolate does (mmseg resizes 26 -> 25
  // at odd sizes); a larger input in nearest mode is always a layout bug.
  TORCH_CHECK_VALUE(m == Mode::Bilinear || (h <= size[0] && w <= size[1]), "hrnet_fast.exchange: inputs[", k, "] is ",
                    h, "x", w, ", larger than the output size ", size[0], "x", size[1],
                    " (only mode='bilinear' resizes down)");
}

Mode checked_mode_and_size(c10::SymIntArrayRef size, std::string_view mode) {
  const Mode m = parse_mode(mode);
  TORCH_CHECK_VALUE(size.size() == 2, "hrnet_fast.exchange: size must be (H, W), got ", size.size(), " values");
  TORCH_CHECK_VALUE(size[0] > 0 && size[1] > 0, "hrnet_fast.exchange: size must be positive, got (", size[0], ", ",
                    size[1], ")");
  return m;
}

void check_conv_terms_in(const Frame& f, TensorList conv_inputs, TensorList conv_weights,
                         const OptionalTensors& conv_biases, c10::SymIntArrayRef size) {
  TORCH_CHECK_VALUE(conv_inputs.size() == conv_weights.size() && conv_biases.size() == conv_inputs.size(),
                    "hrnet_fast.exchange: conv terms need one weight and one bias (or None) per input, got ",
                    conv_inputs.size(), " inputs, ", conv_weights.size(), " weights, ", conv_biases.size(), " biases");
  for (size_t m = 0; m < conv_inputs.size(); ++m) {
    const at::Tensor& a = conv_inputs[m];
    const at::Tensor& w = conv_weights[m];
    TORCH_CHECK_VALUE(a.dim() == 4, "hrnet_fast.exchange: convs[", m, "] input must be a 4-D tensor, got shape ",
                      shape_of(a));
    TORCH_CHECK_VALUE(w.dim() == 4 && w.sym_size(2) == 3 && w.sym_size(3) == 3, "hrnet_fast.exchange: convs[", m,
                      "] weight must be (C_out, C_in, 3, 3), got ", shape_of(w));
    TORCH_CHECK_VALUE(w.sym_size(0) == f.c && w.sym_size(1) == a.sym_size(1), "hrnet_fast.exchange: convs[", m,
                      "] weight ", shape_of(w), " does not map ", a.sym_size(1), " input channels to the output's ",
                      f.c);
    TORCH_CHECK_VALUE(a.sym_size(0) == f.n && a.scalar_type() == f.dtype && a.device() == f.device,
                      "hrnet_fast.exchange: convs[", m, "] input must match inputs[0] in N, dtype and device");
    TORCH_CHECK_TYPE(at::isFloatingType(w.scalar_type()), "hrnet_fast.exchange: convs[", m,
                     "] weight must be floating point, got ", dtype_name(w.scalar_type()));
    TORCH_CHECK_VALUE(w.device() == f.device, "hrnet_fast.exchange: convs[", m, "] weight is on ", w.device(),
                      " but the inputs are on ", f.device);
    const std::optional<at::Tensor> b = conv_biases.get(m);
    if (b.has_value() && b->defined()) {
      TORCH_CHECK_VALUE(b->dim() == 1 && b->sym_size(0) == f.c && b->device() == f.device &&
                            at::isFloatingType(b->scalar_type()),
                        "hrnet_fast.exchange: convs[", m, "] bias must be None or a floating (", f.c,
                        ",) tensor on ", f.device, ", got ", shape_of(*b), " ", dtype_name(b->scalar_type()), " on ",
                        b->device());
    }
    const c10::SymInt lh = (a.sym_size(2) - 1) / 2 + 1;
    const c10::SymInt lw = (a.sym_size(3) - 1) / 2 + 1;
    TORCH_CHECK_VALUE(lh == size[0] && lw == size[1], "hrnet_fast.exchange: convs[", m, "] input ", a.sym_size(2),
                      "x", a.sym_size(3), " lands on ", lh, "x", lw, " after a stride-2 conv, not on the output size ",
                      size[0], "x", size[1]);
  }
}

}  // namespace

Mode parse_mode(std::string_view mode) {
  if (mode == "nearest") return Mode::Nearest;
  if (mode == "bilinear") return Mode::Bilinear;
  TORCH_CHECK_VALUE(false, "hrnet_fast.exchange: mode must be 'nearest' or 'bilinear', got '", mode, "'");
}

void check_exchange(TensorList inputs, const OptionalTensors& scales, const OptionalTensors& shifts,
                    c10::SymIntArrayRef size, std::string_view mode) {
  TORCH_CHECK_VALUE(!inputs.empty(), "hrnet_fast.exchange: needs at least one input");
  const Mode m = checked_mode_and_size(size, mode);
  const at::Tensor& x0 = inputs[0];
  for (size_t k = 0; k < inputs.size(); ++k) {
    const at::Tensor& x = inputs[k];
    TORCH_CHECK_VALUE(x.defined(), "hrnet_fast.exchange: inputs[", k, "] is an undefined tensor");
    TORCH_CHECK_VALUE(x.dim() == 4, "hrnet_fast.exchange: inputs[", k, "] must be 4-D (N, C, H, W), got shape ",
                      shape_of(x));
    if (k == 0) {
      TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "hrnet_fast.exchange: inputs must be floating point, got ",
                       dtype_name(x.scalar_type()));
      continue;
    }
    TORCH_CHECK_VALUE(x.sym_size(0) == x0.sym_size(0) && x.sym_size(1) == x0.sym_size(1), "hrnet_fast.exchange: inputs[",
                      k, "] has (N, C) = (", x.sym_size(0), ", ", x.sym_size(1), ") but inputs[0] has (", x0.sym_size(0),
                      ", ", x0.sym_size(1), ")");
    TORCH_CHECK_VALUE(x.scalar_type() == x0.scalar_type(), "hrnet_fast.exchange: inputs[", k, "] is ",
                      dtype_name(x.scalar_type()), " but inputs[0] is ", dtype_name(x0.scalar_type()));
    TORCH_CHECK_VALUE(x.device() == x0.device(), "hrnet_fast.exchange: inputs[", k, "] is on ", x.device(),
                      " but inputs[0] is on ", x0.device());
  }
  for (size_t k = 0; k < inputs.size(); ++k) check_extent(k, inputs[k].sym_size(2), inputs[k].sym_size(3), size, m);
  const Frame f = frame_of(x0);
  check_rows(scales, "scales", f, inputs.size());
  check_rows(shifts, "shifts", f, inputs.size());
}

void check_conv_terms(TensorList inputs, TensorList conv_inputs, TensorList conv_weights,
                      const OptionalTensors& conv_biases, c10::SymIntArrayRef size) {
  check_conv_terms_in(frame_of(inputs[0]), conv_inputs, conv_weights, conv_biases, size);
}

at::ScalarType backward_dtype(const at::Tensor& grad_out, const std::optional<at::Tensor>& out) {
  return out.has_value() && out->defined() ? out->scalar_type() : grad_out.scalar_type();
}

void check_exchange_backward(const at::Tensor& grad_out, const std::optional<at::Tensor>& out,
                             const OptionalTensors& inputs, c10::SymIntArrayRef input_sizes,
                             const c10::List<bool>& channels_last, const OptionalTensors& scales,
                             std::string_view mode, bool relu) {
  static constexpr const char* kWhere = "hrnet_fast.exchange_backward: ";
  TORCH_CHECK_VALUE(grad_out.dim() == 4, kWhere, "grad_out must be 4-D (N, C, H, W), got shape ", shape_of(grad_out));
  TORCH_CHECK_TYPE(at::isFloatingType(grad_out.scalar_type()), kWhere, "grad_out must be floating point, got ",
                   dtype_name(grad_out.scalar_type()));
  const bool has_out = out.has_value() && out->defined();
  TORCH_CHECK_VALUE(has_out || !relu, kWhere, "out (the forward's output: the ReLU mask) is needed when relu is true");
  const Frame f{grad_out.sym_size(0), grad_out.sym_size(1), backward_dtype(grad_out, out), grad_out.device()};
  if (has_out) {
    TORCH_CHECK_VALUE(out->sym_sizes() == grad_out.sym_sizes(), kWhere, "grad_out ", shape_of(grad_out), " and out ",
                      shape_of(*out), " must be the same 4-D shape");
    TORCH_CHECK_VALUE(out->device() == f.device, kWhere, "grad_out and out must be on ", f.device);
  }
  const size_t count = inputs.size();
  TORCH_CHECK_VALUE(count > 0, "hrnet_fast.exchange: needs at least one input");
  TORCH_CHECK_VALUE(input_sizes.size() == 2 * count && channels_last.size() == count, kWhere, "input_sizes has ",
                    input_sizes.size(), " values and channels_last ", channels_last.size(), " for ", count,
                    " inputs (want (h, w) and one flag per input)");
  const c10::SymInt H = grad_out.sym_size(2), W = grad_out.sym_size(3);
  const Mode m = checked_mode_and_size({H, W}, mode);
  for (size_t k = 0; k < count; ++k) {
    const c10::SymInt& h = input_sizes[2 * k];
    const c10::SymInt& w = input_sizes[2 * k + 1];
    check_extent(k, h, w, {H, W}, m);
    const std::optional<at::Tensor> x = inputs.get(k);
    if (!x.has_value() || !x->defined()) continue;
    TORCH_CHECK_VALUE(x->dim() == 4 && x->sym_size(0) == f.n && x->sym_size(1) == f.c && x->sym_size(2) == h &&
                          x->sym_size(3) == w,
                      kWhere, "inputs[", k, "] has shape ", shape_of(*x), ", not (", f.n, ", ", f.c, ", ", h, ", ", w,
                      ")");
    TORCH_CHECK_VALUE(x->scalar_type() == f.dtype, kWhere, "inputs[", k, "] is ", dtype_name(x->scalar_type()),
                      " but out is ", dtype_name(f.dtype));
    TORCH_CHECK_VALUE(x->device() == f.device, kWhere, "inputs[", k, "] is on ", x->device(), " but grad_out is on ",
                      f.device);
  }
  check_rows(scales, "scales", f, count);
  for (size_t k = 0; k < scales.size(); ++k) {
    const std::optional<at::Tensor> s = scales.get(k);
    const std::optional<at::Tensor> x = inputs.get(k);
    TORCH_CHECK_VALUE(!(s.has_value() && s->defined()) || (x.has_value() && x->defined()), kWhere, "inputs[", k,
                      "] is needed: the gradient of scales[", k, "] reads it");
  }
}

void check_backward_conv_terms(const at::Tensor& grad_out, const std::optional<at::Tensor>& out,
                               TensorList conv_inputs, TensorList conv_weights) {
  const Frame f{grad_out.sym_size(0), grad_out.sym_size(1), backward_dtype(grad_out, out), grad_out.device()};
  OptionalTensors no_biases;
  for (size_t m = 0; m < conv_inputs.size(); ++m) no_biases.push_back(std::nullopt);
  check_conv_terms_in(f, conv_inputs, conv_weights, no_biases, {grad_out.sym_size(2), grad_out.sym_size(3)});
}

at::MemoryFormat output_format(const at::Tensor& first) {
  return first.is_contiguous(at::MemoryFormat::ChannelsLast) && !first.is_contiguous()
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

}  // namespace hrnet_fast
