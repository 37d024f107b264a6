// POST /v1/completions and /v1/chat/completions: body -> ParsedRequest -> prompt tokens (chat
// template for chat) -> checks against the context -> InferenceEngine::submit -> a JSON response, or
// server-sent events while the engine produces text. Bad input of any kind is a 4xx with an
// OpenAI-style error body; a full queue is 429 with Retry-After; a client that goes away cancels.
#pragma once
#include <atomic>
#include <mutex>
#include <random>
#include <string>

#include "runtime/engine.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_protocol.h"
#include "tokenizer/tokenizer.h"

namespace httplib {
struct Request;
struct Response;
}  // namespace httplib

namespace tachyon::server {

class GenerationHandler {
 public:
  GenerationHandler(InferenceEngine& engine, const Tokenizer& tokenizer, Metrics& metrics, const ServerOptions& options);

  void handle(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
  InferenceEngine& engine() { return engine_; }
  // Makes waiting non-streaming handlers give up (503) so that the server can stop; streams end
  // through cpp-httplib's own shutdown check.
  void shut_down() { shutting_down_ = true; }

  // The tokens a request's prompt becomes (completions: BOS + text, or the ids given; chat: the
  // model's template). Throws ApiError.
  std::vector<int32_t> prompt_tokens(const ParsedRequest& request) const;

 private:
  std::string new_id(const char* prefix);
  uint64_t new_seed();

  InferenceEngine& engine_;
  const Tokenizer& tokenizer_;
  Metrics& metrics_;
  const ServerOptions& options_;
  std::atomic<bool> shutting_down_{false};
  std::mutex random_mutex_;
  std::mt19937_64 random_;
};

}  // namespace tachyon::server
