// Backward launches: one gradient pass per input and the fixed-order
// per-channel reduction of its partial sums.
#include <cuda_runtime.h>

#include "exchange_backward.cuh"
#include "geometry.h"

static_assert(hrnet_fast::cuda::kMaxSums == hrnet_fast::cuda::kMaxLaunchInputs + 1, "launch.h and exchange_backward.cuh disagree on the reduction limit");

namespace hrnet_fast {
namespace cuda {
namespace {

int64_t elem_size(DType d) {
  switch (d) {
    case DType::Half:
    case DType::BFloat16: return 2;
    case DType::Double: return 8;
    default: return 4;
  }
}

// Packed (16-byte) channels_last pass: every tensor it touches must allow it.
int pack_width(const BackwardArgs& a) {
  const int64_t es = elem_size(a.dtype);
  const int v = static_cast<int>(16 / es);
  if (!a.channels_last || es == 8) return 1;
  for (const View* t : {&a.grad, &a.out, &a.x, &a.grad_x})
    if (!packable(*t, v, es)) return 1;
  return v;
}

dim3 nchw_grid(const View& x, int64_t images) {
  return dim3(static_cast<unsigned>(ceil_div(x.size[3], 32)),
              static_cast<unsigned>(ceil_div(x.size[2], (kThreads / 32) * kRowsB)),
              static_cast<unsigned>(std::min(images * x.size[1], kMaxGridYZ)));
}

template <typename T, Mode M>
void backward_typed(const BackwardArgs& a, cudaStream_t stream) {
  using A = acc_t<T>;
  BackwardParams<A> p{};
  p.grad = a.grad.data;
  p.out = a.out.data;
  p.gn = a.grad.stride[0], p.gc = a.grad.stride[1], p.gh = a.grad.stride[2], p.gw = a.grad.stride[3];
  p.x = a.x.data;
  p.xn = a.x.stride[0], p.xc = a.x.stride[1], p.xh = a.x.stride[2], p.xw = a.x.stride[3];
  p.gx = a.grad_x.data;
  p.dn = a.grad_x.stride[0], p.dc = a.grad_x.stride[1], p.dh = a.grad_x.stride[2], p.dw = a.grad_x.stride[3];
  p.ay = make_axis<A>(a.x.size[2], a.grad.size[2], a.mode, a.align_corners);
  p.ax = make_axis<A>(a.x.size[3], a.grad.size[3], a.mode, a.align_corners);
  p.same = a.x.size[2] == a.grad.size[2] && a.x.size[3] == a.grad.size[3];
  p.scale = static_cast<const A*>(a.scale);
  p.part_gx = static_cast<A*>(a.part_gx);
  p.part_g = static_cast<A*>(a.part_g);
  const PartialShape ps = backward_partials(a);
  p.pn = ps.sn, p.pt = ps.st, p.pc = ps.sc;
  p.n0 = a.n_begin, p.n1 = a.n_end, p.c = a.x.size[1];
  p.h = static_cast<int>(a.x.size[2]), p.w = static_cast<int>(a.x.size[3]);
  p.relu = a.relu;
  if (!a.channels_last) {
    backward_nchw<T, M><<<nchw_grid(a.x, p.n1 - p.n0), dim3(32, kThreads / 32), 0, stream>>>(p);
    return;
  }
  const int vec = pack_width(a);
  const ClGeometry g = cl_geometry(p.c, vec, static_cast<int64_t>(p.h) * p.w);
  p.cvs = g.cvs, p.nct = g.nct;
  const dim3 block(g.ctw, g.py);
  const dim3 grid(static_cast<unsigned>(g.nct * g.tiles), static_cast<unsigned>(std::min(p.n1 - p.n0, kMaxGridYZ)));
  const size_t smem = 2 * sizeof(A) * block.x * block.y * vec;
  if constexpr (sizeof(T) < 8) {
    constexpr int V = 16 / sizeof(T);
    if (vec == V) {
      backward_cl<T, V, M><<<grid, block, smem, stream>>>(p);
      return;
    }
  }
  backward_cl<T, 1, M><<<grid, block, smem, stream>>>(p);
}

template <typename T>
void backward_mode(const BackwardArgs& a, cudaStream_t stream) {
  if (a.mode == Mode::Nearest)
    backward_typed<T, Mode::Nearest>(a, stream);
  else
    backward_typed<T, Mode::Bilinear>(a, stream);
}

}  // namespace

PartialShape backward_partials(const BackwardArgs& a) {
  PartialShape s;
  s.n = a.x.size[0];
  s.c = a.x.size[1];
  if (a.channels_last) {
    s.t = cl_geometry(s.c, pack_width(a), a.x.size[2] * a.x.size[3]).tiles;
    s.sc = 1, s.st = s.c, s.sn = s.t * s.c;
  } else {
    const dim3 g = nchw_grid(a.x, 1);
    s.t = static_cast<int64_t>(g.x) * g.y;
    s.st = 1, s.sc = s.t, s.sn = s.c * s.t;
  }
  s.numel = s.n * s.t * s.c;
  return s;
}

void launch_backward_input(const BackwardArgs& a, cudaStream_t stream) {
  switch (a.dtype) {
    case DType::Float: return backward_mode<float>(a, stream);
    case DType::Half: return backward_mode<__half>(a, stream);
    case DType::BFloat16: return backward_mode<__nv_bfloat16>(a, stream);
    case DType::Double: return backward_mode<double>(a, stream);
  }
}

namespace {

template <typename A>
void channel_sums_typed(const SumJob* jobs, int count, int64_t channels, cudaStream_t stream) {
  SumJobs<A> p{};
  for (int j = 0; j < count; ++j) {
    p.part[j] = static_cast<const A*>(jobs[j].part);
    p.n[j] = jobs[j].shape.n, p.t[j] = jobs[j].shape.t;
    p.sn[j] = jobs[j].shape.sn, p.st[j] = jobs[j].shape.st, p.sc[j] = jobs[j].shape.sc;
    p.out[j] = static_cast<A*>(jobs[j].out);
    p.rows[j] = jobs[j].rows;
  }
  p.channels = channels;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(channels, 1 << 30)), static_cast<unsigned>(count));
  channel_sums<A><<<grid, kThreads, 0, stream>>>(p);
}

}  // namespace

void launch_channel_sums(DType dtype, const SumJob* jobs, int count, int64_t channels, cudaStream_t stream) {
  if (dtype == DType::Double)
    channel_sums_typed<double>(jobs, count, channels, stream);
  else
    channel_sums_typed<float>(jobs, count, channels, stream);
}

}  // namespace cuda
}  // namespace hrnet_fast
