// persistent_stream (see persistent_stream.h for the design). Numerics: float32 everywhere except the bf16 weights and
// KV cache; products are plain FMAs on the CUDA cores (one token), so the results differ from the kernel-per-op
// path's in rounding only; routing is the per-op kernel's arithmetic (expf softmax over all experts, top-k by
// probability with ties to the lower id, weights renormalized in pick order). The comparison with the per-op path and
// the CPU model lives in tests/gpu/test_persistent_decode.cpp.
#include "persistent/persistent_stream.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"
#include "cuda/stream.h"
#include "fp4_moe/fp4_moe_device.cuh"
#include "persistent/grid_barrier.cuh"
#include "persistent/persistent_attention.cuh"
#include "persistent/persistent_norms.cuh"
#include "persistent/stream_items.cuh"

namespace tachyon::kernels {

namespace {

using namespace stream_items;  // the work items (bf16, kLoads, kWarps, parts_of, ceil_div, ItemWeights, Fp4Run, ...)
constexpr int kBlockThreads = 512;
static_assert(kWarps == kBlockThreads / 32, "stream_items.cuh's warps per block");
constexpr int kKeysPerSplit = 128;  // the key split's target length
constexpr int kStageKeys = 128;     // keys of a unit staged in shared memory at once
constexpr int kUnitRows = 1024;     // a unit's keys whose cache rows are looked up once per step (then per piece)
constexpr int kMaxItems = 64;       // P2's items per piece: group x kStageKeys / 32 (bounds the group at 16)
constexpr int kMaxSplits = 32;      // key splits per KV head at most (P2's merge weighs a head's splits, a lane each)
constexpr int kMaxGrid = 1024;      // blocks whose sums of squares the workspace holds
constexpr int kMaxTopK = 32;

__host__ __device__ constexpr int round4(int n) { return (n + 3) / 4 * 4; }
// The widest MLP activation (h) a layer writes: a dense MLP's, or top_k experts' side by side.
__host__ __device__ inline int h_floats(const StreamDecodeParams& p) {
  return p.intermediate > p.top_k * p.moe_width ? p.intermediate : p.top_k * p.moe_width;
}
__host__ __device__ inline bool fp4_experts(const StreamDecodeParams& p) {
  return p.expert_format != StreamExperts::Bf16;
}
// A block's residual rows come in units of 16 with FP4 experts (P6 multiplies whole 16-row strips of down tiles).
__host__ __device__ inline int own_row_unit(const StreamDecodeParams& p) { return fp4_experts(p) ? 16 : 1; }
__host__ __device__ inline int most_own_rows(const StreamDecodeParams& p, int grid) {
  const int unit = own_row_unit(p);
  return unit * ceil_div(p.hidden / unit, grid);
}

// P5: a block's (slot, 16-row strip) pairs of gate and up strips; P6: its residual strips' down strips of every slot.
struct Fp4Runs {
  int pairs_per_block, strips_per_block;
  Fp4Run gate_up, down;
};
__host__ __device__ inline Fp4Runs fp4_runs_of(const StreamDecodeParams& p, int g) {
  if (!fp4_experts(p)) return Fp4Runs{0, 0, {0, 1, 0}, {0, 1, 0}};
  const int pairs = ceil_div(p.top_k * p.moe_width / 16, g), strips = ceil_div(p.hidden / 16, g);
  return Fp4Runs{pairs, strips, fp4_run(p.hidden, 2 * pairs), fp4_run(p.moe_width, strips * p.top_k)};
}

// The shared-memory carve-up, the same on host and device: floats [vec | own | part sums | scratch 64 | rope table |
// split weights (P2's merge) | router logits], the unit's key rows (int64), the layer table, then (16-byte aligned)
// P2's staged keys and scratch.
struct Layout {
  int vec_floats = 0, own_floats = 0, item_floats = 0, attention_floats = 0;
  size_t attention_offset = 0, shared_bytes = 0;
  __host__ __device__ Layout(const StreamDecodeParams& p, int g) {
    const int q_width = p.heads * p.head_dim, qkv_width = q_width + 2 * p.kv_heads * p.head_dim;
    const int h = h_floats(p);
    vec_floats = round4(max_of(p.hidden, max_of(q_width, h)));
    const int own_rows = most_own_rows(p, g);
    own_floats = round4(own_rows);
    // The most items any phase gives a block.
    int items = ceil_div(qkv_width, g) * parts_of(p.hidden);                          // P1
    items = max_of(items, own_rows * parts_of(q_width));                              // P3
    items = max_of(items, ceil_div(p.experts, g) * parts_of(p.hidden));               // P4
    items = max_of(items, 2 * ceil_div(h, g) * parts_of(p.hidden));                   // P5
    items = max_of(items, own_rows * max_of(parts_of(p.intermediate), p.top_k * parts_of(p.moe_width)));  // P6
    const Fp4Runs fp4 = fp4_runs_of(p, g);  // FP4 items: 16 sums each
    items = max_of(items, 16 * 2 * fp4.pairs_per_block * fp4.gate_up.runs);
    items = max_of(items, 16 * fp4.strips_per_block * p.top_k * fp4.down.runs);
    item_floats = round4(items);
    const int group = p.kv_heads > 0 ? p.heads / p.kv_heads : 1;
    // P2: q heads, new k and v, the items' (output, max, sum), the heads' running merge.
    attention_floats =
        round4(group * p.head_dim + 2 * p.head_dim + kMaxItems * (p.head_dim + 2) + group * (p.head_dim + 4));
    const size_t floats = size_t(vec_floats) + own_floats + item_floats + 64 + p.head_dim +
                          round4(p.heads * kMaxSplits) + round4(p.experts);  // (max_splits may not be set yet)
    attention_offset =
        (sizeof(float) * floats + sizeof(int64_t) * kUnitRows + sizeof(StreamLayer) * size_t(p.n_layers) + 15) / 16 *
        16;
    const size_t attention_bytes = 2 * size_t(kStageKeys) * (p.head_dim + 8) * 2 + sizeof(float) * attention_floats;
    shared_bytes = attention_offset + attention_bytes;
  }
  __host__ __device__ static int max_of(int a, int b) { return a > b ? a : b; }
};

// Global scratch: [qkv | x | logits | h | partial outputs | partial (max, sum) | row squares | attention |
// merge counts].
// row_squares[k][block]: the sum of squares of the residual rows the block owns, published with them at the end of
// P3 (k = 0, read by P4 / P5's norm) and P6 (k = 1, read by the next layer's P1 and the final norm). attention: the
// heads' merged outputs [q_width]; merge_counts[unit group]: the units of a (KV head, head group) done in this P2
// (zero between P2s: the last one resets it; the workspace is zeroed at allocation).
struct Workspace {
  float *qkv, *x, *logits, *h, *partial_out, *partial_ml, *row_squares, *attention;
  unsigned int* merge_counts;
  __host__ __device__ Workspace(const StreamDecodeParams& p, void* base) {
    const int qkv_width = (p.heads + 2 * p.kv_heads) * p.head_dim;
    qkv = static_cast<float*>(base);
    x = qkv + round4(qkv_width);
    logits = x + round4(p.hidden);
    h = logits + round4(p.experts);
    partial_out = h + round4(h_floats(p));
    partial_ml = partial_out + size_t(p.heads) * p.max_splits * p.head_dim;
    row_squares = partial_ml + round4(p.heads * p.max_splits * 2);  // (round4: `attention` takes float4 stores)
    attention = row_squares + 2 * kMaxGrid;
    merge_counts = reinterpret_cast<unsigned int*>(attention + p.heads * p.head_dim);
  }
  static size_t bytes(const StreamDecodeParams& p, int max_splits) {
    const int qkv_width = (p.heads + 2 * p.kv_heads) * p.head_dim;
    return sizeof(float) * (size_t(round4(qkv_width)) + round4(p.hidden) + round4(p.experts) + round4(h_floats(p)) +
                            size_t(p.heads) * max_splits * p.head_dim + round4(p.heads * max_splits * 2) +
                            2 * kMaxGrid + p.heads * p.head_dim + kMaxGrid);
  }
};

__device__ __forceinline__ void block_sync() { __syncthreads(); }

// This block's rows of a matrix of `rows`: [first, end).
struct RowRange {
  int first, end;
  __device__ int count() const { return end - first; }
};
__device__ __forceinline__ RowRange row_range(int rows, int unit = 1) {
  const unsigned units = rows / unit;
  return {unit * static_cast<int>(blockIdx.x * units / gridDim.x),
          unit * static_cast<int>((blockIdx.x + 1) * units / gridDim.x)};
}

// ---- Attention (P2, P3) ---------------------------------------------------------------------------------------------

// One warp's head (HD floats: lane + 32 i in raw[i]) and its norm weights, loaded before the unit's key staging is
// issued (loads queued behind ~64 KB of staging copies arrived ~4 us late).
template <int HD>
struct HeadLoads {
  float raw[HD / 32], norm[HD / 32];
  __device__ void load(const float* src, const float* norm_weight, int lane) {
#pragma unroll
    for (int i = 0; i < HD / 32; ++i) {
      raw[i] = __ldcg(src + lane + 32 * i);
      norm[i] = norm_weight ? __ldg(norm_weight + lane + 32 * i) : 1.0f;
    }
  }
};

// One warp: the loaded head into `dst` with the optional head norm and RoPE from the step's table (rope_table: cos,
// then sin, of the rotary_dim / 2 angles of this position).
template <int HD>
__device__ __forceinline__ void rotate_head(const HeadLoads<HD>& head, bool has_norm, float* dst,
                                            const StreamDecodeParams& p, const float* rope_table, int lane) {
  float inv = 1.0f;
  if (has_norm) {
    float squares = 0.0f;
#pragma unroll
    for (int i = 0; i < HD / 32; ++i) squares = fmaf(head.raw[i], head.raw[i], squares);
    inv = 1.0f / sqrtf(warp_sum(squares) / static_cast<float>(HD) + p.head_norm_eps);
  }
#pragma unroll
  for (int i = 0; i < HD / 32; ++i) dst[lane + 32 * i] = has_norm ? head.norm[i] * (head.raw[i] * inv) : head.raw[i];
  __syncwarp();
  const int half = p.rotary_dim / 2;
#pragma unroll
  for (int i = lane; i < HD / 2; i += 32) {
    if (i >= half) break;
    const float c = rope_table[i], sn = rope_table[half + i];
    const int ia = p.rope_interleaved ? 2 * i : i, ib = p.rope_interleaved ? 2 * i + 1 : i + half;
    const float x = dst[ia], y = dst[ib];
    dst[ia] = x * c - y * sn;
    dst[ib] = y * c + x * sn;
  }
  __syncwarp();
}

// The block's attention unit: (KV head, key split, group of its query heads). The query heads of a KV head are split
// over head_groups blocks where the grid has room (Qwen3-30B-A3B at a 1k context: 4 x 8 units of 8 heads became 128
// units of 2; a unit's items ran ~10 us on 32 SMs while 100 idled); each stages the same keys (from L2 after the
// first). Every unit has keys while splits <= 128 and seq_len > 128 (splits - 1) (persistent_decode.cu's UnitKeys).
struct Unit {
  int splits, kv_head, split, key_begin, key_end, heads, head_first, head_groups, head_group;
  bool has_unit, writes_cache;  // writes_cache: the unit that appends the new k, v (head group 0 of the last split)
  __device__ Unit(const StreamDecodeParams& p, int seq_len) {
    splits = min(p.max_splits, (seq_len + kKeysPerSplit - 1) / kKeysPerSplit);
    const int keys_per_split = (seq_len + splits - 1) / splits, units = p.kv_heads * splits;
    const int group = p.heads / p.kv_heads;
    head_groups = group;
    while (head_groups > 1 && (group % head_groups != 0 || units * head_groups > int(gridDim.x))) --head_groups;
    has_unit = blockIdx.x < units * head_groups;
    const int unit = blockIdx.x / head_groups;
    head_group = blockIdx.x % head_groups;
    kv_head = unit / splits, split = unit % splits;
    heads = group / head_groups, head_first = head_group * heads;
    key_begin = split * keys_per_split, key_end = min(seq_len, key_begin + keys_per_split);
    writes_cache = head_group == 0;
  }
};

// All threads: cp.async copies of keys [first, first + n) of the KV head into the staging rows, except `skip` (the
// new position, written by this block in this phase: put into its staging row from registers instead).
// `rows`: the keys' cache rows, looked up once per step for the unit's first kUnitRows keys (null: look them up here,
// for keys past those; each lookup is a dependent round trip).
__device__ __forceinline__ int64_t cache_row(const StreamDecodeParams& p, int key, int kv_head) {
  return (int64_t(__ldg(p.block_table + key / p.page_size)) * p.page_size + key % p.page_size) * p.kv_heads + kv_head;
}
template <int HD>
__device__ __forceinline__ void stage_keys(const StreamDecodeParams& p, const StreamLayer& w, int kv_head, int first,
                                           int n, int skip, const int64_t* rows, bf16* stage_k, bf16* stage_v) {
  constexpr int kChunks = HD / 8;
#pragma unroll 1
  for (int c = threadIdx.x; c < n * kChunks; c += kBlockThreads) {
    const int r = c / kChunks, part = c - r * kChunks, key = first + r;
    if (key == skip) continue;
    const int64_t row = (rows ? rows[r] : cache_row(p, key, kv_head)) * HD + 8 * part;
    cp_async_16B(stage_k + r * stage_stride<HD>() + 8 * part, w.k_pages + row);
    cp_async_16B(stage_v + r * stage_stride<HD>() + 8 * part, w.v_pages + row);
  }
  cp_async_commit();
}

// P2 for the block's unit: softmax partials of the unit's keys for the group's query heads, in base 2 (q is
// pre-scaled by log2(e); the merge uses exp2 too), into the workspace's partials. Items are 32 staged keys for all the
// group's heads, a warp's m16n8k16 products (attention_chunk_mma), and the items' partials meet in shared memory in a
// fixed order. (persistent_decode.cu's attention_unit, without its producer warp: the keys are staged here, at the
// phase's start.)
template <int HD>
__device__ __forceinline__ void attention_unit(const StreamDecodeParams& p, const StreamLayer& w, const Workspace& ws,
                                               float* attention_shared, bf16* stage_k, bf16* stage_v,
                                               const int64_t* stage_rows, const float* rope_table, const Unit& u,
                                               int position, unsigned long long* stamps) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int group = u.heads, head_base = u.kv_head * (p.heads / p.kv_heads) + u.head_first;
  const int q_width = p.heads * HD, kv_width = p.kv_heads * HD;
  float* q_s = attention_shared;               // [group][HD], rotated and scaled (group: the unit's query heads)
  float* k_new = q_s + group * HD;             // [HD] the new key / value, rounded to bf16 as the cache holds them
  float* v_new = k_new + HD;
  float* item_out = v_new + HD;                // [item][HD]: sum of p v over the item's keys
  float* item_ml = item_out + kMaxItems * HD;  // [item][2]: max and sum of the item's scores
  float* head_out = item_ml + 2 * kMaxItems;   // [group][HD]: running merge over pieces (long contexts)
  float* head_ml = head_out + group * HD;      // [group][2]
  float* next_ml = head_ml + 2 * group;        // [group][2]
  const bool has_new = position >= u.key_begin && position < u.key_end;
  const bool q_warp = warp < group, new_key_warp = warp == kWarps - 1 && has_new;
  HeadLoads<HD> q_loads, k_loads;
  float v[HD / 32];
  int page = 0;
  if (q_warp) q_loads.load(ws.qkv + (head_base + warp) * HD, w.q_norm, lane);
  if (new_key_warp) {
    page = __ldg(p.block_table + position / p.page_size);
    k_loads.load(ws.qkv + q_width + u.kv_head * HD, w.k_norm, lane);
#pragma unroll
    for (int i = 0; i < HD / 32; ++i) v[i] = __ldcg(ws.qkv + q_width + kv_width + u.kv_head * HD + lane + 32 * i);
  }
  stage_keys<HD>(p, w, u.kv_head, u.key_begin, min(kStageKeys, u.key_end - u.key_begin), position, stage_rows, stage_k,
                 stage_v);
  auto put_new_key = [&](int piece, int n) {  // the new key's staging row, from k_new / v_new (same lanes wrote them)
    if (position < piece || position >= piece + n) return;
    for (int d = lane; d < HD; d += 32) {
      stage_k[(position - piece) * stage_stride<HD>() + d] = __float2bfloat16_rn(k_new[d]);
      stage_v[(position - piece) * stage_stride<HD>() + d] = __float2bfloat16_rn(v_new[d]);
    }
  };
  if (q_warp) {
    float* q = q_s + warp * HD;
    rotate_head<HD>(q_loads, w.q_norm != nullptr, q, p, rope_table, lane);
    for (int d = lane; d < HD; d += 32) q[d] *= p.attention_scale * 1.4426950408889634f;
    if (stamps && threadIdx.x == 0) stamps[0] += global_timer();
  }
  if (new_key_warp) {
    rotate_head<HD>(k_loads, w.k_norm != nullptr, k_new, p, rope_table, lane);
    const size_t row = (size_t(page) * p.page_size + position % p.page_size) * p.kv_heads + u.kv_head;
#pragma unroll
    for (int i = 0; i < HD / 32; ++i) {
      const int d = lane + 32 * i;
      const bf16 k = __float2bfloat16_rn(k_new[d]), v_rounded = __float2bfloat16_rn(v[i]);
      if (u.writes_cache) w.k_pages[row * HD + d] = k, w.v_pages[row * HD + d] = v_rounded;
      k_new[d] = __bfloat162float(k);
      v_new[d] = __bfloat162float(v_rounded);
    }
    __syncwarp();
    put_new_key(u.key_begin, min(kStageKeys, u.key_end - u.key_begin));
  }
#pragma unroll 1
  for (int t = threadIdx.x; t < group * HD; t += kBlockThreads) head_out[t] = 0.0f;
#pragma unroll 1
  for (int j = threadIdx.x; j < group; j += kBlockThreads) head_ml[2 * j] = -INFINITY, head_ml[2 * j + 1] = 0.0f;
  cp_async_wait<0>();
  block_sync();
  if (stamps && threadIdx.x == 0) stamps[1] += global_timer();

#pragma unroll 1
  for (int piece = u.key_begin; piece < u.key_end; piece += kStageKeys) {
    const int n = min(kStageKeys, u.key_end - piece);
    if (piece != u.key_begin) {  // long contexts: this piece's copies were issued before the previous one's merge
      cp_async_wait<0>();
      block_sync();
    }
    const int chunks = (n + 31) / 32;  // items: a warp per 32 keys, all the group's heads on the tensor cores
#pragma unroll 1
    for (int c = warp; c < chunks; c += kWarps)
      attention_chunk_mma<HD>(q_s, group, stage_k, stage_v, 32 * c, min(32, n - 32 * c), c, chunks, lane, item_out,
                              item_ml);
    block_sync();
    const int next = piece + kStageKeys;
    if (next < u.key_end) {  // the next piece's copies now (the staging rows are free), overlapping the merge
      const int next_n = min(kStageKeys, u.key_end - next), at = next - u.key_begin;
      // (a piece lies inside the looked-up rows or wholly past them)
      stage_keys<HD>(p, w, u.kv_head, next, next_n, position, at + next_n <= kUnitRows ? stage_rows + at : nullptr,
                     stage_k, stage_v);
      if (warp == kWarps - 1 && has_new) put_new_key(next, next_n);
    }
    if (stamps && threadIdx.x == 0 && piece == u.key_begin) stamps[2] += global_timer();
    // Merge the piece's items into each head's running (max, sum, output) in a fixed order; the last piece's merge
    // writes the unit's partials.
    const bool last_piece = piece + kStageKeys >= u.key_end;
#pragma unroll 1
    for (int t = threadIdx.x; t < group * HD; t += kBlockThreads) {
      const int j = t / HD, d = t % HD;
      float top = head_ml[2 * j];
#pragma unroll 1
      for (int c = 0; c < chunks; ++c) top = fmaxf(top, item_ml[2 * (j * chunks + c)]);
      const float old_weight = head_ml[2 * j] == -INFINITY ? 0.0f : exp2f(head_ml[2 * j] - top);
      float out = head_out[t] * old_weight, sum = head_ml[2 * j + 1] * old_weight;
#pragma unroll 1
      for (int c = 0; c < chunks; ++c) {
        const float weight = exp2f(item_ml[2 * (j * chunks + c)] - top);
        out = fmaf(item_out[(j * chunks + c) * HD + d], weight, out);
        sum = fmaf(item_ml[2 * (j * chunks + c) + 1], weight, sum);
      }
      if (last_piece) {
        const size_t at = size_t(head_base + j) * p.max_splits + u.split;
        ws.partial_out[at * HD + d] = out;
        if (d == 0) ws.partial_ml[2 * at] = top, ws.partial_ml[2 * at + 1] = sum;
      } else {
        head_out[t] = out;
        if (d == 0) next_ml[2 * j] = top, next_ml[2 * j + 1] = sum;
      }
    }
    if (last_piece) break;
    block_sync();
#pragma unroll 1
    for (int j = threadIdx.x; j < group; j += kBlockThreads)
      head_ml[2 * j] = next_ml[2 * j], head_ml[2 * j + 1] = next_ml[2 * j + 1];
    block_sync();
  }
  block_sync();  // the shared buffers are reused
  if (stamps && threadIdx.x == 0) stamps[3] += global_timer();
}

// The end of P2: the last unit of a (KV head, head group) to finish merges its heads' splits into ws.attention, so that
// P3 reads q_width floats. (Before, every block merged every head's splits in P3 for itself: heads x splits x
// head_dim floats from L2 per block, ~150 KB per layer at a 1k context and 4x that at 8k, ~3 us of P3's ~9.) The
// count's acq_rel add after the block barrier publishes this unit's partials and, for the last, acquires the
// others'. A warp per head turns the splits' (max, sum) into weights first, so an element's merge is a few FMAs. (One
// pass with a running max, its loads in one round trip, was slower: P2's slowest block 10.7 vs 8.8 us on Qwen3.)
template <int HD>
__device__ __forceinline__ void merge_if_last(const StreamDecodeParams& p, const Workspace& ws, const Unit& u,
                                              float* split_weight, int* is_last) {
  // (attention_unit ended with a block barrier: its partials' stores are ordered before thread 0's add)
  if (threadIdx.x == 0) {
    unsigned int* count = ws.merge_counts + u.kv_head * u.head_groups + u.head_group;
    unsigned int ticket;
    asm volatile("atom.add.acq_rel.gpu.global.u32 %0, [%1], 1;\n" : "=r"(ticket) : "l"(count) : "memory");
    *is_last = ticket == unsigned(u.splits - 1);
    if (*is_last) *count = 0;  // (the next P2's units start after a grid barrier)
  }
  block_sync();
  if (!*is_last) return;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, splits = u.splits;
  const int head_base = u.kv_head * (p.heads / p.kv_heads) + u.head_first;
  for (int j = warp; j < u.heads; j += kWarps) {
    const float2* ml = reinterpret_cast<const float2*>(ws.partial_ml) + size_t(head_base + j) * p.max_splits;
    const float2 mine = lane < splits ? __ldcg(ml + lane) : make_float2(-INFINITY, 0.0f);
    const float top = warp_max(mine.x);
    const float weight = mine.x == -INFINITY ? 0.0f : exp2f(mine.x - top);
    const float total = warp_sum(weight * mine.y);
    if (lane < splits) split_weight[j * splits + lane] = weight / total;
  }
  block_sync();
  // A thread per float4 of the heads' outputs (Qwen3-30B-A3B at 1k: 4 heads = 128 of them), loads unrolled over the
  // splits so that many are in flight.
#pragma unroll 1
  for (int t = threadIdx.x; t < u.heads * HD / 4; t += kBlockThreads) {
    const int j = 4 * t / HD;
    const float* weight = split_weight + j * splits;
    const float4* src =
        reinterpret_cast<const float4*>(ws.partial_out + size_t(head_base + j) * p.max_splits * HD) + (4 * t % HD) / 4;
    float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 8
    for (int i = 0; i < splits; ++i) {
      const float4 v = __ldcg(src + i * (HD / 4));
      const float w = weight[i];
      a.x = fmaf(w, v.x, a.x), a.y = fmaf(w, v.y, a.y), a.z = fmaf(w, v.z, a.z), a.w = fmaf(w, v.w, a.w);
    }
    reinterpret_cast<float4*>(ws.attention + head_base * HD)[t] = a;
  }
}

// ---- Routing (P5) ---------------------------------------------------------------------------------------------------

// Every block, from the router's logits (L2, into shared memory first): each expert's rank among the logits (ties:
// lower id first; `ways` threads per expert each count a share of the others), and ranks below top_k fill ids /
// weights best first, the weight being the softmax probability (max and sum in the per-op kernel's order, by every
// warp for itself, so the same floats). The weights are renormalized where they are used.
// Ranking logits rather than probabilities differs from the per-op router only where two different logits round to
// the same probability at the top-k boundary (it then picks the larger logit, the per-op kernel the lower id).
__device__ __forceinline__ void route(const StreamDecodeParams& p, const float* logits, float* logits_shared, int* ids,
                                      float* weights) {
  const int n = p.experts;
  // Session 13's clocks (Qwen3-30B-A3B, from the router barrier's release): logits in at 0.3 us, warp 0's softmax
  // done at 1.0, ranks at 3.05 while an expert's 4 threads read logits[share * 32 + i] (a 4-way bank conflict on
  // every load); shares interleaved (i = share, share + ways, ...) -34 us per step; the softmax beside the ranks
  // instead of before them (one block_sync less, every warp its own max and sum): see docs/gpu-runtime.md.
#pragma unroll 1
  for (int i = threadIdx.x; i < n; i += kBlockThreads) logits_shared[i] = __ldcg(logits + i);
  block_sync();
  const int lane = threadIdx.x % 32;
  float max = -INFINITY;
  for (int i = lane; i < n; i += 32) max = fmaxf(max, logits_shared[i]);
  max = warp_max(max);
  float sum = 0.0f;
  for (int i = lane; i < n; i += 32) sum += expf(logits_shared[i] - max);
  sum = warp_sum(sum);
  int ways = 1;
  while (ways < 32 && 2 * ways * n <= kBlockThreads) ways *= 2;
  const int expert = threadIdx.x / ways, share = threadIdx.x % ways;
  int rank = 0;
  float mine = 0.0f;
  if (expert < n) {
    mine = logits_shared[expert];
#pragma unroll 4
    for (int i = share; i < n; i += ways) {
      const float other = logits_shared[i];
      rank += other > mine || (other == mine && i < expert);
    }
  }
  for (int offset = 1; offset < ways; offset *= 2) rank += __shfl_xor_sync(0xffffffffu, rank, offset);
  if (expert < n && share == 0 && rank < p.top_k) ids[rank] = expert, weights[rank] = expf(mine - max) / sum;
  block_sync();
}

// ---- The kernel -----------------------------------------------------------------------------------------------------

// FP8: p.fp8_attention, a template flag (a runtime one cost bf16 / FP4 models 10-25 us per Qwen3 step: spills).
template <int HD, bool FP8>
__global__ void __launch_bounds__(kBlockThreads, 1) persistent_stream_kernel(StreamDecodeParams p) {
  extern __shared__ __align__(16) unsigned char shared[];
  const Layout lay(p, gridDim.x);
  const Workspace ws(p, p.workspace);
  const int q_width = p.heads * HD, qkv_width = q_width + 2 * p.kv_heads * HD;
  float* vec = reinterpret_cast<float*>(shared);  // [vec_floats]: the vector the phase's rows multiply
  float* own = vec + lay.vec_floats;              // this block's residual rows
  float* part_sums = own + lay.own_floats;        // [item_floats]
  float* scratch = part_sums + lay.item_floats;   // [64]
  float* rope_table = scratch + 64;               // [head_dim]: cos, sin
  float* split_weight = rope_table + HD;          // [heads][splits] (P2's merge)
  float* expert_logits = split_weight + round4(p.heads * kMaxSplits);  // [experts]: the router's, for route()
  int64_t* stage_rows = reinterpret_cast<int64_t*>(expert_logits + round4(p.experts));  // [kUnitRows] (P2)
  StreamLayer* layers = reinterpret_cast<StreamLayer*>(stage_rows + kUnitRows);
  bf16* stage_k = reinterpret_cast<bf16*>(shared + lay.attention_offset);  // P2's staged keys, then its scratch
  bf16* stage_v = stage_k + kStageKeys * stage_stride<HD>();
  float* attention_shared = reinterpret_cast<float*>(stage_v + kStageKeys * stage_stride<HD>());
  __shared__ int ids[kMaxTopK];
  __shared__ float weights[kMaxTopK];
  __shared__ int merge_is_last;
  __shared__ Fp4Runs fp4_runs_shared;  // (once per launch; in shared memory: P2 has no registers to spare)
  __shared__ float expert_scales[3][kMaxTopK];  // FP4: the chosen experts' gate, up, down global scales (NVFP4)
  // Trace (p.trace): [0] the last release, [1 + phase] work per phase; block 0's barrier stamps, waits, start.
  __shared__ unsigned long long block_clock[1 + kStreamPhases], barrier_stamps[2], block0_wait[kStreamPhases], start;
  __shared__ unsigned long long unit_stamps[kStreamUnitStamps];  // block 0's P2: sums of (stamp - release)

  // The layers' pointers in shared memory (from global memory, every use after a grid barrier, whose acquire
  // invalidates L1, would be a round trip of its own before the loads it addresses).
  for (int i = threadIdx.x; i < p.n_layers * int(sizeof(StreamLayer) / 8); i += kBlockThreads)
    reinterpret_cast<uint64_t*>(layers)[i] = __ldg(reinterpret_cast<const uint64_t*>(p.layers) + i);
  if (threadIdx.x == 0) fp4_runs_shared = fp4_runs_of(p, gridDim.x);
  __syncthreads();

  const auto sync = [] { block_sync(); };  // the norms' block barrier
  const RowRange own_rows = row_range(p.hidden, own_row_unit(p)), qkv_rows = row_range(qkv_width),
                 router_rows = row_range(p.experts);
  const int hidden_parts = parts_of(p.hidden), q_parts = parts_of(q_width);
  // The attention projections' parts per row (FP8 items cover twice a bf16 item's columns).
  const int qkv_parts = FP8 ? fp8_parts_of(p.hidden) : hidden_parts, o_parts = FP8 ? fp8_parts_of(q_width) : q_parts;
  const bool nv = p.expert_format == StreamExperts::Nvfp4;
  uint32_t* vec_words = reinterpret_cast<uint32_t*>(vec);  // FP4 layers' P5 / P6 vector: pack_hi_lo words
  // The first items of P1 (layer 0's q / k / v rows) load while the previous kernel finishes: weights are constant.
  ItemWeights first;
  auto qkv_row = [&](int layer) {
    return [&, layer](int v) { return layers[layer].qkv + size_t(qkv_rows.first + v) * p.hidden; };
  };
  auto preload_qkv = [&](int layer) {
    if constexpr (FP8)
      preload_first_fp8(qkv_rows.count() * qkv_parts, qkv_parts, p.hidden, layers[layer].qkv_fp8, qkv_rows.first,
                        first);
    else
      preload_first(qkv_rows.count() * hidden_parts, hidden_parts, p.hidden, qkv_row(layer), first);
  };
  preload_qkv(0);

  wait_for_previous_kernel();  // the step's token, position and length, and the cache the previous steps wrote
  const int token = *p.token, position = *p.position, seq_len = *p.seq_len;
  unsigned long long* clock = p.trace ? block_clock : nullptr;
  if (clock && threadIdx.x == 0) {
    start = block_clock[0] = global_timer();
    for (int k = 0; k < kStreamPhases; ++k) block_clock[1 + k] = 0, block0_wait[k] = 0;
    for (int k = 0; k < kStreamUnitStamps; ++k) unit_stamps[k] = 0;
  }
  auto barrier = [&](int phase) {
    grid_barrier(p.barrier, blockIdx.x == 0 && clock ? barrier_stamps : nullptr, clock, phase, sync);
    if (blockIdx.x == 0 && clock && threadIdx.x == 0) block0_wait[phase] += barrier_stamps[1] - barrier_stamps[0];
  };
  const bf16* embedding = p.embed + size_t(token) * p.hidden;
#pragma unroll 1
  for (int i = threadIdx.x; i < own_rows.count(); i += kBlockThreads)
    own[i] = __bfloat162float(embedding[own_rows.first + i]);
#pragma unroll 1
  for (int i = threadIdx.x; i < p.rotary_dim / 2; i += kBlockThreads) {  // RoPE of this position, once
    float sn, c;
    sincosf(static_cast<float>(position) * p.rope_inv_freq[i], &sn, &c);
    rope_table[i] = c * p.rope_attention_factor;
    rope_table[p.rotary_dim / 2 + i] = sn * p.rope_attention_factor;
  }
  const Unit unit(p, seq_len);
  if (unit.has_unit) {  // the cache rows of the unit's first keys (the same in every layer)
#pragma unroll 1
    for (int r = threadIdx.x; r < min(kUnitRows, unit.key_end - unit.key_begin); r += kBlockThreads)
      stage_rows[r] = cache_row(p, unit.key_begin + r, unit.kv_head);
  }

#pragma unroll 1
  for (int layer = 0; layer < p.n_layers; ++layer) {
    const StreamLayer& w = layers[layer];
    const bool routed = w.router != nullptr;
    const int slots = routed ? p.top_k : 1, width = routed ? p.moe_width : p.intermediate;

    // P1: norm, q / k / v rows (the warp's first item was loaded before the barrier).
    float inv = 1.0f;
    if (layer == 0)
      load_normed_embedding<kBlockThreads>(embedding, w.input_norm, p.hidden, p.hidden_norm_eps, vec, scratch, sync);
    else
      inv = load_weighted<kBlockThreads>(ws.x, w.input_norm, ws.row_squares + kMaxGrid, p.hidden, p.hidden_norm_eps,
                                         vec, scratch, sync);
    if constexpr (FP8)
      fp8_item_dots(qkv_rows.count() * qkv_parts, qkv_parts, p.hidden, w.qkv_fp8, qkv_rows.first, vec, part_sums,
                    first, true);
    else
      item_dots(qkv_rows.count() * hidden_parts, hidden_parts, p.hidden, qkv_row(layer), [&](int) { return vec; },
                part_sums, first, true);
    block_sync();
#pragma unroll 1
    for (int r = threadIdx.x; r < qkv_rows.count(); r += kBlockThreads) {
      const int row = qkv_rows.first + r;
      const float dot = row_sum(part_sums, r, qkv_parts) * inv;
      ws.qkv[row] = w.qkv_bias ? dot + w.qkv_bias[row] : dot;
    }
    barrier(0);

    // P2: attention partials, merged per head by the last unit of each; then the first o_proj items load before the
    // barrier.
    if (unit.has_unit) {
      unsigned long long* stamps = clock && blockIdx.x == 0 ? unit_stamps : nullptr;
      if (stamps && threadIdx.x == 0)
        for (int k = 0; k < kStreamUnitStamps; ++k) stamps[k] -= block_clock[0];  // (from this phase's release)
      attention_unit<HD>(p, w, ws, attention_shared, stage_k, stage_v, stage_rows, rope_table, unit, position, stamps);
      merge_if_last<HD>(p, ws, unit, split_weight, &merge_is_last);
    }
    auto o_row = [&](int v) { return w.o + size_t(own_rows.first + v) * q_width; };
    if constexpr (FP8)
      preload_first_fp8(own_rows.count() * o_parts, o_parts, q_width, w.o_fp8, own_rows.first, first);
    else
      preload_first(own_rows.count() * q_parts, q_parts, q_width, o_row, first);
    barrier(1);

    // P3: the merged heads, then o_proj rows into the residual.
#pragma unroll 1
    for (int q = threadIdx.x; q < q_width / 4; q += kBlockThreads)  // the merged heads (P2's last units)
      reinterpret_cast<float4*>(vec)[q] = __ldcg(reinterpret_cast<const float4*>(ws.attention) + q);
    block_sync();
    if constexpr (FP8)
      fp8_item_dots(own_rows.count() * o_parts, o_parts, q_width, w.o_fp8, own_rows.first, vec, part_sums, first,
                    true);
    else
      item_dots(own_rows.count() * q_parts, q_parts, q_width, o_row, [&](int) { return vec; }, part_sums, first, true);
    block_sync();
#pragma unroll 1
    for (int r = threadIdx.x; r < own_rows.count(); r += kBlockThreads) {
      const int row = own_rows.first + r;
      const float dot = row_sum(part_sums, r, o_parts);
      ws.x[row] = own[r] += w.o_bias ? dot + w.o_bias[row] : dot;
    }
    block_sync();
    publish_row_squares(own, own_rows.count(), ws.row_squares);
    auto router_row = [&](int v) { return w.router + size_t(router_rows.first + v) * p.hidden; };
    if (routed) preload_first(router_rows.count() * hidden_parts, hidden_parts, p.hidden, router_row, first);
    barrier(2);

    // P4 (routed layers): norm, the block's router logits.
    inv = load_weighted<kBlockThreads>(ws.x, w.post_attention_norm, ws.row_squares, p.hidden, p.hidden_norm_eps, vec,
                                       scratch, sync);
    if (routed) {
      item_dots(router_rows.count() * hidden_parts, hidden_parts, p.hidden, router_row, [&](int) { return vec; },
                part_sums, first, true);
      block_sync();
#pragma unroll 1
      for (int r = threadIdx.x; r < router_rows.count(); r += kBlockThreads)
        ws.logits[router_rows.first + r] = row_sum(part_sums, r, hidden_parts) * inv;
      barrier(3);
      route(p, ws.logits, expert_logits, ids, weights);
      if (blockIdx.x == 0 && w.topk_ids)
#pragma unroll 1
        for (int j = threadIdx.x; j < p.top_k; j += kBlockThreads) w.topk_ids[j] = ids[j];
    } else if (threadIdx.x == 0) {
      ids[0] = 0, weights[0] = 1.0f;  // (the previous sync orders this before its readers: load_weighted's)
    }
    block_sync();

    // P5: the block's (slot, i) pairs of gate / up rows -> h. Virtual row 2 k is pair k's gate row, 2 k + 1 its up.
    // FP4 experts: pairs of 16-row strips, the normed x as pack_hi_lo words, h written as such words for P6.
    const bool fp4 = routed && fp4_experts(p);
    const Fp4Runs& fp4_runs = fp4_runs_shared;
    const int width_parts = parts_of(width), strips = width / 16;
    const RowRange pairs = row_range(slots * width, fp4 ? 16 : 1);
    if (fp4) {
      const Fp4Run& f = fp4_runs.gate_up;
      auto gate_up_strip = [&](int v) {  // virtual strip 2 k: pair k's gate strip, 2 k + 1 its up strip
        const int pair = pairs.first / 16 + v / 2, slot = pair / strips, strip = pair - slot * strips;
        const StreamLayer::Fp4Matrix& m = (v & 1) ? w.fp4_up : w.fp4_gate;
        return m.tiles + ids[slot] * m.stride + size_t(strip) * f.tiles * fp4_tile_bytes(nv);
      };
      const int n_items = 2 * (pairs.count() / 16) * f.runs;
      preload_first_fp4(n_items, f, nv, gate_up_strip, first);  // (the experts are known: route synced)
      if (threadIdx.x < slots) {  // NVFP4's global scales of the chosen experts, for the epilogues (cp.async: no
        const int e = ids[threadIdx.x];  // register waits for them; a load + store here stalled the block ~2 us)
        const float* global[3] = {w.fp4_gate.global_scales, w.fp4_up.global_scales, w.fp4_down.global_scales};
#pragma unroll
        for (int m = 0; m < 3; ++m) {
          if (nv)
            cp_async_4B(&expert_scales[m][threadIdx.x], global[m] + e);
          else
            expert_scales[m][threadIdx.x] = 1.0f;
        }
        cp_async_commit();
      }
#pragma unroll 1
      for (int i = threadIdx.x; i < p.hidden; i += kBlockThreads)
        vec_words[i] = fp4_moe_detail::pack_hi_lo(vec[i] * inv);
      block_sync();
      fp4_item_dots(n_items, f, nv, gate_up_strip, [&](int) { return vec_words; }, part_sums, first, true);
      cp_async_wait<0>();  // (the scales)
      block_sync();
#pragma unroll 1
      for (int k = threadIdx.x; k < pairs.count(); k += kBlockThreads) {
        const int pair = k / 16, row = k % 16, slot = (pairs.first + k) / width;
        const float gate = strip_row_sum(part_sums, 2 * pair, row, f.runs) * fp4_moe_detail::kOutputScale *
                           expert_scales[0][slot];
        const float up = strip_row_sum(part_sums, 2 * pair + 1, row, f.runs) * fp4_moe_detail::kOutputScale *
                         expert_scales[1][slot];
        reinterpret_cast<uint32_t*>(ws.h)[pairs.first + k] = fp4_moe_detail::pack_hi_lo(silu(gate) * up);
      }
    } else {
      auto gate_up_row = [&](int v) {
        const int pair = pairs.first + v / 2, slot = pair / width, i = pair - slot * width;
        return w.gate_up + ids[slot] * w.gate_up_stride + size_t(i) * p.hidden + (v & 1) * w.up_offset;
      };
      item_dots(2 * pairs.count() * hidden_parts, hidden_parts, p.hidden, gate_up_row, [&](int) { return vec; },
                part_sums, first, false);
      block_sync();
#pragma unroll 1
      for (int k = threadIdx.x; k < pairs.count(); k += kBlockThreads) {
        const float gate = row_sum(part_sums, 2 * k, hidden_parts) * inv;
        const float up = row_sum(part_sums, 2 * k + 1, hidden_parts) * inv;
        ws.h[pairs.first + k] = silu(gate) * up;
      }
    }
    // The first down items load before the barrier (the experts are known).
    auto down_row = [&](int v) {  // virtual row = (own row, slot)
      const int r = v / slots, slot = v - r * slots;
      return w.down + ids[slot] * w.down_stride + size_t(own_rows.first + r) * width;
    };
    auto down_strip = [&](int v) {  // virtual strip = (own strip, slot)
      const int r = v / slots, slot = v - r * slots;
      return w.fp4_down.tiles + ids[slot] * w.fp4_down.stride +
             size_t(own_rows.first / 16 + r) * fp4_runs.down.tiles * fp4_tile_bytes(nv);
    };
    if (fp4)
      preload_first_fp4((own_rows.count() / 16) * slots * fp4_runs.down.runs, fp4_runs.down, nv, down_strip, first);
    else
      preload_first(own_rows.count() * slots * width_parts, width_parts, width, down_row, first);
    barrier(4);

    // P6: h of every slot into shared memory, then the block's down rows of every slot, weighted, into the residual.
#pragma unroll 1
    for (int q = threadIdx.x; q < slots * width / 4; q += kBlockThreads)
      reinterpret_cast<float4*>(vec)[q] = __ldcg(reinterpret_cast<const float4*>(ws.h) + q);
    block_sync();
    if (fp4)
      fp4_item_dots((own_rows.count() / 16) * slots * fp4_runs.down.runs, fp4_runs.down, nv, down_strip,
                    [&](int v) { return vec_words + (v % slots) * width; }, part_sums, first, true);
    else
      item_dots(own_rows.count() * slots * width_parts, width_parts, width, down_row,
                [&](int v) { return vec + (v % slots) * width; }, part_sums, first, true);
    block_sync();
    float total = 0.0f;  // renormalized top-k weights: w / the top-k sum, summed in pick order as the per-op router
#pragma unroll 1
    for (int slot = 0; slot < slots; ++slot) total += weights[slot];
    if (!routed || !p.renormalize) total = 1.0f;
#pragma unroll 1
    for (int r = threadIdx.x; r < own_rows.count(); r += kBlockThreads) {
      float sum = 0.0f;
#pragma unroll 1
      for (int slot = 0; slot < slots; ++slot) {
        const float weight = weights[slot] / total;
        if (fp4)
          sum = fmaf(weight * fp4_moe_detail::kOutputScale * expert_scales[2][slot],
                     strip_row_sum(part_sums, (r / 16) * slots + slot, r % 16, fp4_runs.down.runs), sum);
        else
          sum = fmaf(weight, row_sum(part_sums, r * slots + slot, width_parts), sum);
      }
      ws.x[own_rows.first + r] = own[r] += sum;
    }
    block_sync();
    publish_row_squares(own, own_rows.count(), ws.row_squares + kMaxGrid);
    if (layer + 1 < p.n_layers) preload_qkv(layer + 1);
    barrier(5);
  }
  allow_next_kernel_to_start();  // lm_head may get scheduled; it still waits for this kernel to complete
  published_inv(ws.row_squares + kMaxGrid, p.hidden, p.hidden_norm_eps, scratch);
  block_sync();
#pragma unroll 1
  for (int i = threadIdx.x; i < own_rows.count(); i += kBlockThreads) {
    const int row = own_rows.first + i;
    p.normed_out[row] = (__ldg(p.final_norm + row) * own[i]) * scratch[0];
  }
  if (clock && threadIdx.x == 0) {
    for (int k = 0; k < kStreamPhases; ++k) p.trace[kStreamPhases * blockIdx.x + k] = block_clock[1 + k];
    if (blockIdx.x == 0) {
      for (int k = 0; k < kStreamPhases; ++k) p.trace[kStreamPhases * gridDim.x + k] = block0_wait[k];
      p.trace[kStreamPhases * gridDim.x + kStreamPhases] = global_timer() - start;
      for (int k = 0; k < kStreamUnitStamps; ++k)
        p.trace[kStreamPhases * gridDim.x + kStreamPhases + 1 + k] = unit_stamps[k];
    }
  }
}

using Kernel = void (*)(StreamDecodeParams);

Kernel kernel_for(const StreamDecodeParams& p) {
  if (p.fp8_attention)
    return p.head_dim == 64 ? persistent_stream_kernel<64, true> : persistent_stream_kernel<128, true>;
  return p.head_dim == 64 ? persistent_stream_kernel<64, false> : persistent_stream_kernel<128, false>;
}

void check_params(const StreamDecodeParams& p) {
  const std::string why = persistent_stream_unsupported(p);
  if (!why.empty()) throw std::invalid_argument("persistent_stream: " + why);
}

}  // namespace

std::string persistent_stream_unsupported(const StreamDecodeParams& p) {
  if (p.head_dim != 64 && p.head_dim != 128)
    return "a head_dim other than 64 / 128 (" + std::to_string(p.head_dim) + ")";
  if (p.kv_heads < 1 || p.heads % p.kv_heads != 0 || p.heads / p.kv_heads > kMaxItems / (kStageKeys / 32))
    return "more than 16 query heads per KV head";
  if (p.hidden % 8 != 0 || p.intermediate % 8 != 0 || p.moe_width % 8 != 0)
    return "hidden, intermediate or expert widths that are not multiples of 8";
  if (p.experts > kBlockThreads || p.top_k > kMaxTopK || (p.experts > 0 && p.top_k < 1))
    return "more than " + std::to_string(kBlockThreads) + " experts or " + std::to_string(kMaxTopK) + " per token";
  if (p.rotary_dim > p.head_dim || p.rotary_dim % 2 != 0) return "a rotary_dim that is odd or above head_dim";
  if (fp4_experts(p) && (p.hidden % 64 != 0 || p.moe_width % 64 != 0))
    return "FP4 experts with hidden or expert widths that are not multiples of 64 (the tiles')";
  if (p.fp8_attention && (p.hidden % 16 != 0 || (p.heads * p.head_dim) % 16 != 0))
    return "FP8 attention with hidden or query widths that are not multiples of 16 (the codes' 16-byte loads)";
  return "";
}

size_t persistent_stream_shared_bytes(const StreamDecodeParams& params, int grid) {
  if (params.head_dim != 64 && params.head_dim != 128) return 0;
  return Layout(params, grid).shared_bytes;
}

int persistent_stream_max_splits(const StreamDecodeParams& params, int grid, int64_t max_keys) {
  const int64_t wanted = (max_keys + kKeysPerSplit - 1) / kKeysPerSplit;
  const int64_t most = std::min<int64_t>(grid / std::max(1, params.kv_heads), kMaxSplits);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, most)));
}

size_t persistent_stream_workspace_bytes(const StreamDecodeParams& params, int max_splits) {
  return Workspace::bytes(params, max_splits);
}

int persistent_stream_grid(const StreamDecodeParams& params) {
  check_params(params);
  const int grid = cuda::current_device_info().multiprocessors;
  if (grid > kMaxGrid || params.kv_heads > grid) return 0;
  return one_block_per_sm_grid(kernel_for(params), kBlockThreads, persistent_stream_shared_bytes(params, grid));
}

void persistent_stream_decode(const StreamDecodeParams& params, cudaStream_t stream) {
  check_params(params);
  const int grid = cuda::current_device_info().multiprocessors;
  if (params.max_splits < 1 || params.max_splits > grid / params.kv_heads || params.max_splits > kMaxSplits)
    throw std::invalid_argument("persistent_stream: max_splits outside [1, min(grid / kv_heads, 32)]");
  if (grid > kMaxGrid) throw std::invalid_argument("persistent_stream: more SMs than the workspace's kMaxGrid");
  launch_programmatic("persistent_stream_kernel", kernel_for(params), dim3(grid), dim3(kBlockThreads),
                      persistent_stream_shared_bytes(params, grid), stream, params);
}

}  // namespace tachyon::kernels
