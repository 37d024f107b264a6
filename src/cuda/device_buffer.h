// Owning device memory (cudaMalloc, never managed memory: see the device notes) with checked copies.
// DeviceBuffer<T> holds `size` elements of T; moves transfer ownership, copies are explicit.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include "cuda/cuda_check.h"

namespace tachyon::cuda {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t size) : size_(size) {
    if (size_ > 0) TACHYON_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data_), size_ * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { copy_from_host(host); }
  ~DeviceBuffer() {
    if (data_) cudaFree(data_);  // no throw from a destructor; a failing free leaves nothing to do
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      if (data_) cudaFree(data_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }

  // Synchronous copies of the whole buffer (tests, loading); the engine's hot path uses streams.
  void copy_from_host(const std::vector<T>& host) {
    if (host.size() != size_) throw_invalid_argument("DeviceBuffer::copy_from_host", "host vector size differs");
    if (size_ > 0) TACHYON_CUDA_CHECK(cudaMemcpy(data_, host.data(), bytes(), cudaMemcpyHostToDevice));
  }
  std::vector<T> to_host() const {
    std::vector<T> host(size_);
    if (size_ > 0) TACHYON_CUDA_CHECK(cudaMemcpy(host.data(), data_, bytes(), cudaMemcpyDeviceToHost));
    return host;
  }
  // Fills every byte with `value`; 0xff makes float32 buffers NaN (tests poison outputs this way).
  void fill_bytes(int value, cudaStream_t stream = nullptr) {
    if (size_ > 0) TACHYON_CUDA_CHECK(cudaMemsetAsync(data_, value, bytes(), stream));
  }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace tachyon::cuda
