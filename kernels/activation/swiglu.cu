// swiglu: h = silu(gate) * up over float32 [rows, cols] with row strides (gate and up may be the two halves
// of one fused projection output); clamped_swiglu (gpt-oss); convert_f32_to_bf16; logit_softcap. Grid-stride
// elementwise loops; memory-trivial at decode sizes. swiglu, clamped_swiglu and logit_softcap are launched
// programmatically (common/launch.cuh) and
// wait for the previous kernel first thing. Error bound vs CPU: 1e-6 relative (expf / tanhf vs std::exp / std::tanh).
#include "activation/swiglu.h"

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"

namespace tachyon::kernels {

namespace {

// h = silu(g) * u, or gpt-oss's clamped_swiglu(g, u) when kClamped (one body, two instances).
template <bool kClamped>
__global__ void swiglu_kernel(const float* gate, int gate_stride, const float* up, int up_stride, float* h, int rows,
                              int cols, float alpha, float limit) {
  wait_for_previous_kernel();  // launched programmatically: gate and up come from the previous kernel
  allow_next_kernel_to_start();
  const int64_t total = static_cast<int64_t>(rows) * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const float g = gate[r * gate_stride + c], u = up[r * up_stride + c];
    h[i] = kClamped ? clamped_swiglu(g, u, alpha, limit) : silu(g) * u;
  }
}

__global__ void convert_f32_to_bf16_kernel(const float* x, __nv_bfloat16* y, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void logit_softcap_kernel(float* x, int64_t count, float cap) {
  wait_for_previous_kernel();  // launched programmatically: x comes from the previous kernel (the lm_head gemv)
  allow_next_kernel_to_start();
  const float inv_cap = 1.0f / cap;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = tanhf(x[i] * inv_cap) * cap;
}

int grid_for(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return static_cast<int>(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

}  // namespace

void swiglu(const float* gate, int gate_stride, const float* up, int up_stride, float* h, int rows, int cols,
            cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  launch_programmatic("swiglu_kernel", swiglu_kernel<false>, dim3(grid_for(static_cast<int64_t>(rows) * cols, 256)),
                      dim3(256), 0, stream, gate, gate_stride, up, up_stride, h, rows, cols, 0.0f, 0.0f);
}

void clamped_swiglu(const float* gate, int gate_stride, const float* up, int up_stride, float* h, int rows, int cols,
                    float alpha, float limit, cudaStream_t stream) {
  TACHYON_REQUIRE(limit > 0, "clamped_swiglu", "limit must be positive");
  if (rows <= 0 || cols <= 0) return;
  launch_programmatic("clamped_swiglu_kernel", swiglu_kernel<true>,
                      dim3(grid_for(static_cast<int64_t>(rows) * cols, 256)), dim3(256), 0, stream, gate, gate_stride,
                      up, up_stride, h, rows, cols, alpha, limit);
}

void convert_f32_to_bf16(const float* x, __nv_bfloat16* y, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  convert_f32_to_bf16_kernel<<<grid_for(count, 256), 256, 0, stream>>>(x, y, count);
  TACHYON_CUDA_CHECK_LAUNCH("convert_f32_to_bf16_kernel");
}

void logit_softcap(float* x, int64_t count, float cap, cudaStream_t stream) {
  TACHYON_REQUIRE(cap > 0.0f, "logit_softcap", "cap must be positive");
  if (count <= 0) return;
  launch_programmatic("logit_softcap_kernel", logit_softcap_kernel, dim3(grid_for(count, 256)), dim3(256), 0, stream, x,
                      count, cap);
}

}  // namespace tachyon::kernels
