// Sampling with a drafter (T > 0) must be lossless: the committed tokens have exactly the distribution of
// plain sampling from the target. Statistical tests, each a chi-square test at significance level
// alpha = 0.001 (a correct implementation fails one with probability 0.001); every seed is fixed, so a test
// cannot flake: it either passes for these seeds or it does not.
//   - sampling_probabilities() is the distribution Sampler draws from (temperature, top-k, top-p, min-p);
//   - the speculative rule on synthetic p and q: the first committed token ~ p_0, the second ~ p_1 (given the
//     first draft was accepted), the bonus after a fully accepted block ~ p_2; acceptance rate of slot 1 =
//     sum_x min(p_0(x), q_0(x));
//   - end to end on the tiny Qwen3 with a random DFlash drafter at T = 1: the second generated token (the first
//     that goes through verification) against its exact marginal sum_x0 p(x0) p(x1 | x0) computed from the
//     model, for drafted and for plain sampling; the third token against plain sampling
//     (two-sample test over the most frequent tokens, the rest pooled);
//   - the target-sampled rule reproduces plain sampling token for token for the same seed.
#include <gtest/gtest.h>

#include <map>

#include "spec/driver.h"
#include "spec/verifier.h"
#include "spec_test_util.h"

namespace tachyon {
namespace {

using test::fixture_path;
constexpr double kAlpha = 0.001;

std::vector<float> random_logits(int n, std::mt19937_64& rng, float scale = 1.5f) {
  std::normal_distribution<float> normal(0, scale);
  std::vector<float> logits(n);
  for (float& l : logits) l = normal(rng);
  return logits;
}

// `draws` tokens from a Sampler with `params` against sampling_probabilities: nothing drawn outside the kept set,
// the probabilities summing to 1, the chi-square fit. Returns how many ids the filters keep.
int64_t check_sampler_draws(const std::vector<float>& logits, const SamplingParams& params, int draws, size_t c) {
  Sampler sampler(params);
  std::vector<int64_t> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[sampler.sample(logits)];
  const std::vector<double> probs = sampling_probabilities(logits, params);
  double total = 0;
  int64_t kept = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    total += probs[i];
    kept += probs[i] > 0;
    if (probs[i] == 0) EXPECT_EQ(counts[i], 0) << "case " << c << ": token " << i << " is cut but was drawn";
  }
  EXPECT_NEAR(total, 1.0, 1e-12);
  const test::ChiSquare chi = test::chi_square_fit(counts, probs);
  EXPECT_GT(chi.p_value, kAlpha) << "case " << c << ": chi2 " << chi.statistic << " df " << chi.df;
  return kept;
}

TEST(SpecSampling, ProbabilitiesAreWhatSamplerDraws) {
  std::mt19937_64 rng(1);
  const std::vector<float> logits = random_logits(12, rng);
  std::vector<SamplingParams> cases(4);
  cases[0].temperature = 1.0f;
  cases[1].temperature = 0.7f, cases[1].top_k = 5;
  cases[2].temperature = 1.3f, cases[2].top_p = 0.8f;
  cases[3].temperature = 1.0f, cases[3].min_p = 0.1f;
  for (size_t c = 0; c < cases.size(); ++c) {
    cases[c].seed = 1000 + c;
    check_sampler_draws(logits, cases[c], 40000, c);
  }
}

// The same on a vocabulary large enough for the Sampler's candidate search (session 15: it sorts only a prefix
// grown in blocks of 256, 2048, ... until its mass reaches top_p, and draws in id order without top-k / top-p):
// flat logits make top_p 0.9 need thousands of ids (several blocks), top_p 0.3 about a hundred.
TEST(SpecSampling, SamplerOnALargeVocabularyDrawsTheSameDistribution) {
  std::mt19937_64 rng(3);
  const std::vector<float> logits = random_logits(5000, rng, 1.0f);
  std::vector<SamplingParams> cases(4);
  cases[0].temperature = 1.0f, cases[0].top_p = 0.9f;
  cases[1].temperature = 0.7f, cases[1].top_p = 0.3f;
  cases[2].temperature = 1.2f, cases[2].min_p = 0.2f;
  cases[3].temperature = 1.0f, cases[3].top_k = 40, cases[3].top_p = 0.8f;
  for (size_t c = 0; c < cases.size(); ++c) {
    cases[c].seed = 77 + c;
    const int64_t kept = check_sampler_draws(logits, cases[c], 20000, c);
    // (case 0 keeps more than two blocks' worth of ids, so the search grows past 256 and 2048)
    EXPECT_GT(kept, c == 0 ? 2048 : 1) << "case " << c;
  }
}

TEST(SpecSampling, SpeculativeRuleIsLossless) {
  const int vocab = 8, drafts = 2, trials = 100000;
  std::mt19937_64 rng(7);
  SamplingParams params;
  params.temperature = 1.0f;
  // Target rows p_0..p_2 and draft distributions q_0, q_1 that differ from p, with tokens q never proposes
  // and tokens p never takes.
  std::vector<float> target_logits;
  for (int j = 0; j <= drafts; ++j) {
    std::vector<float> row = random_logits(vocab, rng);
    row[7] = -1e30f;  // p(7) = 0
    target_logits.insert(target_logits.end(), row.begin(), row.end());
  }
  std::vector<std::vector<double>> q(drafts);
  for (int j = 0; j < drafts; ++j) {
    std::vector<float> row = random_logits(vocab, rng, 2.0f);
    row[0] = -1e30f;  // q(0) = 0
    q[j] = sampling_probabilities(row, params);
  }
  std::vector<std::vector<double>> p;
  for (int j = 0; j <= drafts; ++j)
    p.push_back(sampling_probabilities(std::span<const float>(target_logits.data() + j * vocab, vocab), params));

  std::vector<int64_t> first(vocab, 0), second(vocab, 0), third(vocab, 0);
  int64_t slot1_accepted = 0;
  for (int i = 0; i < trials; ++i) {
    int32_t draft[drafts];
    for (int j = 0; j < drafts; ++j) draft[j] = sample_index(q[j], rng);
    const Verdict v = verify_speculative(draft, q, target_logits.data(), vocab, params, rng);
    std::vector<int32_t> committed(draft, draft + v.accepted);
    committed.push_back(v.bonus);
    ++first[committed[0]];
    if (v.accepted >= 1) ++second[committed[1]], ++slot1_accepted;
    if (v.accepted >= 2) ++third[committed[2]];
  }
  const test::ChiSquare c1 = test::chi_square_fit(first, p[0]);
  const test::ChiSquare c2 = test::chi_square_fit(second, p[1]);
  const test::ChiSquare c3 = test::chi_square_fit(third, p[2]);
  EXPECT_GT(c1.p_value, kAlpha) << "first token: chi2 " << c1.statistic << " df " << c1.df;
  EXPECT_GT(c2.p_value, kAlpha) << "second token: chi2 " << c2.statistic << " df " << c2.df;
  EXPECT_GT(c3.p_value, kAlpha) << "bonus after a full block: chi2 " << c3.statistic << " df " << c3.df;
  EXPECT_EQ(first[7], 0);
  double overlap = 0;
  for (int x = 0; x < vocab; ++x) overlap += std::min(p[0][x], q[0][x]);
  const double sigma = std::sqrt(overlap * (1 - overlap) / trials);
  EXPECT_NEAR(static_cast<double>(slot1_accepted) / trials, overlap, 5 * sigma);
  // The test has power: the draft's own distribution is far from p (a lossy rule would fail).
  const test::ChiSquare wrong = test::chi_square_fit(first, q[0]);
  EXPECT_LT(wrong.p_value, 1e-12);
}

struct TinySetup {
  test::LoadedTarget target;
  std::unique_ptr<test::InMemoryDrafter> drafter;
  std::vector<int32_t> prompt = {17, 250, 3, 99, 140, 61};
  TinySetup() : target(test::load_target(fixture_path("tiny/qwen3"))) {
    test::DrafterShape shape;
    shape.target_layer_ids = {0, 1};
    shape.mask_token_id = 383;
    shape.weight_std = 0.3f;
    drafter = test::random_drafter(target.decoder(), shape, 3);
  }
};

// Counts over `keep` categories: the keep - 1 tokens most frequent in `reference`, then everything else.
std::vector<int64_t> bucket_counts(const std::vector<int32_t>& sample, const std::vector<int32_t>& top) {
  std::vector<int64_t> counts(top.size() + 1, 0);
  for (int32_t t : sample) {
    auto it = std::find(top.begin(), top.end(), t);
    ++counts[it == top.end() ? top.size() : it - top.begin()];
  }
  return counts;
}

std::vector<int32_t> most_frequent(const std::vector<int32_t>& sample, int k) {
  std::map<int32_t, int64_t> counts;
  for (int32_t t : sample) ++counts[t];
  std::vector<std::pair<int64_t, int32_t>> order;
  for (auto [t, c] : counts) order.push_back({-c, t});
  std::sort(order.begin(), order.end());
  std::vector<int32_t> top;
  for (int i = 0; i < k && i < static_cast<int>(order.size()); ++i) top.push_back(order[i].second);
  return top;
}

TEST(SpecSampling, EndToEndDistributionMatchesPlainSampling) {
  TinySetup s;
  DecoderModel& model = s.target.decoder();
  const int vocab = model.vocab_size(), samples = 3000, max_tokens = 3;
  SamplingParams sampling;
  sampling.temperature = 1.0f;

  // Exact marginal of the second token.
  std::vector<double> marginal(vocab, 0.0);
  {
    KvCache cache = model.new_cache(64);
    const std::vector<double> p0 = sampling_probabilities(model.forward(s.prompt, cache), sampling);
    const int64_t length = cache.length();
    for (int32_t x0 = 0; x0 < vocab; ++x0) {
      const int32_t next[1] = {x0};
      const std::vector<double> p1 = sampling_probabilities(model.forward(next, cache), sampling);
      cache.truncate(length);
      for (int x = 0; x < vocab; ++x) marginal[x] += p0[x0] * p1[x];
    }
  }

  std::vector<int32_t> spec_tokens[max_tokens], plain_tokens[max_tokens];
  SpecStats stats;
  for (int i = 0; i < samples; ++i) {
    SpecDecodeParams params;
    params.max_tokens = max_tokens;
    params.sampling = sampling;
    params.sampling.seed = 90000 + i;
    params.spec.block_size = 3;
    DFlashProposer proposer(*s.drafter->drafter, 64);
    CpuSpecTarget target(model, s.drafter->drafter->target_layer_ids(), 64);
    SpecDecodeResult spec = speculative_decode(target, proposer, s.prompt, params);
    ASSERT_EQ(spec.tokens.size(), static_cast<size_t>(max_tokens));
    stats.add(spec.stats);
    SamplingParams plain_sampling = sampling;
    plain_sampling.seed = 50000 + i;
    const std::vector<int32_t> plain = test::plain_decode(model, s.prompt, max_tokens, plain_sampling);
    for (int k = 0; k < max_tokens; ++k) {
      spec_tokens[k].push_back(spec.tokens[k]);
      plain_tokens[k].push_back(plain[k]);
    }
  }
  // Both branches of the rule were taken many times.
  EXPECT_GT(stats.accepted_tokens, samples / 10);
  EXPECT_LT(stats.accepted_tokens, stats.draft_tokens);

  std::vector<int64_t> spec_x1(vocab, 0), plain_x1(vocab, 0);
  for (int i = 0; i < samples; ++i) ++spec_x1[spec_tokens[1][i]], ++plain_x1[plain_tokens[1][i]];
  const test::ChiSquare spec_fit = test::chi_square_fit(spec_x1, marginal);
  const test::ChiSquare plain_fit = test::chi_square_fit(plain_x1, marginal);
  EXPECT_GT(spec_fit.p_value, kAlpha) << "drafted x1: chi2 " << spec_fit.statistic << " df " << spec_fit.df;
  EXPECT_GT(plain_fit.p_value, kAlpha) << "plain x1: chi2 " << plain_fit.statistic << " df " << plain_fit.df;
  for (int k = 2; k < max_tokens; ++k) {
    const std::vector<int32_t> top = most_frequent(plain_tokens[k], 24);
    const test::ChiSquare two = test::chi_square_two_sample(bucket_counts(spec_tokens[k], top),
                                                            bucket_counts(plain_tokens[k], top));
    EXPECT_GT(two.p_value, kAlpha) << "token " << k << ": chi2 " << two.statistic << " df " << two.df;
  }
  std::printf("[ end-to-end T=1: %s ]\n", format_spec_stats(stats).c_str());
}

TEST(SpecSampling, TargetSampledRuleReproducesPlainSamplingPerSeed) {
  TinySetup s;
  DecoderModel& model = s.target.decoder();
  for (uint64_t seed = 0; seed < 20; ++seed) {
    SpecDecodeParams params;
    params.max_tokens = 30;
    params.sampling.temperature = 0.8f;
    params.sampling.top_k = 40;
    params.sampling.top_p = 0.95f;
    params.sampling.seed = seed;
    params.spec.block_size = 2 + static_cast<int>(seed % 8);
    params.spec.sampling = SpecSampling::TargetSampled;
    DFlashProposer proposer(*s.drafter->drafter, 64);
    CpuSpecTarget target(model, s.drafter->drafter->target_layer_ids(), 64);
    SpecDecodeResult spec = speculative_decode(target, proposer, s.prompt, params);
    EXPECT_EQ(spec.tokens, test::plain_decode(model, s.prompt, params.max_tokens, params.sampling)) << "seed " << seed;
  }
}

}  // namespace
}  // namespace tachyon
