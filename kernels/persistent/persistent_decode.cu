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
#include "rope/rope_device.cuh"

namespace tachyon::kernels {

namespace {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 512, kWarps = kThreads / 32;
constexpr int kKeysPerSplit = 128;   // the key split's target length (more splits: more work units, longer merge)

// Block-private row slices of one layer's matrices and the shared-memory carve-up, the same on host and device.
struct Layout {
  int grid = 0;
  int qkv_rows = 0, o_rows = 0, pairs = 0, down_rows = 0;  // per block (the most any block has)
  size_t qkv_bytes = 0, o_bytes = 0, gate_up_bytes = 0, down_bytes = 0, slice_bytes = 0;
  int vector_floats = 0;   // the widest activation row a phase stages (hidden, q_width or intermediate)
  int attention_floats = 0;
  size_t shared_bytes = 0;

  __host__ __device__ Layout(const PersistentDecodeParams& p, int g) : grid(g) {
    const int q_width = p.heads * p.head_dim, qkv_width = q_width + 2 * p.kv_heads * p.head_dim;
    qkv_rows = (qkv_width + g - 1) / g;
    o_rows = (p.hidden + g - 1) / g;
    pairs = (p.intermediate + g - 1) / g;
    down_rows = o_rows;
    qkv_bytes = size_t(qkv_rows) * p.hidden * 2;
    o_bytes = size_t(o_rows) * q_width * 2;
    gate_up_bytes = size_t(pairs) * 2 * p.hidden * 2;
    down_bytes = size_t(down_rows) * p.intermediate * 2;
    slice_bytes = qkv_bytes + o_bytes + gate_up_bytes + down_bytes;
    vector_floats = p.hidden > q_width ? p.hidden : q_width;
    if (p.intermediate > vector_floats) vector_floats = p.intermediate;
    const int group = p.kv_heads > 0 ? p.heads / p.kv_heads : 1;
    // q heads, new k and v, per-warp probabilities, per-warp (max, sum, output) for the merge.
    attention_floats = group * p.head_dim + 2 * p.head_dim + kWarps * group * 32 + kWarps * group * (p.head_dim + 2);
    shared_bytes = 2 * slice_bytes + sizeof(float) * (size_t(vector_floats) + o_rows + 32 + attention_floats);
  }
};

// Global scratch: [qkv | h | x | partial outputs | partial (max, sum)].
struct Workspace {
  float *qkv, *h, *x, *partial_out, *partial_ml;
  __host__ __device__ Workspace(const PersistentDecodeParams& p, void* base) {
    const int q_width = p.heads * p.head_dim, qkv_width = q_width + 2 * p.kv_heads * p.head_dim;
    qkv = static_cast<float*>(base);
    h = qkv + qkv_width;
    x = h + p.intermediate;
    partial_out = x + p.hidden;
    partial_ml = partial_out + size_t(p.heads) * p.max_splits * p.head_dim;
  }
  static size_t bytes(const PersistentDecodeParams& p, int max_splits) {
    const int q_width = p.heads * p.head_dim, qkv_width = q_width + 2 * p.kv_heads * p.head_dim;
    return sizeof(float) * (size_t(qkv_width) + p.intermediate + p.hidden +
                            size_t(p.heads) * max_splits * (p.head_dim + 2));
  }
};

// Every block arrives once per barrier; the counter only grows, so the target is the end of this ticket's round.
// __threadfence before the arrival publishes the block's writes (made visible to thread 0 by __syncthreads); the
// acquire load orders the reads after it. Cross-block data is then read with ld.global.cg (L2), never through L1.
__device__ __forceinline__ unsigned long long global_timer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// trace (block 0 only, may be null): the arrival and release times go to trace[0] and trace[1].
__device__ __forceinline__ void grid_barrier(unsigned long long* counter, unsigned long long* trace) {
  __syncthreads();
  if (threadIdx.x == 0) {
    if (trace) trace[0] = global_timer();
    __threadfence();
    const unsigned long long ticket = atomicAdd(counter, 1ull);
    const unsigned long long target = (ticket / gridDim.x + 1) * gridDim.x;
    unsigned long long seen;
    do {
      asm volatile("ld.acquire.gpu.global.u64 %0, [%1];\n" : "=l"(seen) : "l"(counter) : "memory");
    } while (seen < target);
    if (trace) trace[1] = global_timer();
  }
  __syncthreads();
}

// Copies rows b, b + G, ... (< rows) of a [rows, cols] bf16 matrix into consecutive shared rows.
__device__ __forceinline__ void copy_row_slice(bf16* dst, const bf16* src, int rows, int cols, int slice_rows) {
  const int chunks_per_row = cols / 8, chunks = slice_rows * chunks_per_row;
  for (int c = threadIdx.x; c < chunks; c += kThreads) {
    const int i = c / chunks_per_row, part = c - i * chunks_per_row;
    const int row = blockIdx.x + gridDim.x * i;
    if (row < rows) cp_async_16B(dst + size_t(i) * cols + 8 * part, src + size_t(row) * cols + 8 * part);
  }
}

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

// A layer's slices: gate row and up row of pair i sit next to each other ([pair][gate | up]).
__device__ __forceinline__ void copy_layer_slices(const PersistentLayer& w, const Slices& s, const Layout& lay,
                                                  const PersistentDecodeParams& p) {
  const int q_width = p.heads * p.head_dim, qkv_width = q_width + 2 * p.kv_heads * p.head_dim;
  copy_row_slice(s.qkv, w.qkv, qkv_width, p.hidden, lay.qkv_rows);
  copy_row_slice(s.o, w.o, p.hidden, q_width, lay.o_rows);
  const int chunks_per_row = p.hidden / 8, chunks = lay.pairs * 2 * chunks_per_row;
  for (int c = threadIdx.x; c < chunks; c += kThreads) {
    const int r = c / chunks_per_row, part = c - r * chunks_per_row, i = r >> 1, which = r & 1;
    const int row = blockIdx.x + gridDim.x * i;
    if (row < p.intermediate)
      cp_async_16B(s.gate_up + size_t(r) * p.hidden + 8 * part,
                   w.gate_up + (size_t(which) * p.intermediate + row) * p.hidden + 8 * part);
  }
  copy_row_slice(s.down, w.down, p.hidden, p.intermediate, lay.down_rows);
}

// One warp: dot of a bf16 row (shared) with a float vector (shared), n a multiple of 8. Every lane gets the sum.
__device__ __forceinline__ float warp_dot(const bf16* row, const float* v, int n, int lane) {
  float sum = 0.0f;
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

// out[i] = weight[i] * x[i] / rms(x) over a row of n floats (n a multiple of 4), x from global memory written by
// other blocks (L2 reads), or from a bf16 embedding row when `embedding` is set.
__device__ __forceinline__ void load_normed(const float* x, const bf16* embedding, const float* weight, int n,
                                            float eps, float* out, float* scratch) {
  float squares = 0.0f;
  for (int q = threadIdx.x; q < n / 4; q += kThreads) {
    float4 v;
    if (embedding) {
      const uint2 raw = __ldg(reinterpret_cast<const uint2*>(embedding) + q);
      const float2 a = unpack_bf16x2(raw.x), b = unpack_bf16x2(raw.y);
      v = make_float4(a.x, a.y, b.x, b.y);
    } else {
      v = __ldcg(reinterpret_cast<const float4*>(x) + q);
    }
    squares = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, squares))));
    reinterpret_cast<float4*>(out)[q] = v;
  }
  const float inv = 1.0f / sqrtf(block_sum(squares, scratch) / static_cast<float>(n) + eps);
  for (int i = threadIdx.x; i < n; i += kThreads) out[i] = weight[i] * (out[i] * inv);
  __syncthreads();
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

// One warp: loads head `src` (HD floats, L2) into `dst`, applies the optional head norm and RoPE.
template <int HD>
__device__ __forceinline__ void load_rotated_head(const float* src, const float* norm_weight, float* dst,
                                                  const PersistentDecodeParams& p, int position, int lane) {
#pragma unroll
  for (int d = lane; d < HD; d += 32) dst[d] = __ldcg(src + d);
  __syncwarp();
  if (norm_weight) norm_head<HD>(dst, norm_weight, p.head_norm_eps, lane);
  float freq[4];
  load_rope_frequencies(p.rope_inv_freq, p.rotary_dim, lane, freq);
  rotate_head_in_shared(dst, p.rotary_dim, position, freq, p.rope_attention_factor, p.rope_interleaved, lane);
  __syncwarp();
}

// P2 for one (KV head, split) unit: softmax partials of the unit's keys for the group's query heads.
template <int HD, int GROUP>
__device__ void attention_unit(const PersistentDecodeParams& p, const PersistentLayer& w, const Workspace& ws,
                               float* attention_shared, int kv_head, int split, int key_begin, int key_end,
                               int position) {
  constexpr int kDims = HD / 32;  // per lane in the value pass
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr int group = GROUP;
  const int q_width = p.heads * HD, kv_width = p.kv_heads * HD;
  float* q_s = attention_shared;           // [group][HD], rotated and scaled
  float* k_new = q_s + group * HD;         // [HD] the new key / value, rounded to bf16 as the cache holds them
  float* v_new = k_new + HD;
  float* p_s = v_new + HD;                 // [warp][group][32]
  float* merge = p_s + kWarps * group * 32;  // [warp][group][HD + 2]
  const bool has_new = position >= key_begin && position < key_end;
  if (warp < group) {
    const int head = kv_head * group + warp;
    float* q = q_s + warp * HD;
    load_rotated_head<HD>(ws.qkv + head * HD, w.q_norm, q, p, position, lane);
#pragma unroll
    for (int d = lane; d < HD; d += 32) q[d] *= p.attention_scale;
  } else if (warp == kWarps - 1 && has_new) {
    load_rotated_head<HD>(ws.qkv + q_width + kv_head * HD, w.k_norm, k_new, p, position, lane);
    const size_t row = (size_t(p.block_table[position / p.page_size]) * p.page_size + position % p.page_size) *
                           p.kv_heads + kv_head;
#pragma unroll
    for (int d = lane; d < HD; d += 32) {
      const bf16 k = __float2bfloat16_rn(k_new[d]);
      const bf16 v = __float2bfloat16_rn(__ldcg(ws.qkv + q_width + kv_width + kv_head * HD + d));
      w.k_pages[row * HD + d] = k;
      w.v_pages[row * HD + d] = v;
      k_new[d] = __bfloat162float(k);
      v_new[d] = __bfloat162float(v);
    }
  }
  __syncthreads();

  float m[GROUP], l[GROUP], acc[GROUP][kDims];
#pragma unroll
  for (int j = 0; j < GROUP; ++j) {
    m[j] = -INFINITY;
    l[j] = 0.0f;
#pragma unroll
    for (int d = 0; d < kDims; ++d) acc[j][d] = 0.0f;
  }
  float* my_p = p_s + warp * group * 32;
  // Value words per lane and key (bf16 pairs), and how many keys' values one batch loads at once: every load of a
  // chunk is issued before its first use (a chain of one round trip per key cost ~20 us per layer at 1k keys).
  constexpr int kValueWords = HD / 64, kBatch = HD == 64 ? 32 : 8;
  for (int chunk = key_begin + 32 * warp; chunk < key_end; chunk += 32 * kWarps) {
    const int key = chunk + lane, n_keys = min(32, key_end - chunk);
    const bool valid = key < key_end;
    size_t row = 0;
    if (valid)
      row = ((size_t(__ldg(p.block_table + key / p.page_size)) * p.page_size + key % p.page_size) * p.kv_heads +
             kv_head) * HD;
    const bool cached = valid && key != position;
    uint4 raw[HD / 8];
#pragma unroll
    for (int c = 0; c < HD / 8; ++c)
      raw[c] = cached ? __ldg(reinterpret_cast<const uint4*>(w.k_pages + row) + c) : make_uint4(0, 0, 0, 0);
    uint32_t values[kBatch][kValueWords];
    auto load_values = [&](int first) {
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const size_t v_row = __shfl_sync(0xffffffffu, row, first + b);
        const int k = chunk + first + b;
#pragma unroll
        for (int word = 0; word < kValueWords; ++word)
          values[b][word] = first + b < n_keys && k != position
                                ? __ldg(reinterpret_cast<const uint32_t*>(w.v_pages + v_row) + kValueWords * lane + word)
                                : 0u;
      }
    };
    load_values(0);
    float s[GROUP];
#pragma unroll
    for (int j = 0; j < GROUP; ++j) s[j] = 0.0f;
#pragma unroll
    for (int c = 0; c < HD / 8; ++c) {
      const uint32_t words[4] = {raw[c].x, raw[c].y, raw[c].z, raw[c].w};
#pragma unroll
      for (int h = 0; h < 4; ++h) {
        const int d = 8 * c + 2 * h;
        const float2 k = cached ? unpack_bf16x2(words[h]) : make_float2(k_new[d], k_new[d + 1]);
#pragma unroll
        for (int j = 0; j < GROUP; ++j) {
          const float2 q = *reinterpret_cast<const float2*>(q_s + j * HD + d);
          s[j] = fmaf(q.y, k.y, fmaf(q.x, k.x, s[j]));
        }
      }
    }
#pragma unroll
    for (int j = 0; j < GROUP; ++j) {
      const float chunk_max = warp_max(valid ? s[j] : -INFINITY);
      const float new_max = fmaxf(m[j], chunk_max);
      const float correction = expf(m[j] - new_max);  // 0 while m is -inf
      const float prob = valid ? expf(s[j] - new_max) : 0.0f;
      l[j] = l[j] * correction + warp_sum(prob);
#pragma unroll
      for (int d = 0; d < kDims; ++d) acc[j][d] *= correction;
      m[j] = new_max;
      my_p[j * 32 + lane] = prob;
    }
    __syncwarp();
#pragma unroll
    for (int first = 0; first < 32; first += kBatch) {
      if (first >= n_keys) break;
      if (first > 0) load_values(first);
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        if (first + b >= n_keys) break;
        float v[kDims];
        if (chunk + first + b == position) {
#pragma unroll
          for (int d = 0; d < kDims; ++d) v[d] = v_new[lane * kDims + d];
        } else {
#pragma unroll
          for (int word = 0; word < kValueWords; ++word) {
            const float2 pair = unpack_bf16x2(values[b][word]);
            v[2 * word] = pair.x, v[2 * word + 1] = pair.y;
          }
        }
#pragma unroll
        for (int j = 0; j < GROUP; ++j) {
          const float prob = my_p[j * 32 + first + b];
#pragma unroll
          for (int d = 0; d < kDims; ++d) acc[j][d] = fmaf(prob, v[d], acc[j][d]);
        }
      }
    }
    __syncwarp();
  }
  // Merge the warps (fixed order), then one partial per query head for the combine in P3.
#pragma unroll
  for (int j = 0; j < GROUP; ++j) {
    float* mine = merge + (warp * group + j) * (HD + 2);
#pragma unroll
    for (int d = 0; d < kDims; ++d) mine[lane * kDims + d] = acc[j][d];
    if (lane == 0) mine[HD] = m[j], mine[HD + 1] = l[j];
  }
  __syncthreads();
  for (int t = threadIdx.x; t < group * HD; t += kThreads) {
    const int j = t / HD, d = t % HD;
    float top = -INFINITY;
    for (int v = 0; v < kWarps; ++v) top = fmaxf(top, merge[(v * group + j) * (HD + 2) + HD]);
    float out = 0.0f, sum = 0.0f;
    for (int v = 0; v < kWarps; ++v) {
      const float* theirs = merge + (v * group + j) * (HD + 2);
      if (theirs[HD] == -INFINITY) continue;  // no keys
      const float weight = expf(theirs[HD] - top);
      out = fmaf(theirs[d], weight, out);
      sum = fmaf(theirs[HD + 1], weight, sum);
    }
    const size_t at = size_t(kv_head * group + j) * p.max_splits + split;
    ws.partial_out[at * HD + d] = out;
    if (d == 0) ws.partial_ml[2 * at] = top, ws.partial_ml[2 * at + 1] = sum;
  }
  __syncthreads();  // the shared buffers are reused by the next unit
}

template <int HD, int GROUP>
__global__ void __launch_bounds__(kThreads, 1) persistent_decode_kernel(PersistentDecodeParams p) {
  extern __shared__ __align__(16) unsigned char shared[];
  const Layout lay(p, gridDim.x);
  const Workspace ws(p, p.workspace);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int q_width = p.heads * HD, qkv_width = q_width + 2 * p.kv_heads * HD;
  float* vec = reinterpret_cast<float*>(shared + 2 * lay.slice_bytes);  // [vector_floats]
  float* own = vec + lay.vector_floats;                                  // this block's residual rows
  float* scratch = own + lay.o_rows;                                     // [32]
  float* attention_shared = scratch + 32;

  // The first layer's weights stream while the previous kernel finishes (they are constant).
  copy_layer_slices(p.layers[0], slices_at(shared, lay), lay, p);
  cp_async_commit();
  wait_for_previous_kernel();
  const int token = *p.token, position = *p.position, seq_len = *p.seq_len;
  unsigned long long* trace = blockIdx.x == 0 ? p.trace : nullptr;
  if (trace && threadIdx.x == 0) trace[0] = global_timer();
  int barriers = 0;
  auto barrier = [&] {
    grid_barrier(p.barrier, trace ? trace + 1 + 2 * barriers : nullptr);
    ++barriers;
  };
  const bf16* embedding = p.embed + size_t(token) * p.hidden;
  for (int i = threadIdx.x; i < lay.o_rows; i += kThreads) {
    const int row = blockIdx.x + gridDim.x * i;
    own[i] = row < p.hidden ? __bfloat162float(embedding[row]) : 0.0f;
  }
  const int splits = min(p.max_splits, (seq_len + kKeysPerSplit - 1) / kKeysPerSplit);
  const int keys_per_split = (seq_len + splits - 1) / splits;

  for (int layer = 0; layer < p.n_layers; ++layer) {
    const PersistentLayer& w = p.layers[layer];
    const Slices s = slices_at(shared + (layer & 1) * lay.slice_bytes, lay);
    if (layer + 1 < p.n_layers)
      copy_layer_slices(p.layers[layer + 1], slices_at(shared + ((layer + 1) & 1) * lay.slice_bytes, lay), lay, p);
    cp_async_commit();
    cp_async_wait<1>();  // this layer's slices have landed (this thread's copies; the barrier below: everyone's)

    // P1: norm, q / k / v rows.
    load_normed(ws.x, layer == 0 ? embedding : nullptr, w.input_norm, p.hidden, p.hidden_norm_eps, vec, scratch);
    for (int i = warp; i < lay.qkv_rows; i += kWarps) {
      const int row = blockIdx.x + gridDim.x * i;
      if (row >= qkv_width) break;
      const float dot = warp_dot(s.qkv + size_t(i) * p.hidden, vec, p.hidden, lane);
      if (lane == 0) ws.qkv[row] = w.qkv_bias ? dot + w.qkv_bias[row] : dot;
    }
    barrier();

    // P2: attention partials.
    for (int unit = blockIdx.x; unit < p.kv_heads * splits; unit += gridDim.x) {
      const int kv_head = unit / splits, split = unit % splits;
      const int begin = split * keys_per_split, end = min(seq_len, begin + keys_per_split);
      attention_unit<HD, GROUP>(p, w, ws, attention_shared, kv_head, split, begin, end, position);
    }
    barrier();

    // P3: combine the splits of every head (each block for itself), then o_proj rows into the residual.
    for (int t = threadIdx.x; t < q_width; t += kThreads) {
      const int head = t / HD, d = t % HD;
      float top = -INFINITY, out = 0.0f, sum = 0.0f;
#pragma unroll 4
      for (int split = 0; split < splits; ++split) {
        const size_t at = size_t(head) * p.max_splits + split;
        const float split_max = __ldcg(ws.partial_ml + 2 * at), split_sum = __ldcg(ws.partial_ml + 2 * at + 1);
        const float split_out = __ldcg(ws.partial_out + at * HD + d);
        const float new_top = fmaxf(top, split_max);
        const float old_weight = expf(top - new_top), weight = expf(split_max - new_top);
        out = out * old_weight + split_out * weight;
        sum = sum * old_weight + split_sum * weight;
        top = new_top;
      }
      vec[t] = out / sum;
    }
    __syncthreads();
    for (int i = warp; i < lay.o_rows; i += kWarps) {
      const int row = blockIdx.x + gridDim.x * i;
      if (row >= p.hidden) break;
      const float dot = warp_dot(s.o + size_t(i) * q_width, vec, q_width, lane);
      if (lane == 0) ws.x[row] = own[i] += w.o_bias ? dot + w.o_bias[row] : dot;
    }
    barrier();

    // P4: norm, gate / up pairs, h.
    load_normed(ws.x, nullptr, w.post_attention_norm, p.hidden, p.hidden_norm_eps, vec, scratch);
    for (int i = warp; i < lay.pairs; i += kWarps) {
      const int row = blockIdx.x + gridDim.x * i;
      if (row >= p.intermediate) break;
      const float gate = warp_dot(s.gate_up + size_t(2 * i) * p.hidden, vec, p.hidden, lane);
      const float up = warp_dot(s.gate_up + size_t(2 * i + 1) * p.hidden, vec, p.hidden, lane);
      if (lane == 0) ws.h[row] = silu(gate) * up;
    }
    barrier();

    // P5: down rows into the residual.
    for (int q = threadIdx.x; q < p.intermediate / 4; q += kThreads)
      reinterpret_cast<float4*>(vec)[q] = __ldcg(reinterpret_cast<const float4*>(ws.h) + q);
    __syncthreads();
    for (int i = warp; i < lay.down_rows; i += kWarps) {
      const int row = blockIdx.x + gridDim.x * i;
      if (row >= p.hidden) break;
      const float dot = warp_dot(s.down + size_t(i) * p.intermediate, vec, p.intermediate, lane);
      if (lane == 0) ws.x[row] = own[i] += dot;
    }
    barrier();
  }
  cp_async_wait<0>();
  allow_next_kernel_to_start();  // lm_head may get scheduled; it still waits for this kernel to complete
  load_normed(ws.x, nullptr, p.final_norm, p.hidden, p.hidden_norm_eps, vec, scratch);
  for (int i = threadIdx.x; i < lay.o_rows; i += kThreads) {
    const int row = blockIdx.x + gridDim.x * i;
    if (row < p.hidden) p.normed_out[row] = vec[row];
  }
  if (trace && threadIdx.x == 0) trace[1 + 2 * barriers] = global_timer();
}

using Kernel = void (*)(PersistentDecodeParams);

// The instances: head_dim 64 / 128 x query heads per KV head 1, 2, 3, 4, 8 (the per-head softmax state lives in
// registers, sized at compile time).
template <int HD>
Kernel kernel_for_group(int group) {
  switch (group) {
    case 1: return persistent_decode_kernel<HD, 1>;
    case 2: return persistent_decode_kernel<HD, 2>;
    case 3: return persistent_decode_kernel<HD, 3>;
    case 4: return persistent_decode_kernel<HD, 4>;
    case 8: return persistent_decode_kernel<HD, 8>;
    default: return nullptr;
  }
}

Kernel kernel_for(const PersistentDecodeParams& p) {
  return p.head_dim == 64 ? kernel_for_group<64>(p.heads / p.kv_heads) : kernel_for_group<128>(p.heads / p.kv_heads);
}

void check_params(const PersistentDecodeParams& p) {
  auto bad = [](const std::string& why) { throw std::invalid_argument("persistent_decode: " + why); };
  if (p.head_dim != 64 && p.head_dim != 128) bad("head_dim must be 64 or 128, got " + std::to_string(p.head_dim));
  if (p.kv_heads < 1 || p.heads % p.kv_heads != 0 || !persistent_decode_supports_group(p.heads / p.kv_heads))
    bad("heads / kv_heads must be 1, 2, 3, 4 or 8");
  if (p.hidden % 8 != 0 || p.intermediate % 8 != 0) bad("hidden and intermediate widths must be multiples of 8");
  if (p.rotary_dim > p.head_dim || p.rotary_dim % 2 != 0) bad("rotary_dim must be even and at most head_dim");
}

}  // namespace

bool persistent_decode_supports_group(int group) { return group == 1 || group == 2 || group == 3 || group == 4 || group == 8; }

size_t persistent_decode_shared_bytes(const PersistentDecodeParams& params, int grid) {
  if (params.head_dim != 64 && params.head_dim != 128) return 0;
  return Layout(params, grid).shared_bytes;
}

int persistent_decode_max_splits(const PersistentDecodeParams& params, int grid, int64_t max_keys) {
  const int64_t wanted = (max_keys + kKeysPerSplit - 1) / kKeysPerSplit;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, grid / std::max(1, params.kv_heads))));
}

size_t persistent_decode_workspace_bytes(const PersistentDecodeParams& params, int max_splits) {
  return Workspace::bytes(params, max_splits);
}

int persistent_decode_grid(const PersistentDecodeParams& params) {
  check_params(params);
  const cuda::DeviceInfo& device = cuda::current_device_info();
  const int grid = device.multiprocessors;
  const size_t shared = persistent_decode_shared_bytes(params, grid);
  if (shared > device.shared_memory_per_block_optin) return 0;
  const Kernel kernel = kernel_for(params);
  TACHYON_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
  int per_sm = 0;
  TACHYON_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, shared));
  return per_sm >= 1 ? grid : 0;
}

void persistent_decode(const PersistentDecodeParams& params, cudaStream_t stream) {
  check_params(params);
  const int grid = cuda::current_device_info().multiprocessors;
  const size_t shared = persistent_decode_shared_bytes(params, grid);
  if (params.max_splits < 1 || params.max_splits > grid / params.kv_heads)
    throw std::invalid_argument("persistent_decode: max_splits outside [1, grid / kv_heads]");
  const Kernel kernel = kernel_for(params);
  launch_programmatic("persistent_decode_kernel", kernel, dim3(grid), dim3(kThreads), shared, stream, params);
}

}  // namespace tachyon::kernels
