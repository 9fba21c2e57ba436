// CUDA kernels of hrnet_fast::exchange and hrnet_fast::exchange_backward:
// argument checks, outputs and scratch from the caching allocator, launches
// on the current stream. No host synchronisation anywhere, so both ops can
// be captured in a CUDA graph.
//
// Per call, the forward allocates its output and launches one kernel: the
// inputs are read through their own strides (no copies) and each affine row
// where it is (nullptr for an absent one; a row is converted only when it
// is not already contiguous, aligned and in the accumulation dtype). The
// backward allocates its outputs and one scratch buffer and launches two or
// three kernels.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <limits>
#include <string_view>
#include <tuple>
#include <vector>

#include "exchange.h"
#include "launch.h"

namespace hrnet_fast {
namespace {

using cuda::DType;
using cuda::View;

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::Float;
    case at::kHalf: return DType::Half;
    case at::kBFloat16: return DType::BFloat16;
    case at::kDouble: return DType::Double;
    default: TORCH_CHECK_TYPE(false, "hrnet_fast.exchange (cuda): unsupported dtype ", t.scalar_type());
  }
}

View view_of(const at::Tensor& t) {
  View v;
  v.data = const_cast<void*>(t.const_data_ptr());
  for (int d = 0; d < 4; ++d) {
    v.size[d] = t.size(d);
    v.stride[d] = t.stride(d);
  }
  return v;
}

// The kernels index the pixels of one image plane with 32-bit ints.
void check_plane(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.size(2) * t.size(3) <= std::numeric_limits<int32_t>::max(), "hrnet_fast.exchange (cuda): ",
              what, " has more than 2^31 pixels per image");
}

void check_common(TensorList inputs) {
  TORCH_CHECK(inputs[0].is_cuda(), "hrnet_fast.exchange (cuda): inputs must be CUDA tensors");
  TORCH_CHECK_VALUE(static_cast<int>(inputs.size()) <= cuda::kMaxLaunchInputs,
                    "hrnet_fast.exchange (cuda): at most ", cuda::kMaxLaunchInputs, " inputs, got ",
                    inputs.size());
  for (const auto& x : inputs) check_plane(x, "an input");
}

// An input as the kernels read it: raw data through its strides. Only a
// lazily negated view (torch._neg_view) is resolved first.
at::Tensor readable(const at::Tensor& x) { return x.is_neg() ? x.resolve_neg() : x; }

std::array<int64_t, 2> concrete_size(c10::SymIntArrayRef size) {
  TORCH_CHECK_VALUE(size.size() == 2, "hrnet_fast.exchange: size must have two entries, got ", size.size());
  return {size[0].expect_int(), size[1].expect_int()};
}

at::Tensor exchange_cuda(TensorList inputs, const OptionalTensors& scales, const OptionalTensors& shifts,
                         c10::SymIntArrayRef sym_size, std::string_view mode, bool align_corners, bool relu) {
  check_exchange(inputs, scales, shifts, sym_size, mode);
  const auto size = concrete_size(sym_size);
  check_common(inputs);
  const at::Tensor& x0 = inputs[0];
  const c10::cuda::CUDAGuard guard(x0.device());
  const auto fmt = output_format(x0);
  at::Tensor out = at::empty({x0.size(0), x0.size(1), size[0], size[1]}, x0.options().memory_format(fmt));
  check_plane(out, "the output");
  if (out.numel() == 0) return out;

  cuda::ForwardDesc d{};
  d.dtype = dtype_of(x0);
  d.mode = parse_mode(mode);
  d.align_corners = align_corners;
  d.relu = relu;
  d.channels_last = fmt == at::MemoryFormat::ChannelsLast;
  d.k = static_cast<int>(inputs.size());
  // Kept alive until the launch is enqueued; the caching allocator orders
  // their reuse after it on this stream.
  std::vector<at::Tensor> resolved;
  for (int k = 0; k < d.k; ++k) {
    if (inputs[k].is_neg()) {
      resolved.push_back(readable(inputs[k]));
      d.in[k] = view_of(resolved.back());
    } else {
      d.in[k] = view_of(inputs[k]);
    }
  }
  const at::ScalarType acc = affine_dtype(x0.scalar_type());
  // 16-byte aligned: the kernels read the rows in 16-byte packs.
  const AffineRows s = affine_rows(scales, inputs.size(), acc, 16);
  const AffineRows b = affine_rows(shifts, inputs.size(), acc, 16);
  for (int k = 0; k < d.k; ++k) d.scale[k] = s.ptr[k], d.shift[k] = b.ptr[k];
  d.out = view_of(out);
  cuda::launch_forward(d, c10::cuda::getCurrentCUDAStream(x0.device().index()).stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> exchange_backward_cuda(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& out, const OptionalTensors& inputs,
    c10::SymIntArrayRef sym_sizes, const c10::List<bool>& channels_last, const OptionalTensors& scales,
    std::string_view mode, bool align_corners, bool relu) {
  check_exchange_backward(grad_out, out, inputs, sym_sizes, channels_last, scales, mode, relu);
  TORCH_CHECK(grad_out.is_cuda(), "hrnet_fast.exchange (cuda): grad_out must be a CUDA tensor");
  const auto K = static_cast<int64_t>(inputs.size());
  TORCH_CHECK_VALUE(K <= cuda::kMaxLaunchInputs, "hrnet_fast.exchange (cuda): at most ", cuda::kMaxLaunchInputs,
                    " inputs, got ", K);
  check_plane(grad_out, "the output");
  const c10::cuda::CUDAGuard guard(grad_out.device());
  const int64_t N = grad_out.size(0), C = grad_out.size(1);
  const at::ScalarType dtype = backward_dtype(grad_out, out);
  const at::ScalarType acc = affine_dtype(dtype);
  const auto acc_opts = at::TensorOptions().dtype(acc).device(grad_out.device());
  const auto opts = grad_out.options().dtype(dtype);

  std::vector<at::Tensor> grads;
  grads.reserve(K);
  for (int64_t k = 0; k < K; ++k) {
    const auto fmt = channels_last.get(k) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    grads.push_back(at::empty({N, C, sym_sizes[2 * k].expect_int(), sym_sizes[2 * k + 1].expect_int()},
                              opts.memory_format(fmt)));
    check_plane(grads.back(), "an input");
  }
  at::Tensor grad_scales = at::empty({K, C}, acc_opts);
  at::Tensor grad_shift = at::empty({C}, acc_opts);
  if (grad_out.numel() == 0) {
    for (auto& g : grads) g.zero_();
    grad_scales.zero_();
    grad_shift.zero_();
    return {grads, grad_scales, grad_shift};
  }

  cuda::BackwardDesc d{};
  d.dtype = dtype_of(grads[0]);
  d.mode = parse_mode(mode);
  d.align_corners = align_corners;
  d.relu = relu;
  d.channels_last = channels_last.get(0);
  d.k = static_cast<int>(K);
  // A gradient of another dtype (e.g. from autocast) is cast, as autograd
  // would for the reference's ops; otherwise it is read where it is.
  const at::Tensor g = readable(grad_out.scalar_type() == dtype ? grad_out : grad_out.to(dtype));
  // Without a ReLU out is neither given nor read: the plan takes its sizes
  // from grad's view.
  const at::Tensor o = relu ? readable(*out) : g;
  std::vector<at::Tensor> xs;
  xs.reserve(K);
  for (int k = 0; k < d.k; ++k) {
    d.gx[k] = view_of(grads[k]);
    // An input is read only for its scale's gradient, and given exactly
    // there; the others are their gradient's sizes with no data.
    const std::optional<at::Tensor> x = inputs.get(k);
    if (x.has_value() && x->defined()) {
      xs.push_back(readable(*x));
      d.x[k] = view_of(xs.back());
    } else {
      d.x[k] = d.gx[k];
      d.x[k].data = nullptr;
    }
  }
  const AffineRows s = affine_rows(scales, K, acc, 16);
  for (int k = 0; k < d.k; ++k) d.scale[k] = s.ptr[k];
  d.grad = view_of(g);
  d.out = view_of(o);
  if (!relu) d.out.data = nullptr;
  d.grad_scales = grad_scales.data_ptr();
  d.grad_shift = grad_shift.data_ptr();

  const cuda::BackwardPlan plan = cuda::plan_backward(d, cuda::backward_smem_budget());
  // One scratch buffer per call from the caching allocator: partial rows
  // and partial sums (exchange_plan.h lays them out).
  const at::Tensor scratch = at::empty({std::max<int64_t>(plan.scratch_bytes, 1)}, acc_opts.dtype(at::kByte));
  cuda::launch_backward(d, plan, scratch.data_ptr(), c10::cuda::getCurrentCUDAStream(grad_out.device().index()).stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {grads, grad_scales, grad_shift};
}

}  // namespace
}  // namespace hrnet_fast

TORCH_LIBRARY_IMPL(hrnet_fast, CUDA, m) {
  m.impl("exchange", TORCH_FN(hrnet_fast::exchange_cuda));
  m.impl("exchange_backward", TORCH_FN(hrnet_fast::exchange_backward_cuda));
}
