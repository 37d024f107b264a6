#include "cuda/stream.h"

#include <mutex>

namespace tachyon::cuda {

const DeviceInfo& current_device_info() {
  static std::mutex mutex;
  static DeviceInfo cache[64];  // fixed storage: returned references stay valid
  int device = 0;
  TACHYON_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= 64) throw_invalid_argument("current_device_info", "device index above 63");
  std::lock_guard<std::mutex> lock(mutex);
  DeviceInfo& info = cache[device];
  if (info.multiprocessors == 0) {
    cudaDeviceProp prop{};
    TACHYON_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    info.device = device;
    info.name = prop.name;
    info.multiprocessors = prop.multiProcessorCount;
    info.compute_major = prop.major;
    info.compute_minor = prop.minor;
    info.l2_bytes = prop.l2CacheSize;
    info.global_memory_bytes = prop.totalGlobalMem;
    info.shared_memory_per_block_optin = prop.sharedMemPerBlockOptin;
    info.shared_memory_per_multiprocessor = prop.sharedMemPerMultiprocessor;
    info.shared_memory_reserved_per_block = prop.reservedSharedMemPerBlock;
  }
  return info;
}

bool cuda_device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error for later calls
    return false;
  }
  return count > 0;
}

}  // namespace tachyon::cuda
