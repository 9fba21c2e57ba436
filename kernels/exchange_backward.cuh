// Backward of the exchange: deterministic, no atomics, at most 3 launches.
//
// With gm = grad masked by the ReLU (zero where out <= 0, ATen's
// threshold_backward, so a NaN output passes its gradient) and G_k the
// adjoint of input k's interpolation applied to gm:
//   grad_x_k      = scale_k * G_k
//   grad_scale_k  = sum over images and pixels of G_k * x_k   (per channel)
//   grad_shift    = sum over images and pixels of gm          (per channel)
//
// 1. backward_tiles: one block per output tile (kTile x kTile pixels, a
//    channel tile, one image) at a time. gm is read once (grad and out)
//    into shared memory, then every input is served from there:
//    same-size inputs write grad_x directly; each interpolated input's
//    adjoint is separable, a W pass (rows of partial sums over the tile's
//    columns) then an H pass, with the tile's tap tables (tile_axis.h).
//    Source pixels complete in the tile are finished here; those straddling
//    a tile boundary (bilinear) leave the tile's partial sum in scratch.
// 2. backward_finish: each straddling source pixel, by its owning tile, sums
//    its partials in tile order and is finished; inputs whose tile spans do
//    not fit the tables are gathered here whole from the output gradient
//    (interp.h readers()/weight()). Launched only when needed: nearest
//    upsampling by exact factors (HRNet's) leaves nothing straddling.
// 3. backward_sums: every per-channel sum over the partial rows of 1 and 2
//    in a fixed order.
// Every partial row belongs to a unit fixed by the shapes (a tile), never
// by the grid, so the results are bit-identical from run to run.
//
// The bodies take an executor `ex`: ex.each(f) runs f(tid) for every thread
// of the block and ex.barrier() separates phases (on the GPU: the thread
// itself and __syncthreads(); in the CTest emulation: a loop over threads).
// All control flow around each()/barrier() is uniform across the block.
#pragma once

#include "exchange_common.h"
#include "tile_axis.h"

#if defined(__CUDACC__)
#include "exchange_cuda.cuh"
#endif

namespace hrnet_fast {
namespace cuda {

// Output tile edge of the tiled backward: a multiple of every exact nearest
// factor HRNet uses (2, 4, 8), so those leave nothing straddling.
constexpr int kTile = 16;
constexpr int kTilePixels = kTile * kTile;
// Longest tile span (source coordinates per tile and axis) the tables
// hold; an input with a longer one (strong downsizing) is gathered whole
// by backward_finish.
constexpr int kMaxSpan = 40;
// Source pixels per unit of a gathered input in backward_finish.
constexpr int kGatherPixels = 256;
// Pixels a thread loads at once in the phases that stream global memory.
constexpr int kBatch = 4;

enum class BwdKind : int {
  Same = 0,    // output size: grad_x = scale * gm
  Tiled = 1,   // adjoint in backward_tiles (+ backward_finish if `finish`)
  Gather = 2,  // adjoint gathered whole in backward_finish
};

template <typename A, typename I>
struct BwdInput {
  const void* x;
  I xn, xc, xh, xw;
  void* gx;
  I dn, dc, dh, dw;
  const A* scale;  // C values, or nullptr: identity, grad_scale row not computed
  Axis<A> ay, ax;
  int hk, wk;
  BwdKind kind;
  bool finish;     // has work in backward_finish
  int table;       // Tiled: its tile tables in shared memory
  A* part;         // Tiled + finish: partial sums of straddling pixels
  int nqh, nqw;    // Tiled: longest span per axis (layout of `part`)
  I units_begin;   // backward_finish units [units_begin, units_begin + units)
  I units;
};

template <typename A, typename I>
struct BwdParams {
  BwdInput<A, I> in[kMaxInputs];
  int k;
  const void* grad;
  I gn, gc, gh, gw;
  const void* out;
  I on, oc, oh, ow;
  I n, c;
  int h, w;
  bool relu;
  bool cl;    // channels innermost: thread mapping and shared layout
  int cvs;    // channel packs (C / VEC)
  int ncp;    // packs per channel tile
  int nct;    // channel tiles
  int npl;    // pixel lanes: threads per pack
  int ct;     // channels per tile: ncp * VEC
  int tiles_h, tiles_w;
  I units1;   // images * tiles_h * tiles_w: partial rows of backward_tiles
  I units2;   // units of backward_finish: the partial rows after those
  A* sums;    // partial rows, [(K + 1) * (units1 + units2)][C]; row q = 0 is the shift
  // Shared memory of backward_tiles (byte offsets); r_cols: row length of
  // the W pass buffer (>= every tiled input's nqw).
  int sm_gm, sm_r, sm_red, sm_tab;
  int r_cols;
  int ntab;
  // Shared memory of backward_finish: the reduction buffer at 0, then the
  // straddle flags ([2][kMaxSpan] bytes).
  int sm_flags;
};

static_assert(sizeof(BwdParams<double, int64_t>) <= 4096, "backward parameters exceed the kernel parameter limit");

// Tap tables of one tiled input for the current tile, per axis (0 = H,
// 1 = W): taps of the tile's outputs relative to the span start q0, and
// for each source coordinate of the span its local readers [b, e) and
// whether it is complete in this tile.
template <typename A>
struct TileTab {
  int q0[2];
  int nq[2];
  int16_t i0[2][kTile];
  int16_t i1[2][kTile];
  A l0[2][kTile];
  A l1[2][kTile];
  int16_t b[2][kMaxSpan];
  int16_t e[2][kMaxSpan];
  uint8_t done[2][kMaxSpan];
};

// Table entries filled by one thread each: taps, then spans, per axis.
constexpr int kTabEntries = 2 * kTile + 2 * kMaxSpan;

// --- lanes and tiles ----------------------------------------------------------

struct Lane {
  int cp;  // channel pack within the channel tile
  int pl;  // pixel lane
  bool active;
};

template <typename A, typename I>
HF_HOST_DEVICE Lane lane_of(const BwdParams<A, I>& p, int tid) {
  Lane l;
  if (p.cl) {
    l.cp = tid % p.ncp, l.pl = tid / p.ncp;
  } else {
    l.pl = tid % p.npl, l.cp = tid / p.npl;
  }
  l.active = l.pl < p.npl && l.cp < p.ncp;
  return l;
}

// Offset of a pack in a shared buffer of `rows` pixels x ct channels:
// channels innermost for channels_last (packs of VEC), pixels innermost
// otherwise (VEC == 1).
template <typename A, typename I>
HF_HOST_DEVICE int shared_at(const BwdParams<A, I>& p, int row, int rows, int cp, int vec) {
  return p.cl ? row * p.ct + cp * vec : cp * rows + row;
}

template <typename I>
struct TileAt {
  I n;
  I unit;  // (n * tiles_h + th) * tiles_w + tw
  int th, tw, ct;
  int h0, w0;  // first output pixel
  int vh, vw;  // valid rows / columns (edge tiles are cut)
};

template <typename A, typename I>
HF_HOST_DEVICE TileAt<I> tile_at(const BwdParams<A, I>& p, I t) {
  TileAt<I> a;
  a.ct = static_cast<int>(t % p.nct);
  a.unit = t / p.nct;
  a.tw = static_cast<int>(a.unit % p.tiles_w);
  const I r = a.unit / p.tiles_w;
  a.th = static_cast<int>(r % p.tiles_h);
  a.n = r / p.tiles_h;
  a.h0 = a.th * kTile, a.w0 = a.tw * kTile;
  a.vh = p.h - a.h0 < kTile ? p.h - a.h0 : kTile;
  a.vw = p.w - a.w0 < kTile ? p.w - a.w0 : kTile;
  return a;
}

// Masked output gradient: VEC channels from c0 at output pixel (h, w).
template <typename T, int VEC, typename A, typename I>
HF_HOST_DEVICE void load_gm(const BwdParams<A, I>& p, I n, I c0, I h, I w, A (&g)[VEC]) {
  load_pack<T, VEC>(static_cast<const T*>(p.grad) + n * p.gn + c0 * p.gc + h * p.gh + w * p.gw, g);
  if (p.relu) {
    A o[VEC];
    load_pack<T, VEC>(static_cast<const T*>(p.out) + n * p.on + c0 * p.oc + h * p.oh + w * p.ow, o);
HF_UNROLL
    for (int j = 0; j < VEC; ++j)
      if (o[j] <= A(0)) g[j] = A(0);
  }
}

// grad_x = scale * G at source pixel (qh, qw); adds G * x to acc when the
// scale's gradient is wanted.
template <typename T, int VEC, typename A, typename I>
HF_HOST_DEVICE void finish_pixel(const BwdInput<A, I>& in, I n, I c0, I qh, I qw, const A (&G)[VEC],
                                 const A (&sc)[VEC], A (&acc)[VEC]) {
  A d[VEC];
HF_UNROLL
  for (int j = 0; j < VEC; ++j) d[j] = sc[j] * G[j];
  store_pack<T, VEC>(static_cast<T*>(in.gx) + n * in.dn + c0 * in.dc + qh * in.dh + qw * in.dw, d);
  if (in.scale != nullptr) {
    A x[VEC];
    load_pack<T, VEC>(static_cast<const T*>(in.x) + n * in.xn + c0 * in.xc + qh * in.xh + qw * in.xw, x);
HF_UNROLL
    for (int j = 0; j < VEC; ++j) acc[j] += G[j] * x[j];
  }
}

// Where the partial sum of source pixel (i, j) of a tile's spans lives.
template <typename A, typename I>
HF_HOST_DEVICE I part_at(const BwdParams<A, I>& p, const BwdInput<A, I>& in, I unit, int i, int j, I c) {
  if (p.cl) return ((unit * in.nqh + i) * in.nqw + j) * p.c + c;
  return ((unit * p.c + c) * in.nqh + i) * in.nqw + j;
}

// A thread's VEC sums into the reduction buffer, laid out [pixel lane][ct].
template <typename A, typename I, int VEC>
HF_HOST_DEVICE void put_sums(const BwdParams<A, I>& p, const Lane& l, A* red, const A (&acc)[VEC]) {
HF_UNROLL
  for (int j = 0; j < VEC; ++j) red[l.pl * p.ct + l.cp * VEC + j] = acc[j];
}

// Sums the reduction buffer over pixel lanes, in lane order, into partial
// row `row` of quantity q (channels of channel tile ct).
template <typename A, typename I>
HF_HOST_DEVICE void write_sums(const BwdParams<A, I>& p, int tid, const A* red, int q, I row, int ct) {
  for (int cl = tid; cl < p.ct; cl += kThreads) {
    const I c = static_cast<I>(ct) * p.ct + cl;
    if (c >= p.c) break;
    A s = A(0);
    for (int l = 0; l < p.npl; ++l) s += red[l * p.ct + cl];
    p.sums[(static_cast<I>(q) * (p.units1 + p.units2) + row) * p.c + c] = s;
  }
}

// --- backward_tiles phases ----------------------------------------------------

// One table entry of tiled input `in` for tile `at` (entry < kTabEntries).
template <typename A, typename I>
HF_HOST_DEVICE void table_entry(const BwdInput<A, I>& in, const TileAt<I>& at, int entry, TileTab<A>& tb) {
  const bool taps = entry < 2 * kTile;
  const int axis = taps ? entry / kTile : (entry - 2 * kTile) / kMaxSpan;
  const int idx = taps ? entry % kTile : (entry - 2 * kTile) % kMaxSpan;
  const Axis<A>& a = axis == 0 ? in.ay : in.ax;
  const int t = axis == 0 ? at.th : at.tw;
  const int c0 = axis == 0 ? at.h0 : at.w0;
  const int len = axis == 0 ? at.vh : at.vw;
  const Span s = tile_span(a, kTile, t);
  if (taps) {
    if (idx == 0) tb.q0[axis] = s.lo, tb.nq[axis] = s.hi - s.lo;
    if (idx < len) {
      const TapI<int, A> tp = tap_as<int>(a, c0 + idx);
      tb.i0[axis][idx] = static_cast<int16_t>(tp.i0 - s.lo);
      tb.i1[axis][idx] = static_cast<int16_t>(tp.i1 - s.lo);
      tb.l0[axis][idx] = tp.l0;
      tb.l1[axis][idx] = tp.l1;
    }
  } else if (idx < s.hi - s.lo) {
    const TileReaders r = tile_readers(a, c0, c0 + len, s.lo + idx);
    tb.b[axis][idx] = static_cast<int16_t>(r.b);
    tb.e[axis][idx] = static_cast<int16_t>(r.e);
    tb.done[axis][idx] = r.starts && r.ends ? 1 : 0;
  }
}

// Weight of local output coordinate p on local source coordinate q.
template <typename A>
HF_HOST_DEVICE A tab_weight(const TileTab<A>& tb, int axis, int p, int q) {
  A w = A(0);
  if (tb.i0[axis][p] == q) w += tb.l0[axis][p];
  if (tb.i1[axis][p] == q) w += tb.l1[axis][p];
  return w;
}

// Phase 1: gm of the tile into shared memory (zero outside the image), the
// thread's sums of gm into the reduction buffer; tables of tiled inputs.
template <typename T, int VEC, typename A, typename I>
HF_HOST_DEVICE void stage_tile(const BwdParams<A, I>& p, const TileAt<I>& at, int tid, T* gm, A* red,
                               TileTab<A>* tab) {
  for (int e = tid; e < p.ntab * kTabEntries; e += kThreads) {
    const int slot = e / kTabEntries;
    for (int k = 0; k < p.k; ++k)
      if (p.in[k].kind == BwdKind::Tiled && p.in[k].table == slot) table_entry(p.in[k], at, e % kTabEntries, tab[slot]);
  }
  const Lane l = lane_of(p, tid);
  if (!l.active) return;
  const int cv = at.ct * p.ncp + l.cp;
  const bool cok = cv < p.cvs;
  const I c0 = static_cast<I>(cv) * VEC;
  A sum[VEC];
HF_UNROLL
  for (int j = 0; j < VEC; ++j) sum[j] = A(0);
  // kBatch pixels per step: their loads are all issued before the first
  // store to shared memory waits for one.
  for (int first = l.pl; first < kTilePixels; first += kBatch * p.npl) {
    A g[kBatch][VEC];
HF_UNROLL
    for (int b = 0; b < kBatch; ++b) {
      const int pix = first + b * p.npl;
      const int ph = pix / kTile, pw = pix % kTile;
      if (cok && pix < kTilePixels && ph < at.vh && pw < at.vw) {
        load_gm<T, VEC>(p, at.n, c0, static_cast<I>(at.h0 + ph), static_cast<I>(at.w0 + pw), g[b]);
      } else {
HF_UNROLL
        for (int j = 0; j < VEC; ++j) g[b][j] = A(0);
      }
    }
HF_UNROLL
    for (int b = 0; b < kBatch; ++b) {
      const int pix = first + b * p.npl;
      if (pix >= kTilePixels) break;
HF_UNROLL
      for (int j = 0; j < VEC; ++j) sum[j] += g[b][j];
      // gm is grad or zero: exact in T.
      store_pack<T, VEC>(gm + shared_at(p, pix, kTilePixels, l.cp, VEC), g[b]);
    }
  }
  put_sums(p, l, red, sum);
}

// The frame of every per-input phase: the thread's pack of VEC channels
// from c0 (in channel tile ct), their scale row sc, and acc, the thread's
// running sums of G * x, handed to the reduction buffer when the scale's
// gradient is wanted. body(l, c0, sc, acc) runs for threads with channels.
template <int VEC, typename A, typename I, typename Body>
HF_HOST_DEVICE void input_phase(const BwdParams<A, I>& p, const BwdInput<A, I>& in, int ct, int tid, A* red,
                                Body&& body) {
  const Lane l = lane_of(p, tid);
  if (!l.active) return;
  const int cv = ct * p.ncp + l.cp;
  const I c0 = static_cast<I>(cv) * VEC;
  A acc[VEC];
HF_UNROLL
  for (int j = 0; j < VEC; ++j) acc[j] = A(0);
  if (cv < p.cvs) {
    A sc[VEC];
    load_row<A, VEC>(in.scale, c0, A(1), sc);
    body(l, c0, sc, acc);
  }
  if (in.scale != nullptr) put_sums(p, l, red, acc);
}

// A same-size input: grad_x = scale * gm, and the sums of gm * x.
template <typename T, int VEC, typename A, typename I>
HF_HOST_DEVICE void same_input(const BwdParams<A, I>& p, const BwdInput<A, I>& in, const TileAt<I>& at, int tid,
                               const T* gm, A* red) {
  input_phase<VEC>(p, in, at.ct, tid, red, [&](const Lane& l, I c0, const A(&sc)[VEC], A(&acc)[VEC]) {
    const T* x = static_cast<const T*>(in.x) + at.n * in.xn + c0 * in.xc;
    T* gx = static_cast<T*>(in.gx) + at.n * in.dn + c0 * in.dc;
    for (int first = l.pl; first < kTilePixels; first += kBatch * p.npl) {
      // The inputs of kBatch pixels (when the scale's gradient needs them)
      // are loaded before any is used.
      A xv[kBatch][VEC];
      bool ok[kBatch];
HF_UNROLL
      for (int b = 0; b < kBatch; ++b) {
        const int pix = first + b * p.npl;
        const int ph = pix / kTile, pw = pix % kTile;
        ok[b] = pix < kTilePixels && ph < at.vh && pw < at.vw;
        if (ok[b] && in.scale != nullptr) {
          load_pack<T, VEC>(x + static_cast<I>(at.h0 + ph) * in.xh + static_cast<I>(at.w0 + pw) * in.xw, xv[b]);
        } else {
HF_UNROLL
          for (int j = 0; j < VEC; ++j) xv[b][j] = A(0);
        }
      }
HF_UNROLL
      for (int b = 0; b < kBatch; ++b) {
        if (!ok[b]) continue;
        const int pix = first + b * p.npl;
        const int ph = pix / kTile, pw = pix % kTile;
        A g[VEC], d[VEC];
        load_pack<T, VEC>(gm + shared_at(p, pix, kTilePixels, l.cp, VEC), g);
HF_UNROLL
        for (int j = 0; j < VEC; ++j) d[j] = sc[j] * g[j];
        store_pack<T, VEC>(gx + static_cast<I>(at.h0 + ph) * in.dh + static_cast<I>(at.w0 + pw) * in.dw, d);
        if (in.scale != nullptr) {
HF_UNROLL
          for (int j = 0; j < VEC; ++j) acc[j] += g[j] * xv[b][j];
        }
      }
    }
  });
}

// out = the sum, over the tile's outputs o that read local source
// coordinate q along `axis`, of weight * value(o) (load(o, value) fills
// value): one axis of the tile's adjoint.
template <int VEC, typename A, typename Load>
HF_HOST_DEVICE void tab_sum(const TileTab<A>& tb, int axis, int q, A (&out)[VEC], Load&& load) {
HF_UNROLL
  for (int v = 0; v < VEC; ++v) out[v] = A(0);
  for (int o = tb.b[axis][q]; o < tb.e[axis][q]; ++o) {
    const A wt = tab_weight(tb, axis, o, q);
    A value[VEC];
    load(o, value);
HF_UNROLL
    for (int v = 0; v < VEC; ++v) out[v] += wt * value[v];
  }
}

// W pass of a tiled input: R[ph][j] = sum over the tile's columns pw that
// read source column q0 + j of weight * gm[ph][pw].
template <typename T, int VEC, typename A, typename I>
HF_HOST_DEVICE void w_pass(const BwdParams<A, I>& p, const TileAt<I>& at, const TileTab<A>& tb, int tid,
                           const T* gm, A* R) {
  const Lane l = lane_of(p, tid);
  if (!l.active || at.ct * p.ncp + l.cp >= p.cvs) return;
  const int nq = tb.nq[1];
  const int rows = kTile * p.r_cols;
  for (int r = l.pl; r < at.vh * nq; r += p.npl) {
    const int ph = r / nq, j = r % nq;
    A s[VEC];
    tab_sum<VEC>(tb, 1, j, s, [&](int pw, A(&g)[VEC]) {
      load_pack<T, VEC>(gm + shared_at(p, ph * kTile + pw, kTilePixels, l.cp, VEC), g);
    });
    store_acc<A, VEC>(R + shared_at(p, ph * p.r_cols + j, rows, l.cp, VEC), s);
  }
}

// H pass: G = sum over the tile's rows ph that read source row q0 + i of
// weight * R[ph][j]. A pixel complete in the tile is finished; any other
// leaves its partial sum for backward_finish.
template <typename T, int VEC, typename A, typename I>
HF_HOST_DEVICE void h_pass(const BwdParams<A, I>& p, const BwdInput<A, I>& in, const TileAt<I>& at,
                           const TileTab<A>& tb, int tid, const A* R, A* red) {
  input_phase<VEC>(p, in, at.ct, tid, red, [&](const Lane& l, I c0, const A(&sc)[VEC], A(&acc)[VEC]) {
    const int nqh = tb.nq[0], nqw = tb.nq[1];
    const int rows = kTile * p.r_cols;
    for (int r = l.pl; r < nqh * nqw; r += p.npl) {
      const int i = r / nqw, j = r % nqw;
      A G[VEC];
      tab_sum<VEC>(tb, 0, i, G, [&](int ph, A(&rv)[VEC]) {
        load_acc<A, VEC>(R + shared_at(p, ph * p.r_cols + j, rows, l.cp, VEC), rv);
      });
      if (tb.done[0][i] && tb.done[1][j]) {
        finish_pixel<T, VEC>(in, at.n, c0, static_cast<I>(tb.q0[0] + i), static_cast<I>(tb.q0[1] + j), G, sc, acc);
      } else {
        store_acc<A, VEC>(in.part + part_at(p, in, at.unit, i, j, c0), G);
      }
    }
  });
}

template <typename T, int VEC, typename I, class Ex>
HF_HOST_DEVICE void backward_tiles_block(const BwdParams<acc_t<T>, I>& p, Ex& ex) {
  using A = acc_t<T>;
  unsigned char* smem = ex.smem();
  T* gm = reinterpret_cast<T*>(smem + p.sm_gm);
  A* R = reinterpret_cast<A*>(smem + p.sm_r);
  A* red = reinterpret_cast<A*>(smem + p.sm_red);
  TileTab<A>* tab = reinterpret_cast<TileTab<A>*>(smem + p.sm_tab);
  const I tiles = p.units1 * p.nct;
  for (I t = static_cast<I>(ex.block()); t < tiles; t += static_cast<I>(ex.grid())) {
    const TileAt<I> at = tile_at(p, t);
    ex.each([&](int tid) { stage_tile<T, VEC>(p, at, tid, gm, red, tab); });
    ex.barrier();
    ex.each([&](int tid) { write_sums(p, tid, red, 0, at.unit, at.ct); });
    ex.barrier();
    for (int k = 0; k < p.k; ++k) {
      const BwdInput<A, I>& in = p.in[k];
      if (in.kind == BwdKind::Same) {
        ex.each([&](int tid) { same_input<T, VEC>(p, in, at, tid, gm, red); });
        ex.barrier();
      } else if (in.kind == BwdKind::Tiled) {
        const TileTab<A>& tb = tab[in.table];
        ex.each([&](int tid) { w_pass<T, VEC>(p, at, tb, tid, gm, R); });
        ex.barrier();
        ex.each([&](int tid) { h_pass<T, VEC>(p, in, at, tb, tid, R, red); });
        ex.barrier();
      } else {
        continue;  // gathered in backward_finish
      }
      if (in.scale != nullptr) {
        ex.each([&](int tid) { write_sums(p, tid, red, 1 + k, at.unit, at.ct); });
        ex.barrier();
      }
    }
  }
}

// --- backward_finish ------------------------------------------------------------

// Where a straddling pixel's tile stands per axis: bit 0, no earlier tile
// reads the source coordinate (this tile owns it); bit 1, no later one does.
constexpr uint8_t kStarts = 1, kEnds = 2;

// Phase 1 of a tiled input's unit in backward_finish: those bits for every
// source coordinate of the tile's spans, into `flags` ([2][kMaxSpan]).
template <typename A, typename I>
HF_HOST_DEVICE void straddle_flags(const BwdParams<A, I>& p, const BwdInput<A, I>& in, I unit, int tid,
                                   uint8_t* flags) {
  const int tw = static_cast<int>(unit % p.tiles_w);
  const int th = static_cast<int>((unit / p.tiles_w) % p.tiles_h);
  for (int e = tid; e < 2 * kMaxSpan; e += kThreads) {
    const int axis = e / kMaxSpan, idx = e % kMaxSpan;
    const Axis<A>& a = axis == 0 ? in.ay : in.ax;
    const int t = axis == 0 ? th : tw;
    const int out = axis == 0 ? p.h : p.w;
    const Span s = tile_span(a, kTile, t);
    if (idx >= s.hi - s.lo) continue;
    const int c1 = (t + 1) * kTile < out ? (t + 1) * kTile : out;
    const TileReaders r = tile_readers(a, t * kTile, c1, s.lo + idx);
    flags[e] = static_cast<uint8_t>((r.starts ? kStarts : 0) | (r.ends ? kEnds : 0));
  }
}

// Phase 2: straddling source pixels of tiled input `in`, by their owning
// tile (unit = output tile): the sum of the partials of every tile whose
// spans hold the pixel, in tile order.
template <typename T, int VEC, typename A, typename I>
HF_HOST_DEVICE void finish_straddling(const BwdParams<A, I>& p, const BwdInput<A, I>& in, I unit, int ct, int tid,
                                      const uint8_t* flags, A* red) {
  input_phase<VEC>(p, in, ct, tid, red, [&](const Lane& l, I c0, const A(&sc)[VEC], A(&acc)[VEC]) {
    const int tw = static_cast<int>(unit % p.tiles_w);
    const I r = unit / p.tiles_w;
    const int th = static_cast<int>(r % p.tiles_h);
    const I n = r / p.tiles_h;
    const Span sh = tile_span(in.ay, kTile, th), sw = tile_span(in.ax, kTile, tw);
    for (int s = l.pl; s < in.nqh * in.nqw; s += p.npl) {
      const int i = s / in.nqw, j = s % in.nqw;
      if (i >= sh.hi - sh.lo || j >= sw.hi - sw.lo) continue;
      const int fh = flags[i], fw = flags[kMaxSpan + j];
      if ((fh & fw) == (kStarts | kEnds)) continue;  // complete: finished by backward_tiles
      if (!(fh & fw & kStarts)) continue;            // another tile owns it
      const int qh = sh.lo + i, qw = sw.lo + j;
      A G[VEC];
HF_UNROLL
      for (int v = 0; v < VEC; ++v) G[v] = A(0);
      for (int th2 = th; th2 < p.tiles_h; ++th2) {
        const int lo_h = th2 == th ? sh.lo : tile_span(in.ay, kTile, th2).lo;
        if (lo_h > qh) break;
        for (int tw2 = tw; tw2 < p.tiles_w; ++tw2) {
          const int lo_w = tw2 == tw ? sw.lo : tile_span(in.ax, kTile, tw2).lo;
          if (lo_w > qw) break;
          const I u2 = (n * p.tiles_h + th2) * p.tiles_w + tw2;
          A pv[VEC];
          load_acc<A, VEC>(in.part + part_at(p, in, u2, qh - lo_h, qw - lo_w, c0), pv);
HF_UNROLL
          for (int v = 0; v < VEC; ++v) G[v] += pv[v];
        }
      }
      finish_pixel<T, VEC>(in, n, c0, static_cast<I>(qh), static_cast<I>(qw), G, sc, acc);
    }
  });
}

// A gathered input: kGatherPixels source pixels per unit, each the plain
// gather over the output pixels that read it (interp.h), gm read from the
// output gradient directly.
template <typename T, int VEC, typename A, typename I>
HF_HOST_DEVICE void finish_gathered(const BwdParams<A, I>& p, const BwdInput<A, I>& in, I unit, int ct, int tid,
                                    A* red) {
  input_phase<VEC>(p, in, ct, tid, red, [&](const Lane& l, I c0, const A(&sc)[VEC], A(&acc)[VEC]) {
    const I plane = static_cast<I>(in.hk) * in.wk;
    for (int s = l.pl; s < kGatherPixels; s += p.npl) {
      const I q = unit * kGatherPixels + s;
      if (q >= p.n * plane) break;
      const I n = q / plane;
      const int qh = static_cast<int>((q - n * plane) / in.wk);
      const int qw = static_cast<int>(q - n * plane - static_cast<I>(qh) * in.wk);
      const Range rh = readers(in.ay, qh), rw = readers(in.ax, qw);
      A G[VEC];
HF_UNROLL
      for (int v = 0; v < VEC; ++v) G[v] = A(0);
      for (int64_t ph = rh.begin; ph < rh.end; ++ph) {
        A row[VEC];
HF_UNROLL
        for (int v = 0; v < VEC; ++v) row[v] = A(0);
        for (int64_t pw = rw.begin; pw < rw.end; ++pw) {
          const A wx = weight(in.ax, pw, static_cast<int64_t>(qw));
          A g[VEC];
          load_gm<T, VEC>(p, n, c0, static_cast<I>(ph), static_cast<I>(pw), g);
HF_UNROLL
          for (int v = 0; v < VEC; ++v) row[v] += wx * g[v];
        }
        const A wy = weight(in.ay, ph, static_cast<int64_t>(qh));
HF_UNROLL
        for (int v = 0; v < VEC; ++v) G[v] += wy * row[v];
      }
      finish_pixel<T, VEC>(in, n, c0, static_cast<I>(qh), static_cast<I>(qw), G, sc, acc);
    }
  });
}

template <typename T, int VEC, typename I, class Ex>
HF_HOST_DEVICE void backward_finish_block(const BwdParams<acc_t<T>, I>& p, Ex& ex) {
  using A = acc_t<T>;
  A* red = reinterpret_cast<A*>(ex.smem());
  uint8_t* flags = ex.smem() + p.sm_flags;
  const I units = p.units2 * p.nct;
  for (I t = static_cast<I>(ex.block()); t < units; t += static_cast<I>(ex.grid())) {
    const int ct = static_cast<int>(t % p.nct);
    const I u = t / p.nct;
    int k = 0;
    while (k + 1 < p.k && !(p.in[k].finish && u >= p.in[k].units_begin && u < p.in[k].units_begin + p.in[k].units))
      ++k;
    const BwdInput<A, I>& in = p.in[k];
    const I local = u - in.units_begin;
    if (in.kind == BwdKind::Gather) {
      ex.each([&](int tid) { finish_gathered<T, VEC>(p, in, local, ct, tid, red); });
    } else {
      ex.each([&](int tid) { straddle_flags(p, in, local, tid, flags); });
      ex.barrier();
      ex.each([&](int tid) { finish_straddling<T, VEC>(p, in, local, ct, tid, flags, red); });
    }
    ex.barrier();
    if (in.scale != nullptr) {
      ex.each([&](int tid) { write_sums(p, tid, red, 1 + k, p.units1 + u, ct); });
      ex.barrier();
    }
  }
}

// --- backward_sums --------------------------------------------------------------

constexpr int kSumLanes = 32;                     // channels per block
constexpr int kSumGroups = kThreads / kSumLanes;  // row groups, summed in order

template <typename A, typename I>
struct SumParams {
  const A* sums;   // BwdParams::sums
  I rows;          // units1 + units2
  I units1;
  I c;
  int k;
  int chunks;      // ceil(C / kSumLanes)
  A* grad_shift;   // (C,)
  A* grad_scales;  // (K, C)
  // Per input: whether its scale gradient is computed, whether it has rows
  // in [0, units1) (all but gathered inputs), its backward_finish rows.
  struct Input {
    I begin2;
    I count2;
    bool has;
    bool tiles;
  } in[kMaxInputs];
};

template <typename A, typename I, class Ex>
HF_HOST_DEVICE void backward_sums_block(const SumParams<A, I>& p, Ex& ex) {
  A* part = reinterpret_cast<A*>(ex.smem());  // [kSumGroups][kSumLanes]
  for (int b = ex.block(); b < (p.k + 1) * p.chunks; b += ex.grid()) {
    const int q = b / p.chunks;
    const I c = static_cast<I>(b % p.chunks) * kSumLanes;
    A* out = q == 0 ? p.grad_shift : p.grad_scales + static_cast<I>(q - 1) * p.c;
    const typename SumParams<A, I>::Input in = p.in[q > 0 ? q - 1 : 0];
    if (q > 0 && !in.has) {
      // No scale: its gradient is not asked for; the row is zero.
      ex.each([&](int tid) {
        if (tid < kSumLanes && c + tid < p.c) out[c + tid] = A(0);
      });
      ex.barrier();
      continue;
    }
    const I n1 = q == 0 || in.tiles ? p.units1 : 0;
    const I n2 = q == 0 ? 0 : in.count2;
    const I b2 = q == 0 ? 0 : p.units1 + in.begin2;
    ex.each([&](int tid) {
      const int lane = tid % kSumLanes, g = tid / kSumLanes;
      A s = A(0);
      if (c + lane < p.c) {
        const I total = n1 + n2;
        const I first = total * g / kSumGroups, last = total * (g + 1) / kSumGroups;
        for (I r = first; r < last; ++r) {
          const I row = r < n1 ? r : b2 + (r - n1);
          s += p.sums[(static_cast<I>(q) * p.rows + row) * p.c + c + lane];
        }
      }
      part[g * kSumLanes + lane] = s;
    });
    ex.barrier();
    ex.each([&](int tid) {
      if (tid < kSumLanes && c + tid < p.c) {
        A s = A(0);
        for (int g = 0; g < kSumGroups; ++g) s += part[g * kSumLanes + tid];
        out[c + tid] = s;
      }
    });
    ex.barrier();
  }
}

#if defined(__CUDACC__)
// At least two blocks per SM: besides bounding registers (128), this keeps
// ptxas from an occupancy target low enough to spill (seen at 48 registers
// on the single-element finish kernel).
template <typename T, int VEC, typename I>
__global__ void __launch_bounds__(kThreads, 2) backward_tiles_kernel(const BwdParams<acc_t<T>, I> p) {
  extern __shared__ __align__(16) unsigned char hf_smem_tiles[];
  GpuBlock ex{hf_smem_tiles};
  backward_tiles_block<T, VEC, I>(p, ex);
}

template <typename T, int VEC, typename I>
__global__ void __launch_bounds__(kThreads, 2) backward_finish_kernel(const BwdParams<acc_t<T>, I> p) {
  extern __shared__ __align__(16) unsigned char hf_smem_finish[];
  GpuBlock ex{hf_smem_finish};
  backward_finish_block<T, VEC, I>(p, ex);
}

template <typename A, typename I>
__global__ void __launch_bounds__(kThreads) backward_sums_kernel(const SumParams<A, I> p) {
  __shared__ __align__(16) unsigned char hf_smem_sums[kThreads * sizeof(A)];
  GpuBlock ex{hf_smem_sums};
  backward_sums_block<A, I>(p, ex);
}
#endif

}  // namespace cuda
}  // namespace hrnet_fast
