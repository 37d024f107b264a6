// Fused MoE experts with FP4 weights (MXFP4 or NVFP4) for decode and verify passes (1..16 tokens), reading each
// touched expert once per pass. See fp4_moe.cu for the design and measured numbers.
//
// Weights are in the kernel tile layout of src/fp4/fp4_kernel_layout.h (16 x 64 tiles, codes arranged as the
// m16n8k16 A fragments, block scales beside them), experts stacked `expert_stride` bytes apart. Activations are
// float32 row-major, as everywhere in kernels/.
#pragma once
#include <cstdint>
#include <string>

#include <cuda_runtime_api.h>

#include "gemv/gemv_bf16.h"

namespace tachyon::kernels {

enum class Fp4Kind : int { Mxfp4 = 0, Nvfp4 = 1 };

// A stack of FP4 expert matrices [rows, cols] each (rows % 16 == 0, cols % 64 == 0).
struct Fp4ExpertMatrices {
  Fp4Kind kind = Fp4Kind::Nvfp4;
  int rows = 0, cols = 0;
  const uint8_t* tiles = nullptr;       // expert e's tiles start at tiles + e * expert_stride; 16-byte aligned
  int64_t expert_stride = 0;            // bytes, a multiple of 16
  const float* global_scales = nullptr;  // NVFP4: [n_experts] per-matrix scale (device); MXFP4: nullptr
};

// Which kernel version and configuration runs (the bench sweeps these; tests cover every one of them).
// version 1: the first kernels (token tiles of 8 columns, activations split hi + lo in two MMAs per k16 step).
// version 2: hi and lo of each token packed as two MMA columns (4 tokens per n8 tile, one MMA per step), the
//   number of column tiles chosen per expert from its own token count (1..4), the next step's activations loaded
//   one step ahead, the four k16 steps of a tile as independent MMA chains, ring depth and block shape configurable,
//   and the down kernel's work split into (expert, k part) items.
// 0 in a field = the default for the shape (see fp4_moe.cu).
struct Fp4MoeTuning {
  int version = 0;        // 0 = default (2), 1, 2
  int k_split = 0;        // gate/up: warps sharing one row tile along H: 1, 2, 4 (4-warp blocks) or 8 (8-warp blocks)
  int stages = 0;         // gate/up ring stages per warp (version 2: 4 or 8)
  int down_warps = 0;     // down: warps per block (version 2: 8 or 16)
  int down_stages = 0;    // down ring stages per warp (version 2: 6 or 12)
  int down_k_split = 0;   // down: each expert's columns split into this many items (version 2: 1, 2, 3, 4)
  int packed_h = 0;       // version 2, 1 (the process default): h between the kernels is not float but one 32-bit
                          // word per value, fp16 hi of h / 16 (low half) and fp16 lo (high half), written by gate/up,
                          // only permuted by down (4 gate/up and 6 down stages; gate/up and down must agree)
};
// "v2 ks4 s4 dw8 ds6 dk1 hp1" (fields left out stay 0); throws on anything else.
Fp4MoeTuning parse_fp4_moe_tuning(const std::string& text);
std::string to_string(const Fp4MoeTuning& tuning);
// The process default: TACHYON_FP4_MOE (parsed once; a text without hp1 means float h) or version 2 with packed h
// (hp1) and every other field default.
const Fp4MoeTuning& default_fp4_moe_tuning();

// Bytes of one expert matrix in the tile layout (codes + scales).
int64_t fp4_tile_matrix_bytes(Fp4Kind kind, int rows, int cols);

// h[entry, i] = silu(gate_e[i] . x[token]) * (up_e[i] . x[token]) for every routed entry (token = entry's
// assignment / top_k, e its expert). gate, up: [I, H]; x: float [n_tokens, H]; h: float [n_tokens * top_k, I] in
// the routing's entry order (with tuning.packed_h and version 2: packed words, see Fp4MoeTuning). Gate and up may
// carry different NVFP4 global scales. k_split: 0 = the tuning's (or
// the heuristic), else 1/2/4 (8 with version 2).
// `epilogue` (gpt-oss, version 2 only): gate/up biases (gate_up_bias_stride floats apart per expert) and the
// clamped SwiGLU when swiglu_limit > 0, in the epilogue; off (the default), the kernel computes exactly as before.
void fp4_expert_gate_up(const Fp4ExpertMatrices& gate, const Fp4ExpertMatrices& up, const ExpertRouting& routing,
                        const float* x, float* h, cudaStream_t stream, int k_split = 0,
                        const Fp4MoeTuning& tuning = default_fp4_moe_tuning(), const ExpertEpilogue& epilogue = {});

// out[t, :] (+)= sum_j topk_weights[t, j] * (down_e h[entry(t, j)]): the down projection of every routed entry and the
// weighted combine in one launch, deterministic (no atomics). down: [H, I]; h as written by fp4_expert_gate_up;
// topk_weights: float [n_tokens, top_k]; out: float [n_tokens, H]. `after_gate_up`: the previous kernel in the stream
// is fp4_expert_gate_up of this routing, so the routing tables are complete when this kernel starts and its weight
// loads may begin before the gate/up kernel ends.
// `epilogue.down_bias` (gpt-oss, version 2 only): out[t, :] += sum_j topk_weights[t, j] * down_bias_e as well.
void fp4_expert_down_combine(const Fp4ExpertMatrices& down, const ExpertRouting& routing, const float* h,
                             const float* topk_weights, float* out, bool accumulate, cudaStream_t stream,
                             bool after_gate_up = false, const Fp4MoeTuning& tuning = default_fp4_moe_tuning(),
                             const ExpertEpilogue& epilogue = {});

// Both launches: the MoE experts of one layer. h_workspace: float [n_tokens * top_k * I].
void fp4_moe_experts(const Fp4ExpertMatrices& gate, const Fp4ExpertMatrices& up, const Fp4ExpertMatrices& down,
                     const ExpertRouting& routing, const float* x, const float* topk_weights, float* h_workspace,
                     float* out, bool accumulate, cudaStream_t stream,
                     const Fp4MoeTuning& tuning = default_fp4_moe_tuning(), const ExpertEpilogue& epilogue = {});

}  // namespace tachyon::kernels
