// RAII CUDA streams and events, and the device properties kernels size themselves by.
#pragma once
#include <string>

#include <cuda_runtime_api.h>

#include "cuda/cuda_check.h"

namespace tachyon::cuda {

class Stream {
 public:
  Stream() { TACHYON_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~Stream() {
    if (stream_) cudaStreamDestroy(stream_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  operator cudaStream_t() const { return stream_; }
  void synchronize() const { TACHYON_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  Event() { TACHYON_CUDA_CHECK(cudaEventCreate(&event_)); }
  ~Event() {
    if (event_) cudaEventDestroy(event_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(cudaStream_t stream) { TACHYON_CUDA_CHECK(cudaEventRecord(event_, stream)); }
  void synchronize() const { TACHYON_CUDA_CHECK(cudaEventSynchronize(event_)); }
  // Milliseconds from `start` to this event (both recorded and complete).
  float elapsed_ms_since(const Event& start) const {
    float ms = 0;
    TACHYON_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, event_));
    return ms;
  }
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

struct DeviceInfo {
  int device = 0;
  std::string name;
  int multiprocessors = 0;
  int compute_major = 0, compute_minor = 0;
  size_t l2_bytes = 0;
  size_t global_memory_bytes = 0;
  size_t shared_memory_per_block_optin = 0;
  size_t shared_memory_per_multiprocessor = 0;
  size_t shared_memory_reserved_per_block = 0;  // taken by the system from each resident block's share
};

// Properties of the current device, read once per device and cached (kernels size grids by them).
const DeviceInfo& current_device_info();
// True when a CUDA device is usable (GPU tests skip themselves otherwise).
bool cuda_device_available();

}  // namespace tachyon::cuda
