// The adjoint of one interpolation axis, cut into output tiles: what the
// tiled CUDA backward computes inside a tile, and how the pieces add up.
//
// Output coordinates [0, out) are cut into tiles of `len` (the last one may
// be shorter). Tile t works on the source coordinates of its span [lo, hi):
// every source coordinate read by one of its outputs, plus those no output
// reads that lie before the next tile's span (so the spans cover [0, in)).
// Within a tile, the readers of a source coordinate q are the contiguous
// local range [b, e) (interp.h: readers() restricted to the tile).
//
// A source coordinate is *complete* in a tile when no other tile reads it
// (starts && ends): the tile alone holds its whole adjoint. Otherwise it
// straddles a tile boundary; the spans of consecutive tiles then overlap
// exactly on such coordinates, the first tile of the run (the one where
// `starts` holds) owns it, and its adjoint is the sum of the tiles' partial
// sums, in tile order: the tiles after the owner are those whose span still
// begins at or before q. In 2-D a source pixel is complete when it is
// complete on both axes.
//
// Host-device and framework-free; the CTest tests check every statement
// above against the plain gather adjoint of interp.h.
#pragma once

#include "interp.h"

namespace hrnet_fast {

struct Span {
  int lo;
  int hi;
};

HF_HOST_DEVICE int tile_count(int out, int len) { return (out + len - 1) / len; }

template <typename T>
HF_HOST_DEVICE Span tile_span(const Axis<T>& a, int len, int t) {
  const int out = static_cast<int>(a.out);
  const int c0 = t * len;
  const int c1 = c0 + len < out ? c0 + len : out;
  Span s;
  s.lo = t == 0 ? 0 : tap_as<int>(a, c0).i0;
  if (c1 == out) {
    s.hi = static_cast<int>(a.in);
  } else {
    const int read = tap_as<int>(a, c1 - 1).i1 + 1;
    const int next = tap_as<int>(a, c1).i0;
    s.hi = read > next ? read : next;
  }
  return s;
}

// Readers of source coordinate q among the outputs [c0, c1) of one tile,
// local to the tile, and whether the tiles before / after read it too.
struct TileReaders {
  int b;
  int e;
  bool starts;  // no output before c0 reads q
  bool ends;    // no output at or after c1 reads q
};

template <typename T>
HF_HOST_DEVICE TileReaders tile_readers(const Axis<T>& a, int c0, int c1, int q) {
  // First p in [c0, c1) with i1(p) >= q, then the first with i0(p) > q:
  // both taps are non-decreasing in p (interp.h: readers()).
  int lo = c0, hi = c1;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (tap_as<int>(a, mid).i1 >= q) hi = mid; else lo = mid + 1;
  }
  TileReaders r;
  r.b = lo - c0;
  hi = c1;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (tap_as<int>(a, mid).i0 > q) hi = mid; else lo = mid + 1;
  }
  r.e = lo - c0;
  r.starts = c0 == 0 || !reads<int>(a, c0 - 1, q);
  r.ends = c1 == static_cast<int>(a.out) || !reads<int>(a, c1, q);
  return r;
}

// Host helpers for the launch plan, O(number of tiles) each.

// The longest span of any tile: the tile tables and partial sums are sized
// by it.
template <typename T>
inline int max_span(const Axis<T>& a, int len) {
  int m = 0;
  const int n = tile_count(static_cast<int>(a.out), len);
  for (int t = 0; t < n; ++t) {
    const Span s = tile_span(a, len, t);
    if (s.hi - s.lo > m) m = s.hi - s.lo;
  }
  return m;
}

// Whether every source coordinate is complete in its tile: no two
// neighbouring outputs on either side of a tile boundary read a common
// source coordinate. Then the tiled backward needs no partial sums.
template <typename T>
inline bool all_complete(const Axis<T>& a, int len) {
  const int out = static_cast<int>(a.out);
  for (int c1 = len; c1 < out; c1 += len) {
    const TapI<int, T> x = tap_as<int>(a, c1 - 1);
    const TapI<int, T> y = tap_as<int>(a, c1);
    if (x.i0 == y.i0 || x.i0 == y.i1 || x.i1 == y.i0 || x.i1 == y.i1) return false;
  }
  return true;
}

}  // namespace hrnet_fast
