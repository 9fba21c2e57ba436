// The CUDA kernels' bodies, run on the CPU by the emulator (emulate.h), on
// float and double tensors, against a float64 reference written from the
// definition:
//   forward   y = act( sum_k interp_k(x_k) * scale_k + shift_k )
//   backward  the adjoint as ATen computes it: every output pixel scatters
//             its masked gradient onto the taps it read.
// Each case runs with several grids and thread orders (results must be
// bit-identical: no races, no dependence on the grid), with outputs and
// scratch poisoned with NaN first (every element must be written, no
// unwritten scratch read), over layouts (NCHW, channels_last, strided,
// misaligned), affines absent / present, ReLU on / off, nearest (exact and
// not), bilinear (both align_corners, odd sizes, downsizing), compiled
// patterns and the run-time fallback, 32- and 64-bit index math.
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "emulate.h"
#include "expect.h"

namespace {

using namespace hrnet_fast;
using namespace hrnet_fast::cuda;

using hrnet_fast::testing::failures;
int cases = 0;
// Which kernel paths the cases reached: printed, and required below.
std::set<std::string> reached;

enum class Layout { NCHW, CL, Strided, Sliced };
const char* layout_name(Layout l) {
  switch (l) {
    case Layout::NCHW: return "nchw";
    case Layout::CL: return "cl";
    case Layout::Strided: return "strided";
    default: return "sliced";
  }
}

// A host tensor viewed through strides, possibly not contiguous.
template <typename T>
struct Tensor {
  std::vector<T> buf;
  View v{};
  T& at(int64_t n, int64_t c, int64_t h, int64_t w) {
    return static_cast<T*>(v.data)[n * v.stride[0] + c * v.stride[1] + h * v.stride[2] + w * v.stride[3]];
  }
  int64_t numel() const { return v.size[0] * v.size[1] * v.size[2] * v.size[3]; }
};

template <typename T>
Tensor<T> make(int64_t n, int64_t c, int64_t h, int64_t w, Layout l) {
  Tensor<T> t;
  // Strided: every other row and column of a larger NCHW tensor. Sliced:
  // channels 1.. of a channels_last tensor with one more channel (the base
  // is one element off any pack boundary).
  const int64_t H = l == Layout::Strided ? 2 * h : h, W = l == Layout::Strided ? 2 * w : w;
  const int64_t C = l == Layout::Sliced ? c + 1 : c;
  t.buf.assign(static_cast<size_t>(n * C * H * W + 8), T(0));
  T* base = t.buf.data();
  t.v.size[0] = n, t.v.size[1] = c, t.v.size[2] = h, t.v.size[3] = w;
  if (l == Layout::CL || l == Layout::Sliced) {
    t.v.stride[0] = H * W * C, t.v.stride[1] = 1, t.v.stride[2] = W * C, t.v.stride[3] = C;
    t.v.data = base + (l == Layout::Sliced ? 1 : 0);
  } else {
    t.v.stride[0] = C * H * W, t.v.stride[1] = H * W, t.v.stride[2] = W * (H / h), t.v.stride[3] = W / w;
    t.v.data = base;
  }
  return t;
}

template <typename T>
void fill(Tensor<T>& t, std::mt19937& rng, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> u(lo, hi);
  for (int64_t n = 0; n < t.v.size[0]; ++n)
    for (int64_t c = 0; c < t.v.size[1]; ++c)
      for (int64_t h = 0; h < t.v.size[2]; ++h)
        for (int64_t w = 0; w < t.v.size[3]; ++w) t.at(n, c, h, w) = static_cast<T>(u(rng));
}

template <typename T>
void poison(Tensor<T>& t) {
  for (int64_t n = 0; n < t.v.size[0]; ++n)
    for (int64_t c = 0; c < t.v.size[1]; ++c)
      for (int64_t h = 0; h < t.v.size[2]; ++h)
        for (int64_t w = 0; w < t.v.size[3]; ++w) t.at(n, c, h, w) = static_cast<T>(NAN);
}

template <typename T>
bool same_bits(Tensor<T>& a, Tensor<T>& b) {
  for (int64_t n = 0; n < a.v.size[0]; ++n)
    for (int64_t c = 0; c < a.v.size[1]; ++c)
      for (int64_t h = 0; h < a.v.size[2]; ++h)
        for (int64_t w = 0; w < a.v.size[3]; ++w) {
          const T x = a.at(n, c, h, w), y = b.at(n, c, h, w);
          if (std::memcmp(&x, &y, sizeof(T)) != 0) return false;
        }
  return true;
}

struct Case {
  std::string name;
  std::vector<std::pair<int, int>> sizes;
  int H, W;
  Mode mode;
  bool ac;
};

// Tap weights (in the accumulation type, as the kernels pick them) of
// output coordinate p, widened to double.
template <typename A>
void taps(const Axis<A>& a, int64_t p, int64_t (&i)[2], double (&l)[2]) {
  const Tap<A> t = tap(a, p);
  i[0] = t.i0, i[1] = t.i1, l[0] = t.l0, l[1] = t.l1;
}

template <typename T>
struct Problem {
  using A = acc_t<T>;
  int64_t N, C;
  int H, W;
  Mode mode;
  bool ac, relu;
  std::vector<Tensor<T>> x;
  std::vector<std::vector<A>> scale, shift;
  std::vector<bool> has_scale, has_shift;
  Layout out_layout;

  Axis<A> ay(int k) const { return make_axis<A>(x[k].v.size[2], H, mode, ac); }
  Axis<A> ax(int k) const { return make_axis<A>(x[k].v.size[3], W, mode, ac); }

  // float64 reference of the forward (pre-activation when pre = true).
  std::vector<double> forward_ref(bool pre) {
    std::vector<double> y(static_cast<size_t>(N * C * H * W));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int h = 0; h < H; ++h)
          for (int w = 0; w < W; ++w) {
            double s = 0.0;
            for (size_t k = 0; k < x.size(); ++k) {
              double v;
              if (x[k].v.size[2] == H && x[k].v.size[3] == W) {
                v = static_cast<double>(x[k].at(n, c, h, w));
              } else {
                int64_t ih[2], iw[2];
                double lh[2], lw[2];
                taps(ay(static_cast<int>(k)), h, ih, lh);
                taps(ax(static_cast<int>(k)), w, iw, lw);
                v = 0.0;
                for (int a = 0; a < 2; ++a)
                  for (int b = 0; b < 2; ++b) v += lh[a] * lw[b] * static_cast<double>(x[k].at(n, c, ih[a], iw[b]));
              }
              const double sc = has_scale[k] ? static_cast<double>(scale[k][c]) : 1.0;
              const double sh = has_shift[k] ? static_cast<double>(shift[k][c]) : 0.0;
              s += sc * v + sh;
            }
            y[((n * C + c) * H + h) * W + w] = (!pre && relu) ? (s > 0 || s != s ? s : 0.0) : s;
          }
    return y;
  }
};

template <typename T>
double tol() {
  return sizeof(T) == 8 ? 1e-12 : 2e-5;
}

template <typename T>
ForwardDesc forward_desc(Problem<T>& pb, Tensor<T>& out) {
  ForwardDesc d{};
  d.dtype = sizeof(T) == 8 ? DType::Double : DType::Float;
  d.mode = pb.mode;
  d.align_corners = pb.ac;
  d.relu = pb.relu;
  d.channels_last = pb.out_layout == Layout::CL || pb.out_layout == Layout::Sliced;
  d.k = static_cast<int>(pb.x.size());
  for (int k = 0; k < d.k; ++k) {
    d.in[k] = pb.x[k].v;
    d.scale[k] = pb.has_scale[k] ? pb.scale[k].data() : nullptr;
    d.shift[k] = pb.has_shift[k] ? pb.shift[k].data() : nullptr;
  }
  d.out = out.v;
  return d;
}

// Forward: reference, poisoning, two grids and thread orders.
template <typename T>
void run_forward(Problem<T>& pb, const std::string& what, bool wide, Tensor<T>& out) {
  ++cases;
  out = make<T>(pb.N, pb.C, pb.H, pb.W, pb.out_layout);
  poison(out);
  ForwardDesc d = forward_desc(pb, out);
  const ForwardPlan plan = plan_forward(d, wide);
  reached.insert(std::string("forward ") + (plan.cl ? "cl" : "nchw") + " vec=" + std::to_string(plan.vec) +
                 (plan.pattern >= 0 ? " pattern" : " runtime") + (plan.wide ? " wide" : ""));
  emu::forward<T>(d, plan, 1 << 20, emu::Order::Forward);
  Tensor<T> again = make<T>(pb.N, pb.C, pb.H, pb.W, pb.out_layout);
  poison(again);
  d.out = again.v;
  emu::forward<T>(d, plan, 3, emu::Order::Shuffle, 5);
  EXPECT(same_bits(out, again), "%s: forward differs between grids / thread orders", what.c_str());
  const std::vector<double> ref = pb.forward_ref(false);
  double worst = 0.0;
  for (int64_t n = 0; n < pb.N; ++n)
    for (int64_t c = 0; c < pb.C; ++c)
      for (int h = 0; h < pb.H; ++h)
        for (int w = 0; w < pb.W; ++w) {
          const double got = static_cast<double>(out.at(n, c, h, w));
          const double want = ref[((n * pb.C + c) * pb.H + h) * pb.W + w];
          const double err = std::fabs(got - want) / (1.0 + std::fabs(want));
          if (!(err <= worst)) worst = err;  // NaN propagates into worst
        }
  EXPECT(worst <= tol<T>(), "%s: forward error %.3g (plan: cl=%d vec=%d pattern=%d wide=%d)", what.c_str(), worst,
         plan.cl, plan.vec, plan.pattern, plan.wide);
}

// Backward: reference adjoint by scattering (ATen's formulation), outputs
// and scratch poisoned, two grids and thread orders.
template <typename T>
void run_backward(Problem<T>& pb, const std::string& what, bool wide, Tensor<T>& out, int budget) {
  using A = acc_t<T>;
  ++cases;
  const int K = static_cast<int>(pb.x.size());
  std::mt19937 rng(99);
  // The output gradient in the output's layout, as autograd hands it over
  // (a misaligned output's gradient is an aligned channels_last tensor).
  Tensor<T> grad = make<T>(pb.N, pb.C, pb.H, pb.W, pb.out_layout == Layout::Sliced ? Layout::CL : pb.out_layout);
  fill(grad, rng);
  // Reference.
  std::vector<double> gm(static_cast<size_t>(pb.N * pb.C * pb.H * pb.W));
  std::vector<double> gshift(pb.C, 0.0);
  for (int64_t n = 0; n < pb.N; ++n)
    for (int64_t c = 0; c < pb.C; ++c)
      for (int h = 0; h < pb.H; ++h)
        for (int w = 0; w < pb.W; ++w) {
          double g = static_cast<double>(grad.at(n, c, h, w));
          if (pb.relu && static_cast<double>(out.at(n, c, h, w)) <= 0.0) g = 0.0;
          gm[((n * pb.C + c) * pb.H + h) * pb.W + w] = g;
          gshift[c] += g;
        }
  std::vector<std::vector<double>> G(K);
  std::vector<std::vector<double>> gscale(K, std::vector<double>(pb.C, 0.0)), gabs(K, std::vector<double>(pb.C, 0.0));
  for (int k = 0; k < K; ++k) {
    const int64_t hk = pb.x[k].v.size[2], wk = pb.x[k].v.size[3];
    G[k].assign(static_cast<size_t>(pb.N * pb.C * hk * wk), 0.0);
    const bool same = hk == pb.H && wk == pb.W;
    for (int64_t n = 0; n < pb.N; ++n)
      for (int64_t c = 0; c < pb.C; ++c)
        for (int h = 0; h < pb.H; ++h)
          for (int w = 0; w < pb.W; ++w) {
            const double g = gm[((n * pb.C + c) * pb.H + h) * pb.W + w];
            if (same) {
              G[k][((n * pb.C + c) * hk + h) * wk + w] += g;
              continue;
            }
            int64_t ih[2], iw[2];
            double lh[2], lw[2];
            taps(pb.ay(k), h, ih, lh);
            taps(pb.ax(k), w, iw, lw);
            for (int a = 0; a < 2; ++a)
              for (int b = 0; b < 2; ++b) G[k][((n * pb.C + c) * hk + ih[a]) * wk + iw[b]] += lh[a] * lw[b] * g;
          }
    for (int64_t n = 0; n < pb.N; ++n)
      for (int64_t c = 0; c < pb.C; ++c)
        for (int64_t h = 0; h < hk; ++h)
          for (int64_t w = 0; w < wk; ++w) {
            const double v = G[k][((n * pb.C + c) * hk + h) * wk + w] * static_cast<double>(pb.x[k].at(n, c, h, w));
            gscale[k][c] += v;
            gabs[k][c] += std::fabs(v);
          }
  }

  auto run = [&](int64_t resident, emu::Order order, std::vector<Tensor<T>>& gx, std::vector<A>& gs,
                 std::vector<A>& gb, BackwardPlan& plan) {
    BackwardDesc d{};
    d.dtype = sizeof(T) == 8 ? DType::Double : DType::Float;
    d.mode = pb.mode, d.align_corners = pb.ac, d.relu = pb.relu;
    d.channels_last = pb.out_layout == Layout::CL || pb.out_layout == Layout::Sliced;
    d.k = K;
    gx.clear();
    for (int k = 0; k < K; ++k) {
      // Gradients follow their input's layout, as the op's do.
      const Layout gl = pb.x[k].v.stride[1] == 1 ? Layout::CL : Layout::NCHW;
      gx.push_back(make<T>(pb.N, pb.C, pb.x[k].v.size[2], pb.x[k].v.size[3], gl));
      poison(gx.back());
    }
    for (int k = 0; k < K; ++k) {
      d.x[k] = pb.x[k].v;
      d.gx[k] = gx[k].v;
      d.scale[k] = pb.has_scale[k] ? pb.scale[k].data() : nullptr;
    }
    d.grad = grad.v;
    d.out = out.v;
    gs.assign(static_cast<size_t>(K * pb.C), static_cast<A>(NAN));
    gb.assign(static_cast<size_t>(pb.C), static_cast<A>(NAN));
    d.grad_scales = gs.data();
    d.grad_shift = gb.data();
    plan = plan_backward(d, budget, wide);
    std::vector<unsigned char> scratch(static_cast<size_t>(plan.scratch_bytes) + 256, 0xFF);
    void* base = scratch.data() + (256 - reinterpret_cast<uintptr_t>(scratch.data()) % 256) % 256;
    emu::backward<T>(d, plan, base, resident, order, 3);
  };
  std::vector<Tensor<T>> gx1, gx2;
  std::vector<A> gs1, gs2, gb1, gb2;
  BackwardPlan plan;
  run(1 << 20, emu::Order::Forward, gx1, gs1, gb1, plan);
  run(2, emu::Order::Shuffle, gx2, gs2, gb2, plan);
  bool tiled = false, finish = false, gather = false;
  for (int k = 0; k < K; ++k) {
    tiled = tiled || plan.kind[k] == BwdKind::Tiled;
    finish = finish || (plan.kind[k] == BwdKind::Tiled && plan.finish[k]);
    gather = gather || plan.kind[k] == BwdKind::Gather;
  }
  reached.insert(std::string("backward ") + (plan.cl ? "cl" : "nchw") + " vec=" + std::to_string(plan.vec) +
                 (plan.wide ? " wide" : ""));
  if (tiled) reached.insert(std::string("backward tiled") + (finish ? "+straddling" : ""));
  if (gather) reached.insert("backward gathered");
  if (plan.nct > 1) reached.insert(std::string("backward channel tiles ") + (plan.cl ? "cl" : "nchw"));
  const std::string desc = what + " (plan: cl=" + std::to_string(plan.cl) + " vec=" + std::to_string(plan.vec) +
                           " nct=" + std::to_string(plan.nct) + " finish=" + std::to_string(plan.need_finish) +
                           " wide=" + std::to_string(plan.wide) + ")";
  for (int k = 0; k < K; ++k) EXPECT(same_bits(gx1[k], gx2[k]), "%s: grad_x[%d] differs between runs", desc.c_str(), k);
  EXPECT(std::memcmp(gs1.data(), gs2.data(), gs1.size() * sizeof(A)) == 0 &&
             std::memcmp(gb1.data(), gb2.data(), gb1.size() * sizeof(A)) == 0,
         "%s: sums differ between runs", desc.c_str());
  for (int k = 0; k < K; ++k) {
    const int64_t hk = pb.x[k].v.size[2], wk = pb.x[k].v.size[3];
    double worst = 0.0;
    for (int64_t n = 0; n < pb.N; ++n)
      for (int64_t c = 0; c < pb.C; ++c)
        for (int64_t h = 0; h < hk; ++h)
          for (int64_t w = 0; w < wk; ++w) {
            const double sc = pb.has_scale[k] ? static_cast<double>(pb.scale[k][c]) : 1.0;
            const double want = sc * G[k][((n * pb.C + c) * hk + h) * wk + w];
            const double got = static_cast<double>(gx1[k].at(n, c, h, w));
            const double err = std::fabs(got - want) / (1.0 + std::fabs(want));
            if (!(err <= worst)) worst = err;
          }
    EXPECT(worst <= tol<T>(), "%s: grad_x[%d] error %.3g", desc.c_str(), k, worst);
    for (int64_t c = 0; c < pb.C; ++c) {
      const double got = static_cast<double>(gs1[k * pb.C + c]);
      if (pb.has_scale[k]) {
        EXPECT(std::fabs(got - gscale[k][c]) <= tol<T>() * (1.0 + gabs[k][c]), "%s: grad_scale[%d][%" PRId64
               "] %.9g vs %.9g", desc.c_str(), k, c, got, gscale[k][c]);
      } else {
        EXPECT(got == 0.0, "%s: absent scale's row not zero", desc.c_str());
      }
    }
  }
  for (int64_t c = 0; c < pb.C; ++c) {
    double mag = 0.0;
    for (int64_t n = 0; n < pb.N; ++n)
      for (int h = 0; h < pb.H; ++h)
        for (int w = 0; w < pb.W; ++w) mag += std::fabs(gm[((n * pb.C + c) * pb.H + h) * pb.W + w]);
    EXPECT(std::fabs(static_cast<double>(gb1[c]) - gshift[c]) <= tol<T>() * (1.0 + mag), "%s: grad_shift[%" PRId64 "]",
           desc.c_str(), c);
  }
}

template <typename T>
void run_case(const Case& cs, int64_t N, int64_t C, Layout in_layout, Layout out_layout, int affine, bool relu,
              bool wide, int budget, unsigned seed) {
  using A = acc_t<T>;
  Problem<T> pb;
  pb.N = N, pb.C = C, pb.H = cs.H, pb.W = cs.W, pb.mode = cs.mode, pb.ac = cs.ac, pb.relu = relu;
  pb.out_layout = out_layout;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.5, 1.5), v(-0.5, 0.5);
  const int K = static_cast<int>(cs.sizes.size());
  for (int k = 0; k < K; ++k) {
    // The first input decides the output layout, as in the op; the others
    // alternate when mixing is asked for.
    const Layout l = k == 0 ? out_layout : in_layout;
    pb.x.push_back(make<T>(N, C, cs.sizes[k].first, cs.sizes[k].second, l));
    fill(pb.x.back(), rng);
    std::vector<A> s(C), b(C);
    for (auto& e : s) e = static_cast<A>(u(rng));
    for (auto& e : b) e = static_cast<A>(v(rng));
    pb.scale.push_back(s);
    pb.shift.push_back(b);
    // affine 0: none; 1: every other input; 2: all.
    pb.has_scale.push_back(affine == 2 || (affine == 1 && k % 2 == 1));
    pb.has_shift.push_back(affine == 2 || (affine == 1 && k % 2 == 0));
  }
  const std::string what = std::string(sizeof(T) == 8 ? "f64 " : "f32 ") + cs.name + " N=" + std::to_string(N) +
                           " C=" + std::to_string(C) + " in=" + layout_name(in_layout) + " out=" +
                           layout_name(out_layout) + " affine=" + std::to_string(affine) +
                           " relu=" + std::to_string(relu) + (wide ? " wide" : "");
  Tensor<T> out;
  run_forward(pb, what, wide, out);
  run_backward(pb, what, wide, out, budget);
}

std::vector<Case> cases_list() {
  const Mode NE = Mode::Nearest, BI = Mode::Bilinear;
  std::vector<Case> c;
  // HRNet rows (exact factors 2/4/8), nearest and bilinear.
  c.push_back({"row0", {{32, 24}, {16, 12}, {8, 6}, {4, 3}}, 32, 24, NE, false});
  c.push_back({"row0-bi", {{32, 24}, {16, 12}, {8, 6}, {4, 3}}, 32, 24, BI, false});
  c.push_back({"row0-bi-ac", {{32, 24}, {16, 12}, {8, 6}, {4, 3}}, 32, 24, BI, true});
  c.push_back({"row1", {{16, 12}, {16, 12}, {8, 6}, {4, 3}}, 16, 12, NE, false});
  c.push_back({"row2-bi", {{16, 12}, {16, 12}, {16, 12}, {8, 6}}, 16, 12, BI, false});
  c.push_back({"row3", {{8, 6}, {8, 6}, {8, 6}, {8, 6}}, 8, 6, NE, false});
  c.push_back({"stage2", {{20, 36}, {10, 18}}, 20, 36, NE, false});
  // Odd sizes: a branch pyramid from an odd input (non-exact factors).
  c.push_back({"odd", {{33, 17}, {17, 9}, {9, 5}, {5, 3}}, 33, 17, BI, false});
  c.push_back({"odd-ac", {{33, 17}, {17, 9}, {9, 5}, {5, 3}}, 33, 17, BI, true});
  c.push_back({"odd-nearest", {{15, 9}, {8, 5}}, 15, 9, NE, false});
  c.push_back({"one-axis", {{8, 9}, {8, 5}, {4, 9}}, 8, 9, BI, false});
  c.push_back({"one-pixel", {{7, 7}, {1, 1}}, 7, 7, BI, false});
  // Downsizing (mmseg resizes 26 -> 25), and strongly (gathered whole).
  c.push_back({"down", {{25, 19}, {26, 20}, {13, 10}}, 25, 19, BI, false});
  c.push_back({"down-strong", {{12, 10}, {60, 50}}, 12, 10, BI, false});
  c.push_back({"down-strong-ac", {{12, 10}, {60, 50}, {6, 5}}, 12, 10, BI, true});
  // Same-size input after coarse ones (reordered), only coarse inputs,
  // more inputs than any pattern.
  c.push_back({"reordered", {{16, 12}, {8, 6}, {16, 12}}, 16, 12, NE, false});
  c.push_back({"all-coarse", {{8, 6}, {4, 3}}, 16, 12, BI, false});
  c.push_back({"six", {{16, 12}, {8, 6}, {4, 3}, {16, 12}, {2, 2}, {16, 12}}, 16, 12, NE, false});
  return c;
}

template <typename T>
void test_all() {
  unsigned seed = 1;
  const int big = 96 << 10;
  for (const Case& cs : cases_list()) {
    // C = 8: 16-byte packs for float (2 packs) and double (4 packs).
    run_case<T>(cs, 2, 8, Layout::CL, Layout::CL, 2, true, false, big, seed++);
    run_case<T>(cs, 2, 8, Layout::NCHW, Layout::NCHW, 1, true, false, big, seed++);
    run_case<T>(cs, 1, 5, Layout::NCHW, Layout::CL, 0, false, false, big, seed++);
  }
  const std::vector<Case> all = cases_list();
  const Case& row0 = all[0];
  const Case& bi = all[1];
  const Case& odd = all[7];
  // Strided and misaligned inputs, mixed layouts.
  run_case<T>(bi, 2, 8, Layout::Strided, Layout::NCHW, 2, true, false, big, seed++);
  run_case<T>(bi, 2, 8, Layout::Sliced, Layout::CL, 2, true, false, big, seed++);
  run_case<T>(odd, 1, 8, Layout::Sliced, Layout::Sliced, 1, true, false, big, seed++);
  run_case<T>(row0, 2, 8, Layout::CL, Layout::NCHW, 2, false, false, big, seed++);
  // Many channels: several channel tiles (a tight budget forces more).
  run_case<T>(bi, 1, 40, Layout::CL, Layout::CL, 2, true, false, 48 << 10, seed++);
  run_case<T>(odd, 1, 20, Layout::NCHW, Layout::NCHW, 2, true, false, big, seed++);
  run_case<T>(row0, 1, 136, Layout::CL, Layout::CL, 1, true, false, 20 << 10, seed++);
  // 64-bit index math.
  run_case<T>(bi, 2, 8, Layout::CL, Layout::CL, 2, true, true, big, seed++);
  run_case<T>(odd, 1, 6, Layout::NCHW, Layout::NCHW, 2, true, true, big, seed++);
  run_case<T>(all[13], 1, 4, Layout::CL, Layout::CL, 2, true, true, big, seed++);
}

}  // namespace

int main() {
  test_all<float>();
  test_all<double>();
  for (const std::string& r : reached) std::printf("reached: %s\n", r.c_str());
  for (const char* must : {"forward cl vec=4 pattern", "forward nchw vec=4 pattern", "forward cl vec=1 runtime",
                           "forward nchw vec=1 runtime", "forward cl vec=2 runtime", "forward cl vec=1 runtime wide",
                           "forward nchw vec=1 runtime wide", "backward cl vec=4", "backward cl vec=2",
                           "backward cl vec=1", "backward nchw vec=1", "backward cl vec=1 wide",
                           "backward nchw vec=1 wide", "backward tiled", "backward tiled+straddling",
                           "backward gathered", "backward channel tiles cl", "backward channel tiles nchw"})
    EXPECT(reached.count(must) == 1, "no case reached: %s", must);
  if (failures) {
    std::printf("%d failure(s) in %d cases\n", failures, cases);
    return 1;
  }
  std::printf("all %d emulated kernel cases passed\n", cases);
  return 0;
}
