// The engine as the server sees it: submit a tokenized request, read its text as it is produced,
// cancel it. InferenceEngine is the interface; BatchingEngine (batching_engine.h) is the
// implementation over a Scheduler and a ModelRunner (CPU today; a GPU runner plugs in there). An
// engine with its own resident loop (GPU decode graph, speculative drafting) can implement
// InferenceEngine directly.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/sequence.h"

namespace tachyon {

struct EngineRequest {
  std::vector<int32_t> prompt;
  GenerationParams params;  // stop strings, stop ids, sampling (seed already chosen), max_tokens
  SteadyClock::time_point arrival = SteadyClock::now();
  SteadyClock::time_point deadline = SteadyClock::time_point::max();
};

// Output taken from a RequestStream: what is new since the previous take().
struct RequestOutput {
  std::string text;                      // new text (complete UTF-8, stop strings removed)
  int64_t completion_tokens = 0;         // tokens generated so far (all takes together)
  std::vector<double> new_token_times;   // seconds since arrival of each token generated since the last take
  bool finished = false;
  FinishReason finish_reason = FinishReason::none;
  std::string error;                     // for FinishReason::error
};

// The channel between the engine thread (producer) and one request's handler (consumer).
class RequestStream {
 public:
  RequestStream(std::shared_ptr<Sequence> sequence, SteadyClock::time_point arrival);

  // Waits until there is new output or `timeout` passes, then moves the new output out.
  RequestOutput take(std::chrono::milliseconds timeout);
  // Asks the engine to drop the request (the client went away); it finishes as `cancelled`.
  void cancel();
  uint64_t id() const { return id_; }

  // Producer side (the engine thread).
  void push(std::string_view text, int tokens, SteadyClock::time_point now);
  void finish(FinishReason reason, std::string error = {});

 private:
  std::shared_ptr<Sequence> sequence_;
  const uint64_t id_;
  const SteadyClock::time_point arrival_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::string text_;
  int64_t tokens_ = 0;
  std::vector<double> token_times_;
  bool finished_ = false, finish_taken_ = false;
  FinishReason reason_ = FinishReason::none;
  std::string error_;
};

struct EngineStats {
  size_t waiting = 0;        // queued, not yet admitted to the batch
  size_t running = 0;        // in the batch (prefilling or decoding)
  uint64_t steps = 0;        // engine steps run
  uint64_t decode_rows = 0;  // decode tokens run, over all steps (decode_rows / steps = mean batch)
  uint64_t prefill_tokens = 0;
  // Speculative decoding (SpeculativeEngine, serve --draft); all 0 without a drafter.
  bool speculative = false;
  uint64_t speculative_rounds = 0;            // target verify passes
  uint64_t speculative_draft_tokens = 0;      // drafted slots offered (sum of b - 1)
  uint64_t speculative_accepted_tokens = 0;   // drafted slots accepted
  uint64_t speculative_committed_tokens = 0;  // tokens the rounds produced, bonus included (/ rounds = tau)
  std::vector<uint64_t> speculative_tokens_per_round;  // [k] = rounds that committed k tokens
};

struct ModelInfo {
  int vocab_size = 0;
  int64_t max_context = 0;
  std::string description;
  bool min_p = true;  // false: requests with min_p are refused at submit (the GPU sampler has none)
};

class InferenceEngine {
 public:
  virtual ~InferenceEngine() = default;
  // Queues a request. nullptr when the queue is full (HTTP 429). Throws Error on a request that can
  // never run (empty prompt, more positions than the context).
  virtual std::shared_ptr<RequestStream> submit(EngineRequest request) = 0;
  virtual EngineStats stats() const = 0;
  virtual ModelInfo model_info() const = 0;
  // Requests decoded together, and requests that may wait beyond them before submit() refuses.
  virtual size_t max_running() const = 0;
  virtual size_t max_waiting() const = 0;
};

}  // namespace tachyon
