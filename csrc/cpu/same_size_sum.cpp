// Why a file of its own: the extension is built for baseline x86-64, whose
// 4-wide SSE loops ran these in-cache sums over 8x6 planes at about half the
// rate of ATen's own (runtime-dispatched) kernels. GCC's target_clones
// compiles each exported function below for AVX-512, AVX2 and the baseline
// and picks one when the library loads (an ifunc). Target attributes, unlike
// per-file -mavx2 flags, cannot leak wide instructions into inline code
// shared with the rest of the extension. No torch headers here: nothing but
// this file's own code is compiled three times.
#include "cpu/same_size_sum.h"

// target_clones needs GCC and an ifunc-capable libc (glibc); elsewhere the
// one baseline version is built.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#define HRNET_FAST_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HRNET_FAST_CLONES
#endif

namespace hrnet_fast {
namespace cpu {
namespace {

// Inlined into each clone, so each gets that clone's vector width.
template <int M, bool Relu>
__attribute__((always_inline)) inline void sum_planes(float* out, const float* const* x, const float* const* scale,
                                                      const float* shift, int64_t begin, int64_t end,
                                                      int64_t channels, int64_t plane) {
  int64_t c = begin % channels;  // advanced with the plane: no division per plane
  for (int64_t p = begin; p < end; ++p, c = c + 1 == channels ? 0 : c + 1) {
    float s[M];
    const float* __restrict xp[M];
    for (int k = 0; k < M; ++k) s[k] = scale[k][c], xp[k] = x[k] + p * plane;
    const float b = shift[c];
    float* __restrict o = out + p * plane;
#pragma omp simd
    for (int64_t i = 0; i < plane; ++i) {
      float v = b;
      for (int k = 0; k < M; ++k) v += s[k] * xp[k][i];
      if (Relu) v = v < 0.f ? 0.f : v;
      o[i] = v;
    }
  }
}

template <int M>
__attribute__((always_inline)) inline void sum_planes_act(float* out, const float* const* x,
                                                          const float* const* scale, const float* shift,
                                                          int64_t begin, int64_t end, int64_t channels,
                                                          int64_t plane, bool relu) {
  if (relu)
    sum_planes<M, true>(out, x, scale, shift, begin, end, channels, plane);
  else
    sum_planes<M, false>(out, x, scale, shift, begin, end, channels, plane);
}

// One block of B channels from c0, over pixels [begin, end): the block's
// scales and shift are loaded once, outside the pixel loop.
template <int M, bool Relu, int B>
__attribute__((always_inline)) inline void sum_block_cl(float* out, const float* const* x, const float* const* scale,
                                                        const float* shift, int64_t begin, int64_t end,
                                                        int64_t channels, int64_t c0) {
  float s[M][B], b[B];
  for (int i = 0; i < B; ++i) {
    b[i] = shift[c0 + i];
    for (int k = 0; k < M; ++k) s[k][i] = scale[k][c0 + i];
  }
  for (int64_t p = begin; p < end; ++p) {
    const int64_t e = p * channels + c0;
    float* __restrict o = out + e;
    const float* __restrict xp[M];
    for (int k = 0; k < M; ++k) xp[k] = x[k] + e;
#pragma omp simd
    for (int i = 0; i < B; ++i) {
      float v = b[i];
      for (int k = 0; k < M; ++k) v += s[k][i] * xp[k][i];
      if (Relu) v = v < 0.f ? 0.f : v;
      o[i] = v;
    }
  }
}

template <int M, bool Relu>
__attribute__((always_inline)) inline void sum_pixels_cl(float* out, const float* const* x, const float* const* scale,
                                                         const float* shift, int64_t begin, int64_t end,
                                                         int64_t channels) {
  constexpr int B = 16;
  int64_t c0 = 0;
  for (; c0 + B <= channels; c0 += B) sum_block_cl<M, Relu, B>(out, x, scale, shift, begin, end, channels, c0);
  for (; c0 < channels; ++c0) sum_block_cl<M, Relu, 1>(out, x, scale, shift, begin, end, channels, c0);
}

template <int M>
__attribute__((always_inline)) inline void sum_pixels_cl_act(float* out, const float* const* x,
                                                             const float* const* scale, const float* shift,
                                                             int64_t begin, int64_t end, int64_t channels,
                                                             bool relu) {
  if (relu)
    sum_pixels_cl<M, true>(out, x, scale, shift, begin, end, channels);
  else
    sum_pixels_cl<M, false>(out, x, scale, shift, begin, end, channels);
}

template <int M, bool Relu>
__attribute__((always_inline)) inline void grad_row(const float* grad, const float* out, float* const* gx,
                                                    const float* const* x, const float* const* scale,
                                                    float* shift_acc, float* const* scale_acc, int64_t width,
                                                    int64_t channels) {
  const float* __restrict s[M];
  float* __restrict a[M];
  for (int k = 0; k < M; ++k) s[k] = scale[k], a[k] = scale_acc[k];
  float* __restrict t = shift_acc;
  for (int64_t px = 0; px < width; ++px) {
    const int64_t e = px * channels;
    const float* __restrict g = grad + e;
    const float* __restrict o = out + e;
    float* __restrict d[M];
    const float* __restrict xp[M];
    for (int k = 0; k < M; ++k) d[k] = gx[k] + e, xp[k] = x[k] + e;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const float gm = Relu && o[c] <= 0.f ? 0.f : g[c];  // threshold_backward: NaN passes
      t[c] += gm;
      for (int k = 0; k < M; ++k) {
        d[k][c] = s[k][c] * gm;
        a[k][c] += gm * xp[k][c];
      }
    }
  }
}

template <int M>
__attribute__((always_inline)) inline void grad_row_act(const float* grad, const float* out, float* const* gx,
                                                        const float* const* x, const float* const* scale,
                                                        float* shift_acc, float* const* scale_acc, int64_t width,
                                                        int64_t channels, bool relu) {
  if (relu)
    grad_row<M, true>(grad, out, gx, x, scale, shift_acc, scale_acc, width, channels);
  else
    grad_row<M, false>(grad, out, gx, x, scale, shift_acc, scale_acc, width, channels);
}

}  // namespace

HRNET_FAST_CLONES void same_size_sum_cl_f32(float* out, const float* const* x, const float* const* scale,
                                            const float* shift, int m, int64_t begin, int64_t end, int64_t channels,
                                            bool relu) {
  switch (m) {
    case 1: return sum_pixels_cl_act<1>(out, x, scale, shift, begin, end, channels, relu);
    case 2: return sum_pixels_cl_act<2>(out, x, scale, shift, begin, end, channels, relu);
    case 3: return sum_pixels_cl_act<3>(out, x, scale, shift, begin, end, channels, relu);
    default: return sum_pixels_cl_act<4>(out, x, scale, shift, begin, end, channels, relu);
  }
}

HRNET_FAST_CLONES void same_size_grad_rows_f32(const float* grad, const float* out, float* const* gx,
                                               const float* const* x, const float* const* scale, float* shift_acc,
                                               float* const* scale_acc, int m, int64_t width, int64_t channels,
                                               bool relu) {
  switch (m) {
    case 1: return grad_row_act<1>(grad, out, gx, x, scale, shift_acc, scale_acc, width, channels, relu);
    case 2: return grad_row_act<2>(grad, out, gx, x, scale, shift_acc, scale_acc, width, channels, relu);
    case 3: return grad_row_act<3>(grad, out, gx, x, scale, shift_acc, scale_acc, width, channels, relu);
    default: return grad_row_act<4>(grad, out, gx, x, scale, shift_acc, scale_acc, width, channels, relu);
  }
}

HRNET_FAST_CLONES void same_size_sum_f32(float* out, const float* const* x, const float* const* scale,
                                         const float* shift, int m, int64_t begin, int64_t end, int64_t channels,
                                         int64_t plane, bool relu) {
  switch (m) {
    case 1: return sum_planes_act<1>(out, x, scale, shift, begin, end, channels, plane, relu);
    case 2: return sum_planes_act<2>(out, x, scale, shift, begin, end, channels, plane, relu);
    case 3: return sum_planes_act<3>(out, x, scale, shift, begin, end, channels, plane, relu);
    default: return sum_planes_act<4>(out, x, scale, shift, begin, end, channels, plane, relu);
  }
}

}  // namespace cpu
}  // namespace hrnet_fast
