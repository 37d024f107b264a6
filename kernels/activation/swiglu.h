// Elementwise kernels between GEMMs: SwiGLU, float32 -> bf16 conversion (prefill feeds cuBLASLt bf16), and the
// final-logit softcap.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace tachyon::kernels {

// h[r, c] = silu(gate[r * gate_stride + c]) * up[r * up_stride + c] for r < rows, c < cols; h: [rows, cols].
// (Decode uses gated_gemv_bf16, which fuses this into the gate/up product.)
void swiglu(const float* gate, int gate_stride, const float* up, int up_stride, float* h, int rows, int cols,
            cudaStream_t stream);

// h[r, c] = clamped_swiglu(gate[r, c], up[r, c]): gpt-oss's g = min(g, limit), u = clamp(u, -limit, limit),
// h = (u + 1) * g * sigmoid(alpha g). Prefill of gpt-oss experts (their GEMMs have added the biases).
void clamped_swiglu(const float* gate, int gate_stride, const float* up, int up_stride, float* h, int rows, int cols,
                    float alpha, float limit, cudaStream_t stream);

// y[i] = bf16(x[i]) (round to nearest even), count elements.
void convert_f32_to_bf16(const float* x, __nv_bfloat16* y, int64_t count, cudaStream_t stream);

// x[i] = tanh(x[i] / cap) * cap in place, count elements, cap > 0 (final_logit_softcapping, e.g. DFlash drafters).
void logit_softcap(float* x, int64_t count, float cap, cudaStream_t stream);

}  // namespace tachyon::kernels
