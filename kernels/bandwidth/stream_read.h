// The measured ceiling for memory-bound kernels: a streaming read of a large buffer with 16-byte loads.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace tachyon::kernels {

// Reads `bytes` (a multiple of 16) from `data` once with 16-byte loads; folds the data into checksum[0]
// (so nothing is optimized away; the value itself means nothing). checksum: device uint32.
void stream_read(const void* data, size_t bytes, uint32_t* checksum, cudaStream_t stream);

}  // namespace tachyon::kernels
