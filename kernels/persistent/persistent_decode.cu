// persistent_decode (see persistent_decode.h for the design). Numerics: float32 everywhere except the bf16 weights
// and KV cache; products are plain FMAs on the CUDA cores (one token: the tensor cores would idle anyway), so the
// results differ from the gemv path's in rounding only. The CPU reference comparison lives in the GPU tests
// (tests/gpu/test_persistent_decode.cpp), against the kernel-per-op path and the CPU model.
#include "persistent/persistent_decode.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"
#include "cuda/stream.h"
#include "persistent/grid_barrier.cuh"
#include "persistent/persistent_attention.cuh"
#include "persistent/persistent_norms.cuh"

namespace tachyon::kernels {

namespace {

using bf16 = __nv_bfloat16;

// kThreads compute threads, plus one producer warp that only issues the weight copies (its bulk-copy issues hold
// it for about as long as the transfers take, which must not hold a barrier): the compute threads synchronize on
// named barrier 1 (compute_sync), never __syncthreads. 16 warps in all: a 17th would cap registers at 96 (each of
// the SM's four register files serves a quarter of the warps).
constexpr int kBlockThreads = 512, kThreads = kBlockThreads - 32, kWarps = kThreads / 32;
constexpr int kKeysPerSplit = 128;   // the key split's target length (more splits: more work units, longer merge)
constexpr int kStageKeys = 128;      // keys of a unit staged in shared memory at once (stage_keys)
constexpr int kMaxItems = 64;        // P2's work items per piece: group x kStageKeys / 32 (bounds the group)
constexpr int kSplitBatch = 8;       // key splits whose partial outputs P3 loads before the combine
constexpr int kSplitsPerLane = 4;    // P3 weighs a head's splits in one warp: at most 128 splits
constexpr int kMaxGrid = 1024;       // blocks whose sums of squares the workspace holds (Workspace::row_squares)

// Block-private row slices of one layer's matrices and the shared-memory carve-up, the same on host and device.
struct Layout {
  int qkv_rows = 0, o_rows = 0, pairs = 0;  // per block, the most any block has (o_proj and down share o_rows)
  size_t qkv_bytes = 0, o_bytes = 0, gate_up_bytes = 0, down_bytes = 0, slice_bytes = 0;
  int vector_floats = 0;   // the widest activation row a phase stages (hidden, q_width or intermediate)
  int own_floats = 0;      // this block's residual rows, rounded up to keep what follows 16-byte aligned
  int attention_floats = 0;
  size_t shared_bytes = 0;

  __host__ __device__ Layout(const PersistentDecodeParams& p, int g) {
    const int q_width = p.heads * p.head_dim, qkv_width = q_width + 2 * p.kv_heads * p.head_dim;
    qkv_rows = (qkv_width + g - 1) / g;
    o_rows = (p.hidden + g - 1) / g;
    pairs = (p.intermediate + g - 1) / g;
    qkv_bytes = size_t(qkv_rows) * p.hidden * 2;
    o_bytes = size_t(o_rows) * q_width * 2;
    gate_up_bytes = size_t(pairs) * 2 * p.hidden * 2;
    down_bytes = size_t(o_rows) * p.intermediate * 2;
    slice_bytes = qkv_bytes + o_bytes + gate_up_bytes + down_bytes;
    vector_floats = p.hidden > q_width ? p.hidden : q_width;
    if (p.intermediate > vector_floats) vector_floats = p.intermediate;
    const int group = p.kv_heads > 0 ? p.heads / p.kv_heads : 1;
    // P2 (attention_unit): q heads, new k and v, the items' (output, max, sum), the heads' running merge.
    attention_floats = group * p.head_dim + 2 * p.head_dim + kMaxItems * (p.head_dim + 2) + group * (p.head_dim + 4);
    attention_floats = (attention_floats + 3) / 4 * 4;
    if (attention_floats < group * g) attention_floats = group * g;  // P3's split_weight: heads x splits
    own_floats = (o_rows + 3) / 4 * 4;
    shared_bytes = 2 * slice_bytes +
                   sizeof(float) * (size_t(vector_floats) + own_floats + 32 + p.head_dim + attention_floats) +
                   2 * size_t(kStageKeys) * (p.head_dim + 8) * 2 +  // staged keys and values (stage_keys)
                   sizeof(int64_t) * kStageKeys +                    // their cache rows
                   sizeof(PersistentLayer) * size_t(p.n_layers);      // the layers' pointers
  }
};

// Global scratch: [qkv | h | x | partial outputs | partial (max, sum) | row squares].
// row_squares[k][block]: the sum of squares of the residual rows the block owns, published with them at the end of
// P3 (k = 0, read by P4's norm) and P5 (k = 1, read by the next layer's P1), so that a norm reads the grid's sums
// with x in one round trip instead of reducing x across the block.
struct Workspace {
  float *qkv, *h, *x, *partial_out, *partial_ml, *row_squares;
  __host__ __device__ Workspace(const PersistentDecodeParams& p, void* base) {
    const int q_width = p.heads * p.head_dim, qkv_width = q_width + 2 * p.kv_heads * p.head_dim;
    qkv = static_cast<float*>(base);
    h = qkv + qkv_width;
    x = h + p.intermediate;
    partial_out = x + p.hidden;
    partial_ml = partial_out + size_t(p.heads) * p.max_splits * p.head_dim;
    row_squares = partial_ml + size_t(p.heads) * p.max_splits * 2;
  }
  static size_t bytes(const PersistentDecodeParams& p, int max_splits) {
    const int q_width = p.heads * p.head_dim, qkv_width = q_width + 2 * p.kv_heads * p.head_dim;
    return sizeof(float) * (size_t(qkv_width) + p.intermediate + p.hidden +
                            size_t(p.heads) * max_splits * (p.head_dim + 2) + 2 * kMaxGrid);
  }
};

__device__ __forceinline__ void compute_sync() { asm volatile("bar.sync 1, %0;\n" ::"n"(kThreads) : "memory"); }

// The compute threads' shared-memory flags to the producer warp (copy_allowed, keys_free): one thread raises a
// flag after its side's accesses (a release through the block fence); the producer polls, then fences (acquire).
__device__ __forceinline__ void raise_flag(int* flag, int value) {
  __threadfence_block();
  *static_cast<volatile int*>(flag) = value;
}
__device__ __forceinline__ void wait_flag(int* flag, int value, int pause_ns) {
  while (*static_cast<volatile int*>(flag) < value) __nanosleep(pause_ns);
  __threadfence_block();
}


// Weights reach shared memory through the Tensor Memory Accelerator's bulk copies (cp.async.bulk, one instruction
// per matrix slice, completion counted in bytes on an mbarrier). Per-thread cp.async of the whole layer (~95 KB of
// 16-byte copies per block with the staged keys) held the issuing threads and the loads queued behind them for
// ~5 us; row-sized bulk copies (42 per block, and 256 of 128 bytes for the keys) landed a whole layer late.
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, int arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(bar)), "r"(arrivals) : "memory");
}
// One of the phase's arrivals (kCopyPieces per phase), adding `bytes` that must land before the phase completes
// (the copies may be issued before this).
__device__ __forceinline__ void mbarrier_expect_bytes(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(shared_address(bar)), "r"(parity)
        : "memory");
  } while (!done);
}
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   shared_address(dst)),
               "l"(src), "r"(bytes), "r"(shared_address(bar))
               : "memory");
}

static_assert(sizeof(PersistentLayer) % 16 == 0,
              "the layer table is copied in 8-byte words and keeps 16-byte alignment");

struct Slices {
  bf16 *qkv, *o, *gate_up, *down;
};

__device__ __forceinline__ Slices slices_at(unsigned char* base, const Layout& lay) {
  Slices s;
  s.qkv = reinterpret_cast<bf16*>(base);
  s.o = reinterpret_cast<bf16*>(base + lay.qkv_bytes);
  s.gate_up = reinterpret_cast<bf16*>(base + lay.qkv_bytes + lay.o_bytes);
  s.down = reinterpret_cast<bf16*>(base + lay.qkv_bytes + lay.o_bytes + lay.gate_up_bytes);
  return s;
}

// This block's rows of a matrix of `rows`: a contiguous range [first, end), so that a slice is one bulk copy.
struct RowRange {
  int first, end;
};
// (32-bit arithmetic: rows x grid stays far below 2^32, and a 64-bit division is a long subroutine call.)
__device__ __forceinline__ RowRange row_range(int rows) {
  return {static_cast<int>(blockIdx.x * unsigned(rows) / gridDim.x),
          static_cast<int>((blockIdx.x + 1) * unsigned(rows) / gridDim.x)};
}

// The block's rows of a [rows, cols] bf16 matrix into consecutive shared rows; returns the bytes.
__device__ __forceinline__ uint32_t copy_row_slice(bf16* dst, const bf16* src, int rows, int cols, uint64_t* bar) {
  const RowRange r = row_range(rows);
  const uint32_t bytes = uint32_t(r.end - r.first) * cols * 2;
  if (bytes > 0) bulk_copy(dst, src + size_t(r.first) * cols, bytes, bar);
  return bytes;
}

// One thread: piece `piece` (0..kCopyPieces-1: q/k/v, o, gate, up, down rows) of a layer's slices (gate rows, then
// up rows: [2][pairs][hidden]), as one of the kCopyPieces arrivals that complete `bar`'s phase. A bulk copy's issue
// holds its thread about as long as the transfer takes at the block's share of the bandwidth (~2.5 us for a whole
// SmolLM2 layer): issued by a compute thread in a barrier's shadow, that time lands on the barrier; hence the
// producer warp.
constexpr int kCopyPieces = 5;
__device__ __forceinline__ void copy_layer_piece(int piece, const PersistentLayer& w, const Slices& s,
                                              const PersistentDecodeParams& p, int lay_pairs, uint64_t* bar) {
  const int q_width = p.heads * p.head_dim, qkv_width = q_width + 2 * p.kv_heads * p.head_dim;
  uint32_t bytes = 0;
  switch (piece) {
    case 0: bytes = copy_row_slice(s.qkv, w.qkv, qkv_width, p.hidden, bar); break;
    case 1: bytes = copy_row_slice(s.o, w.o, p.hidden, q_width, bar); break;
    case 2: bytes = copy_row_slice(s.gate_up, w.gate_up, p.intermediate, p.hidden, bar); break;
    case 3:
      bytes = copy_row_slice(s.gate_up + size_t(lay_pairs) * p.hidden, w.gate_up + size_t(p.intermediate) * p.hidden,
                             p.intermediate, p.hidden, bar);
      break;
    default: bytes = copy_row_slice(s.down, w.down, p.hidden, p.intermediate, bar); break;
  }
  mbarrier_expect_bytes(bar, bytes);
}

// One warp: dot of a bf16 row (shared) with a float vector (shared), n a multiple of 8. Every lane gets the sum.
__device__ __forceinline__ float warp_dot(const bf16* row, const float* v, int n, int lane) {
  float sum = 0.0f;
#pragma unroll 2
  for (int c = lane; c < n / 8; c += 32) {
    const uint4 w = *reinterpret_cast<const uint4*>(row + 8 * c);
    const float4 a = *reinterpret_cast<const float4*>(v + 8 * c);
    const float4 b = *reinterpret_cast<const float4*>(v + 8 * c + 4);
    const float2 w0 = unpack_bf16x2(w.x), w1 = unpack_bf16x2(w.y), w2 = unpack_bf16x2(w.z), w3 = unpack_bf16x2(w.w);
    sum = fmaf(w0.x, a.x, sum);
    sum = fmaf(w0.y, a.y, sum);
    sum = fmaf(w1.x, a.z, sum);
    sum = fmaf(w1.y, a.w, sum);
    sum = fmaf(w2.x, b.x, sum);
    sum = fmaf(w2.y, b.y, sum);
    sum = fmaf(w3.x, b.z, sum);
    sum = fmaf(w3.y, b.w, sum);
  }
  return warp_sum(sum);
}

// RMSNorm of one head in shared memory (one warp), Qwen3's q / k norms.
template <int HD>
__device__ __forceinline__ void norm_head(float* head, const float* weight, float eps, int lane) {
  float squares = 0.0f;
#pragma unroll
  for (int d = lane; d < HD; d += 32) squares = fmaf(head[d], head[d], squares);
  const float inv = 1.0f / sqrtf(warp_sum(squares) / static_cast<float>(HD) + eps);
  __syncwarp();
#pragma unroll
  for (int d = lane; d < HD; d += 32) head[d] = __ldg(weight + d) * (head[d] * inv);
  __syncwarp();
}

// One warp: loads head `src` (HD floats, L2) into `dst`, applies the optional head norm and RoPE from the step's
// table (rope_table: cos, then sin, of the rotary_dim / 2 angles of this position; rope_device.cuh's arithmetic).
template <int HD>
__device__ __forceinline__ void load_rotated_head(const float* src, const float* norm_weight, float* dst,
                                                  const PersistentDecodeParams& p, const float* rope_table, int lane) {
#pragma unroll
  for (int d = lane; d < HD; d += 32) dst[d] = __ldcg(src + d);
  __syncwarp();
  if (norm_weight) norm_head<HD>(dst, norm_weight, p.head_norm_eps, lane);
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

// The cached keys and values a unit reads are settled before the step (earlier passes wrote them), so the producer
// warp copies the unit's rows into shared memory (cp.async) a layer ahead; P2 then reads no global memory in its
// inner loops. (Loads issued inside those loops were sunk by the compiler to their uses, one round trip per key:
// ~15 us per SmolLM2 layer.) Staging rows: persistent_attention.cuh's stage_stride.
// Threads t, t + stride, ...: the rows of keys [first, first + n) into the staging rows, as 16-byte cp.async copies
// (the caller commits them, or ties them to an mbarrier). Not bulk copies: 256 row-sized (128-byte) bulk copies per
// unit and layer queued in the block's copy engine ahead of the next layer's weights and made them land ~10 us late.
// `rows`: the keys' cache rows, looked up once per step (null: look them up here, for long contexts' later pieces).
template <int HD>
__device__ __forceinline__ void stage_keys(const PersistentDecodeParams& p, const PersistentLayer& w, int kv_head,
                                           int first, int n, int position, bf16* stage_k, bf16* stage_v,
                                           const int64_t* rows, int t, int stride) {
  constexpr int kChunks = HD / 8;
#pragma unroll 1
  for (int c = t; c < n * kChunks; c += stride) {
    const int r = c / kChunks, part = c - r * kChunks, key = first + r;
    if (key == position) continue;  // written in P2 of this step; the unit reads it from k_new / v_new
    const int64_t row =
        (rows ? rows[r]
              : (int64_t(__ldg(p.block_table + key / p.page_size)) * p.page_size + key % p.page_size) * p.kv_heads +
                    kv_head) * HD + 8 * part;
    cp_async_16B(stage_k + r * stage_stride<HD>() + 8 * part, w.k_pages + row);
    cp_async_16B(stage_v + r * stage_stride<HD>() + 8 * part, w.v_pages + row);
  }
}

// This block's attention unit for the step (at most one per block: max_splits <= grid / kv_heads), computed alike by
// the compute threads and the producer warp. Every unit has keys: the last split starts at (splits - 1) x
// ceil(seq_len / splits) < seq_len whenever (splits - 1)^2 < seq_len, which holds as seq_len > 128 (splits - 1) and
// splits <= 128 (persistent_decode_max_splits); so every unit writes its partials in its last piece's merge.
struct UnitKeys {
  int splits, kv_head, split, key_begin, key_end;
  bool has_unit;
  __device__ UnitKeys(const PersistentDecodeParams& p, int seq_len) {
    splits = min(p.max_splits, (seq_len + kKeysPerSplit - 1) / kKeysPerSplit);
    const int keys_per_split = (seq_len + splits - 1) / splits;
    has_unit = blockIdx.x < p.kv_heads * splits;
    kv_head = blockIdx.x / splits, split = blockIdx.x % splits;
    key_begin = split * keys_per_split, key_end = min(seq_len, key_begin + keys_per_split);
  }
  __device__ int first_piece() const { return has_unit ? min(key_end - key_begin, kStageKeys) : 0; }
};

__device__ __forceinline__ void cp_async_arrive_noinc(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(shared_address(bar)) : "memory");
}

// P2 for one (KV head, split) unit: softmax partials of the unit's keys for the group's query heads, in base 2 (q is
// pre-scaled by log2(e); the combine in P3 uses exp2 too). The work items are (query head, 32 staged keys): a warp
// takes one item at a time (lane = key for the scores; lane = a quarter of the keys x 8 or 16 dims for the values), so
// no warp carries state for several heads, and the items' partials meet in shared memory. (A version with every warp
// looping over all heads spent ~5.5 us per SmolLM2 layer here, issue-bound on its run-time loops.) `loaded` runs in
// thread 0 once the unit's global reads are done (q, the new k / v, the staged keys); `first_piece_staged` waits for
// the producer warp's staging of the first kStageKeys keys.
template <int HD, typename Loaded, typename Staged>
__device__ __forceinline__ void attention_unit(const PersistentDecodeParams& p, const PersistentLayer& w,
                                            const Workspace& ws, float* attention_shared, bf16* stage_k,
                                            bf16* stage_v, const float* rope_table, int kv_head, int split,
                                            int key_begin, int key_end, int position,
                                            unsigned long long* stamps, Loaded&& loaded, Staged&& first_piece_staged) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int group = p.heads / p.kv_heads;
  const int q_width = p.heads * HD, kv_width = p.kv_heads * HD;
  float* q_s = attention_shared;        // [group][HD], rotated and scaled
  float* k_new = q_s + group * HD;      // [HD] the new key / value, rounded to bf16 as the cache holds them
  float* v_new = k_new + HD;
  float* item_out = v_new + HD;         // [item][HD]: sum of p v over the item's keys
  float* item_ml = item_out + kMaxItems * HD;  // [item][2]: max and sum of the item's scores
  float* head_out = item_ml + 2 * kMaxItems;   // [group][HD]: running merge over pieces (long contexts)
  float* head_ml = head_out + group * HD;      // [group][2]: its max and sum
  float* next_ml = head_ml + 2 * group;        // [group][2]: the same after this piece
  const bool has_new = position >= key_begin && position < key_end;
  // The new position's key and value (never staged: P2 writes them) into its staging row when it lies in the piece
  // [piece, piece + n): the key loops then read every key from the staging rows alike. (Warp kWarps - 1's lanes,
  // which wrote k_new / v_new for the same d.)
  auto put_new_key = [&](int piece, int n) {
    if (position < piece || position >= piece + n) return;
    for (int d = lane; d < HD; d += 32) {
      stage_k[(position - piece) * stage_stride<HD>() + d] = __float2bfloat16_rn(k_new[d]);
      stage_v[(position - piece) * stage_stride<HD>() + d] = __float2bfloat16_rn(v_new[d]);
    }
  };
  if (warp < group) {
    const int head = kv_head * group + warp;
    float* q = q_s + warp * HD;
    load_rotated_head<HD>(ws.qkv + head * HD, w.q_norm, q, p, rope_table, lane);
    for (int d = lane; d < HD; d += 32) q[d] *= p.attention_scale * 1.4426950408889634f;
  } else if (warp == kWarps - 1 && has_new) {
    // v and the page are loaded beside k (not after its rotation: more round trips on P2's longest unit).
    const int page = __ldg(p.block_table + position / p.page_size);
    float v[HD / 32];
#pragma unroll
    for (int i = 0; i < HD / 32; ++i) v[i] = __ldcg(ws.qkv + q_width + kv_width + kv_head * HD + lane + 32 * i);
    load_rotated_head<HD>(ws.qkv + q_width + kv_head * HD, w.k_norm, k_new, p, rope_table, lane);
    const size_t row = (size_t(page) * p.page_size + position % p.page_size) * p.kv_heads + kv_head;
#pragma unroll
    for (int i = 0; i < HD / 32; ++i) {
      const int d = lane + 32 * i;
      const bf16 k = __float2bfloat16_rn(k_new[d]), v_rounded = __float2bfloat16_rn(v[i]);
      w.k_pages[row * HD + d] = k;
      w.v_pages[row * HD + d] = v_rounded;
      k_new[d] = __bfloat162float(k);
      v_new[d] = __bfloat162float(v_rounded);
    }
    put_new_key(key_begin, min(kStageKeys, key_end - key_begin));
  }
  for (int t = threadIdx.x; t < group * HD; t += kThreads) head_out[t] = 0.0f;
  for (int j = threadIdx.x; j < group; j += kThreads) head_ml[2 * j] = -INFINITY, head_ml[2 * j + 1] = 0.0f;
  first_piece_staged();  // (staged by the producer warp since the previous layer's P2)
  compute_sync();
  if (threadIdx.x == 0) loaded();
  if (stamps && threadIdx.x == 0) stamps[2] = global_timer();

#pragma unroll 1
  for (int piece = key_begin; piece < key_end; piece += kStageKeys) {
    const int n = min(kStageKeys, key_end - piece);
    if (piece != key_begin) {  // long contexts: the next piece now (one round trip each)
      stage_keys<HD>(p, w, kv_head, piece, n, position, stage_k, stage_v, nullptr, threadIdx.x, kThreads);
      cp_async_commit();
      if (warp == kWarps - 1 && has_new) put_new_key(piece, n);
      cp_async_wait<0>();
      compute_sync();
    }
    const int chunks = (n + 31) / 32, items = group * chunks;
#pragma unroll 1
    for (int item = warp; item < items; item += kWarps) {
      const int j = item / chunks, first = 32 * (item % chunks);
      attention_item<HD>(q_s + j * HD, stage_k, stage_v, first, min(32, n - first), lane, item_out + item * HD,
                         item_ml + 2 * item);
    }
    compute_sync();
    // Merge the piece's items into the running (max, sum, output) of each head, in a fixed order; the last piece's
    // merge writes the unit's partials (no second pass over shared memory, two syncs fewer).
    const bool last_piece = piece + kStageKeys >= key_end;
    for (int t = threadIdx.x; t < group * HD; t += kThreads) {
      const int j = t / HD, d = t % HD;
      float top = head_ml[2 * j];
      for (int c = 0; c < chunks; ++c) top = fmaxf(top, item_ml[2 * (j * chunks + c)]);
      const float old_weight = head_ml[2 * j] == -INFINITY ? 0.0f : exp2f(head_ml[2 * j] - top);
      float out = head_out[t] * old_weight, sum = head_ml[2 * j + 1] * old_weight;
      for (int c = 0; c < chunks; ++c) {
        const float weight = exp2f(item_ml[2 * (j * chunks + c)] - top);
        out = fmaf(item_out[(j * chunks + c) * HD + d], weight, out);
        sum = fmaf(item_ml[2 * (j * chunks + c) + 1], weight, sum);
      }
      if (last_piece) {
        const size_t at = size_t(kv_head * group + j) * p.max_splits + split;
        ws.partial_out[at * HD + d] = out;
        if (d == 0) ws.partial_ml[2 * at] = top, ws.partial_ml[2 * at + 1] = sum;
      } else {
        head_out[t] = out;
        if (d == 0) next_ml[2 * j] = top, next_ml[2 * j + 1] = sum;
      }
    }
    if (last_piece) break;
    compute_sync();
    for (int j = threadIdx.x; j < group; j += kThreads)
      head_ml[2 * j] = next_ml[2 * j], head_ml[2 * j + 1] = next_ml[2 * j + 1];
    compute_sync();
  }
  if (stamps && threadIdx.x == 0) stamps[3] = global_timer();
  compute_sync();  // the shared buffers are reused by the next layer
}

template <int HD>
__global__ void __launch_bounds__(kBlockThreads, 1) persistent_decode_kernel(PersistentDecodeParams p) {
  extern __shared__ __align__(16) unsigned char shared[];
  const Layout lay(p, gridDim.x);
  const Workspace ws(p, p.workspace);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int q_width = p.heads * HD, qkv_width = q_width + 2 * p.kv_heads * HD;
  float* vec = reinterpret_cast<float*>(shared + 2 * lay.slice_bytes);  // [vector_floats]
  float* own = vec + lay.vector_floats;                                  // this block's residual rows
  float* scratch = own + lay.own_floats;                                 // [32]
  float* rope_table = scratch + 32;                                      // [head_dim]: cos, sin
  float* attention_shared = rope_table + p.head_dim;

  // The layers' pointers, in shared memory: read from global memory, every use after a grid barrier (whose acquire
  // invalidates L1) would be a round trip of its own before the loads it addresses.
  PersistentLayer* layers =
      reinterpret_cast<PersistentLayer*>(shared + lay.shared_bytes - sizeof(PersistentLayer) * p.n_layers);
  for (int i = threadIdx.x; i < p.n_layers * int(sizeof(PersistentLayer) / 8); i += kBlockThreads)
    reinterpret_cast<uint64_t*>(layers)[i] = __ldg(reinterpret_cast<const uint64_t*>(p.layers) + i);
  // mbarriers of the two weight buffers (by layer parity) and of the staged keys (a phase per layer), the last layer
  // whose weights the producer may copy, and the first layer whose keys it may stage (the staging rows are free).
  __shared__ uint64_t bars[2], keys_bar;
  __shared__ int copy_allowed, keys_free;
  if (threadIdx.x == 0) {
    for (int i = 0; i < 2; ++i) mbarrier_init(&bars[i], kCopyPieces);
    mbarrier_init(&keys_bar, 32);  // the producer lanes' cp.async arrivals
    copy_allowed = 1, keys_free = 0;
  }
  __syncthreads();  // (the only barrier of all kBlockThreads)
  bf16* stage_k = reinterpret_cast<bf16*>(attention_shared + lay.attention_floats);
  bf16* stage_v = stage_k + kStageKeys * stage_stride<HD>();
  int64_t* stage_rows = reinterpret_cast<int64_t*>(stage_v + kStageKeys * stage_stride<HD>());
  if (warp == kWarps) {
    // The producer warp. Weights: layer 0 at once (while the previous kernel still runs: weights are constant), layer
    // 1 after layer 0's keys, then layer L + 1 into buffer (L + 1) & 1 when the compute threads allow it during layer
    // L's P2 (allow_copies); lane 0 issues them. Keys (attention units only, all lanes): a layer's first kStageKeys
    // cached keys into the staging rows once the previous layer's P2 is over, tracked by keys_bar. (Issued by the
    // compute threads, ~4k cp.async per unit and layer made the units the last to leave P3.)
    auto copy_weights = [&](int layer) {
      if (lane == 0) {
        wait_flag(&copy_allowed, layer, 128);  // the compute threads' reads of this buffer (layer - 2) are over
        for (int piece = 0; piece < kCopyPieces; ++piece)
          copy_layer_piece(piece, layers[layer], slices_at(shared + (layer & 1) * lay.slice_bytes, lay), p,
                           lay.pairs, &bars[layer & 1]);
      }
      __syncwarp();
    };
    copy_weights(0);
    wait_for_previous_kernel();  // the step's position and length, and the cache the previous steps wrote
    const int position = *p.position;
    const UnitKeys unit(p, *p.seq_len);
    const int staged = unit.first_piece();
    for (int r = lane; r < staged; r += 32) {  // the cache rows of the unit's first keys (the same in every layer)
      const int key = unit.key_begin + r;
      stage_rows[r] =
          (int64_t(p.block_table[key / p.page_size]) * p.page_size + key % p.page_size) * p.kv_heads + unit.kv_head;
    }
    __syncwarp();
    for (int layer = 0; layer < p.n_layers; ++layer) {
      if (layer > 0) copy_weights(layer);
      if (!unit.has_unit) continue;
      wait_flag(&keys_free, layer, 64);  // the previous layer's reads of the staging rows are over
      stage_keys<HD>(p, layers[layer], unit.kv_head, unit.key_begin, staged, position, stage_k, stage_v, stage_rows,
                     lane, 32);
      cp_async_arrive_noinc(&keys_bar);
    }
    return;
  }
  wait_for_previous_kernel();
  const int token = *p.token, position = *p.position, seq_len = *p.seq_len;
  unsigned long long* trace = blockIdx.x == 0 ? p.trace : nullptr;
  __shared__ unsigned long long block_clock[1 + kPersistentPhases];
  unsigned long long* clock = p.trace ? block_clock : nullptr;
  if (clock && threadIdx.x == 0) {
    block_clock[0] = global_timer();
    for (int k = 0; k < kPersistentPhases; ++k) block_clock[1 + k] = 0;
    if (trace) trace[0] = block_clock[0];
  }
  int barriers = 0;
  auto barrier = [&] {
    grid_barrier(p.barrier, trace ? trace + 1 + 2 * barriers : nullptr, clock, barriers % kPersistentPhases,
                 [] { compute_sync(); });
    ++barriers;
  };
  // Thread 0, in layer L's P2: the producer may copy layer L + 1 into the buffer layer L - 1 used (done: barriers
  // since). Not earlier: a layer's ~60 KB of copies per SM delay the loads issued beside them by ~2 us, and P2 is
  // the phase where 100+ blocks have nothing to load (the attention units allow it once their own loads are in).
  auto allow_copies = [&](int layer) { raise_flag(&copy_allowed, layer + 1); };
  const bf16* embedding = p.embed + size_t(token) * p.hidden;
  const auto sync = [] { compute_sync(); };  // the norms' block barrier
  const RowRange hidden_rows = row_range(p.hidden), qkv_rows = row_range(qkv_width),
                 mlp_rows = row_range(p.intermediate);
  for (int i = threadIdx.x; i < hidden_rows.end - hidden_rows.first; i += kThreads)
    own[i] = __bfloat162float(embedding[hidden_rows.first + i]);
  // RoPE of this step's position, once (every layer rotates by the same angles).
  for (int i = threadIdx.x; i < p.rotary_dim / 2; i += kThreads) {
    float sn, c;
    sincosf(static_cast<float>(position) * p.rope_inv_freq[i], &sn, &c);
    rope_table[i] = c * p.rope_attention_factor;
    rope_table[p.rotary_dim / 2 + i] = sn * p.rope_attention_factor;
  }
  // (the first barrier orders these writes before their readers)
  const UnitKeys unit(p, seq_len);
  const int splits = unit.splits, kv_head = unit.kv_head, split = unit.split;
  const int key_begin = unit.key_begin, key_end = unit.key_end;
  const bool has_unit = unit.has_unit;
  unsigned long long* stamps = trace ? trace + 2 + 2 * kPersistentPhases * p.n_layers : nullptr;
  auto stamp = [&](int layer, int k) {
    if (stamps && threadIdx.x == 0) stamps[kPersistentDetailStamps * layer + k] = global_timer();
  };


  for (int layer = 0; layer < p.n_layers; ++layer) {
    const PersistentLayer& w = layers[layer];
    const Slices s = slices_at(shared + (layer & 1) * lay.slice_bytes, lay);
    mbarrier_wait(&bars[layer & 1], (layer >> 1) & 1);  // this layer's weights (the producer warp's copies)
    stamp(layer, 0);

    // P1: norm, q / k / v rows.
    float inv = 1.0f;
    if (layer == 0)
      load_normed_embedding<kThreads>(embedding, w.input_norm, p.hidden, p.hidden_norm_eps, vec, scratch, sync);
    else
      inv = load_weighted<kThreads>(ws.x, w.input_norm, ws.row_squares + kMaxGrid, p.hidden, p.hidden_norm_eps, vec,
                                    scratch, sync);
    stamp(layer, 1);
    for (int i = warp; i < qkv_rows.end - qkv_rows.first; i += kWarps) {
      const int row = qkv_rows.first + i;
      const float dot = warp_dot(s.qkv + size_t(i) * p.hidden, vec, p.hidden, lane) * inv;
      if (lane == 0) ws.qkv[row] = w.qkv_bias ? dot + w.qkv_bias[row] : dot;
    }
    barrier();

    // P2: attention partials.
    if (has_unit) {
      attention_unit<HD>(p, w, ws, attention_shared, stage_k, stage_v, rope_table, kv_head, split, key_begin, key_end,
                         position, stamps ? stamps + kPersistentDetailStamps * layer : nullptr,
                         [&] { allow_copies(layer); }, [&] { mbarrier_wait(&keys_bar, layer & 1); });
      if (threadIdx.x == 0) raise_flag(&keys_free, layer + 1);  // the staging rows are free (attention_unit synced)
    } else if (threadIdx.x == 0) {
      allow_copies(layer);
    }
    barrier();

    // P3: combine the splits of every head (each block for itself), then o_proj rows into the residual. A thread
    // loads its pair of elements' partial outputs first; meanwhile one warp per head reads the head's (max, sum) per
    // split and turns them into the splits' weights (exp2(max - top) / total; 0 for a split without keys), so an
    // element's combine is a few FMAs. (Per element exp2s behind branches took ~1.7 us per pass.)
    float* split_weight = attention_shared;  // [heads][splits] (P2's shared memory is free now)
    const int pairs_total = q_width / 2;
    float2 partial[kSplitBatch];
    {
      const int t = threadIdx.x, head = 2 * t / HD, d = 2 * t % HD;
#pragma unroll
      for (int b = 0; b < kSplitBatch; ++b)
        partial[b] = t < pairs_total && b < splits
                         ? __ldcg(reinterpret_cast<const float2*>(ws.partial_out +
                                                                   (size_t(head) * p.max_splits + b) * HD + d))
                         : make_float2(0.0f, 0.0f);
    }
    for (int head = warp; head < p.heads; head += kWarps) {
      const float2* ml = reinterpret_cast<const float2*>(ws.partial_ml) + size_t(head) * p.max_splits;
      float2 split_ml[kSplitsPerLane];
      float top = -INFINITY;
#pragma unroll
      for (int j = 0; j < kSplitsPerLane; ++j) {
        split_ml[j] = lane + 32 * j < splits ? __ldcg(ml + lane + 32 * j) : make_float2(-INFINITY, 0.0f);
        top = fmaxf(top, split_ml[j].x);
      }
      top = warp_max(top);
      float weight[kSplitsPerLane], total = 0.0f;
#pragma unroll
      for (int j = 0; j < kSplitsPerLane; ++j) {
        weight[j] = split_ml[j].x == -INFINITY ? 0.0f : exp2f(split_ml[j].x - top);
        total = fmaf(weight[j], split_ml[j].y, total);
      }
      total = warp_sum(total);
#pragma unroll
      for (int j = 0; j < kSplitsPerLane; ++j)
        if (lane + 32 * j < splits) split_weight[head * splits + lane + 32 * j] = weight[j] / total;
    }
    compute_sync();
#pragma unroll 1
    for (int t = threadIdx.x; t < pairs_total; t += kThreads) {
      const int head = 2 * t / HD, d = 2 * t % HD;
      const float* weight = split_weight + head * splits;
      float2 out = make_float2(0.0f, 0.0f);
      if (t == threadIdx.x) {
#pragma unroll
        for (int b = 0; b < kSplitBatch; ++b)
          if (b < splits) out.x = fmaf(weight[b], partial[b].x, out.x), out.y = fmaf(weight[b], partial[b].y, out.y);
      }
#pragma unroll 4
      for (int i = t == threadIdx.x ? kSplitBatch : 0; i < splits; ++i) {  // long contexts, wide rows
        const float2 v =
            __ldcg(reinterpret_cast<const float2*>(ws.partial_out + (size_t(head) * p.max_splits + i) * HD + d));
        out.x = fmaf(weight[i], v.x, out.x), out.y = fmaf(weight[i], v.y, out.y);
      }
      reinterpret_cast<float2*>(vec)[t] = out;
    }
    compute_sync();
    stamp(layer, 4);
    for (int i = warp; i < hidden_rows.end - hidden_rows.first; i += kWarps) {
      const int row = hidden_rows.first + i;
      const float dot = warp_dot(s.o + size_t(i) * q_width, vec, q_width, lane);
      if (lane == 0) ws.x[row] = own[i] += w.o_bias ? dot + w.o_bias[row] : dot;
    }
    compute_sync();
    publish_row_squares(own, hidden_rows.end - hidden_rows.first, ws.row_squares);
    barrier();

    // P4: norm, gate / up pairs, h.
    inv = load_weighted<kThreads>(ws.x, w.post_attention_norm, ws.row_squares, p.hidden, p.hidden_norm_eps, vec,
                                  scratch, sync);
    for (int i = warp; i < mlp_rows.end - mlp_rows.first; i += kWarps) {
      const int row = mlp_rows.first + i;
      const float gate = warp_dot(s.gate_up + size_t(i) * p.hidden, vec, p.hidden, lane) * inv;
      const float up = warp_dot(s.gate_up + size_t(lay.pairs + i) * p.hidden, vec, p.hidden, lane) * inv;
      if (lane == 0) ws.h[row] = silu(gate) * up;
    }
    barrier();

    // P5: down rows into the residual.
    for (int q = threadIdx.x; q < p.intermediate / 4; q += kThreads)
      reinterpret_cast<float4*>(vec)[q] = __ldcg(reinterpret_cast<const float4*>(ws.h) + q);
    compute_sync();
    for (int i = warp; i < hidden_rows.end - hidden_rows.first; i += kWarps) {
      const int row = hidden_rows.first + i;
      const float dot = warp_dot(s.down + size_t(i) * p.intermediate, vec, p.intermediate, lane);
      if (lane == 0) ws.x[row] = own[i] += dot;
    }
    compute_sync();
    publish_row_squares(own, hidden_rows.end - hidden_rows.first, ws.row_squares + kMaxGrid);
    barrier();
  }
  allow_next_kernel_to_start();  // lm_head may get scheduled; it still waits for this kernel to complete
  // The final norm of the block's own rows (in `own`): only the grid's published sums of squares are read.
  published_inv(ws.row_squares + kMaxGrid, p.hidden, p.hidden_norm_eps, scratch);
  compute_sync();
  for (int i = threadIdx.x; i < hidden_rows.end - hidden_rows.first; i += kThreads) {
    const int row = hidden_rows.first + i;
    p.normed_out[row] = (__ldg(p.final_norm + row) * own[i]) * scratch[0];
  }
  if (trace && threadIdx.x == 0) trace[1 + 2 * barriers] = global_timer();
  if (clock && threadIdx.x == 0)
    for (int k = 0; k < kPersistentPhases; ++k)
      p.trace[persistent_decode_block_clocks_at(p.n_layers) + kPersistentPhases * blockIdx.x + k] = block_clock[1 + k];
}

using Kernel = void (*)(PersistentDecodeParams);

Kernel kernel_for(const PersistentDecodeParams& p) {
  return p.head_dim == 64 ? persistent_decode_kernel<64> : persistent_decode_kernel<128>;
}

void check_params(const PersistentDecodeParams& p) {
  const std::string why = persistent_decode_unsupported(p);
  if (!why.empty()) throw std::invalid_argument("persistent_decode: " + why);
}

}  // namespace

std::string persistent_decode_unsupported(const PersistentDecodeParams& p) {
  if (p.head_dim != 64 && p.head_dim != 128)
    return "a head_dim other than 64 / 128 (" + std::to_string(p.head_dim) + ")";
  if (p.kv_heads < 1 || p.heads % p.kv_heads != 0 || p.heads / p.kv_heads > kMaxItems / (kStageKeys / 32))
    return "more than 16 query heads per KV head";
  if (p.hidden % 8 != 0 || p.intermediate % 8 != 0) return "hidden or intermediate widths that are not multiples of 8";
  if (p.rotary_dim > p.head_dim || p.rotary_dim % 2 != 0) return "a rotary_dim that is odd or above head_dim";
  return "";
}

size_t persistent_decode_shared_bytes(const PersistentDecodeParams& params, int grid) {
  if (params.head_dim != 64 && params.head_dim != 128) return 0;
  return Layout(params, grid).shared_bytes;
}

int persistent_decode_max_splits(const PersistentDecodeParams& params, int grid, int64_t max_keys) {
  const int64_t wanted = (max_keys + kKeysPerSplit - 1) / kKeysPerSplit;
  const int64_t most = std::min<int64_t>(grid / std::max(1, params.kv_heads), 32 * kSplitsPerLane);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, most)));
}

size_t persistent_decode_workspace_bytes(const PersistentDecodeParams& params, int max_splits) {
  return Workspace::bytes(params, max_splits);
}

int persistent_decode_grid(const PersistentDecodeParams& params) {
  check_params(params);
  const int grid = cuda::current_device_info().multiprocessors;
  if (grid > kMaxGrid) return 0;
  return one_block_per_sm_grid(kernel_for(params), kBlockThreads, persistent_decode_shared_bytes(params, grid));
}

void persistent_decode(const PersistentDecodeParams& params, cudaStream_t stream) {
  check_params(params);
  const int grid = cuda::current_device_info().multiprocessors;
  const size_t shared = persistent_decode_shared_bytes(params, grid);
  if (params.max_splits < 1 || params.max_splits > grid / params.kv_heads || params.max_splits > 32 * kSplitsPerLane)
    throw std::invalid_argument("persistent_decode: max_splits outside [1, min(grid / kv_heads, 128)]");
  if (grid > kMaxGrid) throw std::invalid_argument("persistent_decode: more SMs than the workspace's kMaxGrid");
  const Kernel kernel = kernel_for(params);
  launch_programmatic("persistent_decode_kernel", kernel, dim3(grid), dim3(kBlockThreads), shared, stream, params);
}

}  // namespace tachyon::kernels
