// The RMSNorms of the persistent kernels (persistent_decode, persistent_stream). A block owns some rows of the
// residual and publishes their sum of squares with them, so a norm of the whole row reads x, its weight and the grid's
// sums in one round trip, with no block reduction. kThreads: the threads that compute (the resident kernel keeps a
// producer warp out of it); sync: their block barrier.
#pragma once
#include <cuda_bf16.h>

#include "common/device_helpers.cuh"

namespace tachyon::kernels {

// Layer 0's input: out[i] = weight[i] * x[i] / rms(x) over the bf16 embedding row x (n a multiple of 4). (weight * x
// is rounded before the scaling: not the per-op kernel's order, which is weight * (x * inv).)
template <int kThreads, typename Sync>
__device__ __forceinline__ void load_normed_embedding(const __nv_bfloat16* embedding, const float* weight, int n,
                                                      float eps, float* out, float* scratch, Sync&& sync) {
  float squares = 0.0f;
#pragma unroll 1
  for (int q = threadIdx.x; q < n / 4; q += kThreads) {
    const uint2 raw = __ldg(reinterpret_cast<const uint2*>(embedding) + q);
    const float2 a = unpack_bf16x2(raw.x), b = unpack_bf16x2(raw.y);
    const float4 v = make_float4(a.x, a.y, b.x, b.y);
    squares = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, squares))));
    // The weight is read here, beside x, not after the reduction (a second round trip per norm).
    const float4 g = __ldg(reinterpret_cast<const float4*>(weight) + q);
    reinterpret_cast<float4*>(out)[q] = make_float4(g.x * v.x, g.y * v.y, g.z * v.z, g.w * v.w);
  }
  const float total = block_sum(squares, scratch, kThreads / 32, sync);
  const float inv = 1.0f / sqrtf(total / static_cast<float>(n) + eps);
#pragma unroll 1
  for (int i = threadIdx.x; i < n; i += kThreads) out[i] *= inv;
  sync();
}

// 1 / rms of a row of n floats from the sums of squares its owners published (one per block), by warp 0 into
// scratch[0]; the caller syncs before reading it.
__device__ __forceinline__ void published_inv(const float* row_squares, int n, float eps, float* scratch) {
  if (threadIdx.x < 32) {
    float squares = 0.0f;
    for (int b = threadIdx.x; b < gridDim.x; b += 32) squares += __ldcg(row_squares + b);
    squares = warp_sum(squares);
    if (threadIdx.x == 0) scratch[0] = 1.0f / sqrtf(squares / static_cast<float>(n) + eps);
  }
}

// out = weight * x (x from L2, written by its owners) with warp 0 reading the grid's sums beside it; returns
// 1 / rms(x), which the caller applies to its dot products (dot(w, weight * x) * inv).
template <int kThreads, typename Sync>
__device__ __forceinline__ float load_weighted(const float* x, const float* weight, const float* row_squares, int n,
                                               float eps, float* out, float* scratch, Sync&& sync) {
  published_inv(row_squares, n, eps, scratch);
#pragma unroll 1
  for (int q = threadIdx.x; q < n / 4; q += kThreads) {
    const float4 v = __ldcg(reinterpret_cast<const float4*>(x) + q);
    const float4 g = __ldg(reinterpret_cast<const float4*>(weight) + q);
    reinterpret_cast<float4*>(out)[q] = make_float4(g.x * v.x, g.y * v.y, g.z * v.z, g.w * v.w);
  }
  sync();
  return scratch[0];
}

// Thread 0 publishes the sum of squares of the block's residual rows (after a sync: the rows are final).
__device__ __forceinline__ void publish_row_squares(const float* own, int rows, float* slot) {
  if (threadIdx.x != 0) return;
  float squares = 0.0f;
  for (int i = 0; i < rows; ++i) squares = fmaf(own[i], own[i], squares);
  __stcg(slot + blockIdx.x, squares);
}

}  // namespace tachyon::kernels
