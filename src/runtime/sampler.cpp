#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace tachyon {

int32_t argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

void validate(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) fail("temperature must be >= 0, got {}", p.temperature);
  if (p.top_k < 0) fail("top_k must be >= 0, got {}", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) fail("top_p must be in (0, 1], got {}", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) fail("min_p must be in [0, 1], got {}", p.min_p);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) { validate(params); }

int32_t Sampler::sample(std::span<const float> logits) {
  if (params_.temperature == 0.0f) return argmax(logits);
  const int n = static_cast<int>(logits.size());
  const float inv_t = 1.0f / params_.temperature;
  auto by_logit = [&](int a, int b) { return logits[a] > logits[b]; };
  order_.resize(n);
  weights_.resize(n);  // by id: exp((logit - top) / temperature), filled for the candidates
  std::iota(order_.begin(), order_.end(), 0);
  float top = 0;
  auto fill = [&](int id) { return weights_[id] = std::exp((logits[id] - top) * inv_t); };  // (float exp)
  // Candidates (order_[0, keep)): the top_k largest, sorted; else every id, with top_p a sorted prefix grown until
  // its mass reaches top_p (a full sort of the vocabulary per token took milliseconds: the batched GPU server's
  // sampled streams ran at ~140 tokens/s); without top_p in id order (the distribution does not depend on it).
  int keep = n;
  double total = 0;  // the candidates' mass (the probabilities' normalizer)
  if (params_.top_k > 0 && params_.top_k < n) {
    keep = params_.top_k;
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), by_logit);
    top = logits[order_[0]];
    for (int i = 0; i < keep; ++i) total += fill(order_[i]);
  } else {
    top = logits[argmax(logits)];
    for (int id = 0; id < n; ++id) total += fill(id);
    if (params_.top_p < 1.0f) {
      // The largest ids in growing blocks (each block selected from the rest in linear time) until the selected
      // mass reaches top_p; then only those are sorted.
      int k = 0;
      double mass = 0;
      for (int next = std::min(n, 256);; next = std::min(n, 8 * next)) {
        if (next < n) std::nth_element(order_.begin() + k, order_.begin() + next, order_.end(), by_logit);
        for (int i = k; i < next; ++i) mass += weights_[order_[i]];
        k = next;
        if (mass >= params_.top_p * total || k == n) break;
      }
      std::sort(order_.begin(), order_.begin() + k, by_logit);
      keep = k;
    }
  }
  if (params_.top_p < 1.0f) {  // the smallest sorted prefix whose probability mass reaches top_p
    double cumulative = 0;
    for (int i = 0; i < keep; ++i) {
      cumulative += weights_[order_[i]];
      if (cumulative >= params_.top_p * total) {
        keep = i + 1;
        break;
      }
    }
  }
  if (params_.min_p > 0.0f) {  // ids whose probability is at least min_p x the largest one's (whose weight is 1)
    int kept = 0;
    for (int i = 0; i < keep; ++i)
      if (weights_[order_[i]] >= params_.min_p) order_[kept++] = order_[i];
    keep = std::max(kept, 1);
  }
  double mass = 0;
  for (int i = 0; i < keep; ++i) mass += weights_[order_[i]];
  double draw = std::uniform_real_distribution<double>(0.0, mass)(rng_);
  for (int i = 0; i < keep; ++i) {
    draw -= weights_[order_[i]];
    if (draw < 0) return order_[i];
  }
  return order_[keep - 1];
}

}  // namespace tachyon
