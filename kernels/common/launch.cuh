// launch_programmatic: the one way the decode-path kernels are launched. Programmatic dependent launch (PDL,
// sm_90): with cudaLaunchAttributeProgrammaticStreamSerialization the kernel may be scheduled while the previous
// kernel of the stream is still running (as soon as all of that kernel's blocks have executed
// allow_next_kernel_to_start() or exited), so the launch latency between two graph nodes overlaps the previous
// kernel's tail. Captured into a CUDA graph, the stream order becomes a programmatic edge (CUDA 12.3+).
//
// The contract (device side in common/device_helpers.cuh): a kernel launched here MUST execute
// wait_for_previous_kernel() (griddepcontrol.wait: the previous kernel has completed and its writes are visible)
//   - before any global-memory read of data an earlier kernel produces, and
//   - before any global-memory write (a write could clobber what the previous kernel is still reading),
// in every thread that does either, and on every path (an early exit before the wait in all blocks would let the
// kernel complete before its predecessor, breaking the chain for the next kernel). Only reads of constant data
// (weights) may precede it. A kernel launched normally needs nothing; a kernel launched here without the wait races.
#pragma once
#include <string>
#include <utility>

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

namespace tachyon::kernels {

// name: the kernel's name for the error message. Arguments are converted to the kernel's parameter types.
// cluster_blocks > 1: thread-block clusters of that many consecutive blocks along x (grid.x a multiple of it).
template <typename... Params, typename... Args>
void launch_programmatic_clusters(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block,
                                  size_t shared_bytes, cudaStream_t stream, int cluster_blocks, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute attributes[2]{};
  attributes[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attributes[0].val.programmaticStreamSerializationAllowed = 1;
  attributes[1].id = cudaLaunchAttributeClusterDimension;
  attributes[1].val.clusterDim.x = static_cast<unsigned>(cluster_blocks);
  attributes[1].val.clusterDim.y = 1;
  attributes[1].val.clusterDim.z = 1;
  config.attrs = attributes;
  config.numAttrs = cluster_blocks > 1 ? 2 : 1;
  const cudaError_t status = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // consumed here: a later TACHYON_CUDA_CHECK_LAUNCH must not report it again
    ::tachyon::cuda::throw_cuda_error(status, (std::string("launch of ") + name).c_str(), __FILE__, __LINE__);
  }
}

template <typename... Params, typename... Args>
void launch_programmatic(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                         cudaStream_t stream, Args&&... args) {
  launch_programmatic_clusters(name, kernel, grid, block, shared_bytes, stream, 1, std::forward<Args>(args)...);
}

}  // namespace tachyon::kernels
