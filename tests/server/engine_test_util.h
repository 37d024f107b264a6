// Shared by the engine tests (BatchingEngine, SpeculativeEngine): read a request's stream to its end.
#pragma once
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "runtime/engine.h"

namespace tachyon::test {

struct Finished {
  std::string text;
  int64_t tokens = 0;
  FinishReason reason = FinishReason::none;
  std::string error;
};

// Everything the stream produces until it finishes, or a test failure after `limit`.
inline Finished drain(RequestStream& stream, std::chrono::seconds limit) {
  using namespace std::chrono_literals;
  Finished f;
  const auto end = SteadyClock::now() + limit;
  while (SteadyClock::now() < end) {
    RequestOutput out = stream.take(50ms);
    f.text += out.text;
    f.tokens = out.completion_tokens;
    if (out.finished) {
      f.reason = out.finish_reason;
      f.error = out.error;
      return f;
    }
  }
  ADD_FAILURE() << "request did not finish";
  return f;
}

}  // namespace tachyon::test
