// Forward launch: picks dtype, mode and layout, fills the kernel parameters
// (Axis constants once per launch) and enqueues one kernel.
#include <cuda_runtime.h>

#include "exchange_forward.cuh"
#include "geometry.h"

namespace hrnet_fast {
namespace cuda {
namespace {

template <typename T>
ForwardParams<acc_t<T>> forward_params(const ForwardArgs& a) {
  using A = acc_t<T>;
  ForwardParams<A> p{};
  const View& o = a.out;
  p.k = a.k;
  p.scales = static_cast<const A*>(a.scales);
  p.shifts = static_cast<const A*>(a.shifts);
  p.out = o.data;
  p.on = o.stride[0], p.oc = o.stride[1], p.oh = o.stride[2], p.ow = o.stride[3];
  p.n = o.size[0], p.c = o.size[1];
  p.h = static_cast<int>(o.size[2]), p.w = static_cast<int>(o.size[3]);
  p.relu = a.relu;
  for (int k = 0; k < a.k; ++k) {
    const View& x = a.inputs[k];
    Source<A>& s = p.src[k];
    s.data = x.data;
    s.sn = x.stride[0], s.sc = x.stride[1], s.sh = x.stride[2], s.sw = x.stride[3];
    s.ay = make_axis<A>(x.size[2], o.size[2], a.mode, a.align_corners);
    s.ax = make_axis<A>(x.size[3], o.size[3], a.mode, a.align_corners);
    s.same = x.size[2] == o.size[2] && x.size[3] == o.size[3];
  }
  return p;
}

template <typename T, Mode M>
void forward_typed(const ForwardArgs& a, cudaStream_t stream) {
  ForwardParams<acc_t<T>> p = forward_params<T>(a);
  if (!a.channels_last) {
    const dim3 block(32, kThreads / 32);
    const dim3 grid(static_cast<unsigned>(ceil_div(p.w, block.x)),
                    static_cast<unsigned>(ceil_div(p.h, block.y * kRows)),
                    static_cast<unsigned>(std::min(p.n * p.c, kMaxGridYZ)));
    forward_nchw<T, M><<<grid, block, 0, stream>>>(p);
    return;
  }
  constexpr int V = 16 / sizeof(T);
  bool vec = sizeof(T) < 8 && packable(a.out, V, sizeof(T));
  for (int k = 0; k < a.k && vec; ++k) vec = packable(a.inputs[k], V, sizeof(T));
  const ClGeometry g = cl_geometry(p.c, vec ? V : 1, static_cast<int64_t>(p.h) * p.w);
  p.cvs = g.cvs, p.nct = g.nct;
  const dim3 block(g.ctw, g.py);
  const dim3 grid(static_cast<unsigned>(g.nct * g.tiles), static_cast<unsigned>(std::min(p.n, kMaxGridYZ)));
  if constexpr (sizeof(T) < 8) {
    if (vec) {
      forward_cl<T, V, M><<<grid, block, 0, stream>>>(p);
      return;
    }
  }
  forward_cl<T, 1, M><<<grid, block, 0, stream>>>(p);
}

template <typename T>
void forward_mode(const ForwardArgs& a, cudaStream_t stream) {
  if (a.mode == Mode::Nearest)
    forward_typed<T, Mode::Nearest>(a, stream);
  else
    forward_typed<T, Mode::Bilinear>(a, stream);
}

}  // namespace

void launch_forward(const ForwardArgs& a, cudaStream_t stream) {
  switch (a.dtype) {
    case DType::Float: return forward_mode<float>(a, stream);
    case DType::Half: return forward_mode<__half>(a, stream);
    case DType::BFloat16: return forward_mode<__nv_bfloat16>(a, stream);
    case DType::Double: return forward_mode<double>(a, stream);
  }
}

}  // namespace cuda
}  // namespace hrnet_fast
