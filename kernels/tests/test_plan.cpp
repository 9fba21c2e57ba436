// Unit tests of the host-device helpers of the CUDA kernels that need no
// kernel to run: the fast divider, the 32-bit taps, the exact nearest
// shift, the tiled adjoint's decomposition (tile_axis.h) and the launch
// plans' choices (pattern, pack width, kinds, launches).
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "exchange_plan.h"
#include "expect.h"

namespace {

using namespace hrnet_fast;
using namespace hrnet_fast::cuda;

using hrnet_fast::testing::failures;

void test_divider() {
  std::mt19937 rng(7);
  std::vector<int32_t> divisors = {1, 2, 3, 5, 6, 7, 12, 16, 17, 25, 48, 64, 96, 127, 128, 129, 255, 256,
                                   1000, 4104, 65535, 65536, 65537, 1 << 20, (1 << 30) - 1, 1 << 30,
                                   (1 << 30) + 1, 2147483647};
  for (int i = 0; i < 200; ++i) divisors.push_back(1 + static_cast<int32_t>(rng() % 2147483646u));
  for (int32_t d : divisors) {
    const Divider<int32_t> div(d);
    std::vector<int32_t> ns = {0, 1, d - 1, d, d + 1, 2147483647, 2147483646, 2147483647 - d};
    for (int i = 0; i < 2000; ++i) ns.push_back(static_cast<int32_t>(rng() % 2147483648u));
    for (int i = 0; i < 200; ++i) ns.push_back(static_cast<int32_t>(rng() % 100000u));
    for (int32_t n : ns) {
      if (n < 0) continue;
      const DivMod<int32_t> r = div.divmod(n);
      if (r.quot != n / d || r.rem != n % d) {
        EXPECT(false, "divider %" PRId32 " / %" PRId32 ": got %" PRId32 " r %" PRId32, n, d, r.quot, r.rem);
        return;
      }
    }
  }
  const Divider<int64_t> d64(4104);
  EXPECT(d64.div(int64_t{3} << 40) == (int64_t{3} << 40) / 4104, "64-bit divider");
}

// The 32-bit taps equal the 64-bit ones, and the exact shift equals the
// nearest formula, for every coordinate of many sizes.
template <typename T>
void test_taps() {
  for (int in = 1; in <= 70; ++in) {
    for (int out : {1, 2, 3, 5, 7, 8, 9, 16, 25, 26, 31, 64, 65, 100, 128, 129, 130, 256, 257, 560}) {
      for (int m = 0; m < 3; ++m) {
        const Mode mode = m == 0 ? Mode::Nearest : Mode::Bilinear;
        const Axis<T> a = make_axis<T>(in, out, mode, m == 2);
        for (int p = 0; p < out; ++p) {
          const Tap<T> t = tap(a, p);
          const TapI<int, T> u = tap_as<int>(a, p);
          if (t.i0 != u.i0 || t.i1 != u.i1 || t.l0 != u.l0 || t.l1 != u.l1) {
            EXPECT(false, "tap_as in=%d out=%d mode=%d p=%d", in, out, m, p);
            return;
          }
          EXPECT(reads<int>(a, p, static_cast<int>(t.i0)) && reads<int>(a, p, static_cast<int>(t.i1)), "reads");
        }
        const int s = exact_shift(a, kMaxShift);
        if (mode == Mode::Nearest && out == (in << s) && s >= 0) {
          for (int p = 0; p < out; ++p)
            EXPECT(nearest_source(a, p) == (p >> s), "exact shift in=%d out=%d p=%d", in, out, p);
        } else {
          EXPECT(s < 0 || mode == Mode::Nearest, "exact shift outside nearest");
          if (s >= 0) EXPECT(out == (in << s), "exact shift claims in=%d out=%d s=%d", in, out, s);
        }
      }
    }
  }
  // Every exact factor HRNet uses, at large sizes too.
  for (int in : {1, 3, 7, 64, 513, 2052, 1 << 20})
    for (int s = 0; s <= 4; ++s) {
      const Axis<T> a = make_axis<T>(in, int64_t{in} << s, Mode::Nearest, false);
      EXPECT(exact_shift(a, kMaxShift) == s, "exact shift of in=%d s=%d", in, s);
      for (int64_t p = 0; p < (int64_t{in} << s); p += 1 + (int64_t{in} << s) / 5000)
        EXPECT(nearest_source(a, p) == (p >> s), "shift in=%d s=%d p=%" PRId64, in, s, p);
    }
}

// tile_axis.h: the statements of its header comment, against the plain
// gather adjoint of interp.h, for one axis.
template <typename T>
void check_tiles(int in, int out, Mode mode, bool ac, int len) {
  const Axis<T> a = make_axis<T>(in, out, mode, ac);
  const int nt = tile_count(out, len);
  std::mt19937 rng(static_cast<unsigned>(in * 131 + out * 7 + len));
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> g(out);
  for (auto& v : g) v = u(rng);
  // Plain gather adjoint.
  std::vector<double> want(in, 0.0);
  for (int q = 0; q < in; ++q) {
    const Range r = readers(a, q);
    for (int64_t p = r.begin; p < r.end; ++p) want[q] += static_cast<double>(weight(a, p, q)) * g[p];
  }
  // Per tile: partial sums over its outputs for each q of its span.
  std::vector<Span> spans(nt);
  std::vector<std::vector<double>> part(nt);
  std::vector<std::vector<TileReaders>> rd(nt);
  std::vector<int> covered(in, 0);
  for (int t = 0; t < nt; ++t) {
    const int c0 = t * len, c1 = std::min(out, c0 + len);
    const Span s = tile_span(a, len, t);
    spans[t] = s;
    EXPECT(s.lo >= 0 && s.hi <= in && s.lo < s.hi, "span in=%d out=%d t=%d [%d,%d)", in, out, t, s.lo, s.hi);
    for (int p = c0; p < c1; ++p) {
      const Tap<T> tp = tap(a, p);
      EXPECT(tp.i0 >= s.lo && tp.i1 < s.hi, "tap outside span in=%d out=%d p=%d", in, out, p);
    }
    for (int q = s.lo; q < s.hi; ++q) {
      ++covered[q];
      const TileReaders r = tile_readers(a, c0, c1, q);
      const Range full = readers(a, q);
      const int64_t b = std::max<int64_t>(full.begin, c0), e = std::min<int64_t>(full.end, c1);
      if (b < e) {
        EXPECT(r.b == b - c0 && r.e == e - c0, "local readers in=%d out=%d q=%d: [%d,%d) want [%" PRId64 ",%" PRId64 ")",
               in, out, q, r.b, r.e, b - c0, e - c0);
      } else {
        EXPECT(r.b >= r.e, "empty local readers in=%d out=%d q=%d", in, out, q);
      }
      EXPECT(r.starts == (full.begin >= c0 || full.begin >= full.end), "starts in=%d out=%d q=%d", in, out, q);
      EXPECT(r.ends == (full.end <= c1 || full.begin >= full.end), "ends in=%d out=%d q=%d", in, out, q);
      double s_part = 0.0;
      for (int p = r.b; p < r.e; ++p) s_part += static_cast<double>(weight(a, c0 + p, q)) * g[c0 + p];
      part[t].push_back(s_part);
      rd[t].push_back(r);
    }
  }
  for (int q = 0; q < in; ++q)
    EXPECT(covered[q] >= 1, "source %d of in=%d out=%d in no span", q, in, out);
  // Owner rule: complete -> its one tile; straddling -> the first tile,
  // then the next ones while their span begins at or before q.
  bool any_straddle = false;
  std::vector<int> owners(in, 0);
  for (int t = 0; t < nt; ++t) {
    for (int q = spans[t].lo; q < spans[t].hi; ++q) {
      const TileReaders& r = rd[t][q - spans[t].lo];
      double got;
      if (r.starts && r.ends) {
        got = part[t][q - spans[t].lo];
        EXPECT(covered[q] == 1, "complete source %d in %d spans", q, covered[q]);
      } else {
        any_straddle = true;
        if (!r.starts) continue;
        got = 0.0;
        for (int t2 = t; t2 < nt; ++t2) {
          if (t2 > t && spans[t2].lo > q) break;
          EXPECT(q < spans[t2].hi, "straddling source %d not in span of tile %d", q, t2);
          got += part[t2][q - spans[t2].lo];
        }
      }
      ++owners[q];
      EXPECT(std::fabs(got - want[q]) <= 1e-9 * (1.0 + std::fabs(want[q])),
             "tiled adjoint in=%d out=%d mode=%d ac=%d len=%d q=%d: %.17g vs %.17g", in, out, static_cast<int>(mode),
             ac ? 1 : 0, len, q, got, want[q]);
    }
  }
  for (int q = 0; q < in; ++q) EXPECT(owners[q] == 1, "source %d of in=%d out=%d owned %d times", q, in, out, owners[q]);
  EXPECT(all_complete(a, len) == !any_straddle, "all_complete in=%d out=%d mode=%d len=%d", in, out,
         static_cast<int>(mode), len);
  int m = 0;
  for (const Span& s : spans) m = std::max(m, s.hi - s.lo);
  EXPECT(max_span(a, len) == m, "max_span");
}

template <typename T>
void test_tiles() {
  const int sizes[][2] = {{1, 1},   {1, 7},   {2, 8},   {3, 12},  {4, 8},   {5, 9},   {8, 15},  {8, 16},
                          {9, 17},  {13, 4},  {17, 33}, {7, 64},  {16, 128}, {8, 64}, {32, 64}, {4, 32},
                          {26, 25}, {25, 26}, {33, 17}, {100, 20}, {64, 64}, {12, 96}, {31, 250}, {3, 1}};
  for (const auto& s : sizes)
    for (int m = 0; m < 3; ++m) {
      const Mode mode = m == 0 ? Mode::Nearest : Mode::Bilinear;
      if (mode == Mode::Nearest && s[0] > s[1]) continue;
      for (int len : {16, 5, 8, 1, 3})
        check_tiles<T>(s[0], s[1], mode, m == 2, len);
    }
  // HRNet's exact nearest factors never straddle aligned tiles.
  for (int f : {2, 4, 8, 16})
    for (int in : {1, 3, 8, 13, 64}) {
      const Axis<T> a = make_axis<T>(in, in * f, Mode::Nearest, false);
      EXPECT(all_complete(a, kTile), "exact factor %d straddles (in=%d)", f, in);
    }
}

View view_of(std::vector<float>& buf, int64_t n, int64_t c, int64_t h, int64_t w, bool cl) {
  buf.assign(static_cast<size_t>(n * c * h * w), 0.f);
  View v{buf.data(), {n, c, h, w}, {c * h * w, h * w, w, 1}};
  if (cl) v.stride[0] = c * h * w, v.stride[1] = 1, v.stride[2] = w * c, v.stride[3] = c;
  return v;
}

void test_forward_plans() {
  std::vector<std::vector<float>> bufs(kMaxInputs + 1);
  auto plan = [&](std::vector<std::pair<int, int>> sizes, int H, int W, Mode mode, int c, bool cl) {
    ForwardDesc d{};
    d.dtype = DType::BFloat16;
    d.mode = mode;
    d.channels_last = cl;
    d.k = static_cast<int>(sizes.size());
    for (int k = 0; k < d.k; ++k) d.in[k] = view_of(bufs[k], 2, c, sizes[k].first, sizes[k].second, cl);
    d.out = view_of(bufs[kMaxInputs], 2, c, H, W, cl);
    return plan_forward(d);
  };
  for (bool cl : {true, false}) {
    // HRNet rows of a four-branch module.
    const std::vector<std::pair<int, int>> b = {{64, 48}, {32, 24}, {16, 12}, {8, 6}};
    ForwardPlan p = plan({b[0], b[1], b[2], b[3]}, 64, 48, Mode::Nearest, 48, cl);
    EXPECT(p.pattern == pattern_index(1, 3, Kind::Shift) && p.pattern >= 0 && p.vec == 8 && !p.wide,
           "row 0 nearest: pattern %d vec %d", p.pattern, p.vec);
    EXPECT(p.kind[1] == Kind::Shift && p.shift_h[3] == 3 && p.shift_w[3] == 3, "row 0 shifts");
    p = plan({b[0], b[1], b[2], b[3]}, 64, 48, Mode::Bilinear, 48, cl);
    EXPECT(p.pattern == pattern_index(1, 3, Kind::Lin) && p.items_per_thread == 1, "row 0 bilinear");
    // Row 1: the finer branch's chain result, the identity, two coarser.
    p = plan({{32, 24}, {32, 24}, {16, 12}, {8, 6}}, 32, 24, Mode::Nearest, 96, cl);
    EXPECT(p.pattern == pattern_index(2, 2, Kind::Shift), "row 1");
    p = plan({{16, 16}, {16, 16}, {16, 16}, {8, 8}}, 16, 16, Mode::Bilinear, 192, cl);
    EXPECT(p.pattern == pattern_index(3, 1, Kind::Lin), "row 2");
    p = plan({{8, 8}, {8, 8}, {8, 8}, {8, 8}}, 8, 8, Mode::Nearest, 384, cl);
    EXPECT(p.pattern == pattern_index(4, 0, Kind::Same), "row 3");
    // NCHW packs run along W: a width that is no multiple of the pack
    // takes the run-time kernel one element at a time.
    p = plan({{8, 6}, {8, 6}}, 8, 6, Mode::Nearest, 384, cl);
    EXPECT(cl ? p.pattern == pattern_index(2, 0, Kind::Same) : p.pattern < 0 && p.vec == 1, "width 6");
    // Same-size inputs after coarse ones (a lowered conv term): reordered.
    p = plan({{32, 24}, {16, 12}, {32, 24}}, 32, 24, Mode::Nearest, 64, cl);
    EXPECT(p.pattern == pattern_index(2, 1, Kind::Shift) && p.order[0] == 0 && p.order[1] == 2 && p.order[2] == 1,
           "reordered inputs");
    // Not compiled: non-exact nearest, five inputs, only coarse inputs.
    p = plan({{15, 9}, {8, 5}}, 15, 9, Mode::Nearest, 48, cl);
    EXPECT(p.pattern < 0 && p.kind[1] == Kind::Near, "non-exact nearest");
    p = plan({{15, 16}, {8, 5}}, 15, 16, Mode::Bilinear, 48, cl);
    EXPECT(p.pattern == pattern_index(1, 1, Kind::Lin), "non-exact bilinear is a pattern");
    p = plan({b[0], b[1], b[2], b[3], b[0]}, 64, 48, Mode::Nearest, 48, cl);
    EXPECT(p.pattern < 0, "five inputs");
    p = plan({b[1], b[2]}, 64, 48, Mode::Nearest, 48, cl);
    EXPECT(p.pattern < 0, "no same-size input");
  }
  // Channels that do not fill 16-byte packs: scalar or 4-byte packs.
  ForwardPlan p = plan({{16, 12}, {8, 6}}, 16, 12, Mode::Nearest, 18, true);
  EXPECT(p.vec == 2 && p.pattern < 0, "18 channels: vec %d", p.vec);
  p = plan({{16, 12}, {8, 6}}, 16, 12, Mode::Nearest, 17, true);
  EXPECT(p.vec == 1 && p.pattern < 0, "17 channels");
  p = plan({{16, 10}, {8, 5}}, 16, 10, Mode::Nearest, 8, false);
  EXPECT(p.vec == 1 && p.pattern < 0, "NCHW width 10 is no multiple of 8");
  // Channel tiles: at most 64 packs per tile.
  p = plan({{8, 6}, {8, 6}}, 8, 6, Mode::Nearest, 1024, true);
  EXPECT(p.cvs == 128 && p.nct == 2 && p.ncp == 64 && p.npl == 4, "channel tiles");
  EXPECT(forward_grid(p, 1000) % p.nct == 0 && forward_grid(p, 1) == p.nct, "grid multiple of channel tiles");
}

void test_backward_plans() {
  std::vector<std::vector<float>> bufs(2 * kMaxInputs + 2);
  auto plan = [&](std::vector<std::pair<int, int>> sizes, int H, int W, Mode mode, int c, bool cl) {
    BackwardDesc d{};
    d.dtype = DType::BFloat16;
    d.mode = mode;
    d.relu = true;
    d.channels_last = cl;
    d.k = static_cast<int>(sizes.size());
    for (int k = 0; k < d.k; ++k) {
      d.x[k] = view_of(bufs[k], 8, c, sizes[k].first, sizes[k].second, cl);
      d.gx[k] = view_of(bufs[kMaxInputs + k], 8, c, sizes[k].first, sizes[k].second, cl);
    }
    d.out = view_of(bufs[2 * kMaxInputs], 8, c, H, W, cl);
    d.grad = d.out;
    // The launcher's budget on H100/H200 (csrc/cuda/launch.cpp).
    return plan_backward(d, 72 << 10);
  };
  // W48 stage 4 row 0 at 512x1024 (branch 0 is 128x256).
  for (bool cl : {true, false}) {
    BackwardPlan p = plan({{128, 256}, {64, 128}, {32, 64}, {16, 32}}, 128, 256, Mode::Nearest, 48, cl);
    EXPECT(!p.need_finish && p.kind[0] == BwdKind::Same && p.kind[3] == BwdKind::Tiled, "nearest: two launches");
    EXPECT(p.units1 == 8 * 8 * 16 && p.ntab == 3, "units");
    if (cl) EXPECT(p.vec == 8 && p.nct == 1 && p.ct == 48, "whole pixels per tile: vec %d nct %d", p.vec, p.nct);
    p = plan({{128, 256}, {64, 128}, {32, 64}, {16, 32}}, 128, 256, Mode::Bilinear, 48, cl);
    EXPECT(p.need_finish && p.finish[1] && p.units2 == 3 * p.units1, "bilinear: three launches");
    EXPECT(p.smem_tiles <= (72 << 10), "shared memory within budget");
    if (cl) EXPECT(p.nct == 1 && p.smem_tiles == 65760, "bilinear whole pixels: nct %d smem %d", p.nct, p.smem_tiles);
  }
  // Strong downsizing: gathered whole.
  BackwardPlan p = plan({{20, 18}, {100, 90}}, 20, 18, Mode::Bilinear, 16, true);
  EXPECT(p.kind[1] == BwdKind::Gather && p.need_finish, "gathered input");
  // A small budget: more channel tiles, never over budget.
  BackwardDesc d{};
  std::vector<float> b0, b1, b2, b3;
  d.dtype = DType::Float, d.mode = Mode::Bilinear, d.channels_last = true, d.k = 2;
  d.x[0] = view_of(b0, 1, 64, 32, 32, true), d.x[1] = view_of(b1, 1, 64, 16, 16, true);
  d.gx[0] = d.x[0], d.gx[1] = d.x[1];
  d.out = view_of(b2, 1, 64, 32, 32, true);
  d.grad = view_of(b3, 1, 64, 32, 32, true);
  p = plan_backward(d, 48 << 10);
  EXPECT(p.smem_tiles <= (48 << 10) && p.nct * p.ncp >= p.cvs, "budget 48 KiB: nct %d smem %d", p.nct, p.smem_tiles);
}

}  // namespace

int main() {
  test_divider();
  test_taps<float>();
  test_taps<double>();
  test_tiles<float>();
  test_tiles<double>();
  test_forward_plans();
  test_backward_plans();
  if (failures) {
    std::printf("%d failure(s)\n", failures);
    return 1;
  }
  std::printf("all plan tests passed\n");
  return 0;
}
