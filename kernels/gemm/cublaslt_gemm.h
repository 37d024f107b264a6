// Prefill matrix products through cuBLASLt: bf16 x bf16 -> float32 (the vendor library, not our craft).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace tachyon::kernels {

class CublasLtGemm {
 public:
  explicit CublasLtGemm(size_t workspace_bytes = 32u << 20);
  ~CublasLtGemm();
  CublasLtGemm(const CublasLtGemm&) = delete;
  CublasLtGemm& operator=(const CublasLtGemm&) = delete;

  // y[t, o] = sum_i weight[o, i] * x[t, i] (+ bias[o]): weight bf16 [out, in] row-major (as stored in
  // checkpoints), x bf16 [n_tokens, in], y float [n_tokens, out], bias float [out] or nullptr.
  // The algorithm for each shape is chosen once (cuBLASLt heuristic) and cached.
  void linear_bf16(const __nv_bfloat16* weight, const __nv_bfloat16* x, const float* bias, float* y, int n_tokens,
                   int out_features, int in_features, cudaStream_t stream);

 private:
  struct Plan {
    cublasLtMatmulDesc_t operation = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  const Plan& plan_for(int n_tokens, int out_features, int in_features, bool bias);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<std::tuple<int, int, int, bool>, Plan> plans_;
};

}  // namespace tachyon::kernels
