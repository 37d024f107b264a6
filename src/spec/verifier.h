// The verifier: given a drafted block and the target's logits for it, how many draft tokens are accepted and
// which token the target adds after them (the bonus). Every rule here is lossless: the committed tokens have
// exactly the distribution of plain decoding from the target.
//   greedy (T = 0):   accept the longest prefix with d_j == argmax p_{j-1}; bonus = argmax p_a.
//   speculative:      d_j ~ q_j (the drafter's distribution); accept with probability min(1, p(d_j) / q(d_j));
//                     on the first rejection the bonus ~ norm(max(0, p - q)); after b - 1 acceptances ~ p_{b-1}.
//   target-sampled:   greedy drafts; the target samples its own token at each row with the plain Sampler and the
//                     draft is accepted while they agree (the one-hot-q case of the rule above). It consumes the
//                     Sampler exactly as plain decoding does, so a seed gives the same tokens with or without
//                     the drafter.
// Row j of the target logits is the target's prediction for the token after block slot j.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "runtime/sampler.h"

namespace tachyon {

struct Verdict {
  int accepted = 0;    // draft tokens kept (a)
  int32_t bonus = -1;  // the target's token after them; tokens committed = a + 1
};

// draft: d_1..d_{b-1}; target_logits: [b, vocab].
Verdict verify_greedy(std::span<const int32_t> draft, const float* target_logits, int vocab);
Verdict verify_target_sampled(std::span<const int32_t> draft, const float* target_logits, int vocab, Sampler& sampler);
// draft_probs: q_1..q_{b-1} ([b - 1][vocab], each summing to 1); target_logits as above, turned into
// distributions with `params` (the same transformation as Sampler).
Verdict verify_speculative(std::span<const int32_t> draft, const std::vector<std::vector<double>>& draft_probs,
                           const float* target_logits, int vocab, const SamplingParams& params, std::mt19937_64& rng);

// The distribution Sampler::sample draws from for these logits (temperature > 0): temperature, top-k, top-p,
// min-p, renormalized; [vocab], zero outside the kept tokens. (Tokens tied at a top-k / top-p cut may be kept
// in another order than Sampler's unstable sort keeps them.)
std::vector<double> sampling_probabilities(std::span<const float> logits, const SamplingParams& params);
// A draw from a distribution (need not be normalized).
int32_t sample_index(std::span<const double> probs, std::mt19937_64& rng);

}  // namespace tachyon
