// Shared layer helpers of the CPU reference backend. Plain float32 C++ that reads like the math;
// every GPU kernel is checked against these. Activations are row-major [tokens, features].
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "loader/weights.h"

namespace tachyon {

// y[t, o] = sum_i x[t, i] * w[o, i] + bias[o]. x: [n, in], w: [out, in] of any dtype, y: [n, out].
// Each weight row is dequantized once per call and used for all n tokens (core/cpu_matmul.h: blocked kernel;
// a token's row of y does not depend on n).
void linear(const TensorView& w, const float* bias, const float* x, int64_t n, float* y);
// Same for a weight given as float32 [out, in] in memory.
void linear_f32(const float* w, int64_t out_features, int64_t in_features, const float* bias, const float* x,
                int64_t n, float* y);

// Dot product with four partial sums (vectorizes without -ffast-math).
float dot(const float* a, const float* b, int64_t n);

void rms_norm(const float* x, const float* weight, float eps, int64_t n, int64_t dim, float* y);
inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
// y = x * sigmoid(x)
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
// h[t, i] = silu(gate[t, i]) * up[t, i]
void swiglu(const float* gate, const float* up, int64_t count, float* h);
void softmax_inplace(float* x, int64_t n);
// Indices of the k largest values, largest first; ties keep the lower index first (as torch.topk).
std::vector<int> top_k_indices(const float* values, int n, int k);

// Converts a small tensor (norm weights, biases, sinks) to float32 once at load time.
std::vector<float> to_float_vector(const TensorView& t);

// Per-layer key/value rows of one sequence. k: [capacity, k_width], v: [capacity, v_width].
struct KvLayer {
  int64_t k_width = 0, v_width = 0;
  std::vector<float> k, v;
  float* k_row(int64_t pos) { return k.data() + pos * k_width; }
  float* v_row(int64_t pos) { return v.data() + pos * v_width; }
  const float* k_row(int64_t pos) const { return k.data() + pos * k_width; }
  const float* v_row(int64_t pos) const { return v.data() + pos * v_width; }
};

// The CPU KV cache of one sequence: positions [0, length) are valid in every layer.
class KvCache {
 public:
  KvCache() = default;
  KvCache(const std::vector<std::pair<int64_t, int64_t>>& widths, int64_t max_positions);
  int64_t length() const { return length_; }
  int64_t max_positions() const { return max_positions_; }
  // Makes room for positions [length, length + n); throws if past max_positions.
  void reserve_for(int64_t n);
  void advance(int64_t n) { length_ += n; }
  // Drops positions >= n (speculative decoding rolls back rejected rows).
  void truncate(int64_t n);
  KvLayer& layer(int i) { return layers_[i]; }
  const KvLayer& layer(int i) const { return layers_[i]; }

 private:
  std::vector<KvLayer> layers_;
  int64_t length_ = 0, max_positions_ = 0;
};

struct AttentionShape {
  int n_heads = 0, n_kv_heads = 0;
  int head_dim = 0;      // of queries and keys
  int v_head_dim = 0;    // of values
  float scale = 0;       // multiplies q.k
  int sliding_window = 0;  // 0 = full attention; else a query at p sees keys in (p - window, p]
};

// Causal GQA attention of n query rows at positions [start, start + n) against the cache rows
// [0, start + n) of this layer (already holding the new keys/values). q: [n, n_heads * head_dim],
// out: [n, n_heads * v_head_dim]. sinks (optional, [n_heads]): a learned logit per head that joins
// the softmax denominator only (gpt-oss).
void cached_attention(const float* q, int64_t n, int64_t start, const KvLayer& kv, const AttentionShape& shape,
                      const float* sinks, float* out);

}  // namespace tachyon
