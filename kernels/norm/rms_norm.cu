// rms_norm / add_rms_norm / per_head_rms_norm: y = x / sqrt(mean(x^2) + eps) * w over float32 rows.
// Shapes: rows = tokens (1..16 in decode, any in prefill), dim = hidden size (576..8192) or head_dim.
// One block per row for hidden rows (float4 loads, the row kept in registers up to 8192 wide); one warp per
// (token, head) for per-head norms. Memory-trivial at decode sizes (a 16 x 6144 row block is 393 KB):
// these kernels cost their launch: add_rms_norm 4096 wide, 1 or 16 rows: 3.1-3.3 us per graph node (H100,
// 2026-11-26).
// rms_norm / add_rms_norm are launched with programmatic dependent launch (common/launch.cuh): they wait for the
// previous kernel first thing.
// Error bound vs the CPU reference: 1e-5 relative (reduction order only).
#include "norm/rms_norm.h"

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"
#include "norm/rms_norm_device.cuh"

namespace tachyon::kernels {

namespace {

constexpr int kNormThreads = kNormLanes;  // one thread per lane of the shared reduction (rms_norm_device.cuh)
constexpr int kMaxRowVectors = 8;  // float4s per thread kept in registers: rows up to 8192 wide

// V > 0: the row is dim % 4 == 0 wide and at most V float4s per thread; it stays in registers between the sum and
// the scaling, and the weight (constant, so it may be read before the wait) is loaded while the previous kernel
// finishes: one dependent memory round trip per call instead of three. V == 0: any width, scalar loops.
// residual_out: residual + delta (may be residual itself; written when delta != nullptr or it differs).
template <int V>
__global__ void __launch_bounds__(kNormThreads)
add_rms_norm_kernel(const float* residual, const float* delta, const float* weight, float* y, int dim, float eps,
                    float* residual_out) {
  __shared__ float scratch[kNormThreads / 32];
  const float* row = residual + static_cast<int64_t>(blockIdx.x) * dim;
  float* row_out = residual_out + static_cast<int64_t>(blockIdx.x) * dim;
  const bool write_row = delta || residual_out != residual;
  const float* delta_row = delta ? delta + static_cast<int64_t>(blockIdx.x) * dim : nullptr;
  float* out = y + static_cast<int64_t>(blockIdx.x) * dim;
  if constexpr (V > 0) {
    float4 w[V], v[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const int i = (threadIdx.x + k * kNormThreads) * 4;
      if (i < dim) w[k] = *reinterpret_cast<const float4*>(weight + i);
    }
    wait_for_previous_kernel();  // launched programmatically: residual and delta come from earlier kernels
    allow_next_kernel_to_start();
    float sum = 0;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const int i = (threadIdx.x + k * kNormThreads) * 4;
      if (i >= dim) continue;
      v[k] = *reinterpret_cast<const float4*>(row + i);
      if (delta_row) v[k] = add4(v[k], *reinterpret_cast<const float4*>(delta_row + i));
      if (write_row) *reinterpret_cast<float4*>(row_out + i) = v[k];
      sum = add_squares(sum, v[k]);
    }
    const float inv = inverse_rms(block_sum(sum, scratch), dim, eps);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const int i = (threadIdx.x + k * kNormThreads) * 4;
      if (i < dim) *reinterpret_cast<float4*>(out + i) = scale_normalized(v[k], w[k], inv);
    }
  } else {
    wait_for_previous_kernel();
    allow_next_kernel_to_start();
    float sum = 0;
    for (int i = threadIdx.x; i < dim; i += kNormThreads) {
      float v = row[i];
      if (delta_row) v = v + delta_row[i];
      if (write_row) row_out[i] = v;
      sum += v * v;
    }
    const float inv = 1.0f / sqrtf(block_sum(sum, scratch) / static_cast<float>(dim) + eps);
    // Each thread re-reads only the elements it wrote itself: no barrier needed between the passes.
    const float* normalized = write_row ? row_out : row;
    for (int i = threadIdx.x; i < dim; i += kNormThreads) out[i] = weight[i] * (normalized[i] * inv);
  }
}

// One warp per (token, head); each lane holds head_dim / 32 values (head_dim <= 256).
__global__ void per_head_rms_norm_kernel(float* x, int token_stride, int n_tokens, int n_heads, int head_dim,
                                         const float* weight, float eps) {
  const int warp_global = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (warp_global >= n_tokens * n_heads) return;
  const int token = warp_global / n_heads, head = warp_global % n_heads;
  float* v = x + static_cast<int64_t>(token) * token_stride + head * head_dim;
  float values[8];
  float sum = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int i = lane + 32 * j;
    values[j] = i < head_dim ? v[i] : 0.0f;
    sum += values[j] * values[j];
  }
  sum = warp_sum(sum);
  const float inv = 1.0f / sqrtf(sum / static_cast<float>(head_dim) + eps);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int i = lane + 32 * j;
    if (i < head_dim) v[i] = weight[i] * (values[j] * inv);
  }
}

}  // namespace

void add_rms_norm(float* residual, const float* delta, const float* weight, float* y, int rows, int dim, float eps,
                  cudaStream_t stream) {
  add_rms_norm_to(residual, delta, weight, y, rows, dim, eps, residual, stream);
}

void add_rms_norm_to(const float* residual, const float* delta, const float* weight, float* y, int rows, int dim,
                     float eps, float* residual_out, cudaStream_t stream) {
  TACHYON_REQUIRE(rows >= 0 && dim > 0, "add_rms_norm", "rows must be >= 0 and dim > 0");
  if (rows == 0) return;
  const bool aligned = reinterpret_cast<uintptr_t>(residual) % 16 == 0 && reinterpret_cast<uintptr_t>(weight) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(y) % 16 == 0 && reinterpret_cast<uintptr_t>(delta) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(residual_out) % 16 == 0;
  const int vectors = dim % 4 == 0 && aligned ? (dim / 4 + kNormThreads - 1) / kNormThreads : 0;
  auto launch = [&](auto kernel) {
    launch_programmatic("add_rms_norm_kernel", kernel, dim3(rows), dim3(kNormThreads), 0, stream, residual, delta,
                        weight, y, dim, eps, residual_out);
  };
  if (vectors == 1) launch(add_rms_norm_kernel<1>);
  else if (vectors == 2) launch(add_rms_norm_kernel<2>);
  else if (vectors >= 3 && vectors <= 4) launch(add_rms_norm_kernel<4>);
  else if (vectors >= 5 && vectors <= kMaxRowVectors) launch(add_rms_norm_kernel<kMaxRowVectors>);
  else launch(add_rms_norm_kernel<0>);
}

void rms_norm(const float* x, const float* weight, float* y, int rows, int dim, float eps, cudaStream_t stream) {
  // The residual pointer is only written when delta != nullptr, so x is safe to pass as const.
  add_rms_norm(const_cast<float*>(x), nullptr, weight, y, rows, dim, eps, stream);
}

void per_head_rms_norm(float* x, int token_stride, int n_tokens, int n_heads, int head_dim, const float* weight,
                       float eps, cudaStream_t stream) {
  TACHYON_REQUIRE(head_dim > 0 && head_dim <= 256, "per_head_rms_norm", "head_dim must be in 1..256");
  const int warps = n_tokens * n_heads;
  if (warps <= 0) return;
  constexpr int kWarpsPerBlock = 4;
  per_head_rms_norm_kernel<<<(warps + kWarpsPerBlock - 1) / kWarpsPerBlock, 32 * kWarpsPerBlock, 0, stream>>>(
      x, token_stride, n_tokens, n_heads, head_dim, weight, eps);
  TACHYON_CUDA_CHECK_LAUNCH("per_head_rms_norm_kernel");
}

}  // namespace tachyon::kernels
