// CublasLtGemm: y = x W^T for prefill with bf16 operands and float32 output/accumulation.
// cuBLASLt is column-major: the row-major y [n_tokens, out] is the column-major matrix y^T [out, n_tokens]
// = W [out, in] x^T, where W's row-major memory is the column-major [in, out] matrix (hence op A = T) and
// x's row-major memory is the column-major [in, n_tokens] matrix (op B = N).
#include "gemm/cublaslt_gemm.h"

#include "cuda/cuda_check.h"

namespace tachyon::kernels {

CublasLtGemm::CublasLtGemm(size_t workspace_bytes) : workspace_bytes_(workspace_bytes) {
  TACHYON_CUBLAS_CHECK(cublasLtCreate(&handle_));
  if (workspace_bytes_ > 0) TACHYON_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

CublasLtGemm::~CublasLtGemm() {
  for (auto& [shape, plan] : plans_) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.operation);
  }
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

const CublasLtGemm::Plan& CublasLtGemm::plan_for(int n_tokens, int out_features, int in_features, bool bias) {
  const auto key = std::make_tuple(n_tokens, out_features, in_features, bias);
  auto found = plans_.find(key);
  if (found != plans_.end()) return found->second;
  Plan plan;
  TACHYON_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.operation, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T, none = CUBLAS_OP_N;
  TACHYON_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.operation, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
  TACHYON_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.operation, CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof(none)));
  if (bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    TACHYON_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.operation, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    const cudaDataType_t bias_type = CUDA_R_32F;
    TACHYON_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.operation, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
  }
  TACHYON_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_16BF, in_features, out_features, in_features));
  TACHYON_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_16BF, in_features, n_tokens, in_features));
  TACHYON_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.c, CUDA_R_32F, out_features, n_tokens, out_features));
  cublasLtMatmulPreference_t preference = nullptr;
  TACHYON_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  TACHYON_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                            &workspace_bytes_, sizeof(workspace_bytes_)));
  cublasLtMatmulHeuristicResult_t result{};
  int found_count = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle_, plan.operation, plan.a, plan.b, plan.c, plan.c,
                                                               preference, 1, &result, &found_count);
  cublasLtMatmulPreferenceDestroy(preference);
  if (status != CUBLAS_STATUS_SUCCESS || found_count == 0) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.operation);
    TACHYON_CUBLAS_CHECK(status == CUBLAS_STATUS_SUCCESS ? CUBLAS_STATUS_NOT_SUPPORTED : status);
  }
  plan.algo = result.algo;
  return plans_.emplace(key, plan).first->second;
}

void CublasLtGemm::linear_bf16(const __nv_bfloat16* weight, const __nv_bfloat16* x, const float* bias, float* y,
                               int n_tokens, int out_features, int in_features, cudaStream_t stream) {
  TACHYON_REQUIRE(n_tokens > 0 && out_features > 0 && in_features > 0, "CublasLtGemm::linear_bf16",
                  "dimensions must be positive");
  const Plan& plan = plan_for(n_tokens, out_features, in_features, bias != nullptr);
  if (bias)
    TACHYON_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.operation, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  const float alpha = 1.0f, beta = 0.0f;
  TACHYON_CUBLAS_CHECK(cublasLtMatmul(handle_, plan.operation, &alpha, weight, plan.a, x, plan.b, &beta, y, plan.c, y,
                                      plan.c, &plan.algo, workspace_, workspace_bytes_, stream));
}

}  // namespace tachyon::kernels
