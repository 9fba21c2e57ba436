// CUDA kernels of hrnet_fast::exchange and hrnet_fast::exchange_backward:
// argument checks, layouts, outputs and scratch from the caching allocator,
// launches on the current stream. No host synchronisation anywhere, so both
// ops can be captured in a CUDA graph.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
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

// Scales, shifts and reductions are in the accumulation type.
at::ScalarType acc_type(DType d) { return d == DType::Double ? at::kDouble : at::kFloat; }

View view_of(const at::Tensor& t) {
  View v;
  v.data = t.data_ptr();
  for (int d = 0; d < 4; ++d) {
    v.size[d] = t.size(d);
    v.stride[d] = t.stride(d);
  }
  return v;
}

// The kernels index pixels of one image with 32-bit ints.
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

// Dense (K, C) per-channel parameters in the accumulation type, 16-byte
// aligned (the kernels load them in 16-byte packs), absent rows filled
// with `fill`.
at::Tensor params_for_kernel(const OptionalTensors& rows, const at::Tensor& x0, int64_t K, double fill, DType d) {
  const auto opts = x0.options().dtype(acc_type(d));
  std::vector<at::Tensor> dense;
  for (int64_t k = 0; k < K; ++k) {
    std::optional<at::Tensor> r = static_cast<size_t>(k) < rows.size() ? rows.get(k) : std::nullopt;
    dense.push_back(r.has_value() && r->defined() ? r->to(acc_type(d)) : at::full({x0.size(1)}, fill, opts));
  }
  at::Tensor r = at::stack(dense);
  if (reinterpret_cast<uintptr_t>(r.data_ptr()) % 16 != 0) r = r.clone();
  return r;
}

// Bytes of output gradient (and output) per group of images in the backward:
// a share of L2 (40 MB on A100, 50 MB on H100/H200) that leaves room for the
// inputs streaming through beside them.
constexpr int64_t kL2Budget = 16 << 20;

std::array<int64_t, 2> concrete_size(c10::SymIntArrayRef size) {
  TORCH_CHECK_VALUE(size.size() == 2, "hrnet_fast.exchange: size must have two entries, got ", size.size());
  return {size[0].expect_int(), size[1].expect_int()};
}

at::Tensor exchange_cuda(TensorList inputs, const OptionalTensors& scales, const OptionalTensors& shifts,
                         c10::SymIntArrayRef sym_size, std::string_view mode, bool align_corners, bool relu) {
  check_exchange(inputs, scales, shifts, sym_size, mode);
  const auto size = concrete_size(sym_size);
  check_common(inputs);
  const Mode m = parse_mode(mode);
  const at::Tensor& x0 = inputs[0];
  const DType dt = dtype_of(x0);
  const c10::cuda::CUDAGuard guard(x0.device());
  const auto fmt = output_format(x0);
  at::Tensor out = at::empty({x0.size(0), x0.size(1), size[0], size[1]}, x0.options().memory_format(fmt));
  check_plane(out, "the output");
  if (out.numel() == 0) return out;

  cuda::ForwardArgs a{};
  a.dtype = dt;
  a.mode = m;
  a.align_corners = align_corners;
  a.relu = relu;
  a.channels_last = fmt == at::MemoryFormat::ChannelsLast;
  a.k = static_cast<int>(inputs.size());
  // Kept alive until the launch is enqueued; the caching allocator orders
  // their reuse after it on this stream.
  std::vector<at::Tensor> xs;
  xs.reserve(inputs.size());
  for (int k = 0; k < a.k; ++k) {
    xs.push_back(inputs[k].contiguous(fmt));  // no copy when already in fmt
    a.inputs[k] = view_of(xs.back());
  }
  const at::Tensor s = params_for_kernel(scales, x0, a.k, 1.0, dt);
  const at::Tensor b = params_for_kernel(shifts, x0, a.k, 0.0, dt);
  a.scales = s.data_ptr();
  a.shifts = b.data_ptr();
  a.out = view_of(out);
  cuda::launch_forward(a, c10::cuda::getCurrentCUDAStream(x0.device().index()).stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> exchange_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& out, TensorList inputs, const OptionalTensors& scales,
    std::string_view mode, bool align_corners, bool relu) {
  check_exchange_backward(grad_out, out, inputs, scales, mode);
  check_common(inputs);
  const Mode m = parse_mode(mode);
  const at::Tensor& x0 = inputs[0];
  check_plane(out, "the output");
  const DType dt = dtype_of(x0);
  const c10::cuda::CUDAGuard guard(x0.device());
  const auto K = static_cast<int64_t>(inputs.size());
  const int64_t C = x0.size(1);
  const auto acc = at::TensorOptions().dtype(acc_type(dt)).device(x0.device());

  std::vector<at::Tensor> grads;
  grads.reserve(inputs.size());
  for (const auto& x : inputs) grads.push_back(at::empty(x.sizes(), x.options().memory_format(output_format(x))));
  if (out.numel() == 0) {
    for (auto& g : grads) g.zero_();
    return {grads, at::zeros({K, C}, acc), at::zeros({C}, acc)};
  }

  const auto fmt = output_format(x0);
  // A gradient of another dtype (e.g. from autocast) is cast, as autograd
  // would for the reference's ops.
  const at::Tensor g = grad_out.to(x0.scalar_type()).contiguous(fmt);
  // Both dense in fmt, so they share strides (up to those of size-1
  // dimensions, which are never applied): the kernels index them alike.
  const at::Tensor o = out.contiguous(fmt);
  const at::Tensor s = params_for_kernel(scales, x0, K, 1.0, dt);
  at::Tensor grad_scales = at::empty({K, C}, acc);
  at::Tensor grad_shifts = at::empty({C}, acc);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x0.device().index()).stream();

  std::vector<at::Tensor> xs(K), parts_gx(K);
  at::Tensor part_g;
  std::vector<cuda::BackwardArgs> args(K);
  std::vector<cuda::PartialShape> shapes(K);
  for (int64_t k = 0; k < K; ++k) {
    const auto xfmt = output_format(inputs[k]);
    xs[k] = inputs[k].contiguous(xfmt);
    cuda::BackwardArgs& a = args[k];
    a.dtype = dt;
    a.mode = m;
    a.align_corners = align_corners;
    a.relu = relu;
    a.channels_last = xfmt == at::MemoryFormat::ChannelsLast;
    a.grad = view_of(g);
    a.out = view_of(o);
    a.x = view_of(xs[k]);
    a.grad_x = view_of(grads[k]);
    a.scale = static_cast<const char*>(s.data_ptr()) + k * C * s.element_size();
    shapes[k] = cuda::backward_partials(a);
    // Scratch from the caching allocator: per-block partial sums.
    parts_gx[k] = at::empty({shapes[k].numel}, acc);
    a.part_gx = parts_gx[k].data_ptr();
    if (k == 0) {
      part_g = at::empty({shapes[k].numel}, acc);
      a.part_g = part_g.data_ptr();
    }
  }
  // Every pass reads the whole output gradient (and output). Running all
  // passes over a group of images before the next group lets the later
  // passes find that group in L2 instead of DRAM.
  const int64_t N = out.size(0);
  const int64_t per_image = C * out.size(2) * out.size(3) * g.element_size() * (relu ? 2 : 1);
  const int64_t group = K == 1 ? N : std::max<int64_t>(1, kL2Budget / per_image);
  for (int64_t n0 = 0; n0 < N; n0 += group) {
    for (int64_t k = 0; k < K; ++k) {
      args[k].n_begin = n0;
      args[k].n_end = std::min(N, n0 + group);
      cuda::launch_backward_input(args[k], stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
  // Every input's shift receives the same sum of the masked gradient;
  // input 0's pass provides it (the sum over its pixels of G, which is the
  // plain sum of gm when input 0 has the output size).
  std::vector<cuda::SumJob> sums;
  for (int64_t k = 0; k < K; ++k)
    sums.push_back({parts_gx[k].data_ptr(), shapes[k],
                    static_cast<char*>(grad_scales.data_ptr()) + k * C * grad_scales.element_size(), 1});
  sums.push_back({part_g.data_ptr(), shapes[0], grad_shifts.data_ptr(), 1});
  cuda::launch_channel_sums(dt, sums.data(), static_cast<int>(sums.size()), C, stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {grads, grad_scales, grad_shifts};
}

}  // namespace
}  // namespace hrnet_fast

TORCH_LIBRARY_IMPL(hrnet_fast, CUDA, m) {
  m.impl("exchange", TORCH_FN(hrnet_fast::exchange_cuda));
  m.impl("exchange_backward", TORCH_FN(hrnet_fast::exchange_backward_cuda));
}
