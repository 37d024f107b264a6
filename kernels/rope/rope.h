// Rotary position embedding on the GPU (standalone; the decode path fuses it into
// qk_norm_rope_kv_append, kernels/attention/kv_cache.h).
#pragma once
#include <cuda_runtime_api.h>

namespace tachyon::kernels {

struct RopeTable {
  const float* inv_freq = nullptr;  // device, rotary_dim / 2 values: Rope::inverse_frequencies()
  int rotary_dim = 0;               // even, <= head_dim
  float attention_factor = 1.0f;    // Rope::attention_factor() (YaRN), multiplies cos and sin
  bool interleaved = false;         // RopeConfig::interleaved
};

// Rotates, in place, each head h of each token t: x[t * token_stride + h * head_dim + (0..rotary_dim)] to
// position positions[t] (device int32 [n_tokens]). head_dim <= 256.
void rope_apply(float* x, int token_stride, int n_tokens, int n_heads, int head_dim, const int* positions,
                const RopeTable& rope, cudaStream_t stream);

}  // namespace tachyon::kernels
