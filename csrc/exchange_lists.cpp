// hrnet_fast::exchange_lists: the exchange with its affine given as one (C,)
// scale and shift tensor per input (or none: the identity), as users and
// the Python wrapper hold them, instead of dense (K, C) rows.
//
// Why a second op: building the dense rows in Python (torch.stack, identity
// fills, the checks around them) cost 10-20 us per call, more than the
// kernel at HRNet's small branches. Here they are built in C++ below
// autograd, the op checks its arguments itself, and its autograd
// (autograd/exchange_autograd.cpp) hands each scale and shift tensor its
// gradient row. For every backend the op is `exchange` on the dense rows;
// plain CPU calls read the rows in place (exchange_lists_forward).
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/stack.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "op_calls.h"

namespace hrnet_fast {

namespace {

bool is_plain_cpu(const at::Tensor& t) {
  static const c10::DispatchKeySet watched{c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot,
                                           c10::DispatchKey::Functionalize};
  return t.is_cpu() && !t.key_set().has_any(watched) && t.has_storage();
}

at::ScalarType affine_dtype(const at::Tensor& x0) {
  return x0.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Checks one list of per-input rows against the inputs (empty: the
// identity) and says whether the kernel can read them in place: real CPU
// tensors, contiguous, already in the affine dtype, and nobody (fake
// tensors, functionalisation, a tracing mode) watching the ops.
bool check_rows(TensorList inputs, TensorList rows, const char* name) {
  TORCH_CHECK_VALUE(!inputs.empty(), "hrnet_fast.exchange: needs at least one input");
  const at::Tensor& x0 = inputs[0];
  TORCH_CHECK_VALUE(x0.dim() == 4, "hrnet_fast.exchange: inputs[0] must be 4-D (N, C, H, W), got ", x0.dim(), "-D");
  const auto dtype = affine_dtype(x0);
  const int64_t K = static_cast<int64_t>(inputs.size()), C = x0.size(1);
  bool plain = is_plain_cpu(x0) && !c10::impl::TorchDispatchModeTLS::any_modes_set();
  if (rows.empty()) return plain;
  TORCH_CHECK_VALUE(static_cast<int64_t>(rows.size()) == K, "hrnet_fast.exchange: ", name, " has ", rows.size(),
                    " entries for ", K, " inputs");
  for (size_t k = 0; k < rows.size(); ++k) {
    const at::Tensor& r = rows[k];
    TORCH_CHECK_VALUE(r.dim() == 1 && r.size(0) == C, "hrnet_fast.exchange: ", name, "[", k, "] must have shape (",
                      C, ",), got ", r.sizes());
    TORCH_CHECK_VALUE(r.device() == x0.device(), "hrnet_fast.exchange: ", name, "[", k, "] is on ", r.device(),
                      " but the inputs are on ", x0.device());
    TORCH_CHECK_TYPE(at::isFloatingType(r.scalar_type()), "hrnet_fast.exchange: ", name, "[", k,
                     "] must be floating point, got ", r.scalar_type());
    plain = plain && is_plain_cpu(r) && r.scalar_type() == dtype && r.is_contiguous() && !r.is_neg() && !r.is_conj();
  }
  return plain;
}

}  // namespace

at::Tensor affine_rows(TensorList inputs, TensorList rows, double fill, const char* name) {
  const bool plain = check_rows(inputs, rows, name);
  const at::Tensor& x0 = inputs[0];
  const auto dtype = affine_dtype(x0);
  const int64_t K = static_cast<int64_t>(inputs.size()), C = x0.size(1);
  if (rows.empty()) return at::full({K, C}, fill, x0.options().dtype(dtype));
  if (plain) {
    // The common CPU case: K rows of C values into one block, without
    // at::stack's dispatch and shape inference (about 1 us per call).
    at::Tensor dense = at::empty({K, C}, x0.options().dtype(dtype));
    const size_t bytes = static_cast<size_t>(C) * dense.element_size();
    auto* dst = static_cast<char*>(dense.data_ptr());
    for (int64_t k = 0; k < K; ++k) std::memcpy(dst + k * bytes, rows[k].const_data_ptr(), bytes);
    return dense;
  }
  std::vector<at::Tensor> converted;
  converted.reserve(rows.size());
  for (const at::Tensor& r : rows) converted.push_back(r.scalar_type() == dtype ? r : r.to(dtype));
  return at::stack(converted);
}

at::Tensor exchange_lists_forward(TensorList inputs, TensorList scales, TensorList shifts, c10::SymIntArrayRef size,
                                  c10::string_view mode, bool align_corners, bool relu) {
  const bool scales_in_place = check_rows(inputs, scales, "scales");
  const bool shifts_in_place = check_rows(inputs, shifts, "shifts");
  bool plain = scales_in_place && shifts_in_place;
  for (const at::Tensor& x : inputs) plain = plain && is_plain_cpu(x);
  if (plain) {
    // Plain CPU tensors: the kernel reads the rows in place. Building
    // dense rows and dispatching `exchange` once more cost about 2-3 us of
    // a 20 us call at HRNet's coarsest branch.
    return exchange_cpu_lists(inputs, scales, shifts, C10_AS_INTARRAYREF_SLOW(size), mode, align_corners, relu);
  }
  return exchange_call(inputs, affine_rows(inputs, scales, 1.0, "scales"), affine_rows(inputs, shifts, 0.0, "shifts"),
                       size, mode, align_corners, relu);
}

namespace {

at::Tensor exchange_lists(TensorList inputs, TensorList scales, TensorList shifts, c10::SymIntArrayRef size,
                          c10::string_view mode, bool align_corners, bool relu) {
  return exchange_lists_forward(inputs, scales, shifts, size, mode, align_corners, relu);
}

}  // namespace
}  // namespace hrnet_fast

TORCH_LIBRARY_IMPL(hrnet_fast, CompositeExplicitAutograd, m) {
  m.impl("exchange_lists", &hrnet_fast::exchange_lists);
}
