// Speculative decoding's fixed test: greedy output with a drafter is token-identical to greedy output
// without it. On every tiny fixture architecture with random (untrained) DFlash drafters whose blocks are
// nearly always rejected, with an oracle proposer that knows the greedy continuation and is wrong at random
// slots (so blocks are accepted fully, partly and not at all, exercising the KV rollback), at block sizes
// 2..16, with stop ids and a context limit that fall inside accepted blocks; and on SmolLM2 (Q4_1 GGUF,
// skipped when absent) with a random drafter. Also: the drafter's context after a run is exactly what a
// fresh drafter computes from the final sequence's features (rows of accepted tokens, no rejected ones).
#include <gtest/gtest.h>

#include <numeric>

#include "core/error.h"
#include "spec/driver.h"
#include "spec_test_util.h"
#include "tokenizer/tokenizer.h"

namespace tachyon {
namespace {

using test::fixture_path;

std::vector<std::vector<int32_t>> random_prompts(int count, int vocab, uint64_t seed, int max_length = 20) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < count; ++i) {
    std::vector<int32_t> p(1 + rng() % max_length);
    for (int32_t& t : p) t = static_cast<int32_t>(rng() % vocab);
    prompts.push_back(p);
  }
  return prompts;
}

// Proposes the target's greedy continuation (known in advance), wrong at each slot with probability
// error_rate; the context is only counted.
class OracleProposer : public DraftProposer {
 public:
  OracleProposer(std::vector<int32_t> sequence, int vocab, int feature_width, double error_rate, uint64_t seed,
                 int block_size = 8)
      : sequence_(std::move(sequence)), vocab_(vocab), feature_width_(feature_width), error_rate_(error_rate),
        rng_(seed), block_size_(block_size) {}
  int default_block_size() const override { return block_size_; }
  int feature_width() const override { return feature_width_; }
  int64_t context_length() const override { return context_; }
  void add_context(const float*, int64_t n) override { context_ += n; }
  void truncate_context(int64_t length) override { context_ = length; }
  std::vector<float> propose(int32_t bonus, int block_size) override {
    EXPECT_EQ(bonus, sequence_.at(context_)) << "bonus at position " << context_;
    std::vector<float> logits(static_cast<size_t>(block_size - 1) * vocab_, 0.0f);
    std::uniform_real_distribution<double> uniform(0, 1);
    for (int j = 1; j < block_size; ++j) {
      const size_t position = context_ + j;
      int32_t token = position < sequence_.size() ? sequence_[position] : 0;
      if (uniform(rng_) < error_rate_) token = (token + 1 + static_cast<int32_t>(rng_() % (vocab_ - 1))) % vocab_;
      logits[(j - 1) * vocab_ + token] = 10.0f;
    }
    return logits;
  }

 private:
  std::vector<int32_t> sequence_;
  int vocab_, feature_width_;
  double error_rate_;
  std::mt19937_64 rng_;
  int block_size_;
  int64_t context_ = 0;
};

SpecDecodeResult run_spec(DecoderModel& model, DraftProposer& proposer, const std::vector<int>& layers,
                          const std::vector<int32_t>& prompt, int max_tokens, int block_size,
                          const std::vector<int32_t>& stop_ids = {}, int64_t max_positions = 0) {
  CpuSpecTarget target(model, layers, max_positions);
  SpecDecodeParams params;
  params.max_tokens = max_tokens;
  params.spec.block_size = block_size;
  params.stop_ids = stop_ids;
  return speculative_decode(target, proposer, prompt, params);
}

void check_stats(const SpecStats& s, size_t generated) {
  EXPECT_EQ(std::accumulate(s.histogram.begin(), s.histogram.end(), int64_t{0}), s.rounds);
  EXPECT_EQ(std::accumulate(s.block_sizes.begin(), s.block_sizes.end(), int64_t{0}), s.rounds);
  EXPECT_EQ(s.committed, s.rounds + s.accepted_tokens);
  // The prefill gives the first token; each round gives a + 1, the last one possibly cut by a stop.
  if (generated > 0) EXPECT_GE(s.committed + 1, static_cast<int64_t>(generated));
  EXPECT_LE(static_cast<int64_t>(generated), s.committed + 1);
}

class GreedyIdentity : public ::testing::TestWithParam<std::string> {};

TEST_P(GreedyIdentity, RandomDrafterMatchesPlainGreedy) {
  test::LoadedTarget target = test::load_target(fixture_path("tiny/" + GetParam()));
  DecoderModel& model = target.decoder();
  test::DrafterShape shape;
  shape.target_layer_ids = {0, model.num_layers() - 1};
  shape.mask_token_id = model.vocab_size() - 1;
  auto drafter = test::random_drafter(model, shape, 11);
  const auto prompts = random_prompts(10, model.vocab_size(), 100 + GetParam().size());
  const int block_sizes[] = {2, 3, 8, 16};
  SpecStats total;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int max_tokens = 24;
    const std::vector<int32_t> plain = test::plain_decode(model, prompts[i], max_tokens, {});
    DFlashProposer proposer(*drafter->drafter, model.max_context());
    SpecDecodeResult spec = run_spec(model, proposer, drafter->drafter->target_layer_ids(), prompts[i], max_tokens,
                                     block_sizes[i % 4]);
    EXPECT_EQ(spec.tokens, plain) << GetParam() << " prompt " << i << " block " << block_sizes[i % 4];
    check_stats(spec.stats, spec.tokens.size());
    total.add(spec.stats);
  }
  EXPECT_GT(total.rounds, 0);
}

TEST_P(GreedyIdentity, OracleProposerPartialAcceptance) {
  test::LoadedTarget target = test::load_target(fixture_path("tiny/" + GetParam()));
  DecoderModel& model = target.decoder();
  const std::vector<int> layers = {0};
  const auto prompts = random_prompts(8, model.vocab_size(), 200 + GetParam().size());
  SpecStats total;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int max_tokens = 40;
    const std::vector<int32_t> plain = test::plain_decode(model, prompts[i], max_tokens, {});
    std::vector<int32_t> sequence = prompts[i];
    sequence.insert(sequence.end(), plain.begin(), plain.end());
    const double error_rates[] = {0.0, 0.1, 0.3, 0.7};
    for (int k = 0; k < 4; ++k) {
      const int block = 2 + static_cast<int>((i * 4 + k) % 15);  // 2..16
      OracleProposer oracle(sequence, model.vocab_size(), model.hidden_size(), error_rates[k], 7 * i + k, block);
      SpecDecodeResult spec = run_spec(model, oracle, layers, prompts[i], max_tokens, 0);
      EXPECT_EQ(spec.tokens, plain) << GetParam() << " prompt " << i << " error " << error_rates[k] << " block " << block;
      check_stats(spec.stats, spec.tokens.size());
      if (k == 0)  // a perfect oracle is always fully accepted: rounds of b tokens, the last one cut to what is left
        EXPECT_DOUBLE_EQ(spec.stats.tau(), (max_tokens - 1.0) / std::ceil((max_tokens - 1.0) / block));
      total.add(spec.stats);
    }
  }
  // Every acceptance length occurred somewhere: full, partial and empty blocks were all rolled back correctly.
  for (int k = 1; k <= 8; ++k) EXPECT_GT(total.histogram.at(k), 0) << "no round committed " << k << " tokens";
}

TEST_P(GreedyIdentity, StopIdsAndContextLimitInsideAcceptedBlocks) {
  test::LoadedTarget target = test::load_target(fixture_path("tiny/" + GetParam()));
  DecoderModel& model = target.decoder();
  const auto prompts = random_prompts(4, model.vocab_size(), 300 + GetParam().size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int max_tokens = 30;
    const std::vector<int32_t> plain = test::plain_decode(model, prompts[i], max_tokens, {});
    std::vector<int32_t> sequence = prompts[i];
    sequence.insert(sequence.end(), plain.begin(), plain.end());
    for (int cut : {0, 5, 13}) {
      // A stop id: the plain output is cut before its first occurrence.
      const int32_t stop = plain[cut];
      const std::vector<int32_t> plain_stopped = test::plain_decode(model, prompts[i], max_tokens, {}, {stop});
      OracleProposer oracle(sequence, model.vocab_size(), model.hidden_size(), 0.0, i, 16);
      SpecDecodeResult spec = run_spec(model, oracle, {0}, prompts[i], max_tokens, 0, {stop});
      EXPECT_EQ(spec.tokens, plain_stopped) << "stop id " << stop;
      EXPECT_TRUE(spec.stopped);
    }
    for (int max_tokens_cut : {1, 2, 7, 17}) {
      OracleProposer oracle(sequence, model.vocab_size(), model.hidden_size(), 0.0, i, 16);
      SpecDecodeResult spec = run_spec(model, oracle, {0}, prompts[i], max_tokens_cut, 0);
      EXPECT_EQ(spec.tokens, std::vector<int32_t>(plain.begin(), plain.begin() + max_tokens_cut));
      EXPECT_FALSE(spec.stopped);
    }
    // A KV cache of prompt + 9 positions: plain decoding stops after the token at position prompt + 9.
    const int64_t limit = static_cast<int64_t>(prompts[i].size()) + 9;
    OracleProposer oracle(sequence, model.vocab_size(), model.hidden_size(), 0.0, i, 16);
    SpecDecodeResult spec = run_spec(model, oracle, {0}, prompts[i], max_tokens, 0, {}, limit);
    EXPECT_EQ(spec.tokens, std::vector<int32_t>(plain.begin(), plain.begin() + 10));
  }
}

INSTANTIATE_TEST_SUITE_P(Tiny, GreedyIdentity,
                         ::testing::Values("llama", "qwen2", "qwen3", "qwen3_moe", "mixtral", "deepseek_v2", "gpt_oss"));

// Wraps a DFlash proposer: records what it drafts, then replaces the first slots with the true continuation
// so that acceptance lengths vary (the drafter's context must then grow by a + 1 rows per round).
class RecordingProposer : public DraftProposer {
 public:
  struct Round {
    int64_t start;
    int32_t bonus;
    int block;
    std::vector<float> logits;
  };
  RecordingProposer(DFlashProposer& inner, std::vector<int32_t> sequence, int vocab, uint64_t seed)
      : inner_(inner), sequence_(std::move(sequence)), vocab_(vocab), rng_(seed) {}
  int default_block_size() const override { return inner_.default_block_size(); }
  int feature_width() const override { return inner_.feature_width(); }
  int64_t context_length() const override { return inner_.context_length(); }
  void add_context(const float* f, int64_t n) override { inner_.add_context(f, n); }
  void truncate_context(int64_t length) override { inner_.truncate_context(length); }
  std::vector<float> propose(int32_t bonus, int block_size) override {
    std::vector<float> logits = inner_.propose(bonus, block_size);
    rounds.push_back({context_length(), bonus, block_size, logits});
    const int correct = static_cast<int>(rng_() % block_size);
    for (int j = 1; j <= correct; ++j) {
      const size_t position = context_length() + j;
      if (position >= sequence_.size()) break;
      float* row = logits.data() + static_cast<size_t>(j - 1) * vocab_;
      row[sequence_[position]] = 1e6f;
    }
    return logits;
  }
  std::vector<Round> rounds;

 private:
  DFlashProposer& inner_;
  std::vector<int32_t> sequence_;
  int vocab_;
  std::mt19937_64 rng_;
};

TEST(DrafterContext, EqualsFreshDrafterOnFinalSequence) {
  test::LoadedTarget target = test::load_target(fixture_path("tiny/qwen3"));
  DecoderModel& model = target.decoder();
  test::DrafterShape shape;
  shape.layers = 2;
  shape.target_layer_ids = {1, 0};
  auto drafter = test::random_drafter(model, shape, 21);
  const std::vector<int32_t> prompt = {5, 77, 300, 12, 9, 41};
  const int max_tokens = 40;
  const std::vector<int32_t> plain = test::plain_decode(model, prompt, max_tokens, {});
  std::vector<int32_t> sequence = prompt;
  sequence.insert(sequence.end(), plain.begin(), plain.end());

  DFlashProposer inner(*drafter->drafter, 4096);
  RecordingProposer recording(inner, sequence, model.vocab_size(), 5);
  SpecDecodeResult spec = run_spec(model, recording, drafter->drafter->target_layer_ids(), prompt, max_tokens, 6);
  ASSERT_EQ(spec.tokens, plain);
  ASSERT_GT(recording.rounds.size(), 5u);
  EXPECT_GT(spec.stats.accepted_tokens, 0);

  // Features of the whole final sequence in one pass, then every round replayed on a fresh drafter context.
  CpuSpecTarget fresh_target(model, drafter->drafter->target_layer_ids());
  const std::vector<float> features = fresh_target.verify(sequence).features;
  const int64_t width = drafter->drafter->feature_width();
  for (const auto& round : recording.rounds) {
    DFlashProposer fresh(*drafter->drafter, 4096);
    fresh.add_context(features.data(), round.start);
    EXPECT_EQ(round.bonus, sequence[round.start]);
    const std::vector<float> logits = fresh.propose(round.bonus, round.block);
    ASSERT_EQ(logits.size(), round.logits.size());
    double max_diff = 0;
    for (size_t i = 0; i < logits.size(); ++i) max_diff = std::max<double>(max_diff, std::abs(logits[i] - round.logits[i]));
    EXPECT_LE(max_diff, 1e-5) << "round at " << round.start;
  }
  (void)width;
}

// SmolLM2-135M (Q4_1 GGUF; ~60 ms per token on the CPU): a few prompts, kept short for CI.
TEST(GreedyIdentitySmolLM2, RandomDrafterMatchesPlainGreedy) {
  const std::string path = test::smollm2_gguf_path();
  if (path.empty()) GTEST_SKIP() << "models/SmolLM2-135M-Instruct.Q4_1.gguf not present";
  test::LoadedTarget target = test::load_target(path);
  DecoderModel& model = target.decoder();
  test::DrafterShape shape;
  shape.layers = 1;
  shape.heads = 2;
  shape.kv_heads = 1;
  shape.head_dim = 64;
  shape.intermediate = 64;
  shape.target_layer_ids = {2, 15, model.num_layers() - 1};
  shape.mask_token_id = 0;
  shape.weight_std = 0.05f;
  auto drafter = test::random_drafter(model, shape, 31);
  const std::vector<std::vector<int32_t>> prompts = {
      {1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 7018, 28, 7018, 411},
      {1, 4093, 198, 378, 2444, 282, 260, 1345}};
  const int max_tokens = 6;
  const int blocks[] = {6, 4};
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int32_t> plain = test::plain_decode(model, prompts[i], max_tokens, {});
    DFlashProposer proposer(*drafter->drafter, 512);
    std::vector<int32_t> sequence = prompts[i];
    sequence.insert(sequence.end(), plain.begin(), plain.end());
    if (i == 0) {
      SpecDecodeResult spec = run_spec(model, proposer, drafter->drafter->target_layer_ids(), prompts[i], max_tokens,
                                       blocks[i], {}, 512);
      EXPECT_EQ(spec.tokens, plain) << "prompt " << i;
      std::printf("[ SmolLM2 random drafter: %s ]\n", format_spec_stats(spec.stats).c_str());
    } else {
      // Partly correct blocks on the quantized model too (rollback of the Q4_1 target's KV cache).
      RecordingProposer recording(proposer, sequence, model.vocab_size(), i);
      SpecDecodeResult spec = run_spec(model, recording, drafter->drafter->target_layer_ids(), prompts[i],
                                       max_tokens, blocks[i], {}, 512);
      EXPECT_EQ(spec.tokens, plain) << "prompt " << i;
      EXPECT_GT(spec.stats.accepted_tokens, 0);
      std::printf("[ SmolLM2 partly forced drafts: %s ]\n", format_spec_stats(spec.stats).c_str());
    }
  }
}

// The text-level loop: generate_speculative() streams the same text, tokens and finish reason as generate(),
// with a stop string that ends generation in the middle of a drafted block.
TEST(GreedyIdentitySmolLM2, GenerateSpeculativeMatchesGenerate) {
  const std::string path = test::smollm2_gguf_path();
  if (path.empty()) GTEST_SKIP() << "models/SmolLM2-135M-Instruct.Q4_1.gguf not present";
  test::LoadedTarget target = test::load_target(path);
  DecoderModel& model = target.decoder();
  Tokenizer tokenizer = Tokenizer::from_checkpoint(*target.checkpoint);
  const std::vector<int32_t> prompt = tokenizer.encode("The capital of France is");
  GenerationParams params;
  params.max_tokens = 8;
  const GenerationResult plain = generate(model, tokenizer, prompt, params);
  ASSERT_GE(plain.tokens.size(), 4u);
  // A stop string made of the text of the 3rd and 4th tokens.
  params.stop_strings = {tokenizer.decode(std::vector<int32_t>{plain.tokens[2], plain.tokens[3]})};
  const GenerationResult plain_stopped = generate(model, tokenizer, prompt, params);

  // An oracle proposer makes the stop string fall inside an accepted block.
  std::vector<int32_t> sequence = prompt;
  sequence.insert(sequence.end(), plain.tokens.begin(), plain.tokens.end());
  OracleProposer oracle(sequence, model.vocab_size(), model.hidden_size(), 0.0, 1, 8);
  CpuSpecTarget spec_target(model, {model.num_layers() - 1}, 64);
  SpecStats stats;
  std::string streamed;
  const GenerationResult spec = generate_speculative(spec_target, oracle, tokenizer, prompt, params, SpecOptions{},
                                                     &stats, [&](std::string_view piece) { streamed += piece; });
  EXPECT_EQ(spec.tokens, plain_stopped.tokens);
  EXPECT_EQ(spec.text, plain_stopped.text);
  EXPECT_EQ(spec.finish_reason, plain_stopped.finish_reason);
  EXPECT_EQ(spec.finish_reason, "stop");
  EXPECT_EQ(streamed, spec.text);
  EXPECT_EQ(stats.rounds, 1);  // the whole answer came from one verified block
}

}  // namespace
}  // namespace tachyon
