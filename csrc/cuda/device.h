// What the launchers ask of the device: how many blocks of a kernel it
// holds at once (the grid of the persistent kernels) and how much shared
// memory a block may opt into. Cached per device and kernel, so a call costs
// a lookup; never synchronises, so it is safe while capturing a graph.
#pragma once

#include <cstdint>

namespace hrnet_fast {
namespace cuda {

// Blocks of `kernel` (kThreads threads, `smem` bytes of dynamic shared
// memory) resident on the current device at once: multiprocessors times
// the occupancy. Raises the kernel's dynamic shared memory limit first
// when `smem` exceeds the default 48 KiB.
int64_t resident_blocks(const void* kernel, int smem);

// The most dynamic shared memory a block may opt into on the current device.
int shared_memory_optin();

}  // namespace cuda
}  // namespace hrnet_fast
