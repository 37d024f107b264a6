// RMSNorm kernels on float32 activations [rows, dim] (row-major).
#pragma once
#include <cuda_runtime_api.h>

namespace tachyon::kernels {

// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight. y may equal x.
void rms_norm(const float* x, const float* weight, float* y, int rows, int dim, float eps, cudaStream_t stream);

// The pre-norm residual step in one pass: residual[r, :] += delta[r, :]; y[r, :] = rms_norm(residual[r, :]) * weight.
// delta == nullptr is a plain rms_norm of residual (the first layer).
void add_rms_norm(float* residual, const float* delta, const float* weight, float* y, int rows, int dim, float eps,
                  cudaStream_t stream);
// The same step out of place: residual_out = residual + delta (a copy of residual when delta == nullptr), y as
// above. residual_out may equal residual (then it is add_rms_norm); otherwise they must not overlap.
void add_rms_norm_to(const float* residual, const float* delta, const float* weight, float* y, int rows, int dim,
                     float eps, float* residual_out, cudaStream_t stream);

// Per-head RMSNorm in place (Qwen3 q_norm / k_norm): for each token t and head h,
// x[t * token_stride + h * head_dim + (0..head_dim)] is normalized with the shared weight [head_dim].
// head_dim <= 256.
void per_head_rms_norm(float* x, int token_stride, int n_tokens, int n_heads, int head_dim, const float* weight,
                       float eps, cudaStream_t stream);

}  // namespace tachyon::kernels
