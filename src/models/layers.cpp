#include "models/layers.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/cpu_matmul.h"
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
  matmul_rows([&w](int64_t row, float* out) { w.row_to_float(row, out); }, w.shape[0], w.shape[1], bias, x, n, y);
}

void linear_f32(const float* w, int64_t out_features, int64_t in_features, const float* bias, const float* x,
                int64_t n, float* y) {
  matmul_f32(w, out_features, in_features, bias, x, n, y);
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
  // Per KV head and tile of queries: scores = Q K^T and context = P V as two blocked matmuls over the keys
  // [base, last) that the tile can see. base is rounded down to a multiple of 16 so that a key's lane in the
  // P V sum (its absolute position mod 16) and the order of its terms are the same however the queries are
  // batched; the keys a query does not see get probability exactly 0. So a query's output does not depend on
  // n or on its tile, as with the matmul itself.
  constexpr int64_t kQueryTile = 128;
  const int group = shape.n_heads / shape.n_kv_heads;
  const int64_t head_dim = shape.head_dim, v_dim = shape.v_head_dim;
  auto first_visible = [&](int64_t pos) {
    return shape.sliding_window > 0 ? std::max<int64_t>(0, pos - shape.sliding_window + 1) : int64_t{0};
  };
  std::vector<float> keys, values_t, queries, scores, context;
  for (int kv_head = 0; kv_head < shape.n_kv_heads; ++kv_head) {
    for (int64_t t0 = 0; t0 < n; t0 += kQueryTile) {
      const int64_t tile = std::min(kQueryTile, n - t0), rows = tile * group;
      const int64_t base = first_visible(start + t0) / 16 * 16, last = start + t0 + tile, len = last - base;
      keys.resize(len * head_dim);
      values_t.resize(v_dim * len);
      for (int64_t j = 0; j < len; ++j) {
        std::copy_n(kv.k_row(base + j) + kv_head * head_dim, head_dim, keys.data() + j * head_dim);
        const float* v = kv.v_row(base + j) + kv_head * v_dim;
        for (int64_t d = 0; d < v_dim; ++d) values_t[d * len + j] = v[d];
      }
      queries.resize(rows * head_dim);
      for (int64_t t = 0; t < tile; ++t)
        for (int h = 0; h < group; ++h)
          std::copy_n(q + ((t0 + t) * shape.n_heads + kv_head * group + h) * head_dim, head_dim,
                      queries.data() + (t * group + h) * head_dim);
      scores.resize(rows * len);
      matmul_f32(keys.data(), len, head_dim, nullptr, queries.data(), rows, scores.data());
      parallel_for(rows, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t t = t0 + r / group, pos = start + t;
          const int head = kv_head * group + static_cast<int>(r % group);
          const int64_t first = first_visible(pos);
          float* s = scores.data() + r * len;
          float max = sinks ? sinks[head] : -INFINITY;
          for (int64_t j = first; j <= pos; ++j) {
            s[j - base] *= shape.scale;
            max = std::max(max, s[j - base]);
          }
          float sum = sinks ? std::exp(sinks[head] - max) : 0.0f;
          for (int64_t j = first; j <= pos; ++j) {
            s[j - base] = std::exp(s[j - base] - max);
            sum += s[j - base];
          }
          for (int64_t j = first; j <= pos; ++j) s[j - base] /= sum;
          std::fill(s, s + (first - base), 0.0f);
          std::fill(s + (pos + 1 - base), s + len, 0.0f);
        }
      });
      context.resize(rows * v_dim);
      matmul_f32(values_t.data(), v_dim, len, nullptr, scores.data(), rows, context.data());
      for (int64_t t = 0; t < tile; ++t)
        for (int h = 0; h < group; ++h)
          std::copy_n(context.data() + (t * group + h) * v_dim, v_dim,
                      out + ((t0 + t) * shape.n_heads + kv_head * group + h) * v_dim);
    }
  }
}

}  // namespace tachyon
