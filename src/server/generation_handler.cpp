#include "server/generation_handler.h"

#include <algorithm>
#include <cmath>
#include <ctime>

#include <fmt/format.h>

#include <httplib.h>

#include "core/error.h"
#include "server/peer_socket.h"
#include "tokenizer/chat_template.h"

namespace tachyon::server {

namespace {

using nlohmann::json;
constexpr auto kPollInterval = std::chrono::milliseconds(100);

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& error) { send_json(res, error.status, error_body(error)); }

std::string sse(const json& value) { return "data: " + dump_json(value) + "\n\n"; }

// One request from submit() to its last byte: what the response needs and what metrics record.
struct Generation {
  std::shared_ptr<RequestStream> stream;
  Endpoint endpoint = Endpoint::completions;
  std::string id, model;
  int64_t created = 0;
  int64_t prompt_tokens = 0;
  SteadyClock::time_point arrival;
  bool include_usage = false;

  std::string text;  // non-streaming: everything so far
  int64_t completion_tokens = 0;
  bool first_token_seen = false, recorded = false, role_sent = false, done = false;
  double last_token_time = 0;

  // Takes the engine's new output into this generation and the latency histograms.
  RequestOutput take(Metrics& metrics) {
    RequestOutput out = stream->take(kPollInterval);
    metrics.observe_token_times(out.new_token_times, !first_token_seen, last_token_time);
    if (!out.new_token_times.empty()) {
      first_token_seen = true;
      last_token_time = out.new_token_times.back();
    }
    completion_tokens = out.completion_tokens;
    return out;
  }
  void record(Metrics& metrics, FinishReason reason) {
    if (recorded) return;
    recorded = true;
    metrics.observe_request(prompt_tokens, completion_tokens, reason,
                            std::chrono::duration<double>(SteadyClock::now() - arrival).count());
  }
  Usage usage() const { return {prompt_tokens, completion_tokens}; }
};

ApiError finish_error(const RequestOutput& out, double timeout_seconds) {
  if (out.finish_reason == FinishReason::timeout)
    return ApiError(408, fmt::format("The request did not finish within its timeout of {} s", timeout_seconds), "timeout",
                    "timeout", "timeout_error");
  return ApiError(500, "generation failed: " + out.error, "", "", "server_error");
}

}  // namespace

GenerationHandler::GenerationHandler(InferenceEngine& engine, const Tokenizer& tokenizer, Metrics& metrics,
                                     const ServerOptions& options)
    : engine_(engine), tokenizer_(tokenizer), metrics_(metrics), options_(options), random_(std::random_device{}()) {}

std::string GenerationHandler::new_id(const char* prefix) {
  std::lock_guard lock(random_mutex_);
  return fmt::format("{}-{:016x}{:08x}", prefix, random_(), static_cast<uint32_t>(random_()));
}

uint64_t GenerationHandler::new_seed() {
  std::lock_guard lock(random_mutex_);
  return random_();
}

std::vector<int32_t> GenerationHandler::prompt_tokens(const ParsedRequest& request) const {
  std::vector<int32_t> ids;
  if (request.endpoint == Endpoint::chat_completions) {
    if (tokenizer_.chat_template().empty())
      throw ApiError(400, "This model has no chat template; use /v1/completions", "messages", "no_chat_template");
    json context = {{"messages", request.messages},
                    {"add_generation_prompt", true},
                    {"bos_token", tokenizer_.bos_text()},
                    {"eos_token", tokenizer_.eos_text()}};
    std::string rendered;
    try {
      rendered = render_jinja_template(tokenizer_.chat_template(), context);
    } catch (const Error& e) {
      // raise_exception in a template is how models refuse conversations they cannot take.
      throw ApiError(400, e.what(), "messages", "invalid_messages");
    }
    // Like apply_chat_template: the template writes any BOS itself.
    ids = tokenizer_.encode(rendered);
  } else if (request.prompt_ids) {
    ids = *request.prompt_ids;
    for (int32_t id : ids)
      if (id >= tokenizer_.vocab_size())
        throw ApiError(400, fmt::format("prompt token id {} is outside the vocabulary [0, {})", id, tokenizer_.vocab_size()),
                       "prompt", "invalid_value");
  } else {
    if (tokenizer_.add_bos() && tokenizer_.bos_id() >= 0) ids.push_back(tokenizer_.bos_id());
    std::vector<int32_t> text_ids = tokenizer_.encode(request.prompt);
    ids.insert(ids.end(), text_ids.begin(), text_ids.end());
  }
  if (ids.empty())
    throw ApiError(400, "The prompt is empty: it must have at least one token",
                   request.endpoint == Endpoint::chat_completions ? "messages" : "prompt", "invalid_value");
  return ids;
}

void GenerationHandler::handle(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
  const auto arrival = SteadyClock::now();
  auto generation = std::make_shared<Generation>();
  generation->endpoint = endpoint;
  generation->arrival = arrival;
  generation->created = static_cast<int64_t>(std::time(nullptr));
  double timeout_seconds = options_.request_timeout_seconds;
  try {
    const json body = parse_json_body(req.body);
    ParsedRequest request = endpoint == Endpoint::completions ? parse_completion_request(body) : parse_chat_request(body);
    if (request.model != options_.model_name)
      throw ApiError(404, fmt::format("The model '{}' does not exist; this server serves '{}'", request.model, options_.model_name),
                     "model", "model_not_found");
    if (request.timeout_seconds) timeout_seconds = std::min(timeout_seconds, *request.timeout_seconds);

    EngineRequest engine_request;
    engine_request.prompt = prompt_tokens(request);
    const int64_t prompt_length = static_cast<int64_t>(engine_request.prompt.size());
    const int64_t context = engine_.model_info().max_context;
    if (prompt_length >= context)
      throw ApiError(400, fmt::format("This model's maximum context length is {} tokens. However, your prompt has {} tokens; "
                                      "shorten it to leave room for at least one generated token.", context, prompt_length),
                     endpoint == Endpoint::completions ? "prompt" : "messages", "context_length_exceeded");
    int64_t max_tokens = request.max_tokens.value_or(endpoint == Endpoint::completions ? 16 : context - prompt_length);
    if (!request.max_tokens) max_tokens = std::min(max_tokens, context - prompt_length);
    if (max_tokens > context - prompt_length)  // (not prompt + max_tokens: max_tokens may be near 2^63)
      throw ApiError(400, fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens "
                                      "({} in the prompt, {} for the completion). Reduce the prompt or max_tokens.",
                                      context, static_cast<uint64_t>(prompt_length) + static_cast<uint64_t>(max_tokens),  // both >= 0: fits
                                      prompt_length, max_tokens),
                     "max_tokens", "context_length_exceeded");

    engine_request.params.max_tokens = static_cast<int>(max_tokens);
    engine_request.params.sampling = request.sampling;
    if (!request.seed_given) engine_request.params.sampling.seed = new_seed();
    engine_request.params.stop_strings = request.stop;
    engine_request.params.ignore_eos = request.ignore_eos;
    engine_request.arrival = arrival;
    engine_request.deadline =
        arrival + std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(timeout_seconds));

    try {
      generation->stream = engine_.submit(std::move(engine_request));
    } catch (const Error& e) {
      throw ApiError(400, e.what());
    }
    if (!generation->stream) {
      metrics_.count_rejected("queue_full");
      const EngineStats stats = engine_.stats();
      // About how long until a slot frees: the queue ahead, drained max_running at a time.
      const double wait = metrics_.mean_request_seconds() * static_cast<double>(stats.waiting + 1) /
                          static_cast<double>(std::max<size_t>(engine_.max_running(), 1));
      res.set_header("Retry-After", std::to_string(std::clamp<int64_t>(static_cast<int64_t>(std::ceil(wait)), 1, 60)));
      throw ApiError(429, fmt::format("The server is busy: {} requests are queued (the limit). Retry later.", stats.waiting),
                     "", "rate_limit_exceeded", "rate_limit_exceeded");
    }
    generation->prompt_tokens = prompt_length;
    generation->model = options_.model_name;
    generation->include_usage = request.include_usage;
    generation->id = new_id(endpoint == Endpoint::completions ? "cmpl" : "chatcmpl");
    if (!request.stream) {
      const PeerSocket client = PeerSocket::find(req.remote_addr, req.remote_port, req.local_port);
      for (;;) {
        RequestOutput out = generation->take(metrics_);
        generation->text += out.text;
        if (out.finished) {
          generation->record(metrics_, out.finish_reason);
          if (out.finish_reason != FinishReason::stop && out.finish_reason != FinishReason::length)
            throw finish_error(out, timeout_seconds);
          const std::string reason = finish_reason_name(out.finish_reason);
          send_json(res, 200,
                    endpoint == Endpoint::completions
                        ? completion_response(generation->id, generation->created, generation->model, generation->text, reason, generation->usage())
                        : chat_response(generation->id, generation->created, generation->model, generation->text, reason, generation->usage()));
          return;
        }
        if (shutting_down_) {
          generation->stream->cancel();
          generation->record(metrics_, FinishReason::cancelled);
          throw ApiError(503, "The server is shutting down", "", "", "server_error");
        }
        if (client.closed()) {
          generation->stream->cancel();
          generation->record(metrics_, FinishReason::cancelled);
          res.status = 499;  // nginx's "client closed request": nobody reads it, the log does
          return;
        }
      }
    }
  } catch (const ApiError& e) {
    send_error(res, e);
    return;
  }

  // Streaming: headers go out now; the provider below is called until it finishes the stream, and
  // returns false (ending the response) as soon as the client cannot be written to.
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  Metrics& metrics = metrics_;
  res.set_chunked_content_provider(
      "text/event-stream",
      [generation, timeout_seconds, &metrics](size_t, httplib::DataSink& sink) {
        Generation& g = *generation;
        auto write = [&](const std::string& event) { return sink.write(event.data(), event.size()); };
        if (g.endpoint == Endpoint::chat_completions && !g.role_sent) {
          g.role_sent = true;
          if (!write(sse(chat_chunk(g.id, g.created, g.model, "", "", true)))) return false;
        }
        RequestOutput out = g.take(metrics);
        if (!out.text.empty()) {
          const json chunk = g.endpoint == Endpoint::completions ? completion_chunk(g.id, g.created, g.model, out.text, "")
                                                                 : chat_chunk(g.id, g.created, g.model, out.text, "");
          if (!write(sse(chunk))) return false;
        }
        if (!out.finished) return sink.is_writable();
        g.record(metrics, out.finish_reason);
        g.done = true;
        std::string tail;
        if (out.finish_reason == FinishReason::stop || out.finish_reason == FinishReason::length) {
          const std::string reason = finish_reason_name(out.finish_reason);
          tail += sse(g.endpoint == Endpoint::completions ? completion_chunk(g.id, g.created, g.model, "", reason)
                                                          : chat_chunk(g.id, g.created, g.model, "", reason));
          if (g.include_usage) tail += sse(usage_chunk(g.endpoint, g.id, g.created, g.model, g.usage()));
        } else {
          // A stream that already sent 200 reports a failure as an error event, as OpenAI does.
          tail += sse(error_body(finish_error(out, timeout_seconds)));
        }
        tail += "data: [DONE]\n\n";
        if (!write(tail)) return false;
        sink.done();
        return true;
      },
      [generation, &metrics](bool success) {
        if (success && generation->done) return;
        // The client went away (or a write failed) before the end: stop generating for it.
        generation->stream->cancel();
        generation->record(metrics, FinishReason::cancelled);
      });
}

}  // namespace tachyon::server
