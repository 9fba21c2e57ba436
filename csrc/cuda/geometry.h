// Launch geometry shared by the forward and backward launches (host code,
// included by the .cu files only). Grids depend on the shapes alone, never on
// the device, so the backward's partial sums — and so its results — are the
// same on every run.
#pragma once

#include <algorithm>
#include <cstdint>

#include "exchange_cuda.cuh"
#include "launch.h"

namespace hrnet_fast {
namespace cuda {

static_assert(kMaxLaunchInputs == kMaxInputs, "launch.h and exchange_cuda.cuh disagree on the input limit");

constexpr int64_t kMaxGridYZ = 65535;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Whether `v` can be read in aligned packs of `vec` elements along C:
// channels innermost and every used stride and the base a multiple of the
// pack (strides of size-1 dimensions are never applied).
inline bool packable(const View& v, int vec, int64_t elem_size) {
  if (v.stride[1] != 1 || v.size[1] % vec != 0) return false;
  if (reinterpret_cast<uintptr_t>(v.data) % static_cast<uintptr_t>(vec * elem_size) != 0) return false;
  for (int d : {0, 2, 3})
    if (v.size[d] > 1 && v.stride[d] % vec != 0) return false;
  return true;
}

// channels_last tiling: a block is (ctw channel packs) x (py pixels); a
// thread handles pixels_per_thread(vec) pixels of its tile.
struct ClGeometry {
  int vec;
  int cvs, nct, ctw, py;
  int64_t tiles;
};

inline ClGeometry cl_geometry(int64_t channels, int vec, int64_t pixels) {
  ClGeometry g;
  g.vec = vec;
  g.cvs = static_cast<int>(channels / vec);
  g.nct = static_cast<int>(ceil_div(g.cvs, 64));
  g.ctw = static_cast<int>(ceil_div(g.cvs, g.nct));
  g.py = std::max(1, kThreads / g.ctw);
  g.tiles = ceil_div(pixels, static_cast<int64_t>(g.py) * pixels_per_thread(vec));
  return g;
}

}  // namespace cuda
}  // namespace hrnet_fast
