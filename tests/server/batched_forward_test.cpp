// forward_batch (one pass over the weights for several sequences' tokens) gives every item the
// logits that Model::forward gives that sequence alone, bitwise, on every architecture's tiny
// fixture: decode tokens and prompt chunks mixed in one step, sequences at different lengths, items
// joining and leaving the batch from step to step.
#include <gtest/gtest.h>

#include <memory>

#include "core/error.h"
#include "loader/checkpoint.h"
#include "models/model.h"
#include "runtime/batched_forward.h"
#include "runtime/cpu_model_runner.h"
#include "runtime/sampler.h"
#include "support/paths.h"

namespace tachyon {
namespace {

std::vector<int32_t> prompt_of(int length, int seed, int vocab) {
  std::vector<int32_t> ids;
  for (int i = 0; i < length; ++i) ids.push_back((seed * 131 + i * 17 + 3) % vocab);
  return ids;
}

class BatchedForward : public ::testing::TestWithParam<std::string> {};

TEST_P(BatchedForward, ItemsEqualSingleSequenceForward) {
  Checkpoint checkpoint = open_checkpoint(test::fixture_path("tiny/" + GetParam()));
  std::unique_ptr<Model> model = create_model(checkpoint);
  const int vocab = model->vocab_size();
  // Prompts of 5, 1 and 12 tokens; the 12-token one arrives in chunks of 7 and 5 while the others decode.
  const std::vector<std::vector<int32_t>> prompts = {prompt_of(5, 0, vocab), prompt_of(1, 1, vocab), prompt_of(12, 2, vocab)};
  const int count = static_cast<int>(prompts.size());
  std::vector<KvCache> alone(count), batched(count);
  for (int b = 0; b < count; ++b) {
    alone[b] = model->new_cache(64);
    batched[b] = model->new_cache(64);
  }
  std::vector<int32_t> next(count, -1);
  for (int step = 0; step < 7; ++step) {
    // What each sequence runs this step: step 0 the first two prompts and a chunk of the third, step 1
    // the rest of the third prompt beside two decode tokens, then decode tokens, with sequence 1
    // sitting out step 3.
    std::vector<std::pair<int, std::vector<int32_t>>> plan;
    for (int b = 0; b < count; ++b) {
      if (b == 2 && step == 0) plan.push_back({b, {prompts[2].begin(), prompts[2].begin() + 7}});
      else if (b == 2 && step == 1) plan.push_back({b, {prompts[2].begin() + 7, prompts[2].end()}});
      else if (step == 0) plan.push_back({b, prompts[b]});
      else if (!(step == 3 && b == 1)) plan.push_back({b, {next[b]}});
    }
    std::vector<ForwardItem> items;
    for (auto& [b, tokens] : plan) items.push_back({tokens, &batched[b]});
    std::vector<float> logits = forward_batch(*model, items);
    ASSERT_EQ(logits.size(), plan.size() * vocab);
    for (size_t r = 0; r < plan.size(); ++r) {
      const int b = plan[r].first;
      std::vector<float> expected = model->forward(plan[r].second, alone[b]);
      std::vector<float> got(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
      ASSERT_EQ(got, expected) << GetParam() << " step " << step << " sequence " << b;
      EXPECT_EQ(batched[b].length(), alone[b].length());
      next[b] = argmax(expected);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tiny, BatchedForward,
                         ::testing::Values("llama", "qwen2", "qwen3", "qwen3_moe", "mixtral", "deepseek_v2",
                                           "deepseek_v3", "gpt_oss", "gpt_oss_mxfp4"));

TEST(BatchedForwardErrors, InvalidItemsAreErrors) {
  Checkpoint checkpoint = open_checkpoint(test::fixture_path("tiny/llama"));
  std::unique_ptr<Model> model = create_model(checkpoint);
  KvCache a = model->new_cache(4), b = model->new_cache(4);
  const std::vector<int32_t> one = {1}, two = {1, 2}, none = {}, outside = {model->vocab_size()};
  EXPECT_THROW(forward_batch(*model, std::vector<ForwardItem>{{one, &a}, {one, &a}}), Error);
  EXPECT_THROW(forward_batch(*model, std::vector<ForwardItem>{{one, &a}, {none, &b}}), Error);
  EXPECT_THROW(forward_batch(*model, std::vector<ForwardItem>{{one, &a}, {one, nullptr}}), Error);
  EXPECT_THROW(forward_batch(*model, std::vector<ForwardItem>{{outside, &a}}), Error);
  forward_batch(*model, std::vector<ForwardItem>{{two, &a}, {one, &b}});
  forward_batch(*model, std::vector<ForwardItem>{{two, &a}, {two, &b}});
  EXPECT_THROW(forward_batch(*model, std::vector<ForwardItem>{{one, &a}}), Error);  // past max_positions
  EXPECT_EQ(a.length(), 4);
}

TEST(CpuModelRunner, StepsOverSeveralSequences) {
  Checkpoint checkpoint = open_checkpoint(test::fixture_path("tiny/qwen3"));
  CpuModelRunner runner(create_model(checkpoint), 2);
  std::unique_ptr<Model> reference = create_model(checkpoint);
  const int vocab = runner.vocab_size();
  const std::vector<int32_t> p0 = prompt_of(6, 0, vocab), p1 = prompt_of(9, 1, vocab);
  runner.add_sequence(10, 32);
  runner.add_sequence(11, 32);
  EXPECT_THROW(runner.add_sequence(12, 32), Error);  // two caches at most
  EXPECT_THROW(runner.add_sequence(10, 32), Error);  // already there
  std::vector<RunItem> step1 = {{10, p0}, {11, std::span<const int32_t>(p1).subspan(0, 4)}};
  std::vector<float> l1 = runner.run(step1);
  const int32_t t0 = argmax(std::span<const float>(l1).subspan(0, vocab));
  std::vector<RunItem> step2 = {{10, std::span<const int32_t>(&t0, 1)}, {11, std::span<const int32_t>(p1).subspan(4)}};
  std::vector<float> l2 = runner.run(step2);

  KvCache c0 = reference->new_cache(32), c1 = reference->new_cache(32);
  reference->forward(p0, c0);
  EXPECT_EQ(std::vector<float>(l2.begin(), l2.begin() + vocab), reference->forward(std::span<const int32_t>(&t0, 1), c0));
  // A prompt in two chunks equals the prompt in one forward: rows do not depend on their neighbours.
  EXPECT_EQ(std::vector<float>(l2.begin() + vocab, l2.end()), reference->forward(p1, c1));
  runner.remove_sequence(10);
  runner.add_sequence(12, 32);
  EXPECT_THROW(runner.run(std::vector<RunItem>{{10, p0}}), Error);  // removed
}

}  // namespace
}  // namespace tachyon
