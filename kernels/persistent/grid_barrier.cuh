// The grid-wide barrier of the persistent kernels (persistent_decode, persistent_stream): every block of a grid that
// is resident all at once arrives on one 64-bit counter that only grows (never reset: a barrier's target is the next
// multiple of the grid size above the arrival's ticket), so consecutive launches and graph replays need no reset.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "cuda/cuda_check.h"
#include "cuda/stream.h"

namespace tachyon::kernels {

constexpr int kBarrierPollLimit = 1 << 23;  // polls (~64 ns + an L2 round trip each) before a trap

__device__ __forceinline__ unsigned long long global_timer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// The arrival is a release add and the wait an acquire poll, after and before `sync` (the block's barrier over the
// threads that take part; it orders their accesses with thread 0's), as CUTLASS's grid barrier does; cross-block
// data is then read with ld.global.cg (L2), never through L1. The poll backs off so that 100+ waiting blocks do not
// keep one L2 slice busy. (Measured on an H100, session 11: one counter polled by one thread per block is the
// cheapest grid-wide signal, ~1 us; per-block flags and flagged-word exchanges were slower.)
// trace (may be null): the arrival and release times go to trace[0] and trace[1]. clock (shared, may be null): [0]
// the block's last release, [1 + phase] its work per phase summed.
template <typename Sync>
__device__ __forceinline__ void grid_barrier(unsigned long long* counter, unsigned long long* trace,
                                             unsigned long long* clock, int phase, Sync&& sync) {
  sync();
  if (threadIdx.x == 0) {
    unsigned long long ticket = 0;
    if (clock) {
      const unsigned long long now = global_timer();
      clock[1 + phase] += now - clock[0];
      if (trace) trace[0] = now;
    }
    asm volatile("atom.add.release.gpu.global.u64 %0, [%1], 1;\n" : "=l"(ticket) : "l"(counter) : "memory");
    const unsigned long long target = (ticket / gridDim.x + 1) * gridDim.x;
    unsigned long long seen;
    for (int polls = 0;; ++polls) {
      asm volatile("ld.acquire.gpu.global.u64 %0, [%1];\n" : "=l"(seen) : "l"(counter) : "memory");
      if (seen >= target) break;
      __nanosleep(64);
      // Seconds without the grid arriving (a block that could not become resident on a GPU shared with other work,
      // or a bug): fail the launch with an error instead of hanging the process.
      if (polls > kBarrierPollLimit) __trap();
    }
    if (clock) {
      clock[0] = global_timer();
      if (trace) trace[1] = clock[0];
    }
  }
  sync();
}

// Host: whether a grid-barrier kernel can have one block of `threads` threads and `shared_bytes` of dynamic shared
// memory resident on every SM at once (the barrier waits for all of them): returns the grid (the SM count) or 0.
// Raises the kernel's dynamic shared-memory limit to `shared_bytes` as a side effect, as its launches need.
template <typename Kernel>
int one_block_per_sm_grid(Kernel kernel, int threads, size_t shared_bytes) {
  const cuda::DeviceInfo& device = cuda::current_device_info();
  if (shared_bytes > device.shared_memory_per_block_optin) return 0;
  TACHYON_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes)));
  int per_sm = 0;
  TACHYON_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared_bytes));
  return per_sm >= 1 ? device.multiprocessors : 0;
}

}  // namespace tachyon::kernels
