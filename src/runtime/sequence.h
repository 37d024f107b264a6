// One request's generation as the scheduler and the engine see it: plain data, no model state.
// The KV cache lives in the model runner (keyed by `id`); sampling and detokenizing state in the
// engine. Fields are touched by the engine thread only, except `cancel_requested`.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include "runtime/generate.h"

namespace tachyon {

using SteadyClock = std::chrono::steady_clock;

enum class FinishReason {
  none,       // still running
  stop,       // an EOS / stop token or a stop string
  length,     // max_tokens, or the sequence filled its KV capacity
  cancelled,  // the client went away (or asked)
  timeout,    // the per-request deadline passed
  error,      // the model runner failed on this sequence
};

// "stop", "length", ... (the OpenAI finish_reason for the first two).
const char* finish_reason_name(FinishReason reason);

struct Sequence {
  uint64_t id = 0;
  std::vector<int32_t> prompt;
  GenerationParams params;
  SteadyClock::time_point arrival{};
  SteadyClock::time_point deadline = SteadyClock::time_point::max();

  int64_t prefilled = 0;             // prompt tokens already in the KV cache
  std::vector<int32_t> generated;    // sampled tokens; the last one is the next decode input
  FinishReason finish = FinishReason::none;
  std::atomic<bool> cancel_requested{false};

  int64_t prompt_length() const { return static_cast<int64_t>(prompt.size()); }
  bool prefill_done() const { return prefilled == prompt_length(); }
  // KV positions this sequence can ever need: the prompt and every generated token but the last.
  int64_t max_positions() const { return prompt_length() + std::max(params.max_tokens - 1, 0); }
  bool finished() const { return finish != FinishReason::none; }
};

}  // namespace tachyon
