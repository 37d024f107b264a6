// The OpenAI wire format: request bodies of /v1/completions and /v1/chat/completions checked field by
// field into ParsedRequest, and the JSON of responses, stream chunks and errors. No HTTP, no engine:
// every kind of bad input becomes an ApiError here, and tests/server/openai_protocol_test.cpp feeds it
// bad bodies directly.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/sampler.h"

namespace tachyon::server {

// An error the client caused (or a server-side one, status >= 500), with OpenAI's error fields.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = {}, std::string code = {},
           std::string type = "invalid_request_error")
      : std::runtime_error(message), status(status), param(std::move(param)), code(std::move(code)),
        type(std::move(type)) {}
  int status;
  std::string param, code, type;
};

// {"error": {"message", "type", "param", "code"}} (param and code null when empty).
nlohmann::json error_body(const ApiError& error);

enum class Endpoint { completions, chat_completions };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::completions;
  std::string model;
  // completions: the prompt as text, or as token ids when prompt_ids is set.
  std::string prompt;
  std::optional<std::vector<int32_t>> prompt_ids;
  // chat: messages normalized for the template (content always a string).
  nlohmann::json messages;
  std::optional<int64_t> max_tokens;  // absent: 16 for completions (OpenAI's default), the rest of the context for chat
  SamplingParams sampling;            // seed: the request's, else sampling.seed stays 0 and seed_given is false
  bool seed_given = false;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool ignore_eos = false;     // extension
  std::optional<double> timeout_seconds;  // extension: at most the server's --request-timeout
};

// Throw ApiError (status 400, param naming the field) on anything malformed or unsupported.
ParsedRequest parse_completion_request(const nlohmann::json& body);
ParsedRequest parse_chat_request(const nlohmann::json& body);
// Parses a request body; malformed JSON or ill-formed UTF-8 is an ApiError.
nlohmann::json parse_json_body(const std::string& body);

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// Response bodies. `id` is "cmpl-..." / "chatcmpl-..."; finish_reason "stop" or "length".
nlohmann::json completion_response(const std::string& id, int64_t created, const std::string& model,
                                   const std::string& text, const std::string& finish_reason, const Usage& usage);
nlohmann::json chat_response(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                             const std::string& finish_reason, const Usage& usage);
// One stream chunk. finish_reason "" = null. For chat, `role_chunk` makes the first chunk
// (delta {"role": "assistant", "content": ""}).
nlohmann::json completion_chunk(const std::string& id, int64_t created, const std::string& model,
                                const std::string& text, const std::string& finish_reason);
nlohmann::json chat_chunk(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                          const std::string& finish_reason, bool role_chunk = false);
// The last chunk of a stream with stream_options.include_usage: choices [] and usage.
nlohmann::json usage_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                           const Usage& usage);

// JSON text for the wire: ill-formed UTF-8 (never expected) becomes U+FFFD instead of throwing.
std::string dump_json(const nlohmann::json& value);

}  // namespace tachyon::server
