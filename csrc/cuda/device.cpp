// Device queries of the launchers, cached (device.h).
#include "device.h"

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>

#include "exchange_common.h"

namespace hrnet_fast {
namespace cuda {
namespace {

struct DeviceInfo {
  int sms = 0;
  int optin = 0;
};

std::mutex& cache_mutex() {
  static std::mutex m;
  return m;
}

const DeviceInfo& device_info(int device) {
  static std::map<int, DeviceInfo> cache;
  std::lock_guard<std::mutex> lock(cache_mutex());
  auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  DeviceInfo info;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&info.sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&info.optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return cache.emplace(device, info).first->second;
}

int current_device() {
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

}  // namespace

int shared_memory_optin() { return device_info(current_device()).optin; }

int64_t resident_blocks(const void* kernel, int smem) {
  const int device = current_device();
  const DeviceInfo& info = device_info(device);
  using Key = std::tuple<const void*, int, int>;
  static std::map<Key, int> occupancy;
  static std::map<std::pair<const void*, int>, int> smem_limit;
  std::lock_guard<std::mutex> lock(cache_mutex());
  const Key key{kernel, device, smem};
  auto it = occupancy.find(key);
  if (it == occupancy.end()) {
    if (smem > 48 * 1024) {
      int& limit = smem_limit[{kernel, device}];
      if (limit < smem) {
        C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        limit = smem;
      }
    }
    int blocks = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, smem));
    it = occupancy.emplace(key, std::max(blocks, 1)).first;
  }
  return static_cast<int64_t>(it->second) * info.sms;
}

}  // namespace cuda
}  // namespace hrnet_fast
