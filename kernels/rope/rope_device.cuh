// Device-side rotary embedding of one head held in shared memory, shared by rope_apply and the fused
// attention prologue. Matches models/rope.cpp: angle = float(position) * inv_freq[i] in float32, then
// cos/sin of that float angle (sincosf, full range reduction), both multiplied by the attention factor.
// rotary_dim <= 256 (the callers check head_dim <= 256): a lane holds at most 4 frequencies.
#pragma once

namespace tachyon::kernels {

// The frequencies a lane uses for rotary_dim <= 256: freq[r] = inv_freq[lane + 32 r] (0 past rotary_dim / 2). Kept
// apart from the rotation so that a kernel can read them (constant data) before waiting for its predecessor.
__device__ __forceinline__ void load_rope_frequencies(const float* inv_freq, int rotary_dim, int lane,
                                                      float (&freq)[4]) {
#pragma unroll
  for (int r = 0; r < 4; ++r) freq[r] = lane + 32 * r < rotary_dim / 2 ? inv_freq[lane + 32 * r] : 0.0f;
}

// Rotates the first rotary_dim values of `head` (shared memory, one warp) in place. Pairs are (i, i + half)
// (rotate-half, NeoX/HF) or (2i, 2i + 1) (interleaved, GPT-J/ggml). Each lane owns distinct pairs: i = lane + 32 r.
__device__ __forceinline__ void rotate_head_in_shared(float* head, int rotary_dim, int position, const float (&freq)[4],
                                                      float attention_factor, bool interleaved, int lane) {
  const int half = rotary_dim / 2;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int i = lane + 32 * r;
    if (i >= half) break;
    const float angle = static_cast<float>(position) * freq[r];
    float s, c;
    sincosf(angle, &s, &c);
    c *= attention_factor;
    s *= attention_factor;
    const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
    const float x = head[ia], y = head[ib];
    head[ia] = x * c - y * s;
    head[ib] = y * c + x * s;
  }
}

}  // namespace tachyon::kernels
