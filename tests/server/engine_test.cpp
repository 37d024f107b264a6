// BatchingEngine end to end without HTTP: a scripted runner (each token's successor is fixed, so the
// text is known) checks streaming, stop strings / tokens, max_tokens, the queue bound, cancellation,
// timeouts, failures confined to their request and shutdown; the CPU runner on tiny models checks
// that concurrent greedy requests produce exactly what generate() produces for each alone.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "engine_test_util.h"
#include "core/error.h"
#include "loader/checkpoint.h"
#include "runtime/batching_engine.h"
#include "runtime/cpu_model_runner.h"
#include "tokenizer/tokenizer_test_util.h"

namespace tachyon {
namespace {

using namespace std::chrono_literals;

// Logits that make `successor[last token]` the greedy choice; records the batches it ran.
class ScriptedRunner final : public ModelRunner {
 public:
  ScriptedRunner(int vocab, std::map<int32_t, int32_t> successor, int max_sequences = 8)
      : vocab_(vocab), successor_(std::move(successor)), max_sequences_(max_sequences) {}

  std::string description() const override { return "scripted"; }
  int vocab_size() const override { return vocab_; }
  int64_t max_context() const override { return 256; }
  int max_sequences() const override { return max_sequences_; }
  void add_sequence(uint64_t sequence, int64_t max_positions) override {
    if (max_positions == poison_positions) fail("scripted: no KV memory for {} positions", max_positions);
    std::lock_guard lock(mutex_);
    live_.insert(sequence);
  }
  void remove_sequence(uint64_t sequence) override {
    std::lock_guard lock(mutex_);
    live_.erase(sequence);
  }
  std::vector<float> run(std::span<const RunItem> items) override {
    if (step_delay.count() > 0) std::this_thread::sleep_for(step_delay);
    std::vector<float> logits(items.size() * vocab_, 0.0f);
    int decode_rows = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      decode_rows += items[i].tokens.size() == 1;
      auto it = successor_.find(items[i].tokens.back());
      logits[i * vocab_ + (it == successor_.end() ? 0 : it->second)] = 10.0f;
    }
    max_decode_rows = std::max(max_decode_rows.load(), decode_rows);
    return logits;
  }
  size_t live() {
    std::lock_guard lock(mutex_);
    return live_.size();
  }

  std::chrono::milliseconds step_delay{0};
  int64_t poison_positions = -1;
  std::atomic<int> max_decode_rows{0};

 private:
  int vocab_;
  std::map<int32_t, int32_t> successor_;
  int max_sequences_;
  std::mutex mutex_;
  std::set<uint64_t> live_;
};

using test::Finished;
// Engine tests wait at most 30s for a request.
test::Finished drain(RequestStream& stream, std::chrono::seconds limit = 30s) { return test::drain(stream, limit); }

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sentence_ = tokenizer().encode(" The quick brown fox jumps over the lazy dog");
    std::map<int32_t, int32_t> successor;
    for (size_t i = 0; i + 1 < sentence_.size(); ++i) successor[sentence_[i]] = sentence_[i + 1];
    successor[sentence_.back()] = tokenizer().eos_ids().at(0);
    auto runner = std::make_unique<ScriptedRunner>(tokenizer().vocab_size(), successor);
    runner_ = runner.get();
    runner_owner_ = std::move(runner);
  }
  static const Tokenizer& tokenizer() { return test::fixture_tokenizer("smollm2"); }
  BatchingEngine& engine(SchedulerConfig config = {}) {
    engine_ = std::make_unique<BatchingEngine>(std::move(runner_owner_), tokenizer(), config);
    return *engine_;
  }
  EngineRequest request(int max_tokens, std::vector<std::string> stop = {}) {
    EngineRequest r;
    r.prompt = {sentence_[0]};
    r.params.max_tokens = max_tokens;
    r.params.stop_strings = std::move(stop);
    return r;
  }

  std::vector<int32_t> sentence_;
  ScriptedRunner* runner_ = nullptr;
  std::unique_ptr<ScriptedRunner> runner_owner_;
  std::unique_ptr<BatchingEngine> engine_;
};

TEST_F(EngineTest, StreamsUntilMaxTokens) {
  auto stream = engine().submit(request(3));
  ASSERT_TRUE(stream);
  Finished f = drain(*stream);
  EXPECT_EQ(f.reason, FinishReason::length);
  EXPECT_EQ(f.tokens, 3);
  EXPECT_EQ(f.text, " quick brown fox");
}

TEST_F(EngineTest, StopsAtEosAndCountsIt) {
  auto stream = engine().submit(request(100));
  Finished f = drain(*stream);
  EXPECT_EQ(f.reason, FinishReason::stop);
  EXPECT_EQ(f.text, " quick brown fox jumps over the lazy dog");
  EXPECT_EQ(f.tokens, static_cast<int64_t>(sentence_.size()));  // the words after "The", and EOS
}

TEST_F(EngineTest, StopStringCutsTheText) {
  auto stream = engine().submit(request(100, {"s ov"}));
  Finished f = drain(*stream);
  EXPECT_EQ(f.reason, FinishReason::stop);
  EXPECT_EQ(f.text, " quick brown fox jump");
}

TEST_F(EngineTest, ConcurrentRequestsDecodeInOneBatch) {
  runner_->step_delay = 5ms;
  BatchingEngine& e = engine({.max_running = 4, .max_waiting = 4});
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 4; ++i) streams.push_back(e.submit(request(6)));
  for (auto& s : streams) EXPECT_EQ(drain(*s).text, " quick brown fox jumps over the");
  EXPECT_EQ(runner_->max_decode_rows.load(), 4);
  EXPECT_EQ(runner_->live(), 0u);
  EngineStats stats = e.stats();
  EXPECT_EQ(stats.decode_rows, 4u * 5u);
  EXPECT_EQ(stats.running + stats.waiting, 0u);
}

TEST_F(EngineTest, FullQueueRefuses) {
  runner_->step_delay = 20ms;
  BatchingEngine& e = engine({.max_running = 1, .max_waiting = 1});
  auto a = e.submit(request(50)), b = e.submit(request(50));
  ASSERT_TRUE(a && b);
  EXPECT_EQ(e.submit(request(50)), nullptr);
  a->cancel();
  b->cancel();
  EXPECT_EQ(drain(*a).reason, FinishReason::cancelled);
  EXPECT_EQ(drain(*b).reason, FinishReason::cancelled);
  EXPECT_TRUE(e.submit(request(1)));
}

TEST_F(EngineTest, CancelFreesTheSequence) {
  runner_->step_delay = 10ms;
  BatchingEngine& e = engine();
  auto stream = e.submit(request(200));
  std::this_thread::sleep_for(50ms);
  stream->cancel();
  Finished f = drain(*stream);
  EXPECT_EQ(f.reason, FinishReason::cancelled);
  EXPECT_LT(f.tokens, 200);
  for (int i = 0; i < 100 && runner_->live() > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(runner_->live(), 0u);
}

TEST_F(EngineTest, DeadlineTimesOut) {
  runner_->step_delay = 10ms;
  BatchingEngine& e = engine();
  EngineRequest r = request(200);
  r.deadline = SteadyClock::now() + 60ms;
  auto slow = e.submit(r);
  auto fine = e.submit(request(2));
  EXPECT_EQ(drain(*slow).reason, FinishReason::timeout);
  EXPECT_EQ(drain(*fine).reason, FinishReason::length);
}

TEST_F(EngineTest, RunnerErrorFailsOnlyItsRequest) {
  runner_->poison_positions = 1 + 77 - 1;  // the KV size of a request with max_tokens 77
  BatchingEngine& e = engine();
  auto bad = e.submit(request(77));
  auto good = e.submit(request(2));
  Finished f = drain(*bad);
  EXPECT_EQ(f.reason, FinishReason::error);
  EXPECT_NE(f.error.find("no KV memory"), std::string::npos);
  EXPECT_EQ(drain(*good).reason, FinishReason::length);
}

TEST_F(EngineTest, InvalidRequestsAreErrors) {
  BatchingEngine& e = engine();
  EngineRequest empty = request(2);
  empty.prompt.clear();
  EXPECT_THROW(e.submit(empty), Error);
  EngineRequest outside = request(2);
  outside.prompt = {tokenizer().vocab_size()};
  EXPECT_THROW(e.submit(outside), Error);
  EXPECT_THROW(e.submit(request(1000)), Error);  // past the runner's context of 256
  EngineRequest bad_sampling = request(2);
  bad_sampling.params.sampling.top_p = 0;
  EXPECT_THROW(e.submit(bad_sampling), Error);
}

TEST_F(EngineTest, ShutdownFinishesWhatIsLeft) {
  runner_->step_delay = 10ms;
  auto stream = engine().submit(request(200));
  engine_.reset();
  Finished f = drain(*stream, 1s);
  EXPECT_EQ(f.reason, FinishReason::error);
}

// Concurrent greedy requests through the CPU runner equal generate() run on each alone.
class EngineOnTinyModel : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineOnTinyModel, ConcurrentGreedyEqualsGenerate) {
  Checkpoint checkpoint = open_checkpoint(test::source_dir() + "/tests/fixtures/tiny/" + GetParam());
  std::unique_ptr<Model> reference = create_model(checkpoint);
  const Tokenizer& tokenizer = test::fixture_tokenizer("smollm2");
  BatchingEngine engine(std::make_unique<CpuModelRunner>(create_model(checkpoint), 4), tokenizer,
                        {.max_running = 4, .max_waiting = 8, .step_token_budget = 12, .min_prefill_chunk = 4});
  const int vocab = reference->vocab_size();
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> p;
    for (int j = 0; j < 3 + 5 * i; ++j) p.push_back((i * 97 + j * 31 + 5) % vocab);
    prompts.push_back(p);
  }
  GenerationParams params;
  params.max_tokens = 10;
  params.ignore_eos = true;
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& p : prompts) {
    EngineRequest r;
    r.prompt = p;
    r.params = params;
    streams.push_back(engine.submit(r));
    ASSERT_TRUE(streams.back());
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationResult expected = generate(*reference, tokenizer, prompts[i], params);
    Finished got = drain(*streams[i]);
    EXPECT_EQ(got.text, expected.text) << "request " << i;
    EXPECT_EQ(got.tokens, static_cast<int64_t>(expected.tokens.size()));
    EXPECT_EQ(got.reason, FinishReason::length);
  }
  EXPECT_GT(engine.stats().decode_rows, engine.stats().steps);  // some steps decoded several rows
}

INSTANTIATE_TEST_SUITE_P(Tiny, EngineOnTinyModel, ::testing::Values("llama", "qwen3_moe", "deepseek_v3"));

}  // namespace
}  // namespace tachyon
