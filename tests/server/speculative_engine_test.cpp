// SpeculativeEngine (serve --draft): a served greedy completion with the committed SmolLM2 drafter equals the
// one BatchingEngine serves without it (text, token count, finish reason), stop strings and EOS included; the
// speculative counters move; cancellation and the queue bound behave as BatchingEngine's.
// Needs models/SmolLM2-135M-Instruct.Q4_1.gguf (skipped without it) and drafters/smollm2-135m-instruct-dflash.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "engine_test_util.h"
#include "loader/checkpoint.h"
#include "runtime/batching_engine.h"
#include "runtime/cpu_model_runner.h"
#include "spec/speculative_engine.h"
#include "spec/target.h"
#include "support/paths.h"
#include "tokenizer/chat_template.h"

namespace tachyon {
namespace {

using namespace std::chrono_literals;

using test::Finished;
// Engine tests wait at most 120s for a request.
test::Finished drain(RequestStream& stream, std::chrono::seconds limit = 120s) { return test::drain(stream, limit); }

class SpeculativeEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string gguf = test::smollm2_gguf_path();
    const std::string drafter_dir = test::source_dir() + "/drafters/smollm2-135m-instruct-dflash";
    if (gguf.empty()) GTEST_SKIP() << "models/SmolLM2-135M-Instruct.Q4_1.gguf not present";
    if (!std::filesystem::exists(drafter_dir + "/config.json")) GTEST_SKIP() << drafter_dir << " not present";
    checkpoint_ = std::make_unique<Checkpoint>(open_checkpoint(gguf));
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::from_checkpoint(*checkpoint_));
    model_ = create_model(*checkpoint_);
    draft_checkpoint_ = std::make_unique<Checkpoint>(open_checkpoint(drafter_dir));
    drafter_ = std::make_unique<DFlashDrafter>(*draft_checkpoint_, drafter_target_info(decoder()));
  }
  DecoderModel& decoder() { return dynamic_cast<DecoderModel&>(*model_); }

  std::vector<int32_t> chat_prompt(const std::string& user) {
    nlohmann::json context = {{"messages", nlohmann::json::array({{{"role", "user"}, {"content", user}}})},
                              {"add_generation_prompt", true},
                              {"bos_token", tokenizer_->bos_text()},
                              {"eos_token", tokenizer_->eos_text()}};
    return tokenizer_->encode(render_jinja_template(tokenizer_->chat_template(), context));
  }

  std::unique_ptr<Checkpoint> checkpoint_, draft_checkpoint_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<DFlashDrafter> drafter_;
};

TEST_F(SpeculativeEngineTest, GreedyEqualsTheEngineWithoutDrafter) {
  struct Case {
    std::string user;
    int max_tokens;
    std::vector<std::string> stop;
  };
  const std::vector<Case> cases = {{"What is the capital of France?", 24, {}},
                                   {"Write a haiku about the sea.", 20, {}},
                                   {"List three colors.", 24, {","}},  // a stop string inside a drafted block
                                   {"Say hi.", 40, {}}};               // short answer: ends at EOS (stop)
  std::vector<Finished> plain, drafted;
  {
    BatchingEngine engine(std::make_unique<CpuModelRunner>(create_model(*checkpoint_), 2), *tokenizer_,
                          {.max_running = 2, .max_waiting = 8});
    for (const Case& c : cases) {
      EngineRequest r;
      r.prompt = chat_prompt(c.user);
      r.params.max_tokens = c.max_tokens;
      r.params.stop_strings = c.stop;
      auto stream = engine.submit(r);
      ASSERT_TRUE(stream);
      plain.push_back(drain(*stream));
    }
  }
  SpeculativeEngine engine(decoder(), *drafter_, *tokenizer_, 8);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const Case& c : cases) {  // all queued at once: they run one after another
    EngineRequest r;
    r.prompt = chat_prompt(c.user);
    r.params.max_tokens = c.max_tokens;
    r.params.stop_strings = c.stop;
    streams.push_back(engine.submit(r));
    ASSERT_TRUE(streams.back());
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    Finished got = drain(*streams[i]);
    EXPECT_EQ(got.text, plain[i].text) << "case " << i;
    EXPECT_EQ(got.tokens, plain[i].tokens) << "case " << i;
    EXPECT_EQ(got.reason, plain[i].reason) << "case " << i;
    EXPECT_FALSE(got.text.empty()) << "case " << i;
  }
  const EngineStats stats = engine.stats();
  EXPECT_TRUE(stats.speculative);
  EXPECT_GT(stats.speculative_rounds, 0u);
  EXPECT_GT(stats.speculative_draft_tokens, 0u);
  EXPECT_GE(stats.speculative_committed_tokens, stats.speculative_rounds);
  EXPECT_EQ(stats.speculative_committed_tokens, stats.speculative_rounds + stats.speculative_accepted_tokens);
  std::printf("[ served with the drafter: %llu rounds, tau %.2f, accepted %llu of %llu drafted ]\n",
              static_cast<unsigned long long>(stats.speculative_rounds),
              static_cast<double>(stats.speculative_committed_tokens) / static_cast<double>(stats.speculative_rounds),
              static_cast<unsigned long long>(stats.speculative_accepted_tokens),
              static_cast<unsigned long long>(stats.speculative_draft_tokens));
}

TEST_F(SpeculativeEngineTest, CancelQueueBoundAndSampling) {
  SpeculativeEngine engine(decoder(), *drafter_, *tokenizer_, 1);
  EngineRequest r;
  r.prompt = chat_prompt("Tell me a long story about a dragon.");
  r.params.max_tokens = 400;
  r.params.ignore_eos = true;
  auto running = engine.submit(r);
  ASSERT_TRUE(running);
  // Wait until it runs, then one may wait and the next is refused.
  for (int i = 0; i < 200 && engine.stats().running == 0; ++i) std::this_thread::sleep_for(10ms);
  EngineRequest sampled = r;
  sampled.params.max_tokens = 6;
  sampled.params.sampling = {.temperature = 0.8f, .top_k = 40, .top_p = 0.9f, .min_p = 0.0f, .seed = 7};
  auto waiting = engine.submit(sampled);
  ASSERT_TRUE(waiting);
  EXPECT_FALSE(engine.submit(r));  // the queue (1) is full
  running->cancel();
  Finished cancelled = drain(*running);
  EXPECT_EQ(cancelled.reason, FinishReason::cancelled);
  EXPECT_LT(cancelled.tokens, 400);
  Finished done = drain(*waiting);  // T > 0 runs through the speculative rule
  EXPECT_EQ(done.reason, FinishReason::length);
  EXPECT_EQ(done.tokens, 6);

  EngineRequest late = r;
  late.deadline = SteadyClock::now() - 1s;
  Finished expired = drain(*engine.submit(late));
  EXPECT_EQ(expired.reason, FinishReason::timeout);
}

}  // namespace
}  // namespace tachyon
