// decode_attention: softmax(q k^T * scale) v for 1..16 query tokens per sequence over the paged bf16 KV cache,
// GQA, causal inside the query block (or bidirectional: the DFlash drafter), optional sliding window and sinks,
// a batch of sequences of different lengths. Flash-decoding: blocks = (KV split, KV head [x row block],
// sequence); each block streams its range of keys through shared memory in tiles of 64 (cp.async,
// double-buffered) and keeps an online softmax; when the keys are split over several blocks, a combine kernel
// merges the partial (max, sum, output) triples. Both kernels are launched programmatically (common/launch.cuh)
// and wait for the previous kernel first thing; over a settled cache (AttentionParams::cache_settled, 1..4 query
// tokens) the first tile of cached keys is issued before that wait (docs/gpu-kernels.md "Session 9").
//
// The rows of a block are (query token, query head of the KV group): up to 16 tokens x 8 heads = 128 rows,
// one warp per 16 rows. Both products run on tensor cores (mma m16n8k16): S = Q K^T with Q split into bf16
// hi + lo (keys are bf16 already, so scores are float32-accurate), O += P V with P rounded to bf16 (the sum
// of P stays float32). At 16 tokens x 8 heads the arithmetic is ~64 multiply-adds per KV byte, beyond what
// float32 FMAs can sustain at HBM speed; at 1 token it is bandwidth-bound.
//
// Error bound vs models/layers.cpp cached_attention on the same bf16-rounded K/V:
//   |out - ref| <= 2^-8 * max|v| + 1e-4 (bf16 rounding of P only).
// Measured, H100 80GB HBM3 (stream read 3114 GB/s), 2026-11-26, 32 query / 4 KV heads of 128, pages of 64:
//   1 token: 1024 keys 10.1 us, 4096 keys 16.9 us, 32768 keys 41.6 us (52% of read); 16 tokens: 13.6, 32.2, 85.1 us.
//   Before (run 1): lookups serialized behind a "memory" clobber on cp.async and a one-lane-per-row combine
//   loop: 4096 keys 37 us, 32768 keys 125 us. History and open issues: docs/gpu-kernels.md.
#include "attention/decode_attention.h"

#include <algorithm>
#include <cstdint>

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"
#include "cuda/stream.h"

namespace tachyon::kernels {

namespace {

constexpr int kKeyTile = 64;
constexpr int kMaxWarps = 8;           // rows per block: 128
constexpr int kRowsPerBlock = 16 * kMaxWarps;
constexpr int kMaxSplits = 256;        // bounds the combine kernel's shared weights
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kMaxEarlyTileQueryTokens = 4;  // AttentionParams::cache_settled is used up to this many rows per sequence

struct AttentionKernelArgs {
  AttentionParams params;
  PagedKvCache cache;
  AttentionBatch batch;
  int group;        // query heads per KV head
  int split_size;   // keys per split (multiple of kKeyTile)
  int n_splits;
  int row_blocks;   // blocks along the rows of one (sequence, KV head)
  float* partial_out;  // [n_splits, n_tokens, n_heads, head_dim]
  float* partial_max;  // [n_splits, n_tokens, n_heads] (log2 units)
  float* partial_sum;
};

struct SplitPlan {
  int split_size = 0, n_splits = 1, row_blocks = 1;
};

SplitPlan plan_splits(const AttentionParams& params, const PagedKvCache& cache, const AttentionBatch& batch) {
  SplitPlan plan;
  const int group = params.n_heads / cache.n_kv_heads;
  plan.row_blocks = (std::max(batch.max_query_tokens, 1) * group + kRowsPerBlock - 1) / kRowsPerBlock;
  const int tiles = std::max(1, (batch.max_seq_len + kKeyTile - 1) / kKeyTile);
  const int base_blocks = std::max(1, batch.n_sequences * cache.n_kv_heads * plan.row_blocks);
  const int target_blocks = 2 * cuda::current_device_info().multiprocessors;
  // Down to one tile per split: short contexts need the parallelism more than the pipeline overlap.
  int splits = std::clamp((target_blocks + base_blocks - 1) / base_blocks, 1, std::min(tiles, kMaxSplits));
  const int tiles_per_split = (tiles + splits - 1) / splits;
  plan.split_size = tiles_per_split * kKeyTile;
  plan.n_splits = (tiles + tiles_per_split - 1) / tiles_per_split;
  return plan;
}

template <int D>
__global__ void __launch_bounds__(32 * kMaxWarps) decode_attention_kernel(AttentionKernelArgs args) {
  constexpr int kRowPad = D + 8;  // +16 bytes per shared row: conflict-free ldmatrix
  constexpr int kTileElems = kKeyTile * kRowPad;
  constexpr int kChunksPerRow = D / 8;  // 16-byte pieces per key row
  extern __shared__ __align__(16) __nv_bfloat16 tiles[];  // [stage][K, V][kKeyTile][kRowPad]
  const AttentionParams& prm = args.params;
  const AttentionBatch& batch = args.batch;
  const int split = blockIdx.x / args.row_blocks, row_block = blockIdx.x % args.row_blocks;
  const int kv_head = blockIdx.y, sequence = blockIdx.z;
  const PagedKvCache& cache = args.cache;

  // Each thread copies a fixed 16-byte column (chunk) of every key row it visits, K and V together.
  auto copy_key_row = [&](int key, __nv_bfloat16* k_dst, __nv_bfloat16* v_dst, int page, int chunk) {
    const int64_t element =
        ((static_cast<int64_t>(page) * cache.page_size + key % cache.page_size) * cache.n_kv_heads + kv_head) * D +
        chunk * 8;
    cp_async_16B(k_dst, cache.k_pages + element);
    cp_async_16B(v_dst, cache.v_pages + element);
  };
  auto zero_key_row = [](__nv_bfloat16* k_dst, __nv_bfloat16* v_dst) {
    // Zeros, not stale data: P = 0 times a NaN left in shared memory would still be NaN.
    *reinterpret_cast<uint4*>(k_dst) = make_uint4(0, 0, 0, 0);
    *reinterpret_cast<uint4*>(v_dst) = make_uint4(0, 0, 0, 0);
  };
  const int chunk = threadIdx.x % kChunksPerRow, rows_per_pass = blockDim.x / kChunksPerRow;

  // A settled cache (AttentionParams::cache_settled): the first tile of this split streams in while the previous
  // kernel still runs. It does not know seq_len yet, so it reads every allocated row of the tile; after the wait the
  // rows past the sequence are zeroed and the pass's own rows (written by the previous kernel) are read again.
  const bool early_tile = prm.cache_settled && prm.sliding_window <= 0;
  constexpr int kMaxRowsPerThread = kKeyTile * kChunksPerRow / 128;  // blocks have >= 4 warps
  int early_page[kMaxRowsPerThread];  // kept for the pass's own rows after the wait
  if (early_tile) {
    const int tile_start = split * args.split_size;
#pragma unroll
    for (int i = 0; i < kMaxRowsPerThread; ++i) {
      const int key_local = threadIdx.x / kChunksPerRow + i * rows_per_pass;
      if (key_local >= kKeyTile) break;
      const int key = tile_start + key_local, offset = key_local * kRowPad + chunk * 8;
      const int page_index = key / cache.page_size;
      early_page[i] = page_index < cache.max_pages_per_seq
                          ? cache.block_table[static_cast<int64_t>(sequence) * cache.max_pages_per_seq + page_index]
                          : -1;
      if (early_page[i] >= 0) copy_key_row(key, tiles + offset, tiles + kTileElems + offset, early_page[i], chunk);
      else zero_key_row(tiles + offset, tiles + kTileElems + offset);
    }
    cp_async_commit();
  }

  wait_for_previous_kernel();  // launched programmatically: q, the K/V pages and the batch come from earlier work
  allow_next_kernel_to_start();
  const int q_begin = batch.query_start[sequence];
  const int n_q = batch.query_start[sequence + 1] - q_begin;
  const int seq_len = batch.seq_lens[sequence];
  const int group = args.group, rows = n_q * group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int window = prm.sliding_window;

  int key_begin = split * args.split_size;
  const int key_end = min(seq_len, key_begin + args.split_size);
  if (window > 0 && n_q > 0) key_begin = max(key_begin, batch.positions[q_begin] - window + 1);
  const int n_tiles = key_end > key_begin ? (key_end - key_begin + kKeyTile - 1) / kKeyTile : 0;
  auto page_of = [&](int key) {
    return cache.block_table[static_cast<int64_t>(sequence) * cache.max_pages_per_seq + key / cache.page_size];
  };
  if (early_tile) {  // the rows the early read could not know (key_begin is the early tile's start: no window)
    cp_async_wait<0>();
    const int own_first = seq_len - n_q;
#pragma unroll
    for (int i = 0; i < kMaxRowsPerThread; ++i) {
      const int key_local = threadIdx.x / kChunksPerRow + i * rows_per_pass;
      if (key_local >= kKeyTile) break;
      const int key = key_begin + key_local, offset = key_local * kRowPad + chunk * 8;
      if (key >= key_end) zero_key_row(tiles + offset, tiles + kTileElems + offset);
      else if (key >= own_first) copy_key_row(key, tiles + offset, tiles + kTileElems + offset, early_page[i], chunk);
    }
    cp_async_commit();
  }

  // This lane's two rows (g and g + 8 of the warp's 16).
  // row_last_key: the last key a row may see: its position when causal, else (bidirectional) the window's far
  // end or every key; -1 for a lane without a row.
  int row_token[2], row_head[2], row_position[2], row_last_key[2];
  const float q_scale = prm.scale * kLog2e;  // scores in log2 units: exp2f in the softmax
  uint32_t q_hi[D / 16][4], q_lo[D / 16][4];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = row_block * kRowsPerBlock + warp * 16 + g + 8 * h;
    const bool valid = r < rows;
    row_token[h] = valid ? q_begin + r / group : -1;
    row_head[h] = valid ? kv_head * group + r % group : -1;
    row_position[h] = valid ? batch.positions[row_token[h]] : -1;  // -1: sees no key
    row_last_key[h] = !valid || prm.causal ? row_position[h]
                                           : (window > 0 ? row_position[h] + window - 1 : 0x7fffffff);
    const float* q_row = valid ? prm.q + static_cast<int64_t>(row_token[h]) * prm.q_stride + row_head[h] * D : nullptr;
#pragma unroll
    for (int s = 0; s < D / 16; ++s) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float2 v = make_float2(0.f, 0.f);
        if (q_row) v = *reinterpret_cast<const float2*>(q_row + 16 * s + 2 * t + 8 * half);
        split_bf16x2(v.x * q_scale, v.y * q_scale, q_hi[s][h + 2 * half], q_lo[s][h + 2 * half]);
      }
    }
  }

  const bool warp_has_rows = row_block * kRowsPerBlock + warp * 16 < rows;
  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};

  // One block-table lookup serves K and V; the lookups of a tile are independent loads the compiler can batch.
  auto load_tile = [&](int tile, int stage) {
    const int tile_start = key_begin + tile * kKeyTile;
    __nv_bfloat16* k_dst = tiles + (2 * stage) * kTileElems;
    __nv_bfloat16* v_dst = k_dst + kTileElems;
    for (int key_local = threadIdx.x / kChunksPerRow; key_local < kKeyTile; key_local += rows_per_pass) {
      const int key = tile_start + key_local;
      const int offset = key_local * kRowPad + chunk * 8;
      if (key < key_end) copy_key_row(key, k_dst + offset, v_dst + offset, page_of(key), chunk);
      else zero_key_row(k_dst + offset, v_dst + offset);
    }
    cp_async_commit();
  };

  if (!early_tile && n_tiles > 0) load_tile(0, 0);
  for (int tile = 0; tile < n_tiles; ++tile) {
    if (tile + 1 < n_tiles) {
      load_tile(tile + 1, (tile + 1) & 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (!warp_has_rows) {  // loader-only warp (blocks keep >= 4 warps so that tiles load quickly)
      __syncthreads();
      continue;
    }
    const __nv_bfloat16* k_tile = tiles + (2 * (tile & 1)) * kTileElems;
    const __nv_bfloat16* v_tile = k_tile + kTileElems;
    const int tile_start = key_begin + tile * kKeyTile;

    // S = Q K^T for 64 keys: 8 column tiles of 8 keys.
    float s[kKeyTile / 8][4];
#pragma unroll
    for (int n = 0; n < kKeyTile / 8; ++n) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 32; ++kk) {
        uint32_t b[4];
        ldmatrix_x4(b, k_tile + (n * 8 + (lane & 7)) * kRowPad + 32 * kk + 8 * (lane >> 3));
        mma_bf16_16x8x16(s[n], q_hi[2 * kk], b[0], b[1]);
        mma_bf16_16x8x16(s[n], q_lo[2 * kk], b[0], b[1]);
        mma_bf16_16x8x16(s[n], q_hi[2 * kk + 1], b[2], b[3]);
        mma_bf16_16x8x16(s[n], q_lo[2 * kk + 1], b[2], b[3]);
      }
    }
    // Mask and online softmax. Accumulator c of column tile n: row g + 8 (c >> 1), key n * 8 + 2t + (c & 1).
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < kKeyTile / 8; ++n) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int key = tile_start + n * 8 + 2 * t + (c & 1), position = row_position[c >> 1];
        const bool visible =
            key < key_end && key <= row_last_key[c >> 1] && (window <= 0 || key > position - window);
        s[n][c] = visible ? s[n][c] : -INFINITY;
        tile_max[c >> 1] = fmaxf(tile_max[c >> 1], s[n][c]);
      }
    }
    float alpha[2], base[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 1));
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 2));
      const float new_max = fmaxf(row_max[h], tile_max[h]);
      base[h] = new_max == -INFINITY ? 0.f : new_max;  // a row with no visible key yet: avoid inf - inf
      alpha[h] = exp2f(row_max[h] - base[h]);
      row_max[h] = new_max;
      row_sum[h] *= alpha[h];
    }
#pragma unroll
    for (int n = 0; n < kKeyTile / 8; ++n) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        s[n][c] = exp2f(s[n][c] - base[c >> 1]);
        row_sum[c >> 1] += s[n][c];
      }
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= alpha[0], o[n][1] *= alpha[0];
      o[n][2] *= alpha[1], o[n][3] *= alpha[1];
    }
    // O += P V: P's accumulator layout is already the A-fragment layout of the next product.
#pragma unroll
    for (int ks = 0; ks < kKeyTile / 16; ++ks) {
      const uint32_t a[4] = {pack_bf16x2(s[2 * ks][0], s[2 * ks][1]), pack_bf16x2(s[2 * ks][2], s[2 * ks][3]),
                             pack_bf16x2(s[2 * ks + 1][0], s[2 * ks + 1][1]),
                             pack_bf16x2(s[2 * ks + 1][2], s[2 * ks + 1][3])};
#pragma unroll
      for (int u = 0; u < D / 16; ++u) {
        uint32_t b[4];
        const int matrix = lane >> 3;
        ldmatrix_x4_trans(b, v_tile + (16 * ks + (lane & 7) + 8 * (matrix & 1)) * kRowPad + 16 * u + 8 * (matrix >> 1));
        mma_bf16_16x8x16(o[2 * u], a, b[0], b[1]);
        mma_bf16_16x8x16(o[2 * u + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // this stage is refilled by the next iteration's load
  }

  // Each lane summed only its own columns; the row's 4 lanes hold the parts.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 1);
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 2);
  }
  const int n_tokens = batch.n_tokens, n_heads = prm.n_heads;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (row_token[h] < 0) continue;
    if (args.n_splits == 1) {
      float denominator = row_sum[h];
      if (prm.sinks) {
        const float base_h = row_max[h] == -INFINITY ? 0.f : row_max[h];
        denominator += exp2f(prm.sinks[row_head[h]] * kLog2e - base_h);
      }
      const float inv = denominator > 0.f ? 1.0f / denominator : 0.f;
      float* out = prm.out + static_cast<int64_t>(row_token[h]) * prm.out_stride + row_head[h] * D;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<float2*>(out + n * 8 + 2 * t) = make_float2(o[n][2 * h] * inv, o[n][2 * h + 1] * inv);
    } else {
      const int64_t index = (static_cast<int64_t>(split) * n_tokens + row_token[h]) * n_heads + row_head[h];
      float* out = args.partial_out + index * D;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<float2*>(out + n * 8 + 2 * t) = make_float2(o[n][2 * h], o[n][2 * h + 1]);
      if (t == 0) {
        args.partial_max[index] = row_max[h];
        args.partial_sum[index] = row_sum[h];
      }
    }
  }
}

// Merges the splits of one (token, head) row per warp. Lanes own splits for the max and the denominator, so
// the per-split loads are independent (a loop over splits in one lane would pay one memory latency per split);
// the weighted sum over splits is unrolled so that its loads are in flight together.
template <int D>
__global__ void attention_combine_kernel(AttentionKernelArgs args) {
  __shared__ float split_weight[4][kMaxSplits];
  wait_for_previous_kernel();  // launched programmatically: the partial triples come from the attention kernel
  allow_next_kernel_to_start();
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int row = blockIdx.x * 4 + warp;
  const int n_tokens = args.batch.n_tokens, n_heads = args.params.n_heads, n_splits = args.n_splits;
  if (row >= n_tokens * n_heads) return;
  const int token = row / n_heads, head = row % n_heads;
  const int64_t stride = static_cast<int64_t>(n_tokens) * n_heads;
  const float* part = args.partial_out + static_cast<int64_t>(row) * D + lane;
  // The first splits' partial outputs do not depend on the max: their loads go out together with the max's instead
  // of one round trip later.
  constexpr int kEarly = 8;
  float early[kEarly][D / 32];
#pragma unroll
  for (int sp = 0; sp < kEarly; ++sp)
#pragma unroll
    for (int j = 0; j < D / 32; ++j) early[sp][j] = sp < n_splits ? part[sp * stride * D + 32 * j] : 0.f;
  float global_max = args.params.sinks ? args.params.sinks[head] * kLog2e : -INFINITY;
  for (int sp = lane; sp < n_splits; sp += 32) global_max = fmaxf(global_max, args.partial_max[sp * stride + row]);
  global_max = warp_max(global_max);
  if (global_max == -INFINITY) global_max = 0.f;
  float denominator = 0.f;
  for (int sp = lane; sp < n_splits; sp += 32) {
    const float weight = exp2f(args.partial_max[sp * stride + row] - global_max);
    split_weight[warp][sp] = weight;
    denominator += args.partial_sum[sp * stride + row] * weight;
  }
  denominator = warp_sum(denominator);
  if (args.params.sinks) denominator += exp2f(args.params.sinks[head] * kLog2e - global_max);
  __syncwarp();
  float acc[D / 32];
#pragma unroll
  for (int j = 0; j < D / 32; ++j) acc[j] = 0.f;
#pragma unroll
  for (int sp = 0; sp < kEarly; ++sp) {
    if (sp >= n_splits) break;
    const float weight = split_weight[warp][sp];
#pragma unroll
    for (int j = 0; j < D / 32; ++j) acc[j] += early[sp][j] * weight;
  }
#pragma unroll 8
  for (int sp = kEarly; sp < n_splits; ++sp) {
    const float weight = split_weight[warp][sp];
#pragma unroll
    for (int j = 0; j < D / 32; ++j) acc[j] += part[sp * stride * D + 32 * j] * weight;
  }
  const float inv = denominator > 0.f ? 1.0f / denominator : 0.f;
  float* out = args.params.out + static_cast<int64_t>(token) * args.params.out_stride + head * D;
#pragma unroll
  for (int j = 0; j < D / 32; ++j) out[lane + 32 * j] = acc[j] * inv;
}

template <int D>
void launch_attention(const AttentionKernelArgs& args, cudaStream_t stream) {
  constexpr int kSharedBytes = 2 * 2 * kKeyTile * (D + 8) * 2;
  static const bool configured = [] {
    TACHYON_CUDA_CHECK(cudaFuncSetAttribute(decode_attention_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            kSharedBytes));
    // Keep the L1/shared split fixed at "max shared" for the big-shared-memory kernels (gemv too), so that
    // alternating with them does not reconfigure the SMs between kernels.
    TACHYON_CUDA_CHECK(cudaFuncSetAttribute(decode_attention_kernel<D>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                            cudaSharedmemCarveoutMaxShared));
    return true;
  }();
  (void)configured;
  // At least 4 warps: with one warp (a single decode token, GQA group <= 16) the tile loads issue too slowly.
  const int warps = std::clamp((args.batch.max_query_tokens * args.group + 15) / 16, 4, kMaxWarps);
  const dim3 grid(args.n_splits * args.row_blocks, args.cache.n_kv_heads, args.batch.n_sequences);
  launch_programmatic("decode_attention_kernel", decode_attention_kernel<D>, grid, dim3(32 * warps), kSharedBytes,
                      stream, args);
  if (args.n_splits > 1) {
    const int rows = args.batch.n_tokens * args.params.n_heads;  // 4 warps = 4 rows per block
    launch_programmatic("attention_combine_kernel", attention_combine_kernel<D>, dim3((rows + 3) / 4), dim3(128), 0,
                        stream, args);
  }
}

}  // namespace

size_t decode_attention_workspace_bytes(const AttentionParams& params, const PagedKvCache& cache,
                                        const AttentionBatch& batch) {
  if (cache.n_kv_heads <= 0 || params.n_heads <= 0) return 0;
  const SplitPlan plan = plan_splits(params, cache, batch);
  if (plan.n_splits <= 1) return 0;
  const size_t rows = static_cast<size_t>(plan.n_splits) * batch.n_tokens * params.n_heads;
  return rows * (cache.head_dim + 2) * sizeof(float);
}

void decode_attention(const AttentionParams& params, const PagedKvCache& cache, const AttentionBatch& batch,
                      void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const char* name = "decode_attention";
  TACHYON_REQUIRE(cache.head_dim == 64 || cache.head_dim == 128, name, "head_dim must be 64 or 128");
  TACHYON_REQUIRE(cache.n_kv_heads > 0 && params.n_heads % cache.n_kv_heads == 0, name,
                  "n_heads must be a multiple of n_kv_heads");
  TACHYON_REQUIRE(batch.max_query_tokens >= 1 && batch.max_query_tokens <= 16, name, "1..16 query tokens per sequence");
  TACHYON_REQUIRE(params.q_stride % 2 == 0 && params.out_stride % 2 == 0, name, "q/out strides must be even");
  if (batch.n_sequences <= 0 || batch.n_tokens <= 0) return;
  const SplitPlan plan = plan_splits(params, cache, batch);
  AttentionKernelArgs args{};
  args.params = params;
  // The early tile measured faster at 1..4 query tokens (1 token, 32k keys: 40.1 -> 36.8 us with the prologue launch
  // before it) and slower at 16 (85.3 vs 83.1 us): the pass's 16 own rows are read twice.
  args.params.cache_settled = params.cache_settled && batch.max_query_tokens <= kMaxEarlyTileQueryTokens;
  args.cache = cache;
  args.batch = batch;
  args.group = params.n_heads / cache.n_kv_heads;
  args.split_size = plan.split_size;
  args.n_splits = plan.n_splits;
  args.row_blocks = plan.row_blocks;
  if (plan.n_splits > 1) {
    const size_t needed = decode_attention_workspace_bytes(params, cache, batch);
    TACHYON_REQUIRE(workspace != nullptr && workspace_bytes >= needed, name,
                    "workspace smaller than decode_attention_workspace_bytes()");
    const size_t rows = static_cast<size_t>(plan.n_splits) * batch.n_tokens * params.n_heads;
    args.partial_out = static_cast<float*>(workspace);
    args.partial_max = args.partial_out + rows * cache.head_dim;
    args.partial_sum = args.partial_max + rows;
  }
  if (cache.head_dim == 64) launch_attention<64>(args, stream);
  else launch_attention<128>(args, stream);
}

}  // namespace tachyon::kernels
