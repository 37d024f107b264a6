// The GPU KV cache layout and the kernels that write it.
//
// Layout: PAGED. Each layer owns two bf16 arrays of fixed-size pages,
//   k_pages [n_pages, page_size, n_kv_heads, head_dim], v_pages [n_pages, page_size, n_kv_heads, head_dim],
// and every sequence has a row of a block table, block_table[seq * max_pages_per_seq + i] = page holding its
// positions [i * page_size, (i + 1) * page_size). The block table is shared by all layers (a page id names the
// same slot in every layer's arrays).
// Why paged rather than one contiguous slot of max_len positions per sequence:
// - a batch of sequences of very different lengths uses memory in proportion to their lengths, and pages can
//   be shared between sequences with a common prefix (refcounts in the host-side block manager);
// - contiguous slots remain a special case (page_size = max_len, or block_table[s][i] = s * pages + i), so
//   nothing is lost: a page of 64 positions is 64 * n_kv_heads * head_dim * 2 bytes (64 KB for Qwen3's 4 x 128),
//   large enough that attention reads it as long contiguous runs, and the one block-table load per key is
//   noise next to the key itself.
// - within a page, [position][kv_head][dim] makes appending a token's K/V one contiguous write that
//   mirrors the projection output row; attention reads head_dim * 2 = 128..256 contiguous bytes per key.
// Length lives in AttentionBatch::seq_lens (device) and the host block manager: truncating a sequence to any
// length (speculative-decoding rollback) is O(1): lower the length; pages past it are reused later.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "rope/rope.h"

namespace tachyon::kernels {

struct PagedKvCache {  // one layer
  __nv_bfloat16* k_pages = nullptr;
  __nv_bfloat16* v_pages = nullptr;
  const int* block_table = nullptr;  // device [n_sequences, max_pages_per_seq]
  int max_pages_per_seq = 0;
  int page_size = 0;  // positions per page, >= 1
  int n_kv_heads = 0;
  int head_dim = 0;   // of keys and values
};

// The rows (query tokens) of one pass over a batch of sequences; all pointers are device int32 arrays.
// Sequence s owns rows [query_start[s], query_start[s + 1]) at positions seq_lens[s] - n_s .. seq_lens[s] - 1
// (its KV length INCLUDING this pass's tokens).
struct AttentionBatch {
  int n_sequences = 0;
  int n_tokens = 0;                    // rows in total
  const int* query_start = nullptr;    // [n_sequences + 1]
  const int* seq_lens = nullptr;       // [n_sequences]
  const int* positions = nullptr;      // [n_tokens]
  const int* token_sequence = nullptr; // [n_tokens]: sequence of each row
  int max_seq_len = 0;                 // host bound on seq_lens: sizes the split-KV grid
  int max_query_tokens = 0;            // host bound on rows per sequence (1..16)
};

// Copies this pass's keys and values (float32 rows, any stride) into their pages as bf16:
// row t's key heads k[t * k_stride + h * head_dim + d] go to position positions[t] of sequence
// token_sequence[t]. v likewise.
void kv_cache_append(const PagedKvCache& cache, const AttentionBatch& batch, const float* k, int k_stride,
                     const float* v, int v_stride, cudaStream_t stream);

// Everything between the QKV projection and attention, in one launch: for each token row,
//   q heads: optional per-head RMSNorm (q_norm_weight), RoPE -> written back in place (float32);
//   k heads: optional per-head RMSNorm (k_norm_weight), RoPE -> bf16 into the cache;
//   v heads: -> bf16 into the cache.
// q, k, v may be slices of one fused projection output (strides in floats). rope.inv_freq == nullptr skips RoPE.
struct AttentionPrologue {
  float* q = nullptr;
  int q_stride = 0;
  int n_heads = 0;
  const float* k = nullptr;
  int k_stride = 0;
  const float* v = nullptr;
  int v_stride = 0;
  const float* q_norm_weight = nullptr;  // [head_dim] or nullptr
  const float* k_norm_weight = nullptr;  // [head_dim] or nullptr
  float norm_eps = 1e-6f;
  RopeTable rope;
};
void qk_norm_rope_kv_append(const AttentionPrologue& prologue, const PagedKvCache& cache,
                            const AttentionBatch& batch, cudaStream_t stream);

}  // namespace tachyon::kernels
