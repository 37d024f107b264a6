// The attention units' work item, shared by the persistent kernels (persistent_decode, persistent_stream): one
// warp, one query head, up to 32 keys staged in shared memory. Scores in base 2 (q is pre-scaled by log2(e)), the
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

}  // namespace tachyon::kernels
