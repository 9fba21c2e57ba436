// Vectorised loops over contiguous runs (an NCHW row or plane, a channels_last
// channel vector) used by the CPU kernels. Values are loaded in the storage
// type and computed in the accumulation type acc_t (float for float, half and
// bfloat16; double for double).
//
// These are plain loops written for the compiler's vectoriser (`omp simd`),
// not at::vec::Vectorized: an extension is compiled for baseline x86-64, where
// Vectorized falls back to its generic array implementation, whose compares
// and blends come out as scalar branches (measured 3-10x slower here than the
// loops below, which GCC turns into SSE, or AVX with -march flags passed via
// HRNET_FAST_CXXFLAGS). Reductions use `omp simd reduction`, whose order is
// fixed at compile time, so they are deterministic.
#pragma once

#include <cstdint>

namespace hrnet_fast {
namespace cpu {

// acc[i] += s * x[i]
template <typename acc_t, typename scalar_t>
inline void axpy(acc_t* __restrict acc, acc_t s, const scalar_t* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += s * static_cast<acc_t>(x[i]);
}

// acc[i] += scale[i] * x[i]
template <typename acc_t, typename scalar_t>
inline void axpy_channels(acc_t* __restrict acc, const acc_t* __restrict scale, const scalar_t* __restrict x,
                          int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += scale[i] * static_cast<acc_t>(x[i]);
}

// dst[i] = act(shift + addend[i] + sum_k s_k[i] * x_k[i]) over M same-size
// inputs read in one pass (M a compile-time count, so the k loop unrolls
// inside the vector loop; M < 0: the run-time count m, for more than four
// same-size inputs, not an HRNet shape). Stride selects the scale: 0 for
// one scalar per input (an NCHW plane), 1 for a per-element vector (a
// channels_last row); the shift likewise. The addend (the interpolated
// inputs, already summed) is there only when Add. dst is the output (act
// applied) or an accumulator that interpolated inputs are added to
// afterwards (relu false).
template <int M, int Stride, bool Add, typename acc_t, typename scalar_t, typename dst_t>
inline void affine_sum(dst_t* __restrict dst, const acc_t* __restrict shift, const acc_t* __restrict addend,
                       const acc_t* const* scale, const scalar_t* const* x, int64_t n, bool relu, int m = M) {
  const acc_t* __restrict s[M > 0 ? M : 1];
  const scalar_t* __restrict p[M > 0 ? M : 1];
  for (int k = 0; k < M; ++k) s[k] = scale[k], p[k] = x[k];
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    acc_t v = shift[i * Stride];
    if constexpr (Add) v += addend[i];
    if constexpr (M >= 0) {
      for (int k = 0; k < M; ++k) v += s[k][i * Stride] * static_cast<acc_t>(p[k][i]);
    } else {
      for (int k = 0; k < m; ++k) v += scale[k][i * Stride] * static_cast<acc_t>(x[k][i]);
    }
    if (relu) v = v < acc_t(0) ? acc_t(0) : v;
    dst[i] = static_cast<dst_t>(v);
  }
}

template <int Stride, bool Add, typename acc_t, typename scalar_t, typename dst_t>
inline void affine_sum_m(dst_t* dst, const acc_t* shift, const acc_t* addend, const acc_t* const* scale,
                         const scalar_t* const* x, int m, int64_t n, bool relu) {
  switch (m) {
    case 0: return affine_sum<0, Stride, Add>(dst, shift, addend, scale, x, n, relu);
    case 1: return affine_sum<1, Stride, Add>(dst, shift, addend, scale, x, n, relu);
    case 2: return affine_sum<2, Stride, Add>(dst, shift, addend, scale, x, n, relu);
    case 3: return affine_sum<3, Stride, Add>(dst, shift, addend, scale, x, n, relu);
    case 4: return affine_sum<4, Stride, Add>(dst, shift, addend, scale, x, n, relu);
    default: return affine_sum<-1, Stride, Add>(dst, shift, addend, scale, x, n, relu, m);
  }
}

// affine_sum over a run-time count m >= 0 of inputs, without an addend.
template <int Stride, typename acc_t, typename scalar_t, typename dst_t>
inline void affine_sum_any(dst_t* dst, const acc_t* shift, const acc_t* const* scale, const scalar_t* const* x,
                           int m, int64_t n, bool relu) {
  affine_sum_m<Stride, false>(dst, shift, static_cast<const acc_t*>(nullptr), scale, x, m, n, relu);
}

// affine_sum over a run-time count m >= 0 of inputs plus an addend.
template <int Stride, typename acc_t, typename scalar_t, typename dst_t>
inline void affine_sum_add(dst_t* dst, const acc_t* shift, const acc_t* addend, const acc_t* const* scale,
                           const scalar_t* const* x, int m, int64_t n, bool relu) {
  affine_sum_m<Stride, true>(dst, shift, addend, scale, x, m, n, relu);
}

// t[i] = scale[i] * (a * x[i] + b * y[i])
template <typename acc_t, typename scalar_t>
inline void scaled_lerp_channels(acc_t* __restrict t, const acc_t* __restrict scale, acc_t a,
                                 const scalar_t* __restrict x, acc_t b, const scalar_t* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) t[i] = scale[i] * (a * static_cast<acc_t>(x[i]) + b * static_cast<acc_t>(y[i]));
}

// out[i] = scale[i] * x[i]
template <typename acc_t, typename scalar_t>
inline void mul_channels(acc_t* __restrict out, const acc_t* __restrict scale, const scalar_t* __restrict x,
                         int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = scale[i] * static_cast<acc_t>(x[i]);
}

// out[i] = a * x[i] + b * y[i]
template <typename acc_t>
inline void lerp(acc_t* __restrict out, acc_t a, const acc_t* __restrict x, acc_t b, const acc_t* __restrict y,
                 int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = a * x[i] + b * y[i];
}

// acc[i] += a * x[i] + b * y[i]
template <typename acc_t>
inline void axpby(acc_t* __restrict acc, acc_t a, const acc_t* __restrict x, acc_t b, const acc_t* __restrict y,
                  int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += a * x[i] + b * y[i];
}

// out[i] = x[i*F] + x[i*F+1] + ... + x[i*F+F-1], added in that order: the
// adjoint of nearest upsampling by an exact factor F along a contiguous axis.
template <int F, typename acc_t, typename scalar_t>
inline void sum_groups(acc_t* __restrict out, const scalar_t* __restrict x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    acc_t a = static_cast<acc_t>(x[i * F]);
    for (int j = 1; j < F; ++j) a += static_cast<acc_t>(x[i * F + j]);
    out[i] = a;
  }
}

// out[q * w + i] = x[(q*F) * w + i] + ... + x[(q*F + F-1) * w + i] for q < h,
// added in that order: the adjoint of nearest upsampling by an exact factor F
// across rows of w.
template <int F, typename acc_t>
inline void sum_row_groups(acc_t* __restrict out, const acc_t* __restrict x, int64_t h, int64_t w) {
  for (int64_t q = 0; q < h; ++q) {
    const acc_t* __restrict r = x + q * F * w;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) {
      acc_t a = r[i];
      for (int j = 1; j < F; ++j) a += r[j * w + i];
      out[q * w + i] = a;
    }
  }
}

// out[i*F + j] = x[i] for j < F: nearest upsampling by an exact factor F
// along a contiguous axis.
template <int F, typename acc_t, typename scalar_t>
inline void repeat_each(acc_t* __restrict out, const scalar_t* __restrict x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const acc_t v = static_cast<acc_t>(x[i]);
    for (int j = 0; j < F; ++j) out[i * F + j] = v;
  }
}

// acc[(i*F + r) * W + j*F + t] (+)= s * x[i * w + j] for r, t < F (W =
// w*F): a plane upsampled by an exact factor F on both axes (nearest), in
// one loop nest over the source plane; Store writes instead of adding (the
// first term of an accumulator, saving its initialisation).
template <int F, bool Store, typename acc_t, typename scalar_t>
inline void upsample_axpy(acc_t* __restrict acc, acc_t s, const scalar_t* __restrict x, int64_t h, int64_t w) {
  const int64_t W = w * F;
  for (int64_t i = 0; i < h; ++i) {
    acc_t* __restrict a = acc + i * F * W;
    for (int64_t j = 0; j < w; ++j) {
      const acc_t v = s * static_cast<acc_t>(x[i * w + j]);
      for (int r = 0; r < F; ++r)
        for (int t = 0; t < F; ++t) {
          if constexpr (Store) {
            a[r * W + j * F + t] = v;
          } else {
            a[r * W + j * F + t] += v;
          }
        }
    }
  }
}

// out[i] = s * x[i]
template <typename acc_t, typename scalar_t>
inline void scale_store(scalar_t* __restrict out, acc_t s, const acc_t* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(s * x[i]);
}

// out[i] = scale[i] * x[i]
template <typename acc_t, typename scalar_t>
inline void scale_store_channels(scalar_t* __restrict out, const acc_t* __restrict scale, const acc_t* __restrict x,
                                 int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(scale[i] * x[i]);
}

// acc[i] += x[i] * y[i]
template <typename acc_t, typename scalar_t>
inline void add_product_into(acc_t* __restrict acc, const acc_t* __restrict x, const scalar_t* __restrict y,
                             int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i] * static_cast<acc_t>(y[i]);
}

// The backward's first pass over M same-size inputs (M compile-time, <= 4)
// in one loop: with gm = relu && out <= 0 ? 0 : grad (threshold_backward's
// mask), writes gm to gm_out (exact in the storage type: it is 0 or grad;
// smaller inputs gather from it, or it is scratch), gx_k = scale_k * gm, and
// accumulates gm into shift_acc and gm * x_k into scale_acc[k]. Stride 1
// (a channels_last channel run): scales and accumulators are per element.
// Stride 0 (an NCHW plane): one scalar scale per input and one scalar
// accumulator each, reduced with omp simd in an order fixed by n.
template <int M, int Stride, typename acc_t, typename scalar_t>
inline void grad_same(const scalar_t* __restrict grad, const scalar_t* __restrict out, scalar_t* __restrict gm_out,
                      scalar_t* const* gx, const acc_t* const* scale, const scalar_t* const* x,
                      acc_t* __restrict shift_acc, acc_t* const* scale_acc, int64_t n, bool relu) {
  scalar_t* __restrict g[M > 0 ? M : 1];
  const acc_t* __restrict s[M > 0 ? M : 1];
  const scalar_t* __restrict p[M > 0 ? M : 1];
  acc_t* __restrict a[M > 0 ? M : 1];
  for (int k = 0; k < M; ++k) g[k] = gx[k], s[k] = scale[k], p[k] = x[k], a[k] = scale_acc[k];
  if constexpr (Stride == 1) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const acc_t o = static_cast<acc_t>(out[i]), gi = static_cast<acc_t>(grad[i]);
      const acc_t gm = relu && o <= acc_t(0) ? acc_t(0) : gi;
      gm_out[i] = static_cast<scalar_t>(gm);
      shift_acc[i] += gm;
      for (int k = 0; k < M; ++k) {
        g[k][i] = static_cast<scalar_t>(s[k][i] * gm);
        a[k][i] += gm * static_cast<acc_t>(p[k][i]);
      }
    }
  } else {
    acc_t t = 0, d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : t, d0, d1, d2, d3)
    for (int64_t i = 0; i < n; ++i) {
      const acc_t o = static_cast<acc_t>(out[i]), gi = static_cast<acc_t>(grad[i]);
      const acc_t gm = relu && o <= acc_t(0) ? acc_t(0) : gi;
      gm_out[i] = static_cast<scalar_t>(gm);
      t += gm;
      if constexpr (M > 0) g[0][i] = static_cast<scalar_t>(s[0][0] * gm), d0 += gm * static_cast<acc_t>(p[0][i]);
      if constexpr (M > 1) g[1][i] = static_cast<scalar_t>(s[1][0] * gm), d1 += gm * static_cast<acc_t>(p[1][i]);
      if constexpr (M > 2) g[2][i] = static_cast<scalar_t>(s[2][0] * gm), d2 += gm * static_cast<acc_t>(p[2][i]);
      if constexpr (M > 3) g[3][i] = static_cast<scalar_t>(s[3][0] * gm), d3 += gm * static_cast<acc_t>(p[3][i]);
    }
    *shift_acc += t;
    const acc_t d[4] = {d0, d1, d2, d3};
    for (int k = 0; k < M; ++k) *a[k] += d[k];
  }
}

// grad_same over a run-time count m >= 0: up to four inputs fused, any
// further ones (not an HRNet shape) in one more pass each over gm_out.
template <int Stride, typename acc_t, typename scalar_t>
inline void grad_same_any(const scalar_t* grad, const scalar_t* out, scalar_t* gm_out, scalar_t* const* gx,
                          const acc_t* const* scale, const scalar_t* const* x, acc_t* shift_acc,
                          acc_t* const* scale_acc, int m, int64_t n, bool relu) {
  switch (m) {
    case 0: return grad_same<0, Stride>(grad, out, gm_out, gx, scale, x, shift_acc, scale_acc, n, relu);
    case 1: return grad_same<1, Stride>(grad, out, gm_out, gx, scale, x, shift_acc, scale_acc, n, relu);
    case 2: return grad_same<2, Stride>(grad, out, gm_out, gx, scale, x, shift_acc, scale_acc, n, relu);
    case 3: return grad_same<3, Stride>(grad, out, gm_out, gx, scale, x, shift_acc, scale_acc, n, relu);
    default: grad_same<4, Stride>(grad, out, gm_out, gx, scale, x, shift_acc, scale_acc, n, relu);
  }
  for (int k = 4; k < m; ++k) {
    acc_t d = 0;
#pragma omp simd reduction(+ : d)
    for (int64_t i = 0; i < n; ++i) {
      const acc_t gm = static_cast<acc_t>(gm_out[i]);
      gx[k][i] = static_cast<scalar_t>(scale[k][i * Stride] * gm);
      if constexpr (Stride == 1) {
        scale_acc[k][i] += gm * static_cast<acc_t>(x[k][i]);
      } else {
        d += gm * static_cast<acc_t>(x[k][i]);
      }
    }
    if constexpr (Stride == 0) *scale_acc[k] += d;
  }
}

// Reductions over a contiguous run: vector lanes in acc_t within chunks of
// kChunk elements, chunks added in double, so long planes keep their
// precision and the order depends only on n.
constexpr int64_t kChunk = 1024;

// sum_i x[i] * y[i]
template <typename acc_t, typename scalar_t>
inline double dot(const acc_t* __restrict x, const scalar_t* __restrict y, int64_t n) {
  double result = 0.0;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t end = start + kChunk < n ? start + kChunk : n;
    acc_t total = 0;
#pragma omp simd reduction(+ : total)
    for (int64_t i = start; i < end; ++i) total += x[i] * static_cast<acc_t>(y[i]);
    result += static_cast<double>(total);
  }
  return result;
}

}  // namespace cpu
}  // namespace hrnet_fast
