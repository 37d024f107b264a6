#include "cuda/cuda_check.h"

#include <cublasLt.h>

#include "core/error.h"

namespace tachyon::cuda {

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  fail("CUDA error {} ({}) in {} at {}:{}", cudaGetErrorName(status), cudaGetErrorString(status), call, file, line);
}

void throw_cublas_error(int status, const char* call, const char* file, int line) {
  fail("cuBLAS error {} ({}) in {} at {}:{}", cublasLtGetStatusName(static_cast<cublasStatus_t>(status)),
       cublasLtGetStatusString(static_cast<cublasStatus_t>(status)), call, file, line);
}

void throw_invalid_argument(const char* function, const char* message) { fail("{}: {}", function, message); }

}  // namespace tachyon::cuda
