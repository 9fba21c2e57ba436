// Division by a run-time constant, for the flat-index decompositions of the
// CUDA kernels (pixel -> (n, h, w), pack -> (n, c, h, w)).
//
// The 32-bit form replaces a hardware-less integer division (~20
// instructions on a GPU) with a multiply-high, an add and a shift:
//   n / d == (umulhi(n, m) + n) >> s
// with s = ceil(log2(d)) and m = floor(2^32 * (2^s - d) / d) + 1, exact for
// 0 <= n < 2^31 and 1 <= d < 2^31 (the sum then fits in 32 bits). The 64-bit
// form divides plainly: it serves the fallback kernels past 2^31 elements.
//
// Host-device, framework-free: the CTest tests check it exhaustively at the
// edges and on random values against plain division.
#pragma once

#include <cstdint>

#include "interp.h"  // HF_HOST_DEVICE

namespace hrnet_fast {

template <typename I>
struct DivMod {
  I quot;
  I rem;
};

template <typename I>
struct Divider;

template <>
struct Divider<int32_t> {
  uint32_t d = 1;
  uint32_t m = 1;  // magic multiplier
  uint32_t s = 0;  // shift

  Divider() = default;
  // Host or device; the loop runs once per launch on the host.
  HF_HOST_DEVICE explicit Divider(int32_t divisor) : d(static_cast<uint32_t>(divisor)) {
    s = 0;
    while (s < 31 && (uint32_t{1} << s) < d) ++s;
    const uint64_t one = 1;
    m = static_cast<uint32_t>(((one << 32) * ((one << s) - d)) / d + 1);
  }

  HF_HOST_DEVICE int32_t div(int32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t t = __umulhi(static_cast<uint32_t>(n), m);
#else
    const uint32_t t = static_cast<uint32_t>((static_cast<uint64_t>(static_cast<uint32_t>(n)) * m) >> 32);
#endif
    return static_cast<int32_t>((t + static_cast<uint32_t>(n)) >> s);
  }

  HF_HOST_DEVICE DivMod<int32_t> divmod(int32_t n) const {
    const int32_t q = div(n);
    return {q, n - q * static_cast<int32_t>(d)};
  }
};

template <>
struct Divider<int64_t> {
  int64_t d = 1;

  Divider() = default;
  HF_HOST_DEVICE explicit Divider(int64_t divisor) : d(divisor) {}

  HF_HOST_DEVICE int64_t div(int64_t n) const { return n / d; }
  HF_HOST_DEVICE DivMod<int64_t> divmod(int64_t n) const {
    const int64_t q = n / d;
    return {q, n - q * d};
  }
};

}  // namespace hrnet_fast
