#include "models/layers.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/parallel.h"

namespace tachyon {

float dot(const float* a, const float* b, int64_t n) {
  // Four partial sums: keeps the compiler free to vectorize without -ffast-math.
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

void linear(const TensorView& w, const float* bias, const float* x, int64_t n, float* y) {
  if (w.shape.size() != 2) fail("{}: tensor {} used as a matrix has shape {}", w.file, w.name, w.shape_string());
  const int64_t out_features = w.shape[0], in_features = w.shape[1];
  parallel_for(out_features, [&](int64_t begin, int64_t end) {
    std::vector<float> row(in_features);
    for (int64_t o = begin; o < end; ++o) {
      w.row_to_float(o, row.data());
      const float b = bias ? bias[o] : 0.0f;
      for (int64_t t = 0; t < n; ++t) y[t * out_features + o] = dot(row.data(), x + t * in_features, in_features) + b;
    }
  });
}

void linear_f32(const float* w, int64_t out_features, int64_t in_features, const float* bias, const float* x,
                int64_t n, float* y) {
  parallel_for(out_features, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const float b = bias ? bias[o] : 0.0f;
      for (int64_t t = 0; t < n; ++t)
        y[t * out_features + o] = dot(w + o * in_features, x + t * in_features, in_features) + b;
    }
  });
}

void rms_norm(const float* x, const float* weight, float eps, int64_t n, int64_t dim, float* y) {
  for (int64_t t = 0; t < n; ++t) {
    const float* row = x + t * dim;
    float sum = 0;
    for (int64_t i = 0; i < dim; ++i) sum += row[i] * row[i];
    const float inv = 1.0f / std::sqrt(sum / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) y[t * dim + i] = weight[i] * (row[i] * inv);
  }
}

void swiglu(const float* gate, const float* up, int64_t count, float* h) {
  for (int64_t i = 0; i < count; ++i) h[i] = silu(gate[i]) * up[i];
}

void softmax_inplace(float* x, int64_t n) {
  float max = *std::max_element(x, x + n);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  for (int64_t i = 0; i < n; ++i) x[i] /= sum;
}

std::vector<int> top_k_indices(const float* values, int n, int k) {
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return values[a] > values[b]; });
  order.resize(std::min(k, n));
  return order;
}

std::vector<float> to_float_vector(const TensorView& t) { return t.to_float(); }

KvCache::KvCache(const std::vector<std::pair<int64_t, int64_t>>& widths, int64_t max_positions)
    : max_positions_(max_positions) {
  layers_.resize(widths.size());
  for (size_t i = 0; i < widths.size(); ++i) {
    layers_[i].k_width = widths[i].first;
    layers_[i].v_width = widths[i].second;
  }
}

void KvCache::reserve_for(int64_t n) {
  const int64_t needed = length_ + n;
  if (needed > max_positions_)
    fail("sequence of {} tokens exceeds the context length of {}", needed, max_positions_);
  for (KvLayer& layer : layers_) {
    if (static_cast<int64_t>(layer.k.size()) < needed * layer.k_width) {
      // Grow geometrically so that decoding token by token does not copy the cache each step.
      int64_t capacity = std::min(max_positions_, std::max<int64_t>(needed, 2 * static_cast<int64_t>(layer.k.size()) / std::max<int64_t>(layer.k_width, 1)));
      capacity = std::max<int64_t>(capacity, 64 < max_positions_ ? 64 : max_positions_);
      capacity = std::max(capacity, needed);
      layer.k.resize(capacity * layer.k_width);
      layer.v.resize(capacity * layer.v_width);
    }
  }
}

void KvCache::truncate(int64_t n) {
  if (n < 0 || n > length_) fail("KV cache truncate to {} outside [0, {}]", n, length_);
  length_ = n;
}

void cached_attention(const float* q, int64_t n, int64_t start, const KvLayer& kv, const AttentionShape& shape,
                      const float* sinks, float* out) {
  const int group = shape.n_heads / shape.n_kv_heads;
  parallel_for(n * shape.n_heads, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t job = begin; job < end; ++job) {
      const int64_t t = job / shape.n_heads;
      const int head = static_cast<int>(job % shape.n_heads), kv_head = head / group;
      const int64_t pos = start + t;
      const int64_t first = shape.sliding_window > 0 ? std::max<int64_t>(0, pos - shape.sliding_window + 1) : 0;
      const float* qh = q + (t * shape.n_heads + head) * shape.head_dim;
      scores.resize(pos - first + 1);
      float max = sinks ? sinks[head] : -INFINITY;
      for (int64_t j = first; j <= pos; ++j) {
        float s = dot(qh, kv.k_row(j) + kv_head * shape.head_dim, shape.head_dim) * shape.scale;
        scores[j - first] = s;
        max = std::max(max, s);
      }
      float sum = sinks ? std::exp(sinks[head] - max) : 0.0f;
      for (float& s : scores) {
        s = std::exp(s - max);
        sum += s;
      }
      float* o = out + (t * shape.n_heads + head) * shape.v_head_dim;
      std::fill(o, o + shape.v_head_dim, 0.0f);
      for (int64_t j = first; j <= pos; ++j) {
        const float p = scores[j - first] / sum;
        const float* vh = kv.v_row(j) + kv_head * shape.v_head_dim;
        for (int d = 0; d < shape.v_head_dim; ++d) o[d] += p * vh[d];
      }
    }
  });
}

}  // namespace tachyon
