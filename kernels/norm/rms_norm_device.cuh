// The arithmetic of add_rms_norm, shared by the norm kernel (rms_norm.cu) and the gemv that fuses the norm into its
// prologue (gemv_bf16.cu, ResidualNorm), so that both produce the same bits: the decode step (fused at 1..2 tokens)
// and a verify pass (separate kernels at more tokens) must normalize identically, or speculative decoding would
// drift from plain greedy decoding.
//
// The reduction has a fixed shape: float4 i of a row belongs to lane i % kNormLanes, each lane sums its float4s in
// order (explicitly rounded operations: no contraction choices left to the compiler), lanes are summed with
// warp_sum in groups of 32, and the kNormLanes / 32 group sums are added in order from 0.
#pragma once
#include "common/device_helpers.cuh"

namespace tachyon::kernels {

constexpr int kNormLanes = 256;

__device__ __forceinline__ float add_squares(float sum, float4 v) {
  float t = __fmul_rn(v.x, v.x);
  t = __fmaf_rn(v.y, v.y, t);
  t = __fmaf_rn(v.z, v.z, t);
  t = __fmaf_rn(v.w, v.w, t);
  return __fadd_rn(sum, t);
}

__device__ __forceinline__ float4 add4(float4 a, float4 b) {
  return make_float4(__fadd_rn(a.x, b.x), __fadd_rn(a.y, b.y), __fadd_rn(a.z, b.z), __fadd_rn(a.w, b.w));
}

// 1 / rms from the sum of squares of a dim-wide row.
__device__ __forceinline__ float inverse_rms(float sum_of_squares, int dim, float eps) {
  return 1.0f / sqrtf(__fadd_rn(__fdiv_rn(sum_of_squares, static_cast<float>(dim)), eps));
}

// weight * (v * inv), as add_rms_norm writes it.
__device__ __forceinline__ float4 scale_normalized(float4 v, float4 w, float inv) {
  return make_float4(__fmul_rn(w.x, __fmul_rn(v.x, inv)), __fmul_rn(w.y, __fmul_rn(v.y, inv)),
                     __fmul_rn(w.z, __fmul_rn(v.z, inv)), __fmul_rn(w.w, __fmul_rn(v.w, inv)));
}

}  // namespace tachyon::kernels
