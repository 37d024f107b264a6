// Checking every CUDA runtime and cuBLAS call: a failure throws tachyon::Error whose message names the
// call (its source text), the file and line, and the CUDA error, e.g.
//   "CUDA error cudaErrorMemoryAllocation (out of memory) in cudaMalloc(&ptr, bytes) at src/cuda/device_buffer.h:31"
// Kernel launches are checked with TACHYON_CUDA_CHECK_LAUNCH("kernel name") right after the launch, which
// reads cudaGetLastError (launch-configuration errors; faults inside a kernel surface at the next sync).
// This header includes only cuda_runtime_api.h so that .cu files need no fmt.
#pragma once
#include <cuda_runtime_api.h>

namespace tachyon::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(int status, const char* call, const char* file, int line);
// For argument checks in launch wrappers: "<function>: <message>".
[[noreturn]] void throw_invalid_argument(const char* function, const char* message);

}  // namespace tachyon::cuda

#define TACHYON_CUDA_CHECK(call)                                                         \
  do {                                                                                   \
    cudaError_t tachyon_status_ = (call);                                                \
    if (tachyon_status_ != cudaSuccess)                                                  \
      ::tachyon::cuda::throw_cuda_error(tachyon_status_, #call, __FILE__, __LINE__);     \
  } while (0)

#define TACHYON_CUDA_CHECK_LAUNCH(kernel_name)                                           \
  do {                                                                                   \
    cudaError_t tachyon_status_ = cudaGetLastError();                                    \
    if (tachyon_status_ != cudaSuccess)                                                  \
      ::tachyon::cuda::throw_cuda_error(tachyon_status_, "launch of " kernel_name, __FILE__, __LINE__); \
  } while (0)

#define TACHYON_CUBLAS_CHECK(call)                                                       \
  do {                                                                                   \
    int tachyon_status_ = static_cast<int>(call);                                        \
    if (tachyon_status_ != 0) ::tachyon::cuda::throw_cublas_error(tachyon_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define TACHYON_REQUIRE(condition, function, message)                                    \
  do {                                                                                   \
    if (!(condition)) ::tachyon::cuda::throw_invalid_argument(function, message);        \
  } while (0)
