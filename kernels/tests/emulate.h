// Runs the CUDA kernel bodies on the CPU, block by block, thread by thread.
//
// A block's phases run as loops over its threads; barrier() ends a phase.
// To find what a GPU would do differently, the emulation
//   - runs the threads of each phase in a chosen order (in order, reversed,
//     shuffled): a result that depends on it has a race within a phase;
//   - fills shared memory with NaN bytes before each block: a read of a
//     value no thread wrote shows up as NaN;
//   - fails when two phases follow each other without a barrier.
// Launch plans come from kernels/exchange_plan.h, exactly as on the GPU.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include "exchange_plan.h"

namespace hrnet_fast {
namespace cuda {
namespace emu {

enum class Order { Forward, Reverse, Shuffle };

struct CpuBlock {
  int b = 0;
  int g = 1;
  unsigned char* mem = nullptr;
  Order order = Order::Forward;
  std::mt19937* rng = nullptr;
  bool open = false;  // a phase ran since the last barrier

  unsigned char* smem() const { return mem; }
  int block() const { return b; }
  int grid() const { return g; }
  template <typename F>
  void each(F&& f) {
    if (open) {
      std::fprintf(stderr, "emulate: two phases without a barrier between them\n");
      std::abort();
    }
    open = true;
    std::vector<int> tids(kThreads);
    std::iota(tids.begin(), tids.end(), 0);
    if (order == Order::Reverse) std::reverse(tids.begin(), tids.end());
    if (order == Order::Shuffle) std::shuffle(tids.begin(), tids.end(), *rng);
    for (int t : tids) f(t);
  }
  void barrier() { open = false; }
};

// Runs `body(ex)` for every block of a grid of `grid` blocks with `smem`
// bytes of shared memory each.
template <typename Body>
void run_blocks(int64_t grid, int64_t smem, Order order, unsigned seed, Body&& body) {
  std::mt19937 rng(seed);
  std::vector<unsigned char> mem(static_cast<size_t>(std::max<int64_t>(smem, 16)) + 16);
  // 16-byte aligned, as __align__(16) extern shared memory is.
  unsigned char* base = mem.data() + (16 - reinterpret_cast<uintptr_t>(mem.data()) % 16) % 16;
  for (int64_t b = 0; b < grid; ++b) {
    std::fill(mem.begin(), mem.end(), static_cast<unsigned char>(0xFF));
    CpuBlock ex;
    ex.b = static_cast<int>(b), ex.g = static_cast<int>(grid), ex.mem = base, ex.order = order, ex.rng = &rng;
    body(ex);
    if (ex.open) {
      std::fprintf(stderr, "emulate: a kernel ended without a final barrier\n");
      std::abort();
    }
  }
}

// Threads of a barrier-free forward kernel, in the chosen order per block.
template <typename Thread>
void run_threads(int64_t grid, Order order, unsigned seed, Thread&& thread) {
  std::mt19937 rng(seed);
  std::vector<int> tids(kThreads);
  for (int64_t b = 0; b < grid; ++b) {
    std::iota(tids.begin(), tids.end(), 0);
    if (order == Order::Reverse) std::reverse(tids.begin(), tids.end());
    if (order == Order::Shuffle) std::shuffle(tids.begin(), tids.end(), rng);
    for (int t : tids) thread(static_cast<int>(b), static_cast<int>(grid), t);
  }
}

// The forward as the launcher runs it, on the CPU (T: float or double).
template <typename T>
void forward(const ForwardDesc& d, const ForwardPlan& plan, int64_t resident, Order order, unsigned seed = 1) {
  using A = acc_t<T>;
  const int64_t grid = forward_grid(plan, resident);
  dispatch_forward<T>(plan, [&](auto vec, auto pat, auto idx) {
    constexpr int VEC = decltype(vec)::value;
    using Pat = decltype(pat);
    using I = index_of<decltype(idx)>;
    const FwdParams<A, I> p = forward_params<A, I>(d, plan);
    run_threads(grid, order, seed, [&](int b, int g, int t) {
      if (plan.cl)
        forward_cl_thread<T, VEC, Pat, I>(p, b, g, t);
      else
        forward_nchw_thread<T, VEC, Pat, I>(p, b, g, t);
    });
  });
}

// The backward's three kernels as the launcher runs them. `scratch` must
// hold plan.scratch_bytes.
template <typename T>
void backward(const BackwardDesc& d, const BackwardPlan& plan, void* scratch, int64_t resident, Order order,
              unsigned seed = 1) {
  using A = acc_t<T>;
  dispatch_backward<T>(plan, [&](auto vec, auto idx) {
    constexpr int VEC = decltype(vec)::value;
    using I = index_of<decltype(idx)>;
    const BwdParams<A, I> p = backward_params<A, I>(d, plan, scratch);
    const int64_t g1 = std::min<int64_t>(plan.units1 * plan.nct, resident);
    run_blocks(g1, plan.smem_tiles, order, seed, [&](CpuBlock& ex) { backward_tiles_block<T, VEC, I>(p, ex); });
    if (plan.need_finish) {
      const int64_t g2 = std::min<int64_t>(plan.units2 * plan.nct, resident);
      run_blocks(g2, plan.smem_finish, order, seed + 1,
                 [&](CpuBlock& ex) { backward_finish_block<T, VEC, I>(p, ex); });
    }
    const SumParams<A, I> s = sum_params<A, I>(d, plan, scratch);
    run_blocks(std::min<int64_t>(plan.sum_blocks, resident), kThreads * sizeof(A), order, seed + 2,
               [&](CpuBlock& ex) { backward_sums_block<A, I>(s, ex); });
  });
}

}  // namespace emu
}  // namespace cuda
}  // namespace hrnet_fast
