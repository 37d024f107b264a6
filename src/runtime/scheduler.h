// Continuous batching: which sequences run in the next engine step, and how much of each.
//
// Two queues, as nano-vllm: `waiting` (admitted by add(), bounded so that a full server answers 429
// instead of piling up work) and `running` (at most max_running sequences that own KV memory). Every
// step decodes one token of every running sequence whose prompt is in the cache, and spends what is
// left of the step's token budget on prompt chunks (chunked prefill), oldest first, so that a long
// prompt arriving never stalls the streams already decoding for more than one chunk. Sequences join
// `running` as soon as a slot is free: the batch changes from one step to the next.
//
// Pure bookkeeping: no model, no clock of its own, no threads (the engine locks around it), so
// tests/server/scheduler_test.cpp drives it step by step.
#pragma once
#include <cstddef>
#include <deque>
#include <memory>
#include <vector>

#include "runtime/sequence.h"

namespace tachyon {

struct SchedulerConfig {
  int max_running = 8;               // sequences decoded together (the batch)
  int max_waiting = 32;              // queued sequences beyond the batch; add() refuses past it
  int64_t step_token_budget = 256;   // decode rows + prompt tokens per step
  int64_t min_prefill_chunk = 32;    // prompt tokens per step even when decode rows use the budget
};

struct PrefillChunk {
  Sequence* sequence = nullptr;
  int64_t begin = 0, count = 0;  // prompt[begin, begin + count)
  bool completes_prompt() const { return begin + count == sequence->prompt_length(); }
};

struct StepPlan {
  std::vector<Sequence*> decode;                    // one token each: the last generated one
  std::vector<PrefillChunk> prefill;                // prompt chunks
  std::vector<std::shared_ptr<Sequence>> finished;  // dropped this step (cancelled / timed out)
  bool has_work() const { return !decode.empty() || !prefill.empty(); }
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);

  // Queues a sequence; false (and nothing queued) when `waiting` is full.
  bool add(std::shared_ptr<Sequence> sequence);
  // Sweeps out cancelled and expired sequences (into plan.finished, with their finish reason set),
  // admits waiting sequences into free running slots, and plans the step. Advances `prefilled` of
  // the planned chunks: the caller runs exactly this plan.
  StepPlan schedule(SteadyClock::time_point now);
  // Removes a running sequence that the engine finished (stop, length, error).
  void remove(const Sequence* sequence);

  size_t waiting() const { return waiting_.size(); }
  size_t running() const { return running_.size(); }
  const SchedulerConfig& config() const { return config_; }

 private:
  static bool should_drop(Sequence& sequence, SteadyClock::time_point now);

  SchedulerConfig config_;
  std::deque<std::shared_ptr<Sequence>> waiting_;
  std::vector<std::shared_ptr<Sequence>> running_;  // in admission order
};

}  // namespace tachyon
