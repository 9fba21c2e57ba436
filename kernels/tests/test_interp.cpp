// Unit tests of kernels/interp.h against values PyTorch computed
// (expected_interp.inc, from F.interpolate and its autograd adjoint).
#include "interp.h"

#include <cmath>
#include <cstdio>
#include <vector>

namespace {

struct InterpCase {
  int in;
  int out;
  int bilinear;
  int align_corners;
  int nearest_double;  // F.interpolate took the float64 nearest formula here
  std::vector<double> x, y, gy, gx;
};

#include "expected_interp.inc"

int failures = 0;

void expect_close(double got, double want, double tol, const char* what, const InterpCase& c, int i) {
  if (std::fabs(got - want) > tol * (1.0 + std::fabs(want))) {
    std::printf("FAIL %s in=%d out=%d bilinear=%d ac=%d index=%d: got %.17g want %.17g\n", what, c.in,
                c.out, c.bilinear, c.align_corners, i, got, want);
    ++failures;
  }
}

template <typename T>
hrnet_fast::Axis<T> axis_of(const InterpCase& c) {
  return hrnet_fast::make_axis<T>(c.in, c.out, c.bilinear ? hrnet_fast::Mode::Bilinear : hrnet_fast::Mode::Nearest,
                                  c.align_corners != 0, c.nearest_double != 0);
}

// Forward: out[p] = l0 * x[i0] + l1 * x[i1] equals F.interpolate.
void check_forward(const InterpCase& c) {
  const auto a = axis_of<double>(c);
  for (int p = 0; p < c.out; ++p) {
    const auto t = hrnet_fast::tap(a, p);
    if (t.i0 < 0 || t.i1 >= c.in || t.i0 > t.i1) {
      std::printf("FAIL tap out of range in=%d out=%d p=%d\n", c.in, c.out, p);
      ++failures;
      continue;
    }
    expect_close(t.l0 * c.x[t.i0] + t.l1 * c.x[t.i1], c.y[p], 1e-12, "forward", c, p);
  }
}

// Adjoint as a gather over readers(q) equals autograd through F.interpolate,
// and every output coordinate outside readers(q) has zero weight on q.
void check_adjoint(const InterpCase& c) {
  const auto a = axis_of<double>(c);
  for (int q = 0; q < c.in; ++q) {
    const auto r = hrnet_fast::readers(a, q);
    double acc = 0.0;
    for (int64_t p = r.begin; p < r.end; ++p) acc += hrnet_fast::weight(a, p, q) * c.gy[p];
    expect_close(acc, c.gx[q], 1e-12, "adjoint", c, q);
    for (int p = 0; p < c.out; ++p) {
      if ((p < r.begin || p >= r.end) && hrnet_fast::weight(a, p, q) != 0.0) {
        std::printf("FAIL reader outside range in=%d out=%d q=%d p=%d\n", c.in, c.out, q, p);
        ++failures;
      }
    }
    if (r.end - r.begin > hrnet_fast::max_readers(c.in, c.out)) {
      std::printf("FAIL max_readers too small in=%d out=%d q=%d\n", c.in, c.out, q);
      ++failures;
    }
  }
}

// The float instantiation (used for float/half/bfloat16 tensors) picks the
// same source indices as the double one on these sizes.
void check_float_indices(const InterpCase& c) {
  const auto af = axis_of<float>(c);
  const auto ad = axis_of<double>(c);
  for (int p = 0; p < c.out; ++p) {
    const auto tf = hrnet_fast::tap(af, p);
    const auto td = hrnet_fast::tap(ad, p);
    if (tf.i0 != td.i0 || tf.i1 != td.i1) {
      std::printf("FAIL float/double index mismatch in=%d out=%d p=%d\n", c.in, c.out, p);
      ++failures;
    }
    expect_close(tf.l1, td.l1, 1e-6, "float weight", c, p);
  }
}

// The float64 nearest formula is not the float one on these cases: without
// it the forward would read other sources (45 -> 129: 14 for 15 at 43).
void check_formulas_part(const InterpCase& c) {
  if (!c.nearest_double || c.bilinear) return;
  const auto a = axis_of<double>(c);
  const auto f = hrnet_fast::make_axis<double>(c.in, c.out, hrnet_fast::Mode::Nearest, false, false);
  int differ = 0;
  for (int p = 0; p < c.out; ++p) differ += hrnet_fast::tap(a, p).i0 != hrnet_fast::tap(f, p).i0;
  if (differ == 0) {
    std::printf("FAIL the two nearest formulas agree on in=%d out=%d: the case tests nothing\n", c.in, c.out);
    ++failures;
  }
}

}  // namespace

int main() {
  int n = 0;
  for (const auto& c : kCases) {
    check_forward(c);
    check_adjoint(c);
    check_float_indices(c);
    check_formulas_part(c);
    ++n;
  }
  std::printf("%d cases, %d failures\n", n, failures);
  return failures == 0 ? 0 : 1;
}
