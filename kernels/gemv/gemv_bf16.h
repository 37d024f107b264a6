// Matrix-vector products for decode and verify passes (1..16 tokens) with bf16 (or block-scaled FP8) weights and
// float32 activations. See gemv_bf16.cu for the design and measured numbers.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace tachyon::kernels {

// How the tokens x top_k assignments of a MoE layer are grouped by expert on the device (written by
// moe_group_by_expert, kernels/moe/moe_routing.h). Entries are assignments in expert-sorted order; an
// expert "slot" is the s-th expert that received at least one assignment (ascending expert id).
struct ExpertRouting {
  const int* active_expert_count = nullptr;  // [1]
  const int* active_experts = nullptr;       // [max_active_experts]: expert id of each slot
  const int* slot_offsets = nullptr;         // [max_active_experts + 1]: entries of slot s are [off[s], off[s+1])
  const int* sorted_assignments = nullptr;   // [n_tokens * top_k]: entry -> assignment t * top_k + j
  const int* assignment_entry = nullptr;     // [n_tokens * top_k]: assignment -> entry (inverse of the above)
  int max_active_experts = 0;                // host-side bound that sizes grids: min(n_experts, n_tokens * top_k)
  int top_k = 0;
  int n_tokens = 0;                          // tokens of the pass (1..16): at most this many entries per expert
};

// Optional additions to the expert products for gpt-oss (everything off by default: the Qwen3 path is unchanged,
// a uniform branch in the epilogue). Biases are float32 on the device, expert e's at e * its stride.
struct ExpertEpilogue {
  const float* gate_bias = nullptr;  // gated products: added to gate row o before the activation
  const float* up_bias = nullptr;    //   and to up row o
  int64_t gate_up_bias_stride = 0;   // floats between experts' gate (and up) biases
  const float* down_bias = nullptr;  // single products (down): added to output row o (FP4 down_combine: weighted)
  int64_t down_bias_stride = 0;
  float swiglu_limit = 0;            // > 0: h = clamped_swiglu(g, u) (gpt-oss, alpha below) instead of silu(g) * u
  float swiglu_alpha = 0;
  bool any() const { return gate_bias || up_bias || down_bias || swiglu_limit > 0; }
  ExpertEpilogue gate_up_part() const {  // what the gate/up product applies
    ExpertEpilogue e = *this;
    e.down_bias = nullptr;
    e.down_bias_stride = 0;
    return e;
  }
  ExpertEpilogue down_part() const {  // what the down product applies
    ExpertEpilogue e;
    e.down_bias = down_bias;
    e.down_bias_stride = down_bias_stride;
    return e;
  }
};

// Launch shape override for benchmarks; 0 picks by heuristic. k_split = warps of a block that share the
// same output rows and split in_features between them (1, 2 or 4).
struct GemvTuning {
  int k_split = 0;
  // m-tiles of 16 rows per warp: 0 = the launch heuristic, 2, or 1 (dense, not gated, with k_split 4 only;
  // the heuristic takes it where 32-row blocks would not fill the SMs).
  int row_tiles = 0;
  // With one 16-row tile per warp and no fused norm: 0 = the launch heuristic, 1 = one block per 16 rows, 2 = a
  // cluster of two blocks per 16 rows, each with half of the columns (rank 0 adds the other's sums).
  int cluster = 0;
};

// y[t, o] = sum_i weight[o, i] * x[t, i] (+ bias[o]).
// weight: bf16 [out_features, in_features] row-major; bias: float [out_features] or nullptr;
// x: float [n_tokens, in_features]; y: float [n_tokens, out_features]. n_tokens 1..16;
// in_features % 32 == 0; pointers 16-byte aligned.
void gemv_bf16(const __nv_bfloat16* weight, const float* bias, const float* x, float* y, int n_tokens,
               int out_features, int in_features, cudaStream_t stream, GemvTuning tuning = {});

// The SwiGLU MLP's first half in one pass: h[t, o] = silu(gate[o, :] . x[t, :]) * (up[o, :] . x[t, :]).
// gate, up: bf16 [out_features, in_features]; h: float [n_tokens, out_features].
void gated_gemv_bf16(const __nv_bfloat16* gate_weight, const __nv_bfloat16* up_weight, const float* x, float* h,
                     int n_tokens, int out_features, int in_features, cudaStream_t stream, GemvTuning tuning = {});

// The pre-norm residual step of a layer (add_rms_norm) fused into the product that reads its output.
struct ResidualNorm {
  const float* residual = nullptr;  // [n_tokens, in_features]
  const float* delta = nullptr;     // [n_tokens, in_features], or nullptr (the first layer: a plain norm)
  const float* weight = nullptr;    // [in_features]
  float eps = 0;
  float* residual_out = nullptr;    // residual + delta; must not overlap residual
  float* normed = nullptr;          // [n_tokens, in_features]: the normalized rows, as add_rms_norm's y
};

// Bit for bit the same as
//   add_rms_norm_to(norm.residual, norm.delta, norm.weight, norm.normed, n_tokens, in_features, norm.eps,
//                   norm.residual_out);  then  gemv_bf16 / gated_gemv_bf16(..., norm.normed, ...)
// in ONE launch where that pays (1..2 tokens, the product's grid one wave, the staged rows costing no occupancy):
// every block normalizes the rows into its shared memory and block 0 writes residual_out and normed; elsewhere it
// is those two launches. Decode uses it for the projections after each norm (QKV, MLP gate/up or router).
void gemv_bf16(const ResidualNorm& norm, const __nv_bfloat16* weight, const float* bias, float* y, int n_tokens,
               int out_features, int in_features, cudaStream_t stream, GemvTuning tuning = {});
void gated_gemv_bf16(const ResidualNorm& norm, const __nv_bfloat16* gate_weight, const __nv_bfloat16* up_weight,
                     float* h, int n_tokens, int out_features, int in_features, cudaStream_t stream,
                     GemvTuning tuning = {});

// A block-scaled FP8 matrix [out, in] as the gemv reads it: e4m3 codes row-major and one float scale per 16 rows x
// 128 columns (w = code * scale). The checkpoints' format (fp4/fp8_blocks.h) scales 128 x 128 tiles: a tile's scale
// repeats over its 8 row groups here, so that a fused matrix (q, k and v stacked) keeps each part's own tiles.
struct Fp8Matrix {
  static constexpr int kRowGroup = 16, kColBlock = 128;
  const uint8_t* codes = nullptr;  // [out, in], 16-byte aligned
  const float* scales = nullptr;   // [ceil(out / 16), ceil(in / 128)]
  static int64_t scale_count(int64_t rows, int64_t cols) {  // scales of a [rows, cols] matrix
    return (rows + kRowGroup - 1) / kRowGroup * ((cols + kColBlock - 1) / kColBlock);
  }
};

// The products above with FP8 weights (same tokens, tuning and fused-norm rules; in_features % 64 == 0). Error
// against the dequantized matrix in float64: the bound of the bf16 products (activations enter as fp16 hi + lo).
void gemv_fp8(const Fp8Matrix& weight, const float* bias, const float* x, float* y, int n_tokens, int out_features,
              int in_features, cudaStream_t stream, GemvTuning tuning = {});
void gated_gemv_fp8(const Fp8Matrix& gate, const Fp8Matrix& up, const float* x, float* h, int n_tokens,
                    int out_features, int in_features, cudaStream_t stream, GemvTuning tuning = {});
void gemv_fp8(const ResidualNorm& norm, const Fp8Matrix& weight, const float* bias, float* y, int n_tokens,
              int out_features, int in_features, cudaStream_t stream, GemvTuning tuning = {});
void gated_gemv_fp8(const ResidualNorm& norm, const Fp8Matrix& gate, const Fp8Matrix& up, float* h, int n_tokens,
                    int out_features, int in_features, cudaStream_t stream, GemvTuning tuning = {});

// MoE experts, each touched expert's matrix read once for all of its tokens. Expert e's matrices start at
// weight + e * expert_stride (elements), each [out_features, in_features].
// expert_gated_gemv_bf16: h[entry, o] = silu(gate_e[o] . x[token]) * (up_e[o] . x[token]) where
//   token = sorted_assignments[entry] / top_k; x: float [n_tokens, in]; h: float [n_entries, out].
//   With `epilogue`: gate/up biases, and the clamped SwiGLU when swiglu_limit > 0.
void expert_gated_gemv_bf16(const __nv_bfloat16* gate_weights, const __nv_bfloat16* up_weights,
                            int64_t expert_stride, const ExpertRouting& routing, const float* x, float* h,
                            int out_features, int in_features, cudaStream_t stream, GemvTuning tuning = {},
                            const ExpertEpilogue& epilogue = {});
// expert_gemv_bf16: y[entry, o] = w_e[o] . x[entry] (+ epilogue.down_bias of e); x: float [n_entries, in];
// y: float [n_entries, out].
void expert_gemv_bf16(const __nv_bfloat16* weights, int64_t expert_stride, const ExpertRouting& routing,
                      const float* x, float* y, int out_features, int in_features, cudaStream_t stream,
                      GemvTuning tuning = {}, const ExpertEpilogue& epilogue = {});

}  // namespace tachyon::kernels
