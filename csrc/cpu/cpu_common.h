// Helpers shared by the CPU forward and backward kernels: per-axis tap
// tables built from kernels/interp.h once per call, so the inner loops do no
// index arithmetic of their own.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "interp.h"

namespace hrnet_fast {
namespace cpu {

// Taps of every output coordinate along one axis.
template <typename T>
struct AxisTaps {
  std::vector<int64_t> i0, i1;
  std::vector<T> l0, l1;

  AxisTaps() = default;
  AxisTaps(int64_t in, int64_t out, Mode mode, bool align_corners, bool nearest_double) {
    const Axis<T> a = make_axis<T>(in, out, mode, align_corners, nearest_double);
    i0.resize(out), i1.resize(out), l0.resize(out), l1.resize(out);
    for (int64_t p = 0; p < out; ++p) {
      const Tap<T> t = tap(a, p);
      i0[p] = t.i0, i1[p] = t.i1, l0[p] = t.l0, l1[p] = t.l1;
    }
  }
};

// The adjoint along one axis in CSR form: source q is read by outputs
// p[k] with weight w[k] for k in [offset[q], offset[q + 1]).
template <typename T>
struct AdjointTaps {
  std::vector<int64_t> offset, p;
  std::vector<T> w;

  AdjointTaps(int64_t in, int64_t out, Mode mode, bool align_corners, bool nearest_double) {
    const Axis<T> a = make_axis<T>(in, out, mode, align_corners, nearest_double);
    offset.reserve(in + 1);
    offset.push_back(0);
    for (int64_t q = 0; q < in; ++q) {
      const Range r = readers(a, q);
      for (int64_t k = r.begin; k < r.end; ++k) {
        const T wk = weight(a, k, q);
        if (wk != T(0)) p.push_back(k), w.push_back(wk);
      }
      offset.push_back(static_cast<int64_t>(p.size()));
    }
  }
};

// F when resizing `in` to `out` is nearest upsampling by an exact factor F of
// 2, 4 or 8 (HRNet's case: output p reads source p / F, so the adjoint sums
// groups of F), else 0. Checked against the shared index math, so a kernel
// taking the grouped fast path computes what the tap tables would.
inline int exact_nearest_factor(int64_t in, int64_t out, Mode mode) {
  if (mode != Mode::Nearest || in <= 0 || out % in != 0) return 0;
  const int64_t f = out / in;
  if (f != 2 && f != 4 && f != 8) return 0;
  const Axis<float> a = make_axis<float>(in, out, mode, false);
  for (int64_t p = 0; p < out; ++p)
    if (tap(a, p).i0 != p / f) return 0;
  return static_cast<int>(f);
}

// fn(std::integral_constant<int, V>{}) for the V among Values equal to v
// (nothing for any other v): a kernel templated on V chosen in one place.
template <int... Values, typename Fn>
inline void with_value(int v, Fn&& fn) {
  (void)((v == Values ? (fn(std::integral_constant<int, Values>{}), true) : false) || ...);
}

// An exact nearest factor of 2, 4 or 8.
template <typename Fn>
inline void with_factor(int f, Fn&& fn) {
  with_value<2, 4, 8>(f, std::forward<Fn>(fn));
}

// Grain for at::parallel_for: tasks of at least ~32k elements.
inline int64_t grain_for(int64_t per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, per_item));
}

}  // namespace cpu
}  // namespace hrnet_fast
