#include "runtime/engine.h"

namespace tachyon {

RequestStream::RequestStream(std::shared_ptr<Sequence> sequence, SteadyClock::time_point arrival)
    : sequence_(std::move(sequence)), id_(sequence_->id), arrival_(arrival) {}

RequestOutput RequestStream::take(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return !text_.empty() || !token_times_.empty() || (finished_ && !finish_taken_); });
  RequestOutput out;
  out.text = std::move(text_);
  text_.clear();
  out.new_token_times = std::move(token_times_);
  token_times_.clear();
  out.completion_tokens = tokens_;
  out.finished = finished_;
  out.finish_reason = reason_;
  out.error = error_;
  if (finished_) finish_taken_ = true;
  return out;
}

void RequestStream::cancel() { sequence_->cancel_requested.store(true, std::memory_order_relaxed); }

void RequestStream::push(std::string_view text, int tokens, SteadyClock::time_point now) {
  {
    std::lock_guard lock(mutex_);
    text_.append(text);
    tokens_ += tokens;
    for (int i = 0; i < tokens; ++i) token_times_.push_back(std::chrono::duration<double>(now - arrival_).count());
  }
  changed_.notify_all();
}

void RequestStream::finish(FinishReason reason, std::string error) {
  {
    std::lock_guard lock(mutex_);
    if (finished_) return;
    finished_ = true;
    reason_ = reason;
    error_ = std::move(error);
  }
  changed_.notify_all();
}

}  // namespace tachyon
