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
  // Candidates sorted by logit, largest first; filters only ever cut the tail.
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  int keep = n;
  if (params_.top_k > 0 && params_.top_k < n) {
    keep = params_.top_k;
    std::partial_sort(order.begin(), order.begin() + keep, order.end(),
                      [&](int a, int b) { return logits[a] > logits[b]; });
  } else {
    std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  }
  std::vector<double> probs(keep);
  const double max = logits[order[0]] / params_.temperature;
  double sum = 0;
  for (int i = 0; i < keep; ++i) sum += probs[i] = std::exp(logits[order[i]] / params_.temperature - max);
  for (double& p : probs) p /= sum;
  if (params_.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p
    double cumulative = 0;
    int cut = keep;
    for (int i = 0; i < keep; ++i) {
      cumulative += probs[i];
      if (cumulative >= params_.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
  }
  if (params_.min_p > 0.0f) {
    const double threshold = params_.min_p * probs[0];
    int cut = 1;
    while (cut < keep && probs[cut] >= threshold) ++cut;
    keep = cut;
  }
  double mass = 0;
  for (int i = 0; i < keep; ++i) mass += probs[i];
  double draw = std::uniform_real_distribution<double>(0.0, mass)(rng_);
  for (int i = 0; i < keep; ++i) {
    draw -= probs[i];
    if (draw < 0) return order[i];
  }
  return order[keep - 1];
}

}  // namespace tachyon
