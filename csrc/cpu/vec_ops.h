// Vectorised loops over contiguous runs (an NCHW row or plane, a channels_last
// channel vector) used by the CPU kernels. Values are loaded in the storage
// type and computed in the accumulation type acc_t (float for float, half and
// bfloat16; double for double). Reductions keep one partial per vector lane
// and combine lanes in a fixed order, so they are deterministic.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <type_traits>

namespace hrnet_fast {
namespace cpu {

using at::vec::Vectorized;

template <typename acc_t, typename scalar_t>
inline Vectorized<acc_t> vload(const scalar_t* p) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    return Vectorized<acc_t>::loadu(p);
  } else {
    acc_t tmp[Vectorized<acc_t>::size()];
    for (int64_t i = 0; i < Vectorized<acc_t>::size(); ++i) tmp[i] = static_cast<acc_t>(p[i]);
    return Vectorized<acc_t>::loadu(tmp);
  }
}

template <typename acc_t, typename scalar_t>
inline void vstore(scalar_t* p, const Vectorized<acc_t>& v) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    v.store(p);
  } else {
    acc_t tmp[Vectorized<acc_t>::size()];
    v.store(tmp);
    for (int64_t i = 0; i < Vectorized<acc_t>::size(); ++i) p[i] = static_cast<scalar_t>(tmp[i]);
  }
}

template <typename acc_t>
constexpr int64_t lanes() {
  return Vectorized<acc_t>::size();
}

// acc[i] += s * x[i]
template <typename acc_t, typename scalar_t>
inline void axpy(acc_t* acc, acc_t s, const scalar_t* x, int64_t n) {
  int64_t i = 0;
  const Vectorized<acc_t> vs(s);
  for (; i + lanes<acc_t>() <= n; i += lanes<acc_t>())
    (Vectorized<acc_t>::loadu(acc + i) + vs * vload<acc_t>(x + i)).store(acc + i);
  for (; i < n; ++i) acc[i] += s * static_cast<acc_t>(x[i]);
}

// acc[i] += scale[i] * x[i]
template <typename acc_t, typename scalar_t>
inline void axpy_channels(acc_t* acc, const acc_t* scale, const scalar_t* x, int64_t n) {
  int64_t i = 0;
  for (; i + lanes<acc_t>() <= n; i += lanes<acc_t>())
    (Vectorized<acc_t>::loadu(acc + i) + Vectorized<acc_t>::loadu(scale + i) * vload<acc_t>(x + i)).store(acc + i);
  for (; i < n; ++i) acc[i] += scale[i] * static_cast<acc_t>(x[i]);
}

// acc[i] += a * x[i] + b * y[i]
template <typename acc_t>
inline void axpby(acc_t* acc, acc_t a, const acc_t* x, acc_t b, const acc_t* y, int64_t n) {
  int64_t i = 0;
  const Vectorized<acc_t> va(a), vb(b);
  for (; i + lanes<acc_t>() <= n; i += lanes<acc_t>())
    (Vectorized<acc_t>::loadu(acc + i) + va * Vectorized<acc_t>::loadu(x + i) + vb * Vectorized<acc_t>::loadu(y + i))
        .store(acc + i);
  for (; i < n; ++i) acc[i] += a * x[i] + b * y[i];
}

// out[i] = relu ? relu(acc[i]) : acc[i], with torch.relu's NaN behaviour.
template <typename acc_t, typename scalar_t>
inline void store_activated(scalar_t* out, const acc_t* acc, int64_t n, bool relu) {
  int64_t i = 0;
  const Vectorized<acc_t> zero(acc_t(0));
  for (; i + lanes<acc_t>() <= n; i += lanes<acc_t>()) {
    auto v = Vectorized<acc_t>::loadu(acc + i);
    if (relu) v = Vectorized<acc_t>::blendv(v, zero, v < zero);  // NaN < 0 is false: NaN stays
    vstore<acc_t>(out + i, v);
  }
  for (; i < n; ++i) out[i] = static_cast<scalar_t>(relu && acc[i] < acc_t(0) ? acc_t(0) : acc[i]);
}

// gm[i] = (relu && out[i] <= 0) ? 0 : grad[i]: torch.relu's backward mask
// (threshold_backward), under which a NaN output passes its gradient.
template <typename acc_t, typename scalar_t>
inline void masked_grad(acc_t* gm, const scalar_t* grad, const scalar_t* out, int64_t n, bool relu) {
  int64_t i = 0;
  const Vectorized<acc_t> zero(acc_t(0));
  for (; i + lanes<acc_t>() <= n; i += lanes<acc_t>()) {
    auto g = vload<acc_t>(grad + i);
    if (relu) g = Vectorized<acc_t>::blendv(g, zero, vload<acc_t>(out + i) <= zero);
    g.store(gm + i);
  }
  for (; i < n; ++i) {
    const acc_t g = static_cast<acc_t>(grad[i]);
    gm[i] = relu && static_cast<acc_t>(out[i]) <= acc_t(0) ? acc_t(0) : g;
  }
}

// out[i] = s * x[i]
template <typename acc_t, typename scalar_t>
inline void scale_store(scalar_t* out, acc_t s, const acc_t* x, int64_t n) {
  int64_t i = 0;
  const Vectorized<acc_t> vs(s);
  for (; i + lanes<acc_t>() <= n; i += lanes<acc_t>()) vstore<acc_t>(out + i, vs * Vectorized<acc_t>::loadu(x + i));
  for (; i < n; ++i) out[i] = static_cast<scalar_t>(s * x[i]);
}

// out[i] = scale[i] * x[i]
template <typename acc_t, typename scalar_t>
inline void scale_store_channels(scalar_t* out, const acc_t* scale, const acc_t* x, int64_t n) {
  int64_t i = 0;
  for (; i + lanes<acc_t>() <= n; i += lanes<acc_t>())
    vstore<acc_t>(out + i, Vectorized<acc_t>::loadu(scale + i) * Vectorized<acc_t>::loadu(x + i));
  for (; i < n; ++i) out[i] = static_cast<scalar_t>(scale[i] * x[i]);
}

// acc[i] += x[i]
template <typename acc_t>
inline void add_into(acc_t* acc, const acc_t* x, int64_t n) {
  int64_t i = 0;
  for (; i + lanes<acc_t>() <= n; i += lanes<acc_t>())
    (Vectorized<acc_t>::loadu(acc + i) + Vectorized<acc_t>::loadu(x + i)).store(acc + i);
  for (; i < n; ++i) acc[i] += x[i];
}

// acc[i] += x[i] * y[i]
template <typename acc_t, typename scalar_t>
inline void add_product_into(acc_t* acc, const acc_t* x, const scalar_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + lanes<acc_t>() <= n; i += lanes<acc_t>())
    (Vectorized<acc_t>::loadu(acc + i) + Vectorized<acc_t>::loadu(x + i) * vload<acc_t>(y + i)).store(acc + i);
  for (; i < n; ++i) acc[i] += x[i] * static_cast<acc_t>(y[i]);
}

// sum_i x[i] * y[i] (y == nullptr: sum_i x[i]), lane partials combined in
// order and returned in double.
template <typename acc_t, typename scalar_t>
inline double dot(const acc_t* x, const scalar_t* y, int64_t n) {
  int64_t i = 0;
  Vectorized<acc_t> lanes_acc(acc_t(0));
  for (; i + lanes<acc_t>() <= n; i += lanes<acc_t>()) {
    const auto v = Vectorized<acc_t>::loadu(x + i);
    lanes_acc = lanes_acc + (y ? v * vload<acc_t>(y + i) : v);
  }
  acc_t tmp[lanes<acc_t>()];
  lanes_acc.store(tmp);
  double total = 0.0;
  for (int64_t l = 0; l < lanes<acc_t>(); ++l) total += tmp[l];
  for (; i < n; ++i) total += static_cast<double>(x[i]) * (y ? static_cast<double>(static_cast<acc_t>(y[i])) : 1.0);
  return total;
}

}  // namespace cpu
}  // namespace hrnet_fast
