// The attention units' work items of the persistent kernels: attention_item (persistent_decode) is one warp, one query
// head, up to 32 keys staged in shared memory, on the CUDA cores; attention_chunk_mma (persistent_stream) the same
// keys for all the unit's heads on the tensor cores. Scores in base 2 (q is pre-scaled by log2(e)), the
// softmax numerators and their weighted sum of the values; the caller merges items in a fixed order.
#pragma once
#include <cuda_bf16.h>

#include "common/device_helpers.cuh"

namespace tachyon::kernels {

// Staged key / value rows are padded by 16 bytes so that lanes reading one key each hit distinct banks.
template <int HD>
constexpr int stage_stride() {
  return HD + 8;
}

// Keys [first, first + mine) of the staging rows against q (HD floats, shared): out_row[HD] = sum over the keys of
// exp2(score - max) * v, ml = (max, sum of exp2(score - max)).
template <int HD>
__device__ __forceinline__ void attention_item(const float* q, const __nv_bfloat16* stage_k,
                                               const __nv_bfloat16* stage_v, int first, int mine, int lane,
                                               float* out_row, float* ml) {
  using bf16 = __nv_bfloat16;
  const bool valid = lane < mine;
  float score = -INFINITY;
  if (valid) {  // lane = key; two FMA chains (even / odd 8-dim chunks) halve the dependent latency
    const bf16* k_row = stage_k + (first + lane) * stage_stride<HD>();
    float chain[2] = {0.0f, 0.0f};
#pragma unroll
    for (int c = 0; c < HD / 8; ++c) {
      const uint4 raw = *reinterpret_cast<const uint4*>(k_row + 8 * c);
      const float4 qa = *reinterpret_cast<const float4*>(q + 8 * c);
      const float4 qb = *reinterpret_cast<const float4*>(q + 8 * c + 4);
      const float2 k0 = unpack_bf16x2(raw.x), k1 = unpack_bf16x2(raw.y);
      const float2 k2 = unpack_bf16x2(raw.z), k3 = unpack_bf16x2(raw.w);
      float& acc = chain[c & 1];
      acc = fmaf(qa.x, k0.x, fmaf(qa.y, k0.y, fmaf(qa.z, k1.x, fmaf(qa.w, k1.y, acc))));
      acc = fmaf(qb.x, k2.x, fmaf(qb.y, k2.y, fmaf(qb.z, k3.x, fmaf(qb.w, k3.y, acc))));
    }
    score = chain[0] + chain[1];
  }
  const float top = warp_max(score);
  const float prob = valid ? exp2f(score - top) : 0.0f;
  const float sum = warp_sum(prob);
  // Values: lane = (key group g of 4, dims [part * kDims, +kDims)); a lane takes every 4th key of the item, so a
  // warp covers 4 keys per step with 16-byte reads, then the 4 groups' sums meet by shuffles. (Lane = dims over
  // all 32 keys was a 32-step dependent chain of 4-byte reads: most of the items' ~2.9 us per layer.)
  constexpr int kDims = HD / 8;
  const int g = lane >> 3, part = lane & 7;
  float out[kDims];
#pragma unroll
  for (int d = 0; d < kDims; ++d) out[d] = 0.0f;
#pragma unroll
  for (int step = 0; step < 8; ++step) {
    const int kk = g + 4 * step;
    const float pk = __shfl_sync(0xffffffffu, prob, kk);
    if (kk < mine) {  // (rows past the piece hold stale data: 0 * NaN must not happen)
      const bf16* v_row = stage_v + (first + kk) * stage_stride<HD>() + part * kDims;
#pragma unroll
      for (int c = 0; c < kDims / 8; ++c) {
        const uint4 raw = *reinterpret_cast<const uint4*>(v_row + 8 * c);
        const float2 v[4] = {unpack_bf16x2(raw.x), unpack_bf16x2(raw.y), unpack_bf16x2(raw.z),
                             unpack_bf16x2(raw.w)};
        float* o = out + 8 * c;
#pragma unroll
        for (int i = 0; i < 4; ++i)
          o[2 * i] = fmaf(pk, v[i].x, o[2 * i]), o[2 * i + 1] = fmaf(pk, v[i].y, o[2 * i + 1]);
      }
    }
  }
#pragma unroll
  for (int d = 0; d < kDims; ++d) {
    out[d] += __shfl_xor_sync(0xffffffffu, out[d], 8);
    out[d] += __shfl_xor_sync(0xffffffffu, out[d], 16);
  }
  if (g == 0) {
#pragma unroll
    for (int d = 0; d < kDims; d += 4)
      *reinterpret_cast<float4*>(out_row + part * kDims + d) =
          make_float4(out[d], out[d + 1], out[d + 2], out[d + 3]);
  }
  if (lane == 0) ml[0] = top, ml[1] = sum;
}

// The streamed kernel's item on the tensor cores: keys [first, first + mine) (mine <= 32) of the staging rows against
// all `group` (<= 16) query heads of the unit at once, as the per-op decode_attention computes them: the rows of the
// m16n8k16 tiles are heads, S = Q K^T (q split into bf16 hi + lo, four 8-key column tiles), P = exp2(S - max) rounded
// to bf16, O = P V (S's accumulators are the A fragments of the second product), float accumulators. Head j's sums
// go to item_out[(j * chunks + chunk) * HD..] and its (max, sum) to item_ml[2 (j * chunks + chunk)..], the layout of
// the per-head items. (attention_item above, a warp per (head, 32 keys) on the CUDA cores, took ~3 us per item with
// 16 warps sharing the SM's issue slots: Qwen3-30B-A3B, session 13.)
template <int HD>
__device__ __forceinline__ void attention_chunk_mma(const float* q_s, int group, const __nv_bfloat16* stage_k,
                                                    const __nv_bfloat16* stage_v, int first, int mine, int chunk,
                                                    int chunks, int lane, float* item_out, float* item_ml) {
  constexpr int kStride = stage_stride<HD>();
  const int g = lane >> 2, t = lane & 3;
  float s[4][4];
#pragma unroll
  for (int n = 0; n < 4; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
  // S: 32 dims per step (two k16 halves), q's fragments of rows g and g + 8 (heads; zero past the group).
#pragma unroll
  for (int kk = 0; kk < HD / 32; ++kk) {
    uint32_t q_hi[2][4], q_lo[2][4];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int k0 = 32 * kk + 16 * half + 2 * t;
#pragma unroll
      for (int r = 0; r < 4; ++r) {  // a[r]: row g + 8 (r & 1), dims k0 + 8 (r >> 1)
        const int head = g + 8 * (r & 1);
        const float2 x = head < group ? *reinterpret_cast<const float2*>(q_s + head * HD + k0 + 8 * (r >> 1))
                                      : make_float2(0.0f, 0.0f);
        split_bf16x2(x.x, x.y, q_hi[half][r], q_lo[half][r]);
      }
    }
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      uint32_t b[4];
      ldmatrix_x4(b, stage_k + (first + 8 * n + (lane & 7)) * kStride + 32 * kk + 8 * (lane >> 3));
      mma_bf16_16x8x16(s[n], q_hi[0], b[0], b[1]);
      mma_bf16_16x8x16(s[n], q_lo[0], b[0], b[1]);
      mma_bf16_16x8x16(s[n], q_hi[1], b[2], b[3]);
      mma_bf16_16x8x16(s[n], q_lo[1], b[2], b[3]);
    }
  }
  // Softmax over the item's keys: accumulator c of tile n is row g + 8 (c >> 1), key 8 n + 2 t + (c & 1); a row's
  // keys are spread over its 4 lanes. Keys past `mine` (stale staging rows) are masked.
  float top[2] = {-INFINITY, -INFINITY}, sum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int n = 0; n < 4; ++n)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      if (8 * n + 2 * t + (c & 1) >= mine) s[n][c] = -INFINITY;
      top[c >> 1] = fmaxf(top[c >> 1], s[n][c]);
    }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    top[h] = fmaxf(top[h], __shfl_xor_sync(0xffffffffu, top[h], 1));
    top[h] = fmaxf(top[h], __shfl_xor_sync(0xffffffffu, top[h], 2));
  }
#pragma unroll
  for (int n = 0; n < 4; ++n)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      s[n][c] = exp2f(s[n][c] - top[c >> 1]);
      sum[c >> 1] += s[n][c];
    }
  // O = P V, 64 dims at a time (32 accumulators). V's fragments of keys past `mine` are zeroed: a stale row may hold
  // any bits, and 0 * NaN is NaN.
#pragma unroll
  for (int part = 0; part < HD / 64; ++part) {
    float o[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      const uint32_t a[4] = {pack_bf16x2(s[2 * ks][0], s[2 * ks][1]), pack_bf16x2(s[2 * ks][2], s[2 * ks][3]),
                             pack_bf16x2(s[2 * ks + 1][0], s[2 * ks + 1][1]),
                             pack_bf16x2(s[2 * ks + 1][2], s[2 * ks + 1][3])};
      const int key = 16 * ks + 2 * t;  // b[0], b[2]: keys key, key + 1; b[1], b[3]: key + 8, key + 9
      const uint32_t low = (key < mine ? 0xffffu : 0u) | (key + 1 < mine ? 0xffff0000u : 0u);
      const uint32_t high = (key + 8 < mine ? 0xffffu : 0u) | (key + 9 < mine ? 0xffff0000u : 0u);
      const int matrix = lane >> 3;
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, stage_v + (first + 16 * ks + (lane & 7) + 8 * (matrix & 1)) * kStride + 64 * part +
                                 16 * u + 8 * (matrix >> 1));
        mma_bf16_16x8x16(o[2 * u], a, b[0] & low, b[1] & high);
        mma_bf16_16x8x16(o[2 * u + 1], a, b[2] & low, b[3] & high);
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int head = g + 8 * h;
      if (head >= group) continue;
      float* out = item_out + (head * chunks + chunk) * HD + 64 * part + 2 * t;
#pragma unroll
      for (int n = 0; n < 8; ++n) *reinterpret_cast<float2*>(out + 8 * n) = make_float2(o[n][2 * h], o[n][2 * h + 1]);
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    sum[h] += __shfl_xor_sync(0xffffffffu, sum[h], 1);
    sum[h] += __shfl_xor_sync(0xffffffffu, sum[h], 2);
    const int head = g + 8 * h;
    if (t == 0 && head < group) {
      item_ml[2 * (head * chunks + chunk)] = top[h];
      item_ml[2 * (head * chunks + chunk) + 1] = sum[h];
    }
  }
}

}  // namespace tachyon::kernels
