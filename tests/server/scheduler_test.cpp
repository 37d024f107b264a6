// The continuous-batching scheduler, step by step, without a model: admission and the queue bound,
// decode-first steps with chunked prefill in the leftover budget, slots refilled as sequences finish,
// and cancelled / expired sequences swept out.
#include <gtest/gtest.h>

#include "runtime/scheduler.h"

namespace tachyon {
namespace {

std::shared_ptr<Sequence> make_sequence(uint64_t id, int64_t prompt_tokens, int max_tokens = 8) {
  auto s = std::make_shared<Sequence>();
  s->id = id;
  s->prompt.assign(prompt_tokens, 1);
  s->params.max_tokens = max_tokens;
  return s;
}

// What the engine does after a step: each sequence whose prompt is complete gets a token.
void sample_all(const StepPlan& plan) {
  for (Sequence* s : plan.decode) s->generated.push_back(7);
  for (const PrefillChunk& c : plan.prefill)
    if (c.completes_prompt()) c.sequence->generated.push_back(7);
}

const auto kNow = SteadyClock::now();

TEST(Scheduler, QueueBoundRefusesPastRunningPlusWaiting) {
  Scheduler scheduler({.max_running = 2, .max_waiting = 3});
  for (uint64_t i = 0; i < 5; ++i) EXPECT_TRUE(scheduler.add(make_sequence(i, 4))) << i;
  EXPECT_FALSE(scheduler.add(make_sequence(5, 4)));
  EXPECT_EQ(scheduler.waiting(), 5u);
  StepPlan plan = scheduler.schedule(kNow);  // admitting two frees no room: finishing does
  EXPECT_EQ(scheduler.running(), 2u);
  EXPECT_EQ(scheduler.waiting(), 3u);
  EXPECT_FALSE(scheduler.add(make_sequence(6, 4)));
  scheduler.remove(plan.prefill[0].sequence);
  EXPECT_TRUE(scheduler.add(make_sequence(7, 4)));
}

TEST(Scheduler, ZeroQueueStillAdmitsUpToTheBatch) {
  Scheduler scheduler({.max_running = 2, .max_waiting = 0});
  EXPECT_TRUE(scheduler.add(make_sequence(0, 4)));
  EXPECT_TRUE(scheduler.add(make_sequence(1, 4)));
  EXPECT_FALSE(scheduler.add(make_sequence(2, 4)));
}

TEST(Scheduler, PrefillIsChunkedByTheStepBudget) {
  Scheduler scheduler({.max_running = 4, .max_waiting = 4, .step_token_budget = 10, .min_prefill_chunk = 2});
  auto a = make_sequence(0, 25);
  scheduler.add(a);
  std::vector<int64_t> chunks;
  for (int step = 0; step < 3; ++step) {
    StepPlan plan = scheduler.schedule(kNow);
    ASSERT_EQ(plan.prefill.size(), 1u);
    EXPECT_TRUE(plan.decode.empty());
    chunks.push_back(plan.prefill[0].count);
    EXPECT_EQ(plan.prefill[0].completes_prompt(), step == 2);
    sample_all(plan);
  }
  EXPECT_EQ(chunks, (std::vector<int64_t>{10, 10, 5}));
  StepPlan plan = scheduler.schedule(kNow);
  EXPECT_EQ(plan.decode.size(), 1u);
  EXPECT_TRUE(plan.prefill.empty());
}

TEST(Scheduler, DecodeRowsFirstThenPromptChunksInTheRest) {
  Scheduler scheduler({.max_running = 8, .max_waiting = 8, .step_token_budget = 8, .min_prefill_chunk = 2});
  std::vector<std::shared_ptr<Sequence>> decoding;
  for (uint64_t i = 0; i < 3; ++i) {
    decoding.push_back(make_sequence(i, 2));
    scheduler.add(decoding.back());
  }
  sample_all(scheduler.schedule(kNow));  // all three prompts fit one step (6 of 8 tokens)
  auto late = make_sequence(10, 20);
  scheduler.add(late);
  StepPlan plan = scheduler.schedule(kNow);
  EXPECT_EQ(plan.decode.size(), 3u);
  ASSERT_EQ(plan.prefill.size(), 1u);
  EXPECT_EQ(plan.prefill[0].sequence, late.get());
  EXPECT_EQ(plan.prefill[0].count, 5);  // 8 - 3 decode rows
}

TEST(Scheduler, MinimumPrefillChunkWhenDecodeFillsTheBudget) {
  Scheduler scheduler({.max_running = 8, .max_waiting = 8, .step_token_budget = 4, .min_prefill_chunk = 3});
  for (uint64_t i = 0; i < 4; ++i) scheduler.add(make_sequence(i, 1));
  sample_all(scheduler.schedule(kNow));
  scheduler.add(make_sequence(9, 10));
  StepPlan plan = scheduler.schedule(kNow);
  EXPECT_EQ(plan.decode.size(), 4u);
  ASSERT_EQ(plan.prefill.size(), 1u);
  EXPECT_EQ(plan.prefill[0].count, 3);  // a new request is never starved by a full batch
}

TEST(Scheduler, BatchChangesAsSequencesFinish) {
  Scheduler scheduler({.max_running = 2, .max_waiting = 4, .step_token_budget = 64});
  auto a = make_sequence(0, 3), b = make_sequence(1, 3), c = make_sequence(2, 3);
  scheduler.add(a);
  scheduler.add(b);
  scheduler.add(c);
  StepPlan plan = scheduler.schedule(kNow);
  EXPECT_EQ(plan.prefill.size(), 2u);  // c waits for a slot
  EXPECT_EQ(scheduler.waiting(), 1u);
  sample_all(plan);
  scheduler.remove(a.get());
  plan = scheduler.schedule(kNow);
  ASSERT_EQ(plan.decode.size(), 1u);
  EXPECT_EQ(plan.decode[0], b.get());
  ASSERT_EQ(plan.prefill.size(), 1u);
  EXPECT_EQ(plan.prefill[0].sequence, c.get());  // joins the running batch mid-flight
}

TEST(Scheduler, FirstComeFirstServed) {
  Scheduler scheduler({.max_running = 1, .max_waiting = 4});
  for (uint64_t i = 0; i < 3; ++i) scheduler.add(make_sequence(i, 2));
  for (uint64_t expected = 0; expected < 3; ++expected) {
    StepPlan plan = scheduler.schedule(kNow);
    ASSERT_EQ(plan.prefill.size(), 1u);
    EXPECT_EQ(plan.prefill[0].sequence->id, expected);
    scheduler.remove(plan.prefill[0].sequence);
  }
}

TEST(Scheduler, CancelledSequencesAreSweptFromBothQueues) {
  Scheduler scheduler({.max_running = 1, .max_waiting = 4});
  auto running = make_sequence(0, 2), waiting = make_sequence(1, 2);
  scheduler.add(running);
  scheduler.add(waiting);
  sample_all(scheduler.schedule(kNow));
  running->cancel_requested = true;
  waiting->cancel_requested = true;
  StepPlan plan = scheduler.schedule(kNow);
  EXPECT_FALSE(plan.has_work());
  ASSERT_EQ(plan.finished.size(), 2u);
  EXPECT_EQ(running->finish, FinishReason::cancelled);
  EXPECT_EQ(waiting->finish, FinishReason::cancelled);
  EXPECT_EQ(scheduler.running(), 0u);
  EXPECT_EQ(scheduler.waiting(), 0u);
}

TEST(Scheduler, ExpiredSequencesTimeOut) {
  Scheduler scheduler({.max_running = 2, .max_waiting = 2});
  auto late = make_sequence(0, 2), fine = make_sequence(1, 2);
  late->deadline = kNow + std::chrono::seconds(1);
  scheduler.add(late);
  scheduler.add(fine);
  EXPECT_TRUE(scheduler.schedule(kNow).finished.empty());
  StepPlan plan = scheduler.schedule(kNow + std::chrono::seconds(2));
  ASSERT_EQ(plan.finished.size(), 1u);
  EXPECT_EQ(plan.finished[0].get(), late.get());
  EXPECT_EQ(late->finish, FinishReason::timeout);
  EXPECT_EQ(fine->finish, FinishReason::none);
  EXPECT_EQ(scheduler.running(), 1u);
}

TEST(Scheduler, InvalidConfigIsAnError) {
  EXPECT_THROW(Scheduler({.max_running = 0}), std::exception);
  EXPECT_THROW(Scheduler({.max_running = 1, .max_waiting = -1}), std::exception);
  EXPECT_THROW(Scheduler({.max_running = 1, .max_waiting = 1, .step_token_budget = 0}), std::exception);
}

}  // namespace
}  // namespace tachyon
