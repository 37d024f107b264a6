// stream_read: the bandwidth ceiling benchmarks divide by. A grid of 4 blocks x 1024 threads per SM, each
// thread keeping 4 independent 16-byte loads in flight (L1 bypassed), XOR-folded into one word per thread and
// one atomic per warp. Measured, 2 GiB: H100 80GB HBM3 3114-3121 GB/s (3 runs, 2026-11-26); shared/docs/gpu.md
// gives H200 4.5 TB/s.
#include "bandwidth/stream_read.h"

#include "common/device_helpers.cuh"
#include "cuda/cuda_check.h"
#include "cuda/stream.h"

namespace tachyon::kernels {

namespace {

constexpr int kThreads = 1024;
constexpr int kUnroll = 4;

__global__ void __launch_bounds__(kThreads) stream_read_kernel(const uint4* data, size_t n_vectors, uint32_t* checksum) {
  uint32_t fold = 0;
  const size_t stride = static_cast<size_t>(gridDim.x) * kThreads;
  size_t i = static_cast<size_t>(blockIdx.x) * kThreads + threadIdx.x;
  for (; i + (kUnroll - 1) * stride < n_vectors; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = load_streaming_16B(data + i + u * stride);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) fold ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n_vectors; i += stride) {
    const uint4 v = load_streaming_16B(data + i);
    fold ^= v.x ^ v.y ^ v.z ^ v.w;
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) fold ^= __shfl_xor_sync(0xffffffffu, fold, offset);
  if ((threadIdx.x & 31) == 0) atomicXor(checksum, fold);
}

}  // namespace

void stream_read(const void* data, size_t bytes, uint32_t* checksum, cudaStream_t stream) {
  TACHYON_REQUIRE(bytes % 16 == 0 && reinterpret_cast<uintptr_t>(data) % 16 == 0, "stream_read",
                  "bytes and data must be multiples of 16");
  const size_t n_vectors = bytes / 16;
  if (n_vectors == 0) return;
  const size_t max_blocks = 4ull * cuda::current_device_info().multiprocessors;
  const size_t blocks_needed = (n_vectors + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(blocks_needed < max_blocks ? blocks_needed : max_blocks);
  stream_read_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const uint4*>(data), n_vectors, checksum);
  TACHYON_CUDA_CHECK_LAUNCH("stream_read_kernel");
}

}  // namespace tachyon::kernels
