// Owning page-locked host memory (cudaMallocHost): the destination of asynchronous device-to-host copies that the
// host reads after an event (DecodeLoop's ring reads, the speculative round's snapshots). PinnedBuffer<T> holds
// `size` elements of T, uninitialized (T must be trivially copyable: the device writes it); moves transfer
// ownership. Freeing waits for nothing: the owner makes sure no queued copy still writes the memory.
#pragma once
#include <cstddef>
#include <type_traits>
#include <utility>

#include <cuda_runtime_api.h>

#include "cuda/cuda_check.h"

namespace tachyon::cuda {

template <typename T>
class PinnedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "PinnedBuffer holds raw bytes that copies from the device fill");

 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t size) : size_(size) {
    if (size_ > 0) TACHYON_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&data_), size_ * sizeof(T)));
  }
  ~PinnedBuffer() {
    if (data_) cudaFreeHost(data_);  // no throw from a destructor
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept {
    if (this != &other) {
      if (data_) cudaFreeHost(data_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace tachyon::cuda
