#include "models/moe.h"

#include <algorithm>
#include <cmath>

#include "core/cpu_matmul.h"
#include "core/error.h"
#include "core/parallel.h"
#include "models/layers.h"

namespace tachyon {

Routing route_softmax_top_k(const float* logits, int64_t n, int num_experts, int k, bool renormalize) {
  Routing routing{k, std::vector<int>(n * k), std::vector<float>(n * k)};
  std::vector<float> probabilities(num_experts);
  for (int64_t t = 0; t < n; ++t) {
    std::copy_n(logits + t * num_experts, num_experts, probabilities.data());
    softmax_inplace(probabilities.data(), num_experts);
    const std::vector<int> chosen = top_k_indices(probabilities.data(), num_experts, k);
    float sum = 0;
    for (int j = 0; j < k; ++j) sum += probabilities[chosen[j]];
    for (int j = 0; j < k; ++j) {
      routing.experts[t * k + j] = chosen[j];
      routing.weights[t * k + j] = renormalize ? probabilities[chosen[j]] / sum : probabilities[chosen[j]];
    }
  }
  return routing;
}

Routing route_top_k_softmax(const float* logits, int64_t n, int num_experts, int k) {
  Routing routing{k, std::vector<int>(n * k), std::vector<float>(n * k)};
  for (int64_t t = 0; t < n; ++t) {
    const float* row = logits + t * num_experts;
    const std::vector<int> chosen = top_k_indices(row, num_experts, k);
    for (int j = 0; j < k; ++j) {
      routing.experts[t * k + j] = chosen[j];
      routing.weights[t * k + j] = row[chosen[j]];
    }
    softmax_inplace(routing.weights.data() + t * k, k);
  }
  return routing;
}

Routing route_sigmoid_group_limited(const float* logits, int64_t n, int num_experts, const GroupLimitedRouting& r) {
  const int k = r.k, per_group = num_experts / r.num_groups;
  Routing routing{k, std::vector<int>(n * k), std::vector<float>(n * k)};
  std::vector<float> scores(num_experts), biased(num_experts), group_scores(r.num_groups);
  for (int64_t t = 0; t < n; ++t) {
    for (int e = 0; e < num_experts; ++e) {
      scores[e] = sigmoid(logits[t * num_experts + e]);
      biased[e] = scores[e] + r.correction_bias[e];
    }
    // A group's score is the sum of its two best biased scores.
    for (int g = 0; g < r.num_groups; ++g) {
      const std::vector<int> best = top_k_indices(biased.data() + g * per_group, per_group, 2);
      group_scores[g] = biased[g * per_group + best[0]] + biased[g * per_group + best[1]];
    }
    std::vector<bool> allowed(r.num_groups, false);
    for (int g : top_k_indices(group_scores.data(), r.num_groups, r.top_groups)) allowed[g] = true;
    for (int e = 0; e < num_experts; ++e)
      if (!allowed[e / per_group]) biased[e] = -INFINITY;
    const std::vector<int> chosen = top_k_indices(biased.data(), num_experts, k);
    float sum = 0;
    for (int j = 0; j < k; ++j) sum += scores[chosen[j]];
    for (int j = 0; j < k; ++j) {
      float weight = scores[chosen[j]];
      if (r.renormalize) weight /= sum + 1e-20f;
      routing.experts[t * k + j] = chosen[j];
      routing.weights[t * k + j] = weight * r.scaling;
    }
  }
  return routing;
}

Routing route_softmax_group_limited(const float* logits, int64_t n, int num_experts, int k, int num_groups,
                                    int top_groups, float scaling) {
  const int per_group = num_experts / num_groups;
  Routing routing{k, std::vector<int>(n * k), std::vector<float>(n * k)};
  std::vector<float> scores(num_experts), candidates(num_experts), group_scores(num_groups);
  for (int64_t t = 0; t < n; ++t) {
    std::copy_n(logits + t * num_experts, num_experts, scores.data());
    softmax_inplace(scores.data(), num_experts);
    for (int g = 0; g < num_groups; ++g)
      group_scores[g] = *std::max_element(scores.begin() + g * per_group, scores.begin() + (g + 1) * per_group);
    std::vector<bool> allowed(num_groups, false);
    for (int g : top_k_indices(group_scores.data(), num_groups, top_groups)) allowed[g] = true;
    for (int e = 0; e < num_experts; ++e) candidates[e] = allowed[e / per_group] ? scores[e] : -INFINITY;
    const std::vector<int> chosen = top_k_indices(candidates.data(), num_experts, k);
    for (int j = 0; j < k; ++j) {
      routing.experts[t * k + j] = chosen[j];
      routing.weights[t * k + j] = scores[chosen[j]] * scaling;
    }
  }
  return routing;
}

ExpertMatrices ExpertMatrices::per_expert(std::vector<const TensorView*> matrices) {
  ExpertMatrices m;
  m.layout_ = Layout::PerExpert;
  m.num_experts_ = static_cast<int>(matrices.size());
  m.out_ = matrices.at(0)->shape.at(0);
  m.in_ = matrices.at(0)->shape.at(1);
  m.per_expert_ = std::move(matrices);
  return m;
}

ExpertMatrices ExpertMatrices::stacked_input_major(const TensorView& stacked) {
  if (stacked.shape.size() != 3)
    fail("{}: tensor {} has shape {}, expected [experts, in, out]", stacked.file, stacked.name, stacked.shape_string());
  ExpertMatrices m;
  m.layout_ = Layout::StackedInputMajor;
  m.num_experts_ = static_cast<int>(stacked.shape[0]);
  m.in_ = stacked.shape[1];
  m.out_ = stacked.shape[2];
  m.stacked_ = &stacked;
  return m;
}

ExpertMatrices ExpertMatrices::mxfp4(const TensorView& blocks, const TensorView& scales, int64_t experts, int64_t out,
                                     int64_t in) {
  ExpertMatrices m;
  m.layout_ = Layout::Mxfp4;
  m.num_experts_ = static_cast<int>(experts);
  m.out_ = out;
  m.in_ = in;
  m.mxfp4_ = Mxfp4Matrices(blocks, scales, experts, out, in);
  return m;
}

void ExpertMatrices::multiply(int expert, const float* x, int64_t n, const float* bias, float* y) const {
  if (layout_ == Layout::PerExpert) {
    linear(*per_expert_[expert], bias, x, n, y);
    return;
  }
  if (layout_ == Layout::Mxfp4) {
    matmul_rows([&](int64_t row, float* out) { mxfp4_.row_to_float(expert, row, out); }, out_, in_, bias, x, n, y);
    return;
  }
  // [in, out] storage: y[t, :] = sum_i x[t, i] * W[i, :]. Each thread owns a range of output columns
  // and walks the input rows, so every weight element is converted once per call.
  parallel_for(out_, [&](int64_t begin, int64_t end) {
    const int64_t width = end - begin;
    std::vector<float> row(width), acc(n * width);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t o = 0; o < width; ++o) acc[t * width + o] = 0.0f;
    const int64_t expert_offset = int64_t{expert} * in_ * out_;
    for (int64_t i = 0; i < in_; ++i) {
      stacked_->to_float(expert_offset + i * out_ + begin, width, row.data());
      for (int64_t t = 0; t < n; ++t) {
        const float xi = x[t * in_ + i];
        float* a = acc.data() + t * width;
        for (int64_t o = 0; o < width; ++o) a[o] += xi * row[o];
      }
    }
    for (int64_t t = 0; t < n; ++t)
      for (int64_t o = 0; o < width; ++o) y[t * out_ + begin + o] = acc[t * width + o] + (bias ? bias[begin + o] : 0.0f);
  });
}

ExpertMatrices load_per_expert(const WeightStore& weights, const std::string& prefix, const std::string& suffix,
                               int num_experts, int64_t out, int64_t in) {
  std::vector<const TensorView*> matrices;
  for (int e = 0; e < num_experts; ++e)
    matrices.push_back(&weights.get(fmt::format("{}.{}.{}", prefix, e, suffix), {out, in}));
  return ExpertMatrices::per_expert(std::move(matrices));
}

void SwigluExperts::run(int expert, const float* x, int64_t n, float* y) const {
  const int64_t intermediate = gate.out_features();
  std::vector<float> g(n * intermediate), u(n * intermediate);
  gate.multiply(expert, x, n, nullptr, g.data());
  up.multiply(expert, x, n, nullptr, u.data());
  swiglu(g.data(), u.data(), n * intermediate, g.data());
  down.multiply(expert, g.data(), n, nullptr, y);
}

void run_routed_experts(const Routing& routing, const float* x, int64_t n, int64_t hidden, int num_experts,
                        const ExpertFunction& expert, float* out) {
  std::fill(out, out + n * hidden, 0.0f);
  const int k = routing.k;
  for (int e = 0; e < num_experts; ++e) {
    std::vector<int64_t> slots;  // t * k + j of the (token, choice) pairs routed to e
    for (int64_t s = 0; s < n * k; ++s)
      if (routing.experts[s] == e) slots.push_back(s);
    if (slots.empty()) continue;
    const int64_t m = static_cast<int64_t>(slots.size());
    std::vector<float> gathered(m * hidden), result(m * hidden);
    for (int64_t i = 0; i < m; ++i) std::copy_n(x + (slots[i] / k) * hidden, hidden, gathered.data() + i * hidden);
    expert(e, gathered.data(), m, result.data());
    for (int64_t i = 0; i < m; ++i) {
      float* row = out + (slots[i] / k) * hidden;
      const float weight = routing.weights[slots[i]];
      for (int64_t d = 0; d < hidden; ++d) row[d] += weight * result[i * hidden + d];
    }
  }
}

}  // namespace tachyon
