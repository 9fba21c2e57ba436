// Launch plans of the CUDA exchange kernels: from tensor descriptions (raw
// pointers, sizes, strides) to the kernel to run and its parameters.
//
// Host code, framework-free (no torch, no CUDA runtime): the launchers in
// csrc/cuda call it, and so do the CTest emulation tests, which then run the
// chosen kernel body on the CPU. Every choice here (input kinds and order,
// pattern, pack width, index width, tiles, scratch layout) is a function of
// the shapes, strides, alignment and the shared-memory budget only, so a
// call's partition, and with it its results, is the same on every run.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "exchange_backward.cuh"
#include "exchange_forward.cuh"
#include "tile_axis.h"

namespace hrnet_fast {
namespace cuda {

enum class DType : int { Float, Half, BFloat16, Double };

inline int elem_size(DType d) {
  switch (d) {
    case DType::Half:
    case DType::BFloat16: return 2;
    case DType::Double: return 8;
    default: return 4;
  }
}

// A 4-D (N, C, H, W) tensor as raw pointer, sizes and element strides.
struct View {
  void* data;
  int64_t size[4];
  int64_t stride[4];
};

// Whether every access of `vec` consecutive elements along dimension `dim`
// (1 = C, 3 = W) at a multiple of `vec` is one aligned pack: contiguous
// along `dim`, every other used stride and the base a multiple of the pack.
inline bool packable(const View& v, int dim, int vec, int elem) {
  if (vec == 1) return true;
  if (v.stride[dim] != 1 || v.size[dim] % vec != 0) return false;
  if (reinterpret_cast<uintptr_t>(v.data) % static_cast<uintptr_t>(vec * elem) != 0) return false;
  for (int d = 0; d < 4; ++d)
    if (d != dim && v.size[d] > 1 && v.stride[d] % vec != 0) return false;
  return true;
}

// Largest element offset of a view plus `slack`: the kernels use 32-bit
// offsets when this stays below 2^31 for every tensor they touch.
inline int64_t reach(const View& v, int64_t slack) {
  int64_t r = slack;
  for (int d = 0; d < 4; ++d) r += (v.size[d] - 1) * v.stride[d];
  return r;
}

constexpr int64_t kInt32Limit = std::numeric_limits<int32_t>::max();

// A view's (N, C, H, W) element strides, or sizes, as index type I.
template <typename I>
inline void as_index(const int64_t (&v)[4], I& n, I& c, I& h, I& w) {
  n = static_cast<I>(v[0]), c = static_cast<I>(v[1]), h = static_cast<I>(v[2]), w = static_cast<I>(v[3]);
}

// --- forward patterns -----------------------------------------------------------

// The compiled patterns: HRNet's exchange rows of stages 2-4 (W18 .. W64
// alike; only the channel counts differ). Row i of an N-branch module sums
// the i + 1 finer and same branches (at the output size: the identity and
// the downsampling chains' results) and N - 1 - i coarser ones upsampled by
// 2, 4, 8: nearest with exact factors (timm, pose, classification) or
// bilinear (segmentation).
#define HF_FORWARD_PATTERNS(X)                                                                     \
  X(0, 2, 0, Same) X(1, 3, 0, Same) X(2, 4, 0, Same)                                               \
  X(3, 1, 1, Shift) X(4, 1, 2, Shift) X(5, 1, 3, Shift) X(6, 2, 1, Shift) X(7, 2, 2, Shift)        \
  X(8, 3, 1, Shift)                                                                                \
  X(9, 1, 1, Lin) X(10, 1, 2, Lin) X(11, 1, 3, Lin) X(12, 2, 1, Lin) X(13, 2, 2, Lin) X(14, 3, 1, Lin)

constexpr int kPatternCount = 15;

// Index of the compiled pattern (ns same-size inputs, then nc of kind ck),
// or -1.
inline int pattern_index(int ns, int nc, Kind ck) {
#define HF_PATTERN_MATCH(id, NS, NC, CK) \
  if (ns == NS && nc == NC && (NC == 0 || ck == Kind::CK)) return id;
  HF_FORWARD_PATTERNS(HF_PATTERN_MATCH)
#undef HF_PATTERN_MATCH
  return -1;
}

// f(Pattern<...>{}) for a compiled pattern index, f(RuntimePattern{}) for -1.
template <typename F>
void with_pattern(int id, F&& f) {
  switch (id) {
#define HF_PATTERN_CASE(ID, NS, NC, CK) \
  case ID: f(Pattern<NS, NC, Kind::CK>{}); return;
    HF_FORWARD_PATTERNS(HF_PATTERN_CASE)
#undef HF_PATTERN_CASE
    default: f(RuntimePattern{}); return;
  }
}

inline int pattern_items_of(int id) {
  int items = RuntimePattern::kItems;
  with_pattern(id, [&](auto pat) { items = decltype(pat)::kItems; });
  return items;
}

// --- forward plan ---------------------------------------------------------------

struct ForwardDesc {
  DType dtype;
  Mode mode;
  bool align_corners;
  bool relu;
  bool channels_last;  // output layout: picks the thread mapping
  int k;
  View in[kMaxInputs];
  const void* scale[kMaxInputs];  // C values of the accumulation type, or nullptr
  const void* shift[kMaxInputs];
  View out;
};

struct ForwardPlan {
  bool cl;
  int vec;
  bool wide;    // 64-bit index math
  int pattern;  // compiled pattern, or -1 (run-time inputs)
  int order[kMaxInputs];  // kernel input i is the call's input order[i]
  Kind kind[kMaxInputs];  // per kernel input
  int shift_h[kMaxInputs], shift_w[kMaxInputs];
  int cvs, ncp, nct, npl;
  int items_per_thread;
  int64_t items, tiles;
  int64_t blocks;    // blocks covering every tile once
  int grid_multiple; // the grid must be a multiple of this
};

// Exact power-of-two factors up to this shift take the Shift path.
constexpr int kMaxShift = 16;

// `force_wide`: 64-bit index math whatever the sizes (for the tests).
inline ForwardPlan plan_forward(const ForwardDesc& d, bool force_wide = false) {
  ForwardPlan p{};
  const int es = elem_size(d.dtype);
  const int V = 16 / es;
  const View& o = d.out;
  const int64_t N = o.size[0], C = o.size[1], H = o.size[2], W = o.size[3];

  // Kinds; same-size inputs first (stable), so a pattern sees NS then NC.
  Kind kinds[kMaxInputs];
  int ns = 0;
  for (int k = 0; k < d.k; ++k) {
    const View& x = d.in[k];
    int sh = 0, sw = 0;
    Kind kd;
    if (x.size[2] == H && x.size[3] == W) {
      kd = Kind::Same;
      ++ns;
    } else if (d.mode == Mode::Bilinear) {
      kd = Kind::Lin;
    } else {
      sh = exact_shift(make_axis<float>(x.size[2], H, d.mode, false), kMaxShift);
      sw = exact_shift(make_axis<float>(x.size[3], W, d.mode, false), kMaxShift);
      kd = sh >= 0 && sw >= 0 ? Kind::Shift : Kind::Near;
    }
    kinds[k] = kd;
    p.shift_h[k] = sh < 0 ? 0 : sh;
    p.shift_w[k] = sw < 0 ? 0 : sw;
  }
  int at = 0;
  for (int pass = 0; pass < 2; ++pass)
    for (int k = 0; k < d.k; ++k)
      if ((kinds[k] == Kind::Same) == (pass == 0)) p.order[at++] = k;
  int sh_sorted[kMaxInputs], sw_sorted[kMaxInputs];
  for (int i = 0; i < d.k; ++i) {
    p.kind[i] = kinds[p.order[i]];
    sh_sorted[i] = p.shift_h[p.order[i]];
    sw_sorted[i] = p.shift_w[p.order[i]];
  }
  for (int i = 0; i < d.k; ++i) p.shift_h[i] = sh_sorted[i], p.shift_w[i] = sw_sorted[i];
  bool uniform = true;
  for (int i = ns + 1; i < d.k; ++i) uniform = uniform && p.kind[i] == p.kind[ns];

  // Pack width: 16 bytes where every packed access is aligned.
  p.cl = d.channels_last;
  auto all_packable = [&](int dim, int vec, bool same_only) {
    if (!packable(o, dim, vec, es)) return false;
    for (int k = 0; k < d.k; ++k) {
      const bool same = d.in[k].size[2] == H && d.in[k].size[3] == W;
      if ((same || !same_only) && !packable(d.in[k], dim, vec, es)) return false;
    }
    return true;
  };
  if (p.cl) {
    p.vec = V > 1 && all_packable(1, V, false) ? V : es == 2 && all_packable(1, 2, false) ? 2 : 1;
  } else {
    p.vec = V > 1 && all_packable(3, V, true) ? V : 1;
  }

  // Items: pixels (channels_last) or packs of a row (NCHW).
  p.items = p.cl ? N * H * W : N * C * H * (W / p.vec);
  int64_t far = 0;
  far = std::max(far, reach(o, p.vec));
  for (int k = 0; k < d.k; ++k) far = std::max(far, reach(d.in[k], p.vec));
  const int64_t slack = static_cast<int64_t>(2) * kThreads;  // one tile past the last item
  p.wide = force_wide || far > kInt32Limit || p.items + slack > kInt32Limit;
  p.pattern = !p.wide && p.vec == V && d.dtype != DType::Double && uniform
                  ? pattern_index(ns, d.k - ns, ns < d.k ? p.kind[ns] : Kind::Same)
                  : -1;
  // 64-bit index math is compiled for one element per access only.
  if (p.wide) p.vec = 1, p.items = p.cl ? N * H * W : N * C * H * W;
  p.items_per_thread = pattern_items_of(p.pattern);

  if (p.cl) {
    p.cvs = static_cast<int>(C / p.vec);
    p.nct = static_cast<int>((p.cvs + 63) / 64);
    p.ncp = (p.cvs + p.nct - 1) / p.nct;
    p.npl = kThreads / p.ncp;
    const int64_t per_tile = static_cast<int64_t>(p.npl) * p.items_per_thread;
    p.tiles = (p.items + per_tile - 1) / per_tile;
    p.blocks = p.tiles * p.nct;
    p.grid_multiple = p.nct;
  } else {
    p.cvs = p.ncp = p.nct = p.npl = 0;
    const int64_t per_tile = static_cast<int64_t>(kThreads) * p.items_per_thread;
    p.tiles = (p.items + per_tile - 1) / per_tile;
    p.blocks = p.tiles;
    p.grid_multiple = 1;
  }
  return p;
}

// Grid of at most `resident` blocks (what the machine holds at once), a
// multiple of grid_multiple, never more than the blocks with work.
inline int64_t forward_grid(const ForwardPlan& p, int64_t resident) {
  const int64_t m = p.grid_multiple;
  const int64_t cap = std::max<int64_t>(m, resident / m * m);
  return std::min<int64_t>(p.blocks, std::min<int64_t>(cap, int64_t{1} << 30) / m * m);
}

template <typename A, typename I>
FwdParams<A, I> forward_params(const ForwardDesc& d, const ForwardPlan& p) {
  FwdParams<A, I> f{};
  const View& o = d.out;
  f.k = d.k;
  for (int i = 0; i < d.k; ++i) {
    const int k = p.order[i];
    const View& x = d.in[k];
    FwdInput<A, I>& s = f.in[i];
    s.data = x.data;
    as_index(x.stride, s.sn, s.sc, s.sh, s.sw);
    s.scale = static_cast<const A*>(d.scale[k]);
    s.shift = static_cast<const A*>(d.shift[k]);
    s.ay = make_axis<A>(x.size[2], o.size[2], d.mode, d.align_corners);
    s.ax = make_axis<A>(x.size[3], o.size[3], d.mode, d.align_corners);
    s.shift_h = p.shift_h[i], s.shift_w = p.shift_w[i];
    s.kind = p.kind[i];
  }
  f.out = o.data;
  as_index(o.stride, f.on, f.oc, f.oh, f.ow);
  as_index(o.size, f.n, f.c, f.h, f.w);
  f.relu = d.relu;
  f.cvs = p.cvs, f.ncp = p.ncp, f.nct = p.nct, f.npl = p.npl;
  f.items = static_cast<I>(p.items);
  f.tiles = static_cast<I>(p.tiles);
  if (p.cl) {
    f.div_w = Divider<I>(static_cast<I>(o.size[3]));
    f.div_h = Divider<I>(static_cast<I>(o.size[2]));
    f.div_c = Divider<I>(static_cast<I>(1));
  } else {
    f.div_w = Divider<I>(static_cast<I>(o.size[3] / p.vec));
    f.div_h = Divider<I>(static_cast<I>(o.size[2]));
    f.div_c = Divider<I>(static_cast<I>(o.size[1]));
  }
  return f;
}

// f(Vec, Pat, I) with Vec an std::integral_constant, for the instantiation
// the plan picked; T is the storage type. Every instantiation a launcher
// can reach is listed here, once.
template <typename T, typename F>
void dispatch_forward(const ForwardPlan& p, F&& f) {
  constexpr int V = static_cast<int>(16 / sizeof(T));
  using I32 = std::integral_constant<int, 32>;
  using I64 = std::integral_constant<int, 64>;
  if (p.wide) {
    f(std::integral_constant<int, 1>{}, RuntimePattern{}, I64{});
    return;
  }
  if constexpr (sizeof(T) != 8) {
    if (p.pattern >= 0) {
      with_pattern(p.pattern, [&](auto pat) { f(std::integral_constant<int, V>{}, pat, I32{}); });
      return;
    }
  }
  if (p.vec == V) {
    f(std::integral_constant<int, V>{}, RuntimePattern{}, I32{});
  } else if (p.vec == 2) {
    if constexpr (V == 8) f(std::integral_constant<int, 2>{}, RuntimePattern{}, I32{});
  } else {
    f(std::integral_constant<int, 1>{}, RuntimePattern{}, I32{});
  }
}

// Index type of a dispatch tag.
template <typename Tag>
using index_of = typename std::conditional<Tag::value == 64, int64_t, int32_t>::type;

// --- backward plan --------------------------------------------------------------

struct BackwardDesc {
  DType dtype;
  Mode mode;
  bool align_corners;
  bool relu;
  bool channels_last;  // layout of the output (and so of the thread mapping)
  int k;
  View x[kMaxInputs];
  View gx[kMaxInputs];            // gradients to write, same sizes as x
  const void* scale[kMaxInputs];  // accumulation type, or nullptr (identity)
  View grad;                      // output gradient (any strides)
  View out;                       // forward output
  void* grad_scales;              // (K, C), accumulation type
  void* grad_shift;               // (C,)
};

struct BackwardPlan {
  bool cl;
  int vec;
  bool wide;
  int cvs, ncp, nct, npl, ct;
  int tiles_h, tiles_w;
  int64_t units1, units2;
  BwdKind kind[kMaxInputs];
  bool finish[kMaxInputs];
  int table[kMaxInputs];
  int nqh[kMaxInputs], nqw[kMaxInputs];
  int64_t units_begin[kMaxInputs], units[kMaxInputs];
  int ntab, r_cols;
  bool need_finish;
  // Scratch (one buffer, 256-byte aligned pieces): the partial rows, then
  // each finishing tiled input's partial sums.
  int64_t sums_offset;
  int64_t part_offset[kMaxInputs];
  int64_t scratch_bytes;
  // Shared memory of backward_tiles (bytes, 16-aligned regions) and of
  // backward_finish.
  int sm_gm, sm_r, sm_red, sm_tab, smem_tiles, sm_flags, smem_finish;
  int64_t sum_blocks;  // backward_sums grid
};

inline int64_t align_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

// Shared memory of backward_tiles for `ncp` packs per channel tile.
inline void tiles_smem(BackwardPlan& p, int ncp, int elem, int acc) {
  const int ct = ncp * p.vec;
  const int npl = kThreads / ncp;
  int64_t off = 0;
  p.sm_gm = static_cast<int>(off);
  off = align_up(off + static_cast<int64_t>(kTilePixels) * ct * elem, 16);
  p.sm_r = static_cast<int>(off);
  if (p.ntab > 0) off = align_up(off + static_cast<int64_t>(kTile) * p.r_cols * ct * acc, 16);
  p.sm_red = static_cast<int>(off);
  off = align_up(off + static_cast<int64_t>(npl) * ct * acc, 16);
  p.sm_tab = static_cast<int>(off);
  const int tab = acc == 8 ? static_cast<int>(sizeof(TileTab<double>)) : static_cast<int>(sizeof(TileTab<float>));
  off = align_up(off + static_cast<int64_t>(p.ntab) * tab, 16);
  p.smem_tiles = static_cast<int>(off);
}

// `smem_budget`: the most shared memory a block of backward_tiles may use
// (at least 48 KiB, what every device gives without opting in).
// `force_wide`: 64-bit index math whatever the sizes (for the tests).
inline BackwardPlan plan_backward(const BackwardDesc& d, int smem_budget, bool force_wide = false,
                                  bool scalar = false) {
  BackwardPlan p{};
  const int es = elem_size(d.dtype);
  const int acc = d.dtype == DType::Double ? 8 : 4;
  const int V = 16 / es;
  const View& o = d.out;
  const int64_t N = o.size[0], C = o.size[1];
  const int H = static_cast<int>(o.size[2]), W = static_cast<int>(o.size[3]);
  p.cl = d.channels_last;

  // Input kinds, tables, spans.
  p.r_cols = 1;
  for (int k = 0; k < d.k; ++k) {
    const View& x = d.x[k];
    p.table[k] = -1;
    p.nqh[k] = p.nqw[k] = 0;
    if (x.size[2] == H && x.size[3] == W) {
      p.kind[k] = BwdKind::Same;
      p.finish[k] = false;
      continue;
    }
    const Axis<float> ay = make_axis<float>(x.size[2], H, d.mode, d.align_corners);
    const Axis<float> ax = make_axis<float>(x.size[3], W, d.mode, d.align_corners);
    // Spans and completeness depend only on the source indices, which the
    // float and double axes pick alike (interp.h; checked by the tests).
    const int nqh = max_span(ay, kTile), nqw = max_span(ax, kTile);
    if (nqh <= kMaxSpan && nqw <= kMaxSpan) {
      p.kind[k] = BwdKind::Tiled;
      p.table[k] = p.ntab++;
      p.nqh[k] = nqh, p.nqw[k] = nqw;
      p.r_cols = std::max(p.r_cols, nqw);
      p.finish[k] = !(all_complete(ay, kTile) && all_complete(ax, kTile));
    } else {
      p.kind[k] = BwdKind::Gather;
      p.finish[k] = true;
    }
  }

  // Pack width: channels_last with every tensor packable along C.
  p.vec = 1;
  if (p.cl && !scalar && V > 1 && C % V == 0) {
    bool ok = packable(d.grad, 1, V, es) && (!d.relu || packable(o, 1, V, es));
    for (int k = 0; k < d.k; ++k) ok = ok && packable(d.x[k], 1, V, es) && packable(d.gx[k], 1, V, es);
    if (ok) p.vec = V;
  }
  p.cvs = static_cast<int>(C / p.vec);

  // Channel tiles: as wide as the shared memory budget allows (whole pixels
  // read at once), at most 64 packs (channels_last) or 8 channels (NCHW,
  // so 32 pixel lanes keep a warp on one row of a tile).
  const int max_ncp = p.cl ? 64 : 8;
  const int want = static_cast<int>(std::min<int64_t>(p.cvs, max_ncp));
  int nct = static_cast<int>((p.cvs + want - 1) / want);
  while (true) {
    const int ncp = (p.cvs + nct - 1) / nct;
    tiles_smem(p, ncp, es, acc);
    if (p.smem_tiles <= smem_budget || ncp == 1) {
      p.ncp = ncp;
      break;
    }
    ++nct;
  }
  p.nct = (p.cvs + p.ncp - 1) / p.ncp;
  p.npl = kThreads / p.ncp;
  p.ct = p.ncp * p.vec;
  p.tiles_h = tile_count(H, kTile);
  p.tiles_w = tile_count(W, kTile);
  p.units1 = N * p.tiles_h * p.tiles_w;

  // backward_finish units and scratch.
  p.units2 = 0;
  for (int k = 0; k < d.k; ++k) {
    p.units_begin[k] = p.units2;
    p.units[k] = 0;
    if (!p.finish[k]) continue;
    p.units[k] = p.kind[k] == BwdKind::Tiled
                     ? p.units1
                     : (N * d.x[k].size[2] * d.x[k].size[3] + kGatherPixels - 1) / kGatherPixels;
    p.units2 += p.units[k];
  }
  p.need_finish = p.units2 > 0;
  p.sm_flags = static_cast<int>(align_up(static_cast<int64_t>(p.npl) * p.ct * acc, 16));
  p.smem_finish = p.sm_flags + 2 * kMaxSpan;
  int64_t off = 0;
  p.sums_offset = off;
  const int64_t sums = static_cast<int64_t>(d.k + 1) * (p.units1 + p.units2) * C;
  off = align_up(off + sums * acc, 256);
  int64_t far = sums;
  for (int k = 0; k < d.k; ++k) {
    p.part_offset[k] = -1;
    if (p.kind[k] != BwdKind::Tiled || !p.finish[k]) continue;
    p.part_offset[k] = off;
    const int64_t n = p.units1 * p.nqh[k] * p.nqw[k] * C;
    off = align_up(off + n * acc, 256);
    far = std::max(far, n);
  }
  p.scratch_bytes = off;
  p.sum_blocks = static_cast<int64_t>(d.k + 1) * ((C + kSumLanes - 1) / kSumLanes);

  // 32-bit offsets when every tensor and scratch index fits.
  far = std::max(far, reach(d.grad, p.vec));
  far = std::max(far, reach(o, p.vec));
  for (int k = 0; k < d.k; ++k) far = std::max({far, reach(d.x[k], p.vec), reach(d.gx[k], p.vec)});
  far = std::max(far, (p.units1 + p.units2) * p.nct + kThreads);
  for (int k = 0; k < d.k; ++k)
    if (p.kind[k] == BwdKind::Gather) far = std::max(far, N * d.x[k].size[2] * d.x[k].size[3] + kGatherPixels);
  p.wide = force_wide || far > kInt32Limit;
  // 64-bit index math is compiled for one element per access only.
  if (p.wide && p.vec != 1) return plan_backward(d, smem_budget, force_wide, true);
  return p;
}

template <typename A, typename I>
BwdParams<A, I> backward_params(const BackwardDesc& d, const BackwardPlan& p, void* scratch) {
  BwdParams<A, I> b{};
  const View& o = d.out;
  char* base = static_cast<char*>(scratch);
  b.k = d.k;
  for (int k = 0; k < d.k; ++k) {
    BwdInput<A, I>& in = b.in[k];
    const View& x = d.x[k];
    const View& g = d.gx[k];
    in.x = x.data;
    as_index(x.stride, in.xn, in.xc, in.xh, in.xw);
    in.gx = g.data;
    as_index(g.stride, in.dn, in.dc, in.dh, in.dw);
    in.scale = static_cast<const A*>(d.scale[k]);
    in.ay = make_axis<A>(x.size[2], o.size[2], d.mode, d.align_corners);
    in.ax = make_axis<A>(x.size[3], o.size[3], d.mode, d.align_corners);
    in.hk = static_cast<int>(x.size[2]), in.wk = static_cast<int>(x.size[3]);
    in.kind = p.kind[k];
    in.finish = p.finish[k];
    in.table = p.table[k] < 0 ? 0 : p.table[k];
    in.part = p.part_offset[k] >= 0 ? reinterpret_cast<A*>(base + p.part_offset[k]) : nullptr;
    in.nqh = p.nqh[k], in.nqw = p.nqw[k];
    in.units_begin = static_cast<I>(p.units_begin[k]);
    in.units = static_cast<I>(p.units[k]);
  }
  b.grad = d.grad.data;
  as_index(d.grad.stride, b.gn, b.gc, b.gh, b.gw);
  b.out = o.data;
  as_index(o.stride, b.on, b.oc, b.oh, b.ow);
  b.n = static_cast<I>(o.size[0]), b.c = static_cast<I>(o.size[1]);
  b.h = static_cast<int>(o.size[2]), b.w = static_cast<int>(o.size[3]);
  b.relu = d.relu;
  b.cl = p.cl;
  b.cvs = p.cvs, b.ncp = p.ncp, b.nct = p.nct, b.npl = p.npl, b.ct = p.ct;
  b.tiles_h = p.tiles_h, b.tiles_w = p.tiles_w;
  b.units1 = static_cast<I>(p.units1);
  b.units2 = static_cast<I>(p.units2);
  b.sums = reinterpret_cast<A*>(base + p.sums_offset);
  b.sm_gm = p.sm_gm, b.sm_r = p.sm_r, b.sm_red = p.sm_red, b.sm_tab = p.sm_tab;
  b.r_cols = p.r_cols;
  b.ntab = p.ntab;
  b.sm_flags = p.sm_flags;
  return b;
}

template <typename A, typename I>
SumParams<A, I> sum_params(const BackwardDesc& d, const BackwardPlan& p, void* scratch) {
  SumParams<A, I> s{};
  s.sums = reinterpret_cast<const A*>(static_cast<char*>(scratch) + p.sums_offset);
  s.rows = static_cast<I>(p.units1 + p.units2);
  s.units1 = static_cast<I>(p.units1);
  s.c = static_cast<I>(d.out.size[1]);
  s.k = d.k;
  s.chunks = static_cast<int>((d.out.size[1] + kSumLanes - 1) / kSumLanes);
  s.grad_shift = static_cast<A*>(d.grad_shift);
  s.grad_scales = static_cast<A*>(d.grad_scales);
  for (int k = 0; k < d.k; ++k) {
    s.in[k].has = d.scale[k] != nullptr;
    s.in[k].tiles = p.kind[k] != BwdKind::Gather;
    s.in[k].begin2 = static_cast<I>(p.units_begin[k]);
    s.in[k].count2 = static_cast<I>(p.units[k]);
  }
  return s;
}

// f(Vec, I) for the instantiation the plan picked (T: storage type).
template <typename T, typename F>
void dispatch_backward(const BackwardPlan& p, F&& f) {
  constexpr int V = static_cast<int>(16 / sizeof(T));
  if (p.wide) {
    f(std::integral_constant<int, 1>{}, std::integral_constant<int, 64>{});
  } else if (p.vec == V) {
    f(std::integral_constant<int, V>{}, std::integral_constant<int, 32>{});
  } else {
    f(std::integral_constant<int, 1>{}, std::integral_constant<int, 32>{});
  }
}

}  // namespace cuda
}  // namespace hrnet_fast
