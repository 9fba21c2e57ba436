// CPU kernels of hrnet_fast::exchange and hrnet_fast::exchange_backward.
//
// Forward is one pass: every output element reads each same-size input once
// and gathers the 1 (nearest) or 4 (bilinear) source pixels of each smaller
// input, applies the per-channel affine, sums in the accumulation type and
// writes once. Index math comes from kernels/interp.h, precomputed per output
// row and column, so it matches the CUDA kernels and F.interpolate exactly.
//
// Backward is deterministic: the adjoint of interpolation is a gather over
// the output pixels that read each source pixel, and per-channel reductions
// go through partial sums over a partition fixed by the shapes (never by the
// thread count), reduced in order.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu/cpu_common.h"
#include "exchange.h"

namespace hrnet_fast {
namespace {

using at::vec::Vectorized;
using cpu::AxisTaps;
using cpu::activate;
using cpu::grain_for;
using cpu::load;

// acc[i] += scale[i] * x[i] over a channel vector (channels_last) ...
template <typename scalar_t, typename acc_t>
inline void accumulate_scaled(acc_t* acc, const acc_t* scale, const scalar_t* x, int64_t n) {
  int64_t i = 0;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    constexpr int64_t V = Vectorized<acc_t>::size();
    for (; i + V <= n; i += V) {
      const auto r = Vectorized<acc_t>::loadu(acc + i) +
                     Vectorized<acc_t>::loadu(scale + i) * Vectorized<acc_t>::loadu(x + i);
      r.store(acc + i);
    }
  }
  for (; i < n; ++i) acc[i] += scale[i] * load<scalar_t, acc_t>(x + i);
}

// ... and acc[i] += s * x[i] along a row (NCHW), one scale for the row.
template <typename scalar_t, typename acc_t>
inline void accumulate_row(acc_t* acc, acc_t s, const scalar_t* x, int64_t n) {
  int64_t i = 0;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    constexpr int64_t V = Vectorized<acc_t>::size();
    const Vectorized<acc_t> vs(s);
    for (; i + V <= n; i += V) {
      const auto r = Vectorized<acc_t>::loadu(acc + i) + vs * Vectorized<acc_t>::loadu(x + i);
      r.store(acc + i);
    }
  }
  for (; i < n; ++i) acc[i] += s * load<scalar_t, acc_t>(x + i);
}

template <typename scalar_t, typename acc_t>
inline void store_activated(scalar_t* out, const acc_t* acc, int64_t n, bool relu) {
  int64_t i = 0;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    constexpr int64_t V = Vectorized<acc_t>::size();
    const Vectorized<acc_t> zero(acc_t(0));
    for (; i + V <= n; i += V) {
      auto v = Vectorized<acc_t>::loadu(acc + i);
      // blendv keeps NaN where max would too, matching torch.relu.
      if (relu) v = Vectorized<acc_t>::blendv(v, zero, v < zero);
      v.store(out + i);
    }
  }
  for (; i < n; ++i) out[i] = static_cast<scalar_t>(activate(acc[i], relu));
}

// One input of the exchange, with its taps when it is interpolated.
template <typename scalar_t, typename acc_t>
struct Source {
  at::Tensor tensor;  // keeps the (possibly converted) data alive
  const scalar_t* data;
  int64_t h, w;
  const acc_t* scale;  // C entries
  bool same;           // already of the output size: read directly
  AxisTaps<acc_t> rows, cols;

  Source(const at::Tensor& x, at::MemoryFormat fmt, const acc_t* scale_row, int64_t H, int64_t W, Mode mode,
         bool align_corners)
      : tensor(x.contiguous(fmt)),
        data(tensor.const_data_ptr<scalar_t>()),
        h(x.size(2)),
        w(x.size(3)),
        scale(scale_row),
        same(h == H && w == W),
        rows(h, H, mode, align_corners),
        cols(w, W, mode, align_corners) {}
};

template <typename scalar_t>
at::Tensor forward_impl(TensorList inputs, const at::Tensor& scales, const at::Tensor& shifts, int64_t H,
                        int64_t W, Mode mode, bool align_corners, bool relu) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto& x0 = inputs[0];
  const int64_t N = x0.size(0), C = x0.size(1), K = static_cast<int64_t>(inputs.size());
  const auto fmt = output_format(x0);
  auto out = at::empty({N, C, H, W}, x0.options().memory_format(fmt));
  if (out.numel() == 0) return out;

  const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
  const at::Tensor sc = scales.to(acc_type).contiguous();
  const at::Tensor sh = shifts.to(acc_type).contiguous();
  const acc_t* sc_p = sc.const_data_ptr<acc_t>();
  const acc_t* sh_p = sh.const_data_ptr<acc_t>();
  // The shifts of all inputs add up to one constant per channel: interpolation
  // weights sum to one, so interp(x * s + b) = s * interp(x) + b.
  std::vector<acc_t> shift_sum(C, acc_t(0));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) shift_sum[c] += sh_p[k * C + c];

  std::vector<Source<scalar_t, acc_t>> src;
  src.reserve(K);
  for (int64_t k = 0; k < K; ++k) src.emplace_back(inputs[k], fmt, sc_p + k * C, H, W, mode, align_corners);
  scalar_t* out_p = out.mutable_data_ptr<scalar_t>();
  const bool nearest = mode == Mode::Nearest;

  if (fmt == at::MemoryFormat::ChannelsLast) {
    // One task = output rows (n, h); the inner loops run over contiguous
    // channel vectors.
    at::parallel_for(0, N * H, grain_for(W * C), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(C);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, h = row % H;
        for (int64_t w = 0; w < W; ++w) {
          std::copy(shift_sum.begin(), shift_sum.end(), acc.begin());
          for (const auto& s : src) {
            const scalar_t* base = s.data + n * s.h * s.w * C;
            if (s.same) {
              accumulate_scaled(acc.data(), s.scale, base + (h * W + w) * C, C);
            } else if (nearest) {
              accumulate_scaled(acc.data(), s.scale, base + (s.rows.i0[h] * s.w + s.cols.i0[w]) * C, C);
            } else {
              const scalar_t* p00 = base + (s.rows.i0[h] * s.w + s.cols.i0[w]) * C;
              const scalar_t* p01 = base + (s.rows.i0[h] * s.w + s.cols.i1[w]) * C;
              const scalar_t* p10 = base + (s.rows.i1[h] * s.w + s.cols.i0[w]) * C;
              const scalar_t* p11 = base + (s.rows.i1[h] * s.w + s.cols.i1[w]) * C;
              const acc_t h0 = s.rows.l0[h], h1 = s.rows.l1[h], w0 = s.cols.l0[w], w1 = s.cols.l1[w];
              for (int64_t c = 0; c < C; ++c) {
                const acc_t v = h0 * (w0 * load<scalar_t, acc_t>(p00 + c) + w1 * load<scalar_t, acc_t>(p01 + c)) +
                                h1 * (w0 * load<scalar_t, acc_t>(p10 + c) + w1 * load<scalar_t, acc_t>(p11 + c));
                acc[c] += s.scale[c] * v;
              }
            }
          }
          store_activated(out_p + (row * W + w) * C, acc.data(), C, relu);
        }
      }
    });
    return out;
  }

  // NCHW: one task = output rows (n, c, h).
  at::parallel_for(0, N * C * H, grain_for(W), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(W);
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t h = idx % H, plane = idx / H, c = plane % C;
      std::fill(acc.begin(), acc.end(), shift_sum[c]);
      for (const auto& s : src) {
        const scalar_t* base = s.data + plane * s.h * s.w;
        const acc_t scale = s.scale[c];
        if (s.same) {
          accumulate_row(acc.data(), scale, base + h * W, W);
        } else if (nearest) {
          const scalar_t* r = base + s.rows.i0[h] * s.w;
          const int64_t* ci = s.cols.i0.data();
          for (int64_t w = 0; w < W; ++w) acc[w] += scale * load<scalar_t, acc_t>(r + ci[w]);
        } else {
          const scalar_t* r0 = base + s.rows.i0[h] * s.w;
          const scalar_t* r1 = base + s.rows.i1[h] * s.w;
          const acc_t h0 = scale * s.rows.l0[h], h1 = scale * s.rows.l1[h];
          for (int64_t w = 0; w < W; ++w) {
            const int64_t a = s.cols.i0[w], b = s.cols.i1[w];
            const acc_t w0 = s.cols.l0[w], w1 = s.cols.l1[w];
            acc[w] += h0 * (w0 * load<scalar_t, acc_t>(r0 + a) + w1 * load<scalar_t, acc_t>(r0 + b)) +
                      h1 * (w0 * load<scalar_t, acc_t>(r1 + a) + w1 * load<scalar_t, acc_t>(r1 + b));
          }
        }
      }
      store_activated(out_p + idx * W, acc.data(), W, relu);
    }
  });
  return out;
}

at::Tensor exchange_cpu(at::TensorList inputs, const at::Tensor& scales, const at::Tensor& shifts,
                        c10::IntArrayRef size, c10::string_view mode, bool align_corners, bool relu) {
  check_exchange_args(inputs, scales, shifts, size);
  const Mode m = parse_mode(std::string_view(mode.data(), mode.size()));
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, inputs[0].scalar_type(), "hrnet_fast::exchange", [&] {
    out = forward_impl<scalar_t>(inputs, scales, shifts, size[0], size[1], m, align_corners, relu);
  });
  return out;
}

}  // namespace
}  // namespace hrnet_fast

// Backward lives in exchange_backward_cpu.cpp; both register here.
namespace hrnet_fast {
std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> exchange_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& out, at::TensorList inputs, const at::Tensor& scales,
    c10::string_view mode, bool align_corners, bool relu);
}

TORCH_LIBRARY_IMPL(hrnet_fast, CPU, m) {
  m.impl("exchange", &hrnet_fast::exchange_cpu);
  m.impl("exchange_backward", &hrnet_fast::exchange_backward_cpu);
}
