// The DFlash drafter on the GPU: the math of the CPU DFlashDrafter (src/models/dflash_drafter.h, where the
// algorithm is written out) on the decode kernels of kernels/, with its own paged bf16 KV cache of ONE sequence
// and the target GpuModel's embedding and lm_head (read in place, never copied).
//
//   enqueue_context: ctx = hidden_norm(fc(features)); per layer K = rope(k_norm(W_k ctx + b_k)), V = W_v ctx + b_v
//                    -> the cache at the rows' positions (gemv, rms_norm, qk_norm_rope_kv_append with no q heads)
//   enqueue_draft:   x = embed(block) * input_embedding_scale; per layer the GpuModel layer loop (add_rms_norm,
//                    fused qkv gemv, prologue -> the block's K/V at [s, s + n), decode_attention with the layer's
//                    causal flag (bidirectional by default) and window, o gemv, gated gemv + down); then the final
//                    norm and the target's lm_head on slots 1..n-1 (softcap, when set, by a small kernel).
// Both take device inputs only and allocate nothing: capturable in a CUDA graph.
//
// Sizes as stored: hidden (== the target's) padded to the target's hidden_padded, head_dim to 64/128, the MLP
// width to a multiple of 32, all with zero rows/columns and norm weights scaled as in gpu_weights (padding notes in
// gpu_config.h), so the padded activations stay exactly zero. fc's columns of each feature block's padding are
// zero: whatever the caller leaves in the padded feature columns never matters.
//
// The cache holds every page from the start under a fixed identity block table: the caller may write context rows
// at any positions < capacity() in any order (rows past the valid length are simply overwritten later; seq_lens
// hides them meanwhile). Nothing here checks device-side positions: they must lie in [0, capacity()).
#pragma once
#ifdef TACHYON_HAS_CUDA
#include <cstdint>
#include <vector>

#include "cuda/device_buffer.h"
#include "gpu/gpu_model.h"
#include "loader/checkpoint.h"
#include "models/dflash_drafter.h"

namespace tachyon::gpu {

class GpuDrafter {
 public:
  // drafter: a DFlash checkpoint (z-lab layout; the CPU drafter's config checks and messages,
  // read_dflash_drafter_config). target: the GpuModel it drafts for, which must outlive this object (its embedding
  // and lm_head are read in place). max_positions: context capacity in positions (rounded up to whole pages).
  GpuDrafter(const Checkpoint& drafter, const GpuModel& target, int64_t max_positions);
  ~GpuDrafter();
  GpuDrafter(const GpuDrafter&) = delete;
  GpuDrafter& operator=(const GpuDrafter&) = delete;

  int block_size() const { return config_.block_size; }  // the checkpoint's
  int32_t mask_token_id() const { return config_.mask_token_id; }
  const std::vector<int>& target_layer_ids() const { return config_.target_layer_ids; }
  // target_layer_ids().size() * the target's hidden width AS STORED ON THE GPU (hidden_padded).
  int feature_width() const { return static_cast<int>(config_.target_layer_ids.size()) * hidden_padded_; }
  int64_t capacity() const { return capacity_; }
  int vocab_size() const { return vocab_; }
  const DFlashDrafterConfig& config() const { return config_; }

  // Graph-capturable: the context rows' K/V of every drafter layer for n (1..16) rows at rows.positions, from the
  // target features [n, feature_width()] float32 on the device. rows: PassInputs (gpu_model.h) with positions,
  // seq_lens (1 entry), query_start {0, n}, token_sequence zeros, n_sequences 1, block_table nullptr = the
  // drafter's own; tokens unused. max_seq_len bounds seq_lens (unused by this pass: no attention; any bound >= n
  // is accepted, and in both passes a bound past capacity() counts as capacity()).
  void enqueue_context(const float* features, const PassInputs& rows, int n, int max_seq_len, cudaStream_t stream);
  // Host convenience for any n (the prompt's rows): device features [n, feature_width()] at positions
  // [start, start + n), in chunks of 16 (positions uploaded by the host; the stream is not synchronized).
  void add_context(const float* features, int64_t n, int64_t start, cudaStream_t stream);
  // Graph-capturable: one drafting pass over block.tokens [n] (2..16; the bonus then mask tokens) at
  // block.positions [s, s + n), seq_lens {s + n}: every query attends to the keys < s + n (the context rows and
  // the block's own rows, which this pass writes transiently at [s, s + n)), bidirectionally except in layers the
  // checkpoint makes causal / sliding. Writes the logits of slots 1..n-1 to logits [n - 1, vocab] float32 on the
  // device (output_multiplier and softcap applied).
  void enqueue_draft(const PassInputs& block, int n, int max_seq_len, float* logits, cudaStream_t stream);

 private:
  struct Layer {
    const bf16* qkv = nullptr;         // [q_width + 2 kv_width, hidden_padded]: q rows, k rows, v rows
    const float* qkv_bias = nullptr;   // [q_width + 2 kv_width] or null
    const bf16* o = nullptr;           // [hidden_padded, q_width]
    const float* o_bias = nullptr;     // [hidden_padded] or null
    const float* q_norm = nullptr;     // [head_dim_padded], pre-scaled for the padded head
    const float* k_norm = nullptr;
    const float* input_norm = nullptr;           // [hidden_padded], pre-scaled for the padded width
    const float* post_attention_norm = nullptr;
    const bf16* gate_up = nullptr;     // [2 intermediate_padded, hidden_padded]: gate rows then up rows
    const bf16* down = nullptr;        // [hidden_padded, intermediate_padded]
  };

  int q_width() const { return config_.num_heads * head_dim_padded_; }
  int kv_width() const { return config_.num_kv_heads * head_dim_padded_; }
  int qkv_width() const { return q_width() + 2 * kv_width(); }
  kernels::PagedKvCache layer_cache(int layer, const PassInputs& in) const;
  kernels::AttentionPrologue prologue(int layer, float* q, const float* k, const float* v, int stride) const;

  DFlashDrafterConfig config_;
  int hidden_padded_ = 0, head_dim_padded_ = 0, intermediate_padded_ = 0, vocab_ = 0;
  float hidden_eps_ = 0, head_eps_ = 0;  // eps for the padded widths (gpu_config.h)
  int64_t capacity_ = 0;
  int page_size_ = 64;
  const bf16* embed_ = nullptr;    // the target's [vocab, hidden_padded]
  const bf16* lm_head_ = nullptr;  // the target's [vocab, hidden_padded]
  kernels::Fp8Matrix lm_head_fp8_;  // the target's FP8 copy (--fp8 lm_head), else empty

  std::vector<cuda::DeviceBuffer<uint8_t>> storage_;  // every weight allocation
  const bf16* fc_ = nullptr;              // [hidden_padded, K * hidden_padded]
  const float* hidden_norm_ = nullptr;    // [hidden_padded]
  const float* final_norm_ = nullptr;     // [hidden_padded], times output_multiplier (folded: one kernel fewer)
  std::vector<Layer> layers_;
  cuda::DeviceBuffer<float> rope_inv_freq_;
  float rope_attention_factor_ = 1.0f;

  // KV cache: [layer][k, v][page][page_size][kv_heads][head_dim_padded] bf16, all pages, identity block table.
  cuda::DeviceBuffer<bf16> kv_storage_;
  cuda::DeviceBuffer<int> block_table_;
  cuda::DeviceBuffer<uint8_t> attention_workspace_;

  // Pass activations (16 rows), float32 row-major.
  cuda::DeviceBuffer<float> x_, normed_, delta_, qkv_, attn_, mlp_h_;
  SingleSequencePassInputs context_inputs_;  // add_context's
};

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
