#include "runtime/scheduler.h"

#include <algorithm>

#include "core/error.h"

namespace tachyon {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::none: return "none";
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::cancelled: return "cancelled";
    case FinishReason::timeout: return "timeout";
    case FinishReason::error: return "error";
  }
  return "unknown";
}

Scheduler::Scheduler(const SchedulerConfig& config) : config_(config) {
  if (config_.max_running < 1) fail("scheduler: max_running must be >= 1, got {}", config_.max_running);
  if (config_.max_waiting < 0) fail("scheduler: max_waiting must be >= 0, got {}", config_.max_waiting);
  if (config_.step_token_budget < 1) fail("scheduler: step_token_budget must be >= 1, got {}", config_.step_token_budget);
  if (config_.min_prefill_chunk < 1) fail("scheduler: min_prefill_chunk must be >= 1, got {}", config_.min_prefill_chunk);
}

bool Scheduler::add(std::shared_ptr<Sequence> sequence) {
  // At most max_running + max_waiting sequences at once; waiting ones take free running slots at
  // the next schedule().
  const size_t capacity = static_cast<size_t>(config_.max_running) + static_cast<size_t>(config_.max_waiting);
  if (waiting_.size() + running_.size() >= capacity) return false;
  waiting_.push_back(std::move(sequence));
  return true;
}

bool Scheduler::should_drop(Sequence& sequence, SteadyClock::time_point now) {
  if (sequence.finished()) return true;
  if (sequence.cancel_requested.load(std::memory_order_relaxed)) {
    sequence.finish = FinishReason::cancelled;
    return true;
  }
  if (now >= sequence.deadline) {
    sequence.finish = FinishReason::timeout;
    return true;
  }
  return false;
}

StepPlan Scheduler::schedule(SteadyClock::time_point now) {
  StepPlan plan;
  auto sweep = [&](auto& queue) {
    auto keep = std::stable_partition(queue.begin(), queue.end(),
                                      [&](const std::shared_ptr<Sequence>& s) { return !should_drop(*s, now); });
    for (auto it = keep; it != queue.end(); ++it) plan.finished.push_back(std::move(*it));
    queue.erase(keep, queue.end());
  };
  sweep(waiting_);
  sweep(running_);

  while (!waiting_.empty() && running_.size() < static_cast<size_t>(config_.max_running)) {
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }

  for (const auto& s : running_)
    if (s->prefill_done() && !s->generated.empty()) plan.decode.push_back(s.get());

  int64_t budget = std::max(config_.step_token_budget - static_cast<int64_t>(plan.decode.size()),
                            config_.min_prefill_chunk);
  for (const auto& s : running_) {
    if (budget <= 0) break;
    if (s->prefill_done()) continue;
    const int64_t count = std::min(budget, s->prompt_length() - s->prefilled);
    plan.prefill.push_back({s.get(), s->prefilled, count});
    s->prefilled += count;
    budget -= count;
  }
  return plan;
}

void Scheduler::remove(const Sequence* sequence) {
  auto it = std::find_if(running_.begin(), running_.end(),
                         [&](const std::shared_ptr<Sequence>& s) { return s.get() == sequence; });
  if (it != running_.end()) running_.erase(it);
}

}  // namespace tachyon
