// Attention of 1..16 query tokens per sequence over the paged bf16 KV cache (decode and verify passes).
#pragma once
#include <cstddef>

#include <cuda_runtime_api.h>

#include "attention/kv_cache.h"

namespace tachyon::kernels {

struct AttentionParams {
  const float* q = nullptr;  // [n_tokens, q_stride]: head h of row t at q + t * q_stride + h * head_dim (after RoPE)
  int q_stride = 0;
  float* out = nullptr;      // [n_tokens, out_stride]: same head layout
  int out_stride = 0;
  int n_heads = 0;           // query heads; n_heads / cache.n_kv_heads query heads share one KV head (GQA)
  float scale = 0;           // multiplies q . k (1 / sqrt(head_dim) usually)
  int sliding_window = 0;    // 0 = full; else a query at position p sees keys in (p - window, p]
  // false (bidirectional, the DFlash drafter's block): a query row sees every key j < seq_len, not only j <= p;
  // with a sliding window, the keys in (p - window, p + window). The default (causal) path is unchanged.
  bool causal = true;
  const float* sinks = nullptr;  // [n_heads] logits that join the softmax denominator only (gpt-oss), or nullptr
  // true: the block table and every cached key / value below this pass's own positions were written by work that
  // completed before this chain of programmatic launches began (earlier passes), so each block may stream its first
  // tile of cached keys BEFORE waiting for the previous kernel, and re-reads only the pass's own rows after it (used
  // at 1..4 query tokens per sequence and without a sliding window, which moves the first tile). The target model's
  // passes qualify (GpuModel); the DFlash drafter's draft pass does not (its context pass writes the cache just
  // before it).
  bool cache_settled = false;
};

// Scratch for the split-KV partial results, in bytes (0 when one split suffices). Depends only on host-side
// values, so a caller can size it once for the largest batch it will run.
size_t decode_attention_workspace_bytes(const AttentionParams& params, const PagedKvCache& cache,
                                        const AttentionBatch& batch);

// out[t, h] = softmax_j(scale * q[t, h] . k[j]) v[j] over the keys j that row t sees: j < seq_len,
// j <= position(t) (causal, also inside the query block), j > position(t) - window when windowed.
// With causal = false: j < seq_len, and position(t) - window < j < position(t) + window when windowed. A
// windowed pass must list each sequence's rows in ascending position order (the first row bounds the keys read).
// head_dim 64 or 128. The cache must already hold this pass's keys and values.
void decode_attention(const AttentionParams& params, const PagedKvCache& cache, const AttentionBatch& batch,
                      void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace tachyon::kernels
