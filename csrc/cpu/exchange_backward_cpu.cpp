// CPU kernel of hrnet_fast::exchange_backward.
//
// With gm = grad * (out > 0) (torch.relu's mask: NaN outputs pass the
// gradient, as threshold_backward does) and G_k = interp_k^T(gm):
//   grad_x_k     = scale_k * G_k
//   grad_scale_k = sum over n, pixels of G_k * x_k     (per channel)
//   grad_shift_k = sum over n, pixels of gm            (the same for every k)
// Pass 1 reads grad and out once and finishes every same-size input. With
// NCHW it also finishes the smaller inputs, plane by plane, from that
// plane's gm while it is in cache, so gm never goes to memory. With
// channels_last, gm is written once and pass 2 gathers G_k for each smaller
// input over the output pixels that read each source pixel (no atomics).
// Per-channel sums are accumulated in double over a partition fixed by the
// shapes, then reduced in order, so results do not depend on thread count.
// Only what autograd keeps is read: out (when there is a ReLU) and the
// inputs that have a scale.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>

#include <tuple>
#include <type_traits>
#include <vector>

#include "cpu/cpu_common.h"
#include "cpu/vec_ops.h"
#include "exchange.h"

namespace hrnet_fast {
namespace {

using cpu::AdjointTaps;
using cpu::grain_for;

template <typename scalar_t>
std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> backward_impl(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& out, const OptionalTensors& inputs,
    c10::IntArrayRef input_sizes, const c10::List<bool>& channels_last, const OptionalTensors& scales, Mode mode,
    bool align_corners, bool relu) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = grad_out.size(0), C = grad_out.size(1), H = grad_out.size(2), W = grad_out.size(3);
  const int64_t K = static_cast<int64_t>(inputs.size());
  const auto format_of = [&](int64_t k) {
    return channels_last.get(k) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  };
  const auto fmt = format_of(0);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::TensorOptions options = grad_out.options().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  const auto h_of = [&](int64_t k) { return input_sizes[2 * k]; };
  const auto w_of = [&](int64_t k) { return input_sizes[2 * k + 1]; };

  std::vector<at::Tensor> grads(K);
  for (int64_t k = 0; k < K; ++k) grads[k] = at::empty({N, C, h_of(k), w_of(k)}, options.memory_format(fmt));
  if (grad_out.numel() == 0) {
    for (auto& g : grads) g.zero_();
    const auto acc = options.dtype(affine_dtype(options.dtype().toScalarType()));
    return {grads, at::zeros({K, C}, acc), at::zeros({C}, acc)};
  }

  // A gradient of another dtype (autocast) is cast, as autograd would for
  // the reference's ops. Without a ReLU, out is not read (nor needed).
  const at::Tensor g = grad_out.to(options.dtype().toScalarType()).contiguous(fmt);
  const at::Tensor o = relu ? out->contiguous(fmt) : g;
  constexpr auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
  // Each input's scale row, read in place where it can be; an absent
  // scale (the identity) reads a row of ones.
  const AffineRows given = affine_rows(scales, K, acc_type);
  std::vector<acc_t> ones;
  std::vector<const acc_t*> scale_of(K);
  for (int64_t k = 0; k < K; ++k) {
    if (given.ptr[k] == nullptr && ones.empty()) ones.assign(C, acc_t(1));
    scale_of[k] = given.ptr[k] != nullptr ? static_cast<const acc_t*>(given.ptr[k]) : ones.data();
  }
  // Inputs are given where their scale is (its gradient reads them); the
  // others read as zeros, so their rows of the scale gradient are zero.
  std::vector<at::Tensor> xs(K);
  std::vector<bool> same(K);
  bool any_smaller = false;
  for (int64_t k = 0; k < K; ++k) {
    const std::optional<at::Tensor> x = inputs.get(k);
    if (x.has_value() && x->defined()) xs[k] = x->contiguous(fmt);
    same[k] = h_of(k) == H && w_of(k) == W;
    any_smaller = any_smaller || !same[k];
  }
  const auto data_of = [&](int64_t k) { return xs[k].defined() ? xs[k].template const_data_ptr<scalar_t>() : nullptr; };
  const scalar_t* g_p = g.const_data_ptr<scalar_t>();
  const scalar_t* o_p = o.const_data_ptr<scalar_t>();

  // Smaller inputs: the adjoint of their interpolation, in CSR form per axis.
  struct Smaller {
    int64_t k, h, w;
    AdjointTaps<acc_t> rows, cols;
    const scalar_t* x;  // null: no scale, no dot
    scalar_t* gx;
    const acc_t* scale;
    // Nearest with an exact factor of 2, 4 or 8 along W (HRNet's case): the
    // W adjoint sums groups of that many neighbours, one flat loop over the
    // plane (sum_groups) instead of a tap walk per output row; the same
    // along H (group_h) sums groups of rows (sum_row_groups).
    int group, group_h;
  };
  std::vector<Smaller> smaller;
  for (int64_t k = 0; k < K; ++k) {
    if (same[k]) continue;
    const int64_t h = h_of(k), w = w_of(k);
    // The adjoint of the forward's taps (exchange_cpu.cpp's Source).
    const bool near64 = nearest_uses_double(std::is_same_v<scalar_t, double>, channels_last.get(k), C, H, W);
    smaller.push_back({k, h, w, AdjointTaps<acc_t>(h, H, mode, align_corners, near64),
                       AdjointTaps<acc_t>(w, W, mode, align_corners, near64), data_of(k),
                       grads[k].mutable_data_ptr<scalar_t>(), scale_of[k], 0, 0});
    smaller.back().group = cpu::exact_nearest_factor(w, W, mode);
    smaller.back().group_h = cpu::exact_nearest_factor(h, H, mode);
  }


  // Blocked form: when every smaller input is a nearest upsampling by an
  // exact factor along H (HRNet), a block of F output rows (F the largest
  // factor) holds all the rows some source rows read. Pass 1 fills the
  // block's gm in a task-local buffer and the smaller inputs' source rows
  // are finished from it while it is in cache: gm never goes to memory.
  int64_t block = 0;
  if (cl && !smaller.empty()) {
    block = 1;
    for (const auto& sm : smaller) {
      const int f = sm.group_h;
      if (f == 0) {
        block = 0;
        break;
      }
      block = std::max<int64_t>(block, f);
    }
  }
  // Partial sums: one row of C per partition unit. NCHW: images n (a task
  // unit is a plane (n, c)). channels_last: the blocks above, or else runs
  // of `rows_per_unit` output rows of at least kUnitElements elements.
  // Units depend on the shapes only, so the sums do not depend on threads.
  // Per-row partials cost as much memory traffic as the data itself at
  // HRNet's coarse branches (64 rows x 256 channels x 5 double rows). A
  // unit sums at most kChunk values per channel in acc_t, as NCHW does.
  constexpr int64_t kUnitElements = 8192;
  const int64_t rows_per_unit = std::max<int64_t>(
      1, std::min((kUnitElements + W * C - 1) / (W * C), cpu::kChunk / W));
  const int64_t units1 = !cl ? N : block > 0 ? N * (H / block) : (N * H + rows_per_unit - 1) / rows_per_unit;
  std::vector<double> shift_part(units1 * C, 0.0);
  std::vector<std::vector<double>> scale_part(K);
  for (int64_t k = 0; k < K; ++k)
    if (same[k]) scale_part[k].assign(units1 * C, 0.0);

  // Same-size inputs are finished in pass 1, all in one loop (grad_same).
  std::vector<int64_t> same_k;
  for (int64_t k = 0; k < K; ++k)
    if (same[k]) same_k.push_back(k);
  const int m = static_cast<int>(same_k.size());
  std::vector<scalar_t*> gx_base(m);
  std::vector<const scalar_t*> x_base(m);
  bool any_absent = false;
  for (int j = 0; j < m; ++j) {
    gx_base[j] = grads[same_k[j]].mutable_data_ptr<scalar_t>();
    x_base[j] = data_of(same_k[j]);
    any_absent = any_absent || x_base[j] == nullptr;
  }
  // What pass 1 reads for an absent same-size input: zeros (at most C
  // channels or kChunk pixels at a time), so its dot is zero.
  const std::vector<scalar_t> zeros(any_absent ? std::max<int64_t>(C, cpu::kChunk) : 0, scalar_t(0));
  const auto x_at = [&](int j, int64_t e) { return x_base[j] != nullptr ? x_base[j] + e : zeros.data(); };

  // channels_last helpers. Pass 1 for output row `row`: per-channel sums in
  // acc_t, added to the scratch's until cl_flush moves them to the unit's
  // double partials.
  struct RowScratch {
    std::vector<acc_t> shift_row, scale_row, acc, part;
    std::vector<scalar_t*> gx;
    std::vector<const acc_t*> scale;
    std::vector<const scalar_t*> x;
    std::vector<acc_t*> parts;
  };
  auto make_scratch = [&]() {
    RowScratch r{std::vector<acc_t>(C), std::vector<acc_t>(m * C), std::vector<acc_t>(C), std::vector<acc_t>(C),
                 std::vector<scalar_t*>(m), std::vector<const acc_t*>(m), std::vector<const scalar_t*>(m),
                 std::vector<acc_t*>(m)};
    for (int j = 0; j < m; ++j) r.scale[j] = scale_of[same_k[j]], r.parts[j] = r.scale_row.data() + j * C;
    return r;
  };
  // gm_row: where the row's gm goes (W * C entries), or null to drop it.
  auto cl_pass1_row = [&](RowScratch& r, int64_t row, scalar_t* gm_row, scalar_t* scratch) {
    for (int64_t px = 0; px < W; ++px) {
      const int64_t e = (row * W + px) * C;
      for (int j = 0; j < m; ++j) r.gx[j] = gx_base[j] + e, r.x[j] = x_at(j, e);
      cpu::grad_same_any<1>(g_p + e, o_p + e, gm_row ? gm_row + px * C : scratch, r.gx.data(), r.scale.data(),
                            r.x.data(), r.shift_row.data(), r.parts.data(), m, C, relu);
    }
  };
  // The unit's sums (accumulated by cl_pass1_row over its rows) into the
  // double partials, then cleared for the next unit.
  auto cl_flush = [&](RowScratch& r, int64_t unit) {
    for (int64_t c = 0; c < C; ++c) shift_part[unit * C + c] = r.shift_row[c];
    for (int j = 0; j < m; ++j)
      for (int64_t c = 0; c < C; ++c) scale_part[same_k[j]][unit * C + c] = r.scale_row[j * C + c];
    std::fill(r.shift_row.begin(), r.shift_row.end(), acc_t(0));
    std::fill(r.scale_row.begin(), r.scale_row.end(), acc_t(0));
  };
  // The adjoint for source row qh of image n of a smaller input (partition
  // unit: that source row): each source pixel's channel vector sums the
  // output pixels that read it. Output row p of image n is at
  // gm_rows + (p - first_row) * W * C.
  auto cl_source_row = [&](RowScratch& r, const Smaller& sm, int64_t n, int64_t qh, const scalar_t* gm_rows,
                           int64_t first_row) {
    const int64_t unit = n * sm.h + qh;
    std::fill(r.part.begin(), r.part.end(), acc_t(0));
    for (int64_t qw = 0; qw < sm.w; ++qw) {
      std::fill(r.acc.begin(), r.acc.end(), acc_t(0));
      for (int64_t i = sm.rows.offset[qh]; i < sm.rows.offset[qh + 1]; ++i) {
        const scalar_t* grow = gm_rows + (sm.rows.p[i] - first_row) * W * C;
        for (int64_t j = sm.cols.offset[qw]; j < sm.cols.offset[qw + 1]; ++j)
          cpu::axpy(r.acc.data(), sm.rows.w[i] * sm.cols.w[j], grow + sm.cols.p[j] * C, C);
      }
      const int64_t base = (unit * sm.w + qw) * C;
      cpu::scale_store_channels(sm.gx + base, sm.scale, r.acc.data(), C);
      if (sm.x != nullptr) cpu::add_product_into(r.part.data(), r.acc.data(), sm.x + base, C);
    }
    for (int64_t c = 0; c < C; ++c) scale_part[sm.k][unit * C + c] = r.part[c];
  };
  for (const auto& sm : smaller)
    if (cl) scale_part[sm.k].assign(N * sm.h * C, 0.0);

  if (cl && block > 0) {
    const int64_t blocks = H / block;
    at::parallel_for(0, N * blocks, grain_for(block * W * C), [&](int64_t begin, int64_t end) {
      RowScratch r = make_scratch();
      std::vector<scalar_t> gm_block(block * W * C);
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t n = unit / blocks, first = (unit % blocks) * block;
        for (int64_t i = 0; i < block; ++i)
          cl_pass1_row(r, n * H + first + i, gm_block.data() + i * W * C, nullptr);
        cl_flush(r, unit);
        for (const auto& sm : smaller) {
          const int64_t f = H / sm.h;
          for (int64_t qh = first / f; qh < (first + block) / f; ++qh)
            cl_source_row(r, sm, n, qh, gm_block.data(), first);
        }
      }
    });
  } else if (cl) {
    // General channels_last: gm is written to memory once (pass 1) when a
    // smaller input gathers from it (pass 2); with relu off it is grad.
    const bool materialise = relu && any_smaller;
    at::Tensor gm_t = materialise ? at::empty_like(g) : g;
    scalar_t* gm_w = materialise ? gm_t.mutable_data_ptr<scalar_t>() : nullptr;
    // Unit = a run of rows_per_unit output rows (n, h), flattened.
    at::parallel_for(0, units1, grain_for(rows_per_unit * W * C), [&](int64_t begin, int64_t end) {
      RowScratch r = make_scratch();
      std::vector<scalar_t> scratch(C);
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t last = std::min(N * H, (unit + 1) * rows_per_unit);
        for (int64_t row = unit * rows_per_unit; row < last; ++row)
          cl_pass1_row(r, row, gm_w ? gm_w + row * W * C : nullptr, scratch.data());
        cl_flush(r, unit);
      }
    });
    // Pass 2: the adjoint of each smaller input's interpolation, as a gather
    // over the materialised gm.
    const scalar_t* gm_p = gm_t.const_data_ptr<scalar_t>();
    for (const auto& sm : smaller) {
      at::parallel_for(0, N * sm.h, grain_for(sm.w * C * 4), [&](int64_t begin, int64_t end) {
        RowScratch r = make_scratch();
        for (int64_t unit = begin; unit < end; ++unit) {
          const int64_t n = unit / sm.h;
          cl_source_row(r, sm, n, unit % sm.h, gm_p + n * H * W * C, 0);
        }
      });
    }
  } else {
    // Unit = plane (n, c); sums in acc_t within chunks of kChunk elements,
    // chunks added in double, so long planes keep their precision.
    for (const auto& sm : smaller) scale_part[sm.k].assign(N * C, 0.0);
    int64_t max_hw = 0, max_Hw = 0;
    for (const auto& sm : smaller) max_hw = std::max(max_hw, sm.h * sm.w), max_Hw = std::max(max_Hw, H * sm.w);
    at::parallel_for(0, N * C, grain_for(H * W), [&](int64_t begin, int64_t end) {
      const int64_t HW = H * W;
      // gm of the current plane: all of it when smaller inputs read it.
      std::vector<scalar_t> gm_plane(smaller.empty() ? std::min(HW, cpu::kChunk) : HW);
      std::vector<acc_t> rows_w(max_Hw), gsum(max_hw);
      std::vector<scalar_t*> gx(m);
      std::vector<const acc_t*> scale(m);
      std::vector<const scalar_t*> x(m);
      std::vector<acc_t> part(m);
      std::vector<acc_t*> part_p(m);
      std::vector<double> dots(m);
      for (int j = 0; j < m; ++j) part_p[j] = &part[j];
      int64_t c = begin % C;  // advanced with the plane: no division per plane
      for (int64_t plane = begin; plane < end; ++plane, c = c + 1 == C ? 0 : c + 1) {
        for (int j = 0; j < m; ++j) scale[j] = scale_of[same_k[j]] + c;
        double shift_total = 0.0;
        std::fill(dots.begin(), dots.end(), 0.0);
        for (int64_t start = 0; start < HW; start += cpu::kChunk) {
          const int64_t off = plane * HW + start, len = std::min(cpu::kChunk, HW - start);
          for (int j = 0; j < m; ++j) {
            gx[j] = gx_base[j] + off;
            x[j] = x_at(j, off);
          }
          acc_t t = 0;
          std::fill(part.begin(), part.end(), acc_t(0));
          cpu::grad_same_any<0>(g_p + off, o_p + off, gm_plane.data() + (smaller.empty() ? 0 : start), gx.data(),
                                scale.data(), x.data(), &t, part_p.data(), m, len, relu);
          shift_total += static_cast<double>(t);
          for (int j = 0; j < m; ++j) dots[j] += static_cast<double>(part[j]);
        }
        shift_part[plane] = shift_total;
        for (int j = 0; j < m; ++j) scale_part[same_k[j]][plane] = dots[j];

        // Smaller inputs, separable: the W adjoint of every output row, then
        // the H adjoint as whole-row vector operations.
        for (const auto& sm : smaller) {
          const int64_t h = sm.h, w = sm.w;
          cpu::with_factor(sm.group, [&](auto F) {
            cpu::sum_groups<decltype(F)::value>(rows_w.data(), gm_plane.data(), H * w);
          });
          for (int64_t ph = 0; ph < H && !sm.group; ++ph) {
            const scalar_t* grow = gm_plane.data() + ph * W;
            for (int64_t qw = 0; qw < w; ++qw) {
              acc_t a = 0;
              for (int64_t j = sm.cols.offset[qw]; j < sm.cols.offset[qw + 1]; ++j)
                a += sm.cols.w[j] * static_cast<acc_t>(grow[sm.cols.p[j]]);
              rows_w[ph * w + qw] = a;
            }
          }
          cpu::with_factor(sm.group_h, [&](auto F) {
            cpu::sum_row_groups<decltype(F)::value>(gsum.data(), rows_w.data(), h, w);
          });
          if (!sm.group_h) {
            std::fill(gsum.begin(), gsum.begin() + h * w, acc_t(0));
            for (int64_t qh = 0; qh < h; ++qh)
              for (int64_t i = sm.rows.offset[qh]; i < sm.rows.offset[qh + 1]; ++i)
                cpu::axpy(gsum.data() + qh * w, sm.rows.w[i], rows_w.data() + sm.rows.p[i] * w, w);
          }
          const int64_t off = plane * h * w;
          cpu::scale_store(sm.gx + off, sm.scale[c], gsum.data(), h * w);
          scale_part[sm.k][plane] = sm.x != nullptr ? cpu::dot(gsum.data(), sm.x + off, h * w) : 0.0;
        }
      }
    });
  }

  // Ordered reductions of the partials.
  auto reduce = [&](const std::vector<double>& part, int64_t units) {
    std::vector<double> total(C, 0.0);
    for (int64_t u = 0; u < units; ++u)
      for (int64_t c = 0; c < C; ++c) total[c] += part[u * C + c];
    return total;
  };
  const auto shift_total = reduce(shift_part, units1);
  // The totals (double) are rounded once, into the accumulation dtype.
  auto gs = at::empty({K, C}, options.dtype(acc_type));
  auto gb = at::empty({C}, options.dtype(acc_type));
  acc_t* gs_p = gs.template mutable_data_ptr<acc_t>();
  acc_t* gb_p = gb.template mutable_data_ptr<acc_t>();
  for (int64_t c = 0; c < C; ++c) gb_p[c] = static_cast<acc_t>(shift_total[c]);
  for (int64_t k = 0; k < K; ++k) {
    const int64_t units = same[k] ? units1 : (cl ? N * h_of(k) : N);
    const auto scale_total = reduce(scale_part[k], units);
    for (int64_t c = 0; c < C; ++c) gs_p[k * C + c] = static_cast<acc_t>(scale_total[c]);
  }
  for (int64_t k = 0; k < K; ++k) {
    const auto want = format_of(k);
    if (want != fmt) grads[k] = grads[k].contiguous(want);
  }
  return {grads, gs, gb};
}

}  // namespace

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> exchange_backward_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& out, const OptionalTensors& inputs,
    c10::IntArrayRef input_sizes, const c10::List<bool>& channels_last, const OptionalTensors& scales,
    c10::string_view mode, bool align_corners, bool relu) {
  const std::string_view mode_name(mode.data(), mode.size());
  check_exchange_backward(grad_out, out, inputs, c10::fromIntArrayRefSlow(input_sizes), channels_last, scales,
                          mode_name, relu);
  const Mode m = parse_mode(mode_name);
  std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, backward_dtype(grad_out, out),
                                  "hrnet_fast::exchange_backward", [&] {
                                    result = backward_impl<scalar_t>(grad_out, out, inputs, input_sizes,
                                                                     channels_last, scales, m, align_corners, relu);
                                  });
  return result;
}

}  // namespace hrnet_fast
