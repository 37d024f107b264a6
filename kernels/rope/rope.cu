// rope_apply: in-place rotary embedding of float32 heads [tokens, heads, head_dim] (any token stride), both
// pairings, any rotary_dim <= head_dim, inv_freq table from the CPU Rope (so default / linear / llama3 / yarn
// all come from one place). One warp per (token, head); the head is staged in shared memory so that either
// pairing is a plain indexed access. Error bound vs CPU Rope::apply: 2e-6 * |x| (sincosf vs double cos/sin).
#include "rope/rope.h"

#include <cstdint>

#include "cuda/cuda_check.h"
#include "rope/rope_device.cuh"

namespace tachyon::kernels {

namespace {

constexpr int kWarpsPerBlock = 4;

__global__ void rope_apply_kernel(float* x, int token_stride, int n_tokens, int n_heads, int head_dim,
                                  const int* positions, RopeTable rope) {
  __shared__ float heads[kWarpsPerBlock][256];
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int job = blockIdx.x * kWarpsPerBlock + warp;
  if (job >= n_tokens * n_heads) return;
  const int token = job / n_heads, head = job % n_heads;
  float* v = x + static_cast<int64_t>(token) * token_stride + head * head_dim;
  float* buffer = heads[warp];
  for (int i = lane; i < rope.rotary_dim; i += 32) buffer[i] = v[i];
  __syncwarp();
  float freq[4];
  load_rope_frequencies(rope.inv_freq, rope.rotary_dim, lane, freq);
  rotate_head_in_shared(buffer, rope.rotary_dim, positions[token], freq, rope.attention_factor, rope.interleaved, lane);
  __syncwarp();
  for (int i = lane; i < rope.rotary_dim; i += 32) v[i] = buffer[i];
}

}  // namespace

void rope_apply(float* x, int token_stride, int n_tokens, int n_heads, int head_dim, const int* positions,
                const RopeTable& rope, cudaStream_t stream) {
  TACHYON_REQUIRE(head_dim > 0 && head_dim <= 256, "rope_apply", "head_dim must be in 1..256");
  TACHYON_REQUIRE(rope.rotary_dim > 0 && rope.rotary_dim % 2 == 0 && rope.rotary_dim <= head_dim, "rope_apply",
                  "rotary_dim must be even and in 2..head_dim");
  TACHYON_REQUIRE(rope.inv_freq != nullptr, "rope_apply", "inv_freq table is null");
  const int jobs = n_tokens * n_heads;
  if (jobs <= 0) return;
  rope_apply_kernel<<<(jobs + kWarpsPerBlock - 1) / kWarpsPerBlock, 32 * kWarpsPerBlock, 0, stream>>>(
      x, token_stride, n_tokens, n_heads, head_dim, positions, rope);
  TACHYON_CUDA_CHECK_LAUNCH("rope_apply_kernel");
}

}  // namespace tachyon::kernels
