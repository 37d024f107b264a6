// Device-side rotary embedding of one head held in shared memory, shared by rope_apply and the fused
// attention prologue. Matches models/rope.cpp: angle = float(position) * inv_freq[i] in float32, then
// cos/sin of that float angle (sincosf, full range reduction), both multiplied by the attention factor.
#pragma once

namespace tachyon::kernels {

// Rotates the first rotary_dim values of `head` (shared memory, one warp) in place. Pairs are (i, i + half)
// (rotate-half, NeoX/HF) or (2i, 2i + 1) (interleaved, GPT-J/ggml). Each lane owns distinct pairs.
__device__ __forceinline__ void rotate_head_in_shared(float* head, int rotary_dim, int position, const float* inv_freq,
                                                      float attention_factor, bool interleaved, int lane) {
  const int half = rotary_dim / 2;
  for (int i = lane; i < half; i += 32) {
    const float angle = static_cast<float>(position) * inv_freq[i];
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
