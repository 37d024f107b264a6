// kv_cache_append / qk_norm_rope_kv_append: write this pass's keys and values into the paged bf16 cache
// (layout and reasons in kv_cache.h), the latter fusing Qwen3's per-head q/k RMSNorm and RoPE on the way.
// One warp per (token, head slot) over q heads, then k heads, then v heads; the head is staged in shared
// memory (head_dim <= 256) so RoPE's pairing is a plain index. Memory-trivial at decode sizes (16 tokens x
// 40 heads x 128 floats = 330 KB): one launch instead of four is the point, and that launch is programmatic
// (common/launch.cuh: the kernel waits for the previous one first thing).
// Error bound vs CPU (rms_norm, Rope::apply, float_to_bf16): q 2e-6 relative; cached K/V = the bf16 rounding of
// the CPU values (exact match except where the tiny q/k difference crosses a rounding boundary: 1 bf16 ulp).
#include "attention/kv_cache.h"

#include <cstdint>

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"
#include "rope/rope_device.cuh"

namespace tachyon::kernels {

namespace {

constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ __nv_bfloat16* cache_row(__nv_bfloat16* pages, const PagedKvCache& cache, int sequence,
                                                    int position, int kv_head) {
  const int page = cache.block_table[static_cast<int64_t>(sequence) * cache.max_pages_per_seq + position / cache.page_size];
  const int64_t slot = static_cast<int64_t>(page) * cache.page_size + position % cache.page_size;
  return pages + (slot * cache.n_kv_heads + kv_head) * cache.head_dim;
}

// The warp's chain of dependent memory round trips is what a decode step waits for (16 tokens x 40 heads is
// memory-trivial): the norm weights and RoPE frequencies (constant) are read before the wait for the previous kernel,
// and the head, its position and its sequence are read together, the cache page lookup right behind them so that it
// overlaps the norm and RoPE arithmetic. (The first version read them one after another: ~5 round trips.)
__global__ void qk_norm_rope_kv_append_kernel(AttentionPrologue pro, PagedKvCache cache, AttentionBatch batch) {
  __shared__ float heads[kWarpsPerBlock][256];
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int slots = pro.n_heads + 2 * cache.n_kv_heads;
  const int job = blockIdx.x * kWarpsPerBlock + warp;
  const bool has_job = job < batch.n_tokens * slots;
  const int token = job / slots, slot = job % slots, head_dim = cache.head_dim;
  enum { kQuery, kKey, kValue } kind;
  const float* src;
  int head;
  if (slot < pro.n_heads) {
    kind = kQuery, head = slot, src = pro.q + static_cast<int64_t>(token) * pro.q_stride + head * head_dim;
  } else if (slot < pro.n_heads + cache.n_kv_heads) {
    kind = kKey, head = slot - pro.n_heads, src = pro.k + static_cast<int64_t>(token) * pro.k_stride + head * head_dim;
  } else {
    kind = kValue, head = slot - pro.n_heads - cache.n_kv_heads;
    src = pro.v + static_cast<int64_t>(token) * pro.v_stride + head * head_dim;
  }
  const float* norm_weight = kind == kQuery ? pro.q_norm_weight : (kind == kKey ? pro.k_norm_weight : nullptr);
  const bool rotate = kind != kValue && pro.rope.inv_freq;
  float weight[8], freq[4];  // head_dim <= 256
#pragma unroll
  for (int r = 0; r < 8; ++r)
    weight[r] = has_job && norm_weight && lane + 32 * r < head_dim ? norm_weight[lane + 32 * r] : 0.f;
  if (rotate && has_job) load_rope_frequencies(pro.rope.inv_freq, pro.rope.rotary_dim, lane, freq);

  wait_for_previous_kernel();  // launched programmatically: q/k/v, positions and the block table come from earlier work
  allow_next_kernel_to_start();
  if (!has_job) return;
  float* buffer = heads[warp];
  for (int i = lane; i < head_dim; i += 32) buffer[i] = src[i];
  const int position = batch.positions[token];
  __nv_bfloat16* row = nullptr;
  if (kind != kQuery)
    row = cache_row(kind == kKey ? cache.k_pages : cache.v_pages, cache, batch.token_sequence[token], position, head);
  __syncwarp();

  if (norm_weight) {
    float sum = 0;
    for (int i = lane; i < head_dim; i += 32) sum += buffer[i] * buffer[i];
    sum = warp_sum(sum);
    const float inv = 1.0f / sqrtf(sum / static_cast<float>(head_dim) + pro.norm_eps);
#pragma unroll
    for (int r = 0; r < 8; ++r)
      if (lane + 32 * r < head_dim) buffer[lane + 32 * r] = weight[r] * (buffer[lane + 32 * r] * inv);
    __syncwarp();
  }
  if (rotate) {
    rotate_head_in_shared(buffer, pro.rope.rotary_dim, position, freq, pro.rope.attention_factor, pro.rope.interleaved,
                          lane);
    __syncwarp();
  }
  if (kind == kQuery) {
    float* dst = pro.q + static_cast<int64_t>(token) * pro.q_stride + head * head_dim;
    for (int i = lane; i < head_dim; i += 32) dst[i] = buffer[i];
  } else {
    for (int i = lane; i < head_dim; i += 32) row[i] = __float2bfloat16_rn(buffer[i]);
  }
}

void check_prologue(const char* name, const PagedKvCache& cache, const AttentionBatch& batch) {
  TACHYON_REQUIRE(cache.head_dim > 0 && cache.head_dim <= 256, name, "head_dim must be in 1..256");
  TACHYON_REQUIRE(cache.page_size > 0 && cache.n_kv_heads > 0, name, "page_size and n_kv_heads must be positive");
  TACHYON_REQUIRE(cache.k_pages && cache.v_pages && cache.block_table, name, "cache arrays must be set");
  TACHYON_REQUIRE(batch.positions && batch.token_sequence, name, "batch.positions and batch.token_sequence must be set");
}

}  // namespace

void qk_norm_rope_kv_append(const AttentionPrologue& prologue, const PagedKvCache& cache,
                            const AttentionBatch& batch, cudaStream_t stream) {
  check_prologue("qk_norm_rope_kv_append", cache, batch);
  if (prologue.rope.inv_freq)
    TACHYON_REQUIRE(prologue.rope.rotary_dim > 0 && prologue.rope.rotary_dim % 2 == 0 &&
                        prologue.rope.rotary_dim <= cache.head_dim,
                    "qk_norm_rope_kv_append", "rotary_dim must be even and in 2..head_dim");
  const int jobs = batch.n_tokens * (prologue.n_heads + 2 * cache.n_kv_heads);
  if (jobs <= 0) return;
  launch_programmatic("qk_norm_rope_kv_append_kernel", qk_norm_rope_kv_append_kernel,
                      dim3((jobs + kWarpsPerBlock - 1) / kWarpsPerBlock), dim3(32 * kWarpsPerBlock), 0, stream,
                      prologue, cache, batch);
}

void kv_cache_append(const PagedKvCache& cache, const AttentionBatch& batch, const float* k, int k_stride,
                     const float* v, int v_stride, cudaStream_t stream) {
  AttentionPrologue plain;  // no q heads, no norm, no RoPE: a plain copy with bf16 rounding
  plain.k = k;
  plain.k_stride = k_stride;
  plain.v = v;
  plain.v_stride = v_stride;
  qk_norm_rope_kv_append(plain, cache, batch, stream);
}

}  // namespace tachyon::kernels
