#include "spec/verifier.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace tachyon {

Verdict verify_greedy(std::span<const int32_t> draft, const float* target_logits, int vocab) {
  Verdict v;
  const int n = static_cast<int>(draft.size());
  while (v.accepted < n &&
         draft[v.accepted] == argmax(std::span<const float>(target_logits + int64_t{v.accepted} * vocab, vocab)))
    ++v.accepted;
  v.bonus = argmax(std::span<const float>(target_logits + int64_t{v.accepted} * vocab, vocab));
  return v;
}

Verdict verify_target_sampled(std::span<const int32_t> draft, const float* target_logits, int vocab, Sampler& sampler) {
  Verdict v;
  const int n = static_cast<int>(draft.size());
  for (;;) {
    const int32_t token = sampler.sample(std::span<const float>(target_logits + int64_t{v.accepted} * vocab, vocab));
    if (v.accepted < n && token == draft[v.accepted]) {
      ++v.accepted;
      continue;
    }
    v.bonus = token;
    return v;
  }
}

std::vector<double> sampling_probabilities(std::span<const float> logits, const SamplingParams& params) {
  if (!(params.temperature > 0)) fail("sampling_probabilities: temperature must be > 0, got {}", params.temperature);
  const int n = static_cast<int>(logits.size());
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  auto larger = [&](int a, int b) { return logits[a] > logits[b]; };
  int keep = n;
  if (params.top_k > 0 && params.top_k < n) {
    keep = params.top_k;
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), larger);
  } else {
    std::stable_sort(order.begin(), order.end(), larger);
  }
  std::vector<double> sorted(keep);
  const double max = logits[order[0]] / params.temperature;
  double sum = 0;
  for (int i = 0; i < keep; ++i) sum += sorted[i] = std::exp(logits[order[i]] / params.temperature - max);
  for (double& p : sorted) p /= sum;
  if (params.top_p < 1.0f) {
    double cumulative = 0;
    for (int i = 0; i < keep; ++i) {
      cumulative += sorted[i];
      if (cumulative >= params.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (params.min_p > 0.0f) {
    const double threshold = params.min_p * sorted[0];
    int cut = 1;
    while (cut < keep && sorted[cut] >= threshold) ++cut;
    keep = cut;
  }
  double mass = 0;
  for (int i = 0; i < keep; ++i) mass += sorted[i];
  std::vector<double> probs(n, 0.0);
  for (int i = 0; i < keep; ++i) probs[order[i]] = sorted[i] / mass;
  return probs;
}

int32_t sample_index(std::span<const double> probs, std::mt19937_64& rng) {
  double total = 0;
  for (double p : probs) total += p;
  if (!(total > 0)) fail("sample_index: the distribution has no mass");
  double draw = std::uniform_real_distribution<double>(0.0, total)(rng);
  int32_t last = -1;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0) continue;
    last = static_cast<int32_t>(i);
    draw -= probs[i];
    if (draw < 0) return last;
  }
  return last;  // rounding left a sliver of mass: the last token with any
}

Verdict verify_speculative(std::span<const int32_t> draft, const std::vector<std::vector<double>>& draft_probs,
                           const float* target_logits, int vocab, const SamplingParams& params, std::mt19937_64& rng) {
  const int n = static_cast<int>(draft.size());
  if (static_cast<int>(draft_probs.size()) != n) fail("verify_speculative: {} drafts but {} distributions", n, draft_probs.size());
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  Verdict v;
  for (; v.accepted < n; ++v.accepted) {
    const int j = v.accepted;
    std::vector<double> p = sampling_probabilities(std::span<const float>(target_logits + int64_t{j} * vocab, vocab), params);
    const std::vector<double>& q = draft_probs[j];
    const int32_t d = draft[j];
    // Accept with probability min(1, p(d) / q(d)).
    if (uniform(rng) * q[d] < p[d]) continue;
    // Rejected: the bonus comes from the part of p that q under-covers.
    std::vector<double> residual(vocab);
    double mass = 0;
    for (int i = 0; i < vocab; ++i) mass += residual[i] = std::max(0.0, p[i] - q[i]);
    v.bonus = sample_index(mass > 0 ? std::span<const double>(residual) : std::span<const double>(p), rng);
    return v;
  }
  std::vector<double> p = sampling_probabilities(std::span<const float>(target_logits + int64_t{n} * vocab, vocab), params);
  v.bonus = sample_index(p, rng);
  return v;
}

}  // namespace tachyon
