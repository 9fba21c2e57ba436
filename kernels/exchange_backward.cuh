// Backward of the exchange, one pass per input plus a per-channel reduction.
//
// For input k at pixel q: G = adjoint_interp(gm)(q), where gm is the output
// gradient masked by the ReLU; grad_x = scale * G. The adjoint is a gather:
// interp.h's readers() gives the contiguous range of output coordinates that
// read q on each axis and weight() their weights, so no atomics are needed.
// Per-channel sums of G * x (grad of scale) and of G (grad of shift, from
// input 0) are written as per-block partials and reduced by channel_sums in a
// fixed order: results are bit-identical from run to run.
#pragma once

#include "exchange_cuda.cuh"

namespace hrnet_fast {
namespace cuda {

// Output gradient at element offset `off`, zeroed where the ReLU was off.
// The test is ATen's threshold_backward (out <= 0), so a NaN output passes
// its gradient through as it does in the reference.
template <typename T, int VEC>
__device__ __forceinline__ void load_masked(const BackwardParams<acc_t<T>>& p, int64_t off,
                                            acc_t<T> (&g)[VEC]) {
  using A = acc_t<T>;
  load_pack<T, VEC>(static_cast<const T*>(p.grad) + off, g);
  if (p.relu) {
    A o[VEC];
    load_pack<T, VEC>(static_cast<const T*>(p.out) + off, o);
#pragma unroll
    for (int j = 0; j < VEC; ++j)
      if (o[j] <= A(0)) g[j] = A(0);
  }
}

// G at input pixel (qh, qw) for VEC channels; `base` = n * gn + c0 * gc.
// rh / rw: readers of qh / qw (unused for a same-size input).
template <typename T, int VEC, Mode M>
__device__ __forceinline__ void adjoint(const BackwardParams<acc_t<T>>& p, int64_t base, int qh, int qw,
                                        Range rh, Range rw, acc_t<T> (&G)[VEC]) {
  using A = acc_t<T>;
  if (p.same) {
    load_masked<T, VEC>(p, base + qh * p.gh + qw * p.gw, G);
    return;
  }
#pragma unroll
  for (int j = 0; j < VEC; ++j) G[j] = 0;
  for (int64_t ph = rh.begin; ph < rh.end; ++ph) {
    A row[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) row[j] = 0;
    for (int64_t pw = rw.begin; pw < rw.end; ++pw) {
      A g[VEC];
      load_masked<T, VEC>(p, base + ph * p.gh + pw * p.gw, g);
      // Every reader of a nearest source has weight 1.
      const A wx = M == Mode::Nearest ? A(1) : weight(p.ax, pw, static_cast<int64_t>(qw));
#pragma unroll
      for (int j = 0; j < VEC; ++j) row[j] += wx * g[j];
    }
    const A wy = M == Mode::Nearest ? A(1) : weight(p.ay, ph, static_cast<int64_t>(qh));
#pragma unroll
    for (int j = 0; j < VEC; ++j) G[j] += wy * row[j];
  }
}

// Gradient of one input pixel: writes grad_x, adds to the running sums.
// `sc`: this input's scale for the VEC channels.
template <typename T, int VEC, Mode M>
__device__ __forceinline__ void backward_pixel(const BackwardParams<acc_t<T>>& p, int64_t n, int64_t c0, int qh,
                                               int qw, Range rh, Range rw, const acc_t<T> (&sc)[VEC],
                                               acc_t<T> (&sgx)[VEC], acc_t<T> (&sg)[VEC]) {
  using A = acc_t<T>;
  A G[VEC], x[VEC];
  adjoint<T, VEC, M>(p, n * p.gn + c0 * p.gc, qh, qw, rh, rw, G);
  load_pack<T, VEC>(static_cast<const T*>(p.x) + n * p.xn + c0 * p.xc + qh * p.xh + qw * p.xw, x);
  A d[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    d[j] = sc[j] * G[j];
    sgx[j] += G[j] * x[j];
    sg[j] += G[j];
  }
  store_pack<T, VEC>(static_cast<T*>(p.gx) + n * p.dn + c0 * p.dc + qh * p.dh + qw * p.dw, d);
}

// channels_last: the same block shape and tiling as forward_cl, over this
// input's pixels. Partials: one row per (image, pixel tile). Needs dynamic
// shared memory of 2 * blockDim.x * blockDim.y * VEC accumulators.
template <typename T, int VEC, Mode M>
__global__ void __launch_bounds__(kThreads) backward_cl(const BackwardParams<acc_t<T>> p) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* red = reinterpret_cast<A*>(smem_raw);
  const int ct = blockIdx.x % p.nct;
  const int64_t tile = blockIdx.x / p.nct;
  const int cv = ct * blockDim.x + threadIdx.x;
  const bool active = cv < p.cvs;
  const int64_t c0 = static_cast<int64_t>(cv) * VEC;
  const int hw = p.h * p.w;
  const int slot = (threadIdx.y * blockDim.x + threadIdx.x) * VEC;
  const int half = blockDim.x * blockDim.y * VEC;
  A sc[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) sc[j] = 0;
  if (active) load_params<A, VEC>(p.scale + c0, sc);
  for (int64_t n = p.n0 + blockIdx.y; n < p.n1; n += gridDim.y) {
    A sgx[VEC], sg[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) sgx[j] = sg[j] = 0;
    if (active) {
      constexpr int P = pixels_per_thread(VEC);
      for (int i = 0; i < P; ++i) {
        const int64_t q = (tile * P + i) * blockDim.y + threadIdx.y;
        if (q >= hw) break;
        const int qh = static_cast<int>(q) / p.w;
        const int qw = static_cast<int>(q) - qh * p.w;
        Range rh{0, 0}, rw{0, 0};
        if (!p.same) {
          rh = readers(p.ay, static_cast<int64_t>(qh));
          rw = readers(p.ax, static_cast<int64_t>(qw));
        }
        backward_pixel<T, VEC, M>(p, n, c0, qh, qw, rh, rw, sc, sgx, sg);
      }
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      red[slot + j] = sgx[j];
      red[half + slot + j] = sg[j];
    }
    __syncthreads();
    if (threadIdx.y == 0 && active) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        A a = 0, b = 0;
        for (int y = 0; y < static_cast<int>(blockDim.y); ++y) {
          const int s = (y * blockDim.x + threadIdx.x) * VEC + j;
          a += red[s];
          b += red[half + s];
        }
        const int64_t at = n * p.pn + tile * p.pt + (c0 + j) * p.pc;
        p.part_gx[at] = a;
        if (p.part_g != nullptr) p.part_g[at] = b;
      }
    }
    __syncthreads();
  }
}

// NCHW: block (32 columns, 8 rows) x kRowsB rows per thread of one (n, c)
// plane of this input. Partials: one per (plane, block tile).
constexpr int kRowsB = 4;

template <typename T, Mode M>
__global__ void __launch_bounds__(kThreads) backward_nchw(const BackwardParams<acc_t<T>> p) {
  using A = acc_t<T>;
  __shared__ A warp_sums[32];
  const int qw = blockIdx.x * blockDim.x + threadIdx.x;
  const bool col_ok = qw < p.w;
  // Reader ranges depend only on the coordinate: found once, used for
  // every plane.
  Range rw{0, 0};
  Range rh[kRowsB];
  int qh[kRowsB];
#pragma unroll
  for (int r = 0; r < kRowsB; ++r) {
    qh[r] = (blockIdx.y * kRowsB + r) * blockDim.y + threadIdx.y;
    rh[r] = Range{0, 0};
    if (!p.same && qh[r] < p.h) rh[r] = readers(p.ay, static_cast<int64_t>(qh[r]));
  }
  if (!p.same && col_ok) rw = readers(p.ax, static_cast<int64_t>(qw));
  const int64_t tile = static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x;
  for (int64_t pl = p.n0 * p.c + blockIdx.z; pl < p.n1 * p.c; pl += gridDim.z) {
    const int64_t n = pl / p.c;
    const int64_t c = pl - n * p.c;
    A sgx[1] = {0}, sg[1] = {0};
    const A sc[1] = {__ldg(p.scale + c)};
    if (col_ok) {
#pragma unroll
      for (int r = 0; r < kRowsB; ++r)
        if (qh[r] < p.h) backward_pixel<T, 1, M>(p, n, c, qh[r], qw, rh[r], rw, sc, sgx, sg);
    }
    const A a = block_sum(sgx[0], warp_sums);
    const A b = block_sum(sg[0], warp_sums);
    if (threadIdx.x == 0 && threadIdx.y == 0) {
      const int64_t at = n * p.pn + tile * p.pt + c * p.pc;
      p.part_gx[at] = a;
      if (p.part_g != nullptr) p.part_g[at] = b;
    }
  }
}

// Per-channel reductions of the backward, all in one launch: job j sums
// part[j][n * sn + t * st + c * sc] over (n, t) for every channel c and
// writes the sum to out[j][r * channels + c] for r < rows[j].
constexpr int kMaxSums = kMaxInputs + 1;  // one per input's scale, one for the shifts

template <typename A>
struct SumJobs {
  const A* part[kMaxSums];
  int64_t n[kMaxSums], t[kMaxSums];
  int64_t sn[kMaxSums], st[kMaxSums], sc[kMaxSums];
  A* out[kMaxSums];
  int rows[kMaxSums];
  int64_t channels;
};

// blockIdx.y = job, blockIdx.x strides over channels; a fixed summation
// order for every channel.
template <typename A>
__global__ void __launch_bounds__(kThreads) channel_sums(const SumJobs<A> jobs) {
  __shared__ A warp_sums[32];
  const int j = blockIdx.y;
  const A* part = jobs.part[j];
  const int64_t t = jobs.t[j];
  const int64_t count = jobs.n[j] * t;
  for (int64_t ch = blockIdx.x; ch < jobs.channels; ch += gridDim.x) {
    A s = 0;
    for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
      const int64_t ni = i / t;
      s += part[ni * jobs.sn[j] + (i - ni * t) * jobs.st[j] + ch * jobs.sc[j]];
    }
    s = block_sum(s, warp_sums);
    if (threadIdx.x == 0) {
      for (int r = 0; r < jobs.rows[j]; ++r) jobs.out[j][r * jobs.channels + ch] = s;
    }
  }
}

}  // namespace cuda
}  // namespace hrnet_fast
