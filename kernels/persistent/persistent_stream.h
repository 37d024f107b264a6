// persistent_stream: the one-token decode pass of a model whose layers do NOT fit in shared memory (Qwen3-30B-A3B and
// other mixture-of-experts models, larger dense models) as ONE kernel whose blocks stay resident, streaming every
// weight straight from HBM. The sibling persistent_decode (persistent_decode.h) stages a small dense model's layer in
// shared memory a layer ahead; here a layer is ~114 MB (Qwen3-30B-A3B, bf16) and must be read while it is used.
//
// Why: the kernel-per-op step of Qwen3-30B-A3B spends ~85 us per layer in ten kernels of 2.6-9 us each against a
// ~38 us floor for its bytes (docs/gpu-kernels.md "Session 8"): every kernel pays a launch drain and a chain of
// dependent round trips before its weights stream. Here a layer is six phases separated by grid barriers, and the
// weights a phase streams are known before it starts (except the experts, known one phase ahead): each warp loads
// its first rows of the next phase BEFORE it waits at the barrier, so the barrier hides their latency.
//   P1  x -> RMSNorm -> the block's q / k / v rows
//   P2  attention: (KV head, key split, group of query heads) units, keys staged in shared memory; RoPE and Qwen3's
//       q / k norms on the fly; the unit holding the new position appends its k, v to the paged cache; the last unit
//       of a (KV head, group) to finish merges its heads' splits
//   P3  its o_proj rows of the merged heads, added into its own residual rows
//   P4  (routed layers) x -> RMSNorm -> the router's logits, a row per block
//   P5  every block routes (softmax, top-k) from the logits by itself, then its share of the chosen experts' gate / up
//       pairs -> h = silu(gate) * up; a dense MLP is one "expert" of weight 1
//   P6  its residual rows' down rows of every chosen expert, weighted, added into its residual rows
// FP4 experts (NVFP4 / MXFP4 in the tile layout of the per-op kernels/fp4_moe): P5 / P6 work on 16-row strips of
// tiles instead of rows, their products on the tensor cores as the per-op kernels' (fp16 hi + lo of the vector).
// FP8 attention weights (block-scaled E4M3, kernels::Fp8Matrix): P1 / P3 items of E4M3 codes instead of bf16.
// Work inside a phase is (row, 1024-column part) items over the block's warps, each a warp's 16-byte loads; an
// item's loads are issued while the previous item's products run.
// The grid barrier (grid_barrier.cuh) and the norms (persistent_norms.cuh) are shared with persistent_decode; its
// attention item (persistent_attention.cuh's attention_chunk_mma) is the tensor-core sibling of persistent_decode's;
// the work items (bf16 rows, FP8 rows, FP4 tile strips) are in stream_items.cuh. Measured: docs/gpu-runtime.md
// "Streamed persistent kernel" (Qwen3-30B-A3B bf16 on an H100, session 14: 1.19x the per-op graph at a 1k context,
// 1.16x at 8k; FP4 experts faster than the per-op FP4 kernels at 1k, slower at 16k).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "gemv/gemv_bf16.h"  // Fp8Matrix

namespace tachyon::kernels {

struct StreamLayer {
  const __nv_bfloat16* qkv = nullptr;  // [q_width + 2 kv_width, hidden]
  const float* qkv_bias = nullptr;     // or null
  const float* q_norm = nullptr;       // [head_dim] or null (Qwen3); k_norm likewise
  const float* k_norm = nullptr;
  const __nv_bfloat16* o = nullptr;    // [hidden, q_width]
  const float* o_bias = nullptr;       // or null
  const float* input_norm = nullptr;   // [hidden]
  const float* post_attention_norm = nullptr;
  // The MLP: routed experts when router != null (width moe_width, top_k of `experts`), else one dense MLP (width
  // intermediate). Row i of expert e's gate: gate_up + e * gate_up_stride + i * hidden; its up row + up_offset
  // elements; row r of e's down: down + e * down_stride + r * width.
  const __nv_bfloat16* router = nullptr;  // [experts, hidden]
  const __nv_bfloat16* gate_up = nullptr;
  int64_t gate_up_stride = 0, up_offset = 0;
  const __nv_bfloat16* down = nullptr;
  int64_t down_stride = 0;
  int* topk_ids = nullptr;  // routed layers: [top_k], the step's choice, best first (GpuModel::last_routing) or null
  // Routed layers with FP4 experts (StreamDecodeParams::expert_format; then gate_up / down are unused): gate, up
  // [moe_width, hidden] and down [hidden, moe_width] in the kernel tile layout of src/fp4/fp4_kernel_layout.h,
  // expert e's tiles `stride` bytes after e - 1's; NVFP4's per-matrix global scales [experts] (MXFP4: null).
  struct Fp4Matrix {
    const uint8_t* tiles = nullptr;
    int64_t stride = 0;
    const float* global_scales = nullptr;
  } fp4_gate, fp4_up, fp4_down;
  __nv_bfloat16* k_pages = nullptr;  // this layer's paged cache: [page][page_size][kv_heads][head_dim]
  __nv_bfloat16* v_pages = nullptr;
  // StreamDecodeParams::fp8_attention: q / k / v and o as block-scaled E4M3 (then qkv / o are unused in decode).
  Fp8Matrix qkv_fp8, o_fp8;
};

enum class StreamExperts : int { Bf16 = 0, Nvfp4 = 1, Mxfp4 = 2 };

struct StreamDecodeParams {
  const StreamLayer* layers = nullptr;  // device array [n_layers]
  int n_layers = 0;
  const __nv_bfloat16* embed = nullptr;  // [vocab, hidden]
  const float* final_norm = nullptr;
  int hidden = 0;        // multiple of 8; padding columns are zero
  int intermediate = 0;  // dense layers' MLP width (multiple of 8; 0 if none)
  int moe_width = 0;     // routed layers' expert width (multiple of 8; 0 if none)
  int experts = 0, top_k = 0;
  bool renormalize = true;  // top-k weights / their sum (norm_topk_prob)
  // FP4 experts: hidden and moe_width multiples of 64 (the tiles), and every block owns whole 16-row strips of the
  // residual (the down tiles' rows).
  StreamExperts expert_format = StreamExperts::Bf16;
  // The attention projections from StreamLayer::qkv_fp8 / o_fp8 (`--fp8 attention`; hidden and q width multiples of
  // 16, the codes' 16-byte loads).
  bool fp8_attention = false;
  int heads = 0, kv_heads = 0;
  int head_dim = 0;  // as stored: 64 or 128
  float hidden_norm_eps = 0, head_norm_eps = 0;
  float attention_scale = 0;
  const float* rope_inv_freq = nullptr;  // [rotary_dim / 2]
  int rotary_dim = 0;
  float rope_attention_factor = 1.0f;
  bool rope_interleaved = false;
  const int* block_table = nullptr;  // the sequence's page ids
  int page_size = 0;
  // The step's inputs (device, written by earlier kernels): token id, its position, the KV length including it.
  const int* token = nullptr;
  const int* position = nullptr;
  const int* seq_len = nullptr;
  int max_splits = 0;  // key splits per KV head the workspace holds (persistent_stream_max_splits)
  void* workspace = nullptr;
  float* normed_out = nullptr;            // [hidden]: the final norm of the last layer's residual
  unsigned long long* barrier = nullptr;  // one zero-initialized word, owned by one stream's launches
  // Optional (null: off): every block's work per phase summed over the layers ([grid][kStreamPhases] ns, from its
  // release of the previous barrier to its arrival), then block 0's wait per phase ([kStreamPhases]), then block 0's
  // start-to-end time ([1]), then block 0's attention-unit stamps ([kStreamUnitStamps], sums over the layers of the
  // time from P2's release), for `tachyon bench`.
  unsigned long long* trace = nullptr;
};

constexpr int kStreamPhases = 6;
constexpr const char* kStreamPhaseNames[kStreamPhases] = {"qkv", "attention", "o_proj", "router", "gate_up", "down"};
// Block 0's attention unit, from P2's release: q ready, keys staged, first piece's items done, unit done.
constexpr int kStreamUnitStamps = 4;
constexpr int persistent_stream_trace_size(int grid) {
  return kStreamPhases * grid + kStreamPhases + 1 + kStreamUnitStamps;
}

// Why the kernel cannot run these shapes ("" when it can).
std::string persistent_stream_unsupported(const StreamDecodeParams& params);
size_t persistent_stream_shared_bytes(const StreamDecodeParams& params, int grid);
int persistent_stream_max_splits(const StreamDecodeParams& params, int grid, int64_t max_keys);
size_t persistent_stream_workspace_bytes(const StreamDecodeParams& params, int max_splits);
// The grid the launch uses: one block per SM, or 0 when a block does not fit on an SM.
int persistent_stream_grid(const StreamDecodeParams& params);
// Enqueues the step (programmatic dependent launch: the first weights' loads overlap the previous kernel).
void persistent_stream_decode(const StreamDecodeParams& params, cudaStream_t stream);

}  // namespace tachyon::kernels
