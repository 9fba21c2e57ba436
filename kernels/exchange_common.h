// Building blocks of the CUDA exchange kernels that are plain C++ as well:
// element conversion, packed loads and stores, the input kinds and the
// compile-time input patterns, a compile-time loop.
//
// Everything here is host-device and free of CUDA headers, so the kernel
// bodies built on it (exchange_forward.cuh, exchange_backward.cuh) also
// compile with a host compiler and run, thread by thread, in the CTest
// emulation tests (kernels/tests/emulate.h). The CUDA-only pieces (half and
// bfloat16, the block executor) are in exchange_cuda.cuh.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "fast_div.h"
#include "interp.h"

// Full unrolling of the short fixed loops (packs, pixels per thread) in
// device code; host compilers unroll them on their own.
#if defined(__CUDACC__)
#define HF_UNROLL _Pragma("unroll")
#else
#define HF_UNROLL
#endif

namespace hrnet_fast {
namespace cuda {

// HRNet needs four branches plus up to three conv terms joined as inputs.
constexpr int kMaxInputs = 8;
// Threads per block of every kernel.
constexpr int kThreads = 256;

// float accumulation for every storage type but double.
template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename T> using acc_t = typename AccOf<T>::type;

// Conversion between a storage type and its accumulation type; the half
// precision specialisations live in exchange_cuda.cuh.
template <typename T> struct Elem;
template <> struct Elem<float> {
  static HF_HOST_DEVICE float load(float v) { return v; }
  static HF_HOST_DEVICE float store(float v) { return v; }
};
template <> struct Elem<double> {
  static HF_HOST_DEVICE double load(double v) { return v; }
  static HF_HOST_DEVICE double store(double v) { return v; }
};

// VEC consecutive elements moved as one access: 16 bytes on the fast paths,
// one element otherwise. The launchers only pick VEC > 1 when every address
// so read is a multiple of the pack size.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC, typename A>
HF_HOST_DEVICE void load_pack(const T* p, A (&out)[VEC]) {
  const Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(p);
HF_UNROLL
  for (int j = 0; j < VEC; ++j) out[j] = Elem<T>::load(pk.v[j]);
}

template <typename T, int VEC, typename A>
HF_HOST_DEVICE void store_pack(T* p, const A (&in)[VEC]) {
  Pack<T, VEC> pk;
HF_UNROLL
  for (int j = 0; j < VEC; ++j) pk.v[j] = Elem<T>::store(in[j]);
  *reinterpret_cast<Pack<T, VEC>*>(p) = pk;
}

// VEC values of type A (float or double) at p, in packs of at most 16 bytes
// (p must be aligned to min(16, VEC * sizeof(A)) bytes).
template <typename A, int VEC>
HF_HOST_DEVICE void load_acc(const A* p, A (&out)[VEC]) {
  constexpr int W = VEC * sizeof(A) <= 16 ? VEC : static_cast<int>(16 / sizeof(A));
HF_UNROLL
  for (int j = 0; j < VEC; j += W) {
    const Pack<A, W> pk = *reinterpret_cast<const Pack<A, W>*>(p + j);
HF_UNROLL
    for (int l = 0; l < W; ++l) out[j + l] = pk.v[l];
  }
}

template <typename A, int VEC>
HF_HOST_DEVICE void store_acc(A* p, const A (&in)[VEC]) {
  constexpr int W = VEC * sizeof(A) <= 16 ? VEC : static_cast<int>(16 / sizeof(A));
HF_UNROLL
  for (int j = 0; j < VEC; j += W) {
    Pack<A, W> pk;
HF_UNROLL
    for (int l = 0; l < W; ++l) pk.v[l] = in[j + l];
    *reinterpret_cast<Pack<A, W>*>(p + j) = pk;
  }
}

// A per-channel row (scale or shift) for VEC channels, or `fill` where the
// row is absent (the identity).
template <typename A, int VEC>
HF_HOST_DEVICE void load_row(const A* row, int64_t c0, A fill, A (&out)[VEC]) {
  if (row != nullptr) {
    load_acc<A, VEC>(row + c0, out);
  } else {
HF_UNROLL
    for (int j = 0; j < VEC; ++j) out[j] = fill;
  }
}

// torch.relu: negative to zero, NaN stays NaN.
template <typename A>
HF_HOST_DEVICE A relu_value(A v) {
  return v > A(0) || v != v ? v : A(0);
}

// How a forward input reaches an output pixel.
enum class Kind : int {
  Same = 0,   // already of the output size: read as it is
  Shift = 1,  // nearest, exact power-of-two factor per axis: source = p >> s
  Lin = 2,    // bilinear (up or down): four taps from interp.h
  Near = 3,   // nearest, any other size: interp.h's float formula
};

// f(std::integral_constant<Kind, k>{}) for the run-time kind k: code
// written for a compile-time kind serves the run-time pattern as well.
template <typename F>
HF_HOST_DEVICE void with_kind(Kind k, F&& f) {
  switch (k) {
    case Kind::Same: return f(std::integral_constant<Kind, Kind::Same>{});
    case Kind::Shift: return f(std::integral_constant<Kind, Kind::Shift>{});
    case Kind::Near: return f(std::integral_constant<Kind, Kind::Near>{});
    default: return f(std::integral_constant<Kind, Kind::Lin>{});
  }
}

// Output pixels (or packs) per thread and tile of the forward: two, for
// independent loads in flight beyond the inputs', unless one pixel already
// issues eight or more 16-byte loads (bilinear taps), where a second would
// only cost registers.
constexpr int pattern_items(int ns, int nc, Kind ck) {
  return ns + nc * (ck == Kind::Lin ? 4 : 1) >= 8 ? 1 : 2;
}

// A compile-time input pattern: NS same-size inputs followed by NC inputs of
// kind CK (the launcher orders the inputs so). All loads of a pixel are then
// straight-line code, issued before any arithmetic needs them.
template <int NS, int NC, Kind CK>
struct Pattern {
  static constexpr bool kRuntime = false;
  static constexpr int kCount = NS + NC;
  static constexpr int kSame = NS;
  static constexpr Kind kCoarse = CK;
  static constexpr int kItems = pattern_items(NS, NC, CK);
};
// Any number of inputs (up to kMaxInputs) of any kinds, read from the
// parameters at run time: the fallback for every other call.
struct RuntimePattern {
  static constexpr bool kRuntime = true;
  static constexpr int kCount = 0;
  static constexpr int kSame = 0;
  static constexpr Kind kCoarse = Kind::Same;
  static constexpr int kItems = 2;
};

// f(std::integral_constant<int, i>{}) for i = 0 .. N-1, unrolled.
template <typename F, int... Is>
HF_HOST_DEVICE void static_for_impl(F&& f, std::integer_sequence<int, Is...>) {
  (f(std::integral_constant<int, Is>{}), ...);
}
template <int N, typename F>
HF_HOST_DEVICE void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

}  // namespace cuda
}  // namespace hrnet_fast
