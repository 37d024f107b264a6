// Request bodies of /v1/completions and /v1/chat/completions: the well-formed ones parse into the
// fields the engine needs; every kind of bad input is an ApiError with a 4xx status, the offending
// param and an OpenAI-style body (test names contain "Bad"/"Invalid"/"Malformed" so that
// scripts/test.sh also runs them under ASan/UBSan).
#include <gtest/gtest.h>

#include "server/metrics.h"
#include "server/openai_protocol.h"

namespace tachyon::server {
namespace {

using nlohmann::json;

ApiError error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "no ApiError thrown";
  return ApiError(0, "");
}

ApiError completion_error(const json& body) { return error_of([&] { parse_completion_request(body); }); }
ApiError chat_error(const json& body) { return error_of([&] { parse_chat_request(body); }); }

json completion(json extra = json::object()) {
  json body = {{"model", "m"}, {"prompt", "Hello"}};
  body.update(extra);
  return body;
}
json chat(json extra = json::object()) {
  json body = {{"model", "m"}, {"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})}};
  body.update(extra);
  return body;
}

TEST(OpenAiProtocol, CompletionFields) {
  ParsedRequest r = parse_completion_request(completion({{"max_tokens", 5}, {"temperature", 0}, {"top_p", 0.5},
                                                         {"top_k", 7}, {"min_p", 0.1}, {"seed", -3},
                                                         {"stop", json::array({"a", "b"})}, {"stream", true},
                                                         {"stream_options", {{"include_usage", true}}},
                                                         {"user", "u"}, {"n", 1}, {"logprobs", nullptr}}));
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompt, "Hello");
  EXPECT_EQ(r.max_tokens, 5);
  EXPECT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.5f);
  EXPECT_EQ(r.sampling.top_k, 7);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.1f);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.sampling.seed, static_cast<uint64_t>(-3));
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(OpenAiProtocol, DefaultsFollowOpenAi) {
  ParsedRequest r = parse_completion_request(completion());
  EXPECT_FALSE(r.max_tokens);
  EXPECT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.seed_given);
}

TEST(OpenAiProtocol, PromptForms) {
  EXPECT_EQ(parse_completion_request(completion({{"prompt", json::array({"x"})}})).prompt, "x");
  EXPECT_EQ(*parse_completion_request(completion({{"prompt", json::array({1, 2})}})).prompt_ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(*parse_completion_request(completion({{"prompt", json::array({json::array({3})})}})).prompt_ids,
            (std::vector<int32_t>{3}));
  EXPECT_EQ(parse_completion_request(completion({{"max_tokens", 16.0}})).max_tokens, 16);  // 16.0 from Python
}

TEST(OpenAiProtocol, ChatMessagesNormalized) {
  json parts = json::array({{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}});
  ParsedRequest r = parse_chat_request(chat({{"messages", json::array({{{"role", "system"}, {"content", "s"}},
                                                                       {{"role", "user"}, {"content", parts}},
                                                                       {{"role", "assistant"}, {"content", nullptr}}})},
                                             {"max_completion_tokens", 9}}));
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[1]["content"], "a\nb");
  EXPECT_EQ(r.messages[2]["content"], "");
  EXPECT_EQ(r.max_tokens, 9);
}

TEST(OpenAiProtocol, MalformedJsonIsAnError) {
  for (const std::string body : {"", "{", "{\"model\": }", "[1,2", "nul", "{\"a\":1}x"}) {
    ApiError e = error_of([&] { parse_json_body(body); });
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.code, "invalid_json") << body;
  }
}

TEST(OpenAiProtocol, InvalidUtf8IsAnError) {
  for (const std::string& body : {std::string("{\"model\":\"m\",\"prompt\":\"\xff\"}"),
                                 std::string("{\"model\":\"m\",\"prompt\":\"\xc3\"}"),
                                 std::string("{\"model\":\"m\",\"prompt\":\"\xed\xa0\x80\"}"),  // encoded surrogate
                                 std::string("{\"model\":\"m\",\"prompt\":\"\\ud800\"}")}) {    // lone escaped surrogate
    EXPECT_EQ(error_of([&] { parse_json_body(body); }).status, 400);
  }
}

TEST(OpenAiProtocol, BadTypesNameTheField) {
  struct Case {
    json body;
    std::string param;
  };
  const std::vector<Case> cases = {
      {json::array(), ""},
      {json("text"), ""},
      {completion({{"model", 5}}), "model"},
      {completion({{"prompt", 5}}), "prompt"},
      {completion({{"prompt", json::array()}}), "prompt"},
      {completion({{"prompt", json::array({1, "a"})}}), "prompt"},
      {completion({{"prompt", json::array({-1})}}), "prompt"},
      {completion({{"prompt", json::array({1.5})}}), "prompt"},
      {completion({{"max_tokens", "10"}}), "max_tokens"},
      {completion({{"max_tokens", 1.5}}), "max_tokens"},
      {completion({{"max_tokens", true}}), "max_tokens"},
      {completion({{"temperature", "hot"}}), "temperature"},
      {completion({{"top_p", json::array()}}), "top_p"},
      {completion({{"stream", "yes"}}), "stream"},
      {completion({{"stop", 3}}), "stop"},
      {completion({{"stop", json::array({"a", 1})}}), "stop"},
      {completion({{"seed", "x"}}), "seed"},
      {completion({{"user", 1}}), "user"},
      {completion({{"stream", true}, {"stream_options", 1}}), "stream_options"},
      {completion({{"stream", true}, {"stream_options", {{"include_usage", "y"}}}}), "stream_options.include_usage"},
      {chat({{"messages", "hi"}}), "messages"},
      {chat({{"messages", json::array({"hi"})}}), "messages[0]"},
      {chat({{"messages", json::array({{{"content", "x"}}})}}), "messages[0].role"},
      {chat({{"messages", json::array({{{"role", "user"}, {"content", 3}}})}}), "messages[0].content"},
      {chat({{"messages", json::array({{{"role", "user"}, {"content", json::array({{{"type", "text"}}})}}})}}),
       "messages[0].content[0].text"},
  };
  for (const Case& c : cases) {
    const bool is_chat = c.body.is_object() && c.body.contains("messages");
    ApiError e = is_chat ? chat_error(c.body) : completion_error(c.body);
    EXPECT_EQ(e.status, 400) << c.body.dump();
    EXPECT_EQ(e.param, c.param) << c.body.dump() << ": " << e.what();
    json body = error_body(e);
    EXPECT_TRUE(body["error"]["message"].is_string());
    EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  }
}

TEST(OpenAiProtocol, BadValuesAreErrors) {
  const std::vector<json> bodies = {
      completion({{"max_tokens", -1}}),   completion({{"max_tokens", 0}}),       completion({{"temperature", -0.1}}),
      completion({{"temperature", 2.5}}), completion({{"top_p", 0}}),            completion({{"top_p", 1.5}}),
      completion({{"top_k", -2}}),        completion({{"min_p", 2}}),            completion({{"timeout", 0}}),
      completion({{"stop", json::array({"a", "b", "c", "d", "e"})}}),            completion({{"stop", ""}}),
      completion({{"stream_options", {{"include_usage", true}}}}),  // without stream
      chat({{"messages", json::array()}}),
      chat({{"messages", json::array({{{"role", "wizard"}, {"content", "x"}}})}}),
      chat({{"max_completion_tokens", 0}}),
  };
  for (const json& body : bodies) {
    ApiError e = body.contains("messages") ? chat_error(body) : completion_error(body);
    EXPECT_EQ(e.status, 400) << body.dump();
    EXPECT_FALSE(e.param.empty()) << body.dump();
  }
}

TEST(OpenAiProtocol, InvalidMissingFields) {
  EXPECT_EQ(completion_error({{"prompt", "x"}}).param, "model");
  EXPECT_EQ(completion_error({{"model", "m"}}).param, "prompt");
  EXPECT_EQ(chat_error({{"model", "m"}}).param, "messages");
}

TEST(OpenAiProtocol, BadUnsupportedParameters) {
  const std::vector<std::pair<json, std::string>> cases = {
      {completion({{"frobnicate", 1}}), "frobnicate"},
      {completion({{"n", 2}}), "n"},
      {completion({{"best_of", 3}}), "best_of"},
      {completion({{"echo", true}}), "echo"},
      {completion({{"logprobs", 2}}), "logprobs"},
      {completion({{"suffix", "x"}}), "suffix"},
      {completion({{"presence_penalty", 0.5}}), "presence_penalty"},
      {completion({{"logit_bias", {{"1", 5}}}}), "logit_bias"},
      {completion({{"prompt", json::array({"a", "b"})}}), "prompt"},
      {chat({{"tools", json::array({{{"type", "function"}}})}}), "tools"},
      {chat({{"logprobs", true}}), "logprobs"},
      {chat({{"response_format", {{"type", "json_object"}}}}), "response_format"},
      {chat({{"messages", json::array({{{"role", "user"}, {"content", json::array({{{"type", "image_url"}}})}}})}}),
       "messages[0].content[0]"},
      {chat({{"prompt", "x"}}), "prompt"},
  };
  for (const auto& [body, param] : cases) {
    ApiError e = body.contains("messages") ? chat_error(body) : completion_error(body);
    EXPECT_EQ(e.status, 400) << body.dump();
    EXPECT_EQ(e.param, param) << body.dump();
    EXPECT_EQ(e.code, "unsupported_parameter") << body.dump();
  }
  // Defaults of unsupported features are fine (clients send them).
  EXPECT_NO_THROW(parse_completion_request(completion({{"n", 1}, {"best_of", 1}, {"echo", false}, {"presence_penalty", 0},
                                                       {"frequency_penalty", 0}, {"logit_bias", json::object()}})));
  EXPECT_NO_THROW(parse_chat_request(chat({{"logprobs", false}, {"tools", json::array()}, {"tool_choice", "none"},
                                           {"response_format", {{"type", "text"}}}})));
}

TEST(OpenAiProtocol, HugeIntegersDoNotWrap) {
  ParsedRequest r = parse_completion_request(json::parse(R"({"model":"m","prompt":"x","max_tokens":18446744073709551615})"));
  EXPECT_EQ(r.max_tokens, std::numeric_limits<int64_t>::max());  // the server then refuses it against the context
}

TEST(OpenAiProtocol, ResponseShapes) {
  json c = completion_response("cmpl-1", 7, "m", "hi", "stop", {3, 2});
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["text"], "hi");
  EXPECT_EQ(c["usage"]["total_tokens"], 5);
  json chunk = chat_chunk("chatcmpl-1", 7, "m", "", "", true);
  EXPECT_EQ(chunk["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  json last = chat_chunk("chatcmpl-1", 7, "m", "", "length");
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  json usage = usage_chunk(Endpoint::chat_completions, "chatcmpl-1", 7, "m", {4, 1});
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["prompt_tokens"], 4);
  // Ill-formed UTF-8 never reaches the wire as such.
  EXPECT_EQ(dump_json(json("a\xff")), "\"a\xef\xbf\xbd\"");
}

TEST(ServerMetrics, PrometheusText) {
  Metrics m;
  m.count_response("/v1/completions", 200);
  m.count_response("/v1/completions", 400);
  m.observe_token_times({0.2, 0.25, 0.35}, true, 0);
  m.observe_request(10, 3, FinishReason::stop, 0.4);
  m.count_rejected("queue_full");
  EngineStats stats;
  stats.waiting = 2;
  stats.running = 3;
  const std::string text = m.render(stats, 32);
  for (const char* line : {"tachyon_http_responses_total{route=\"/v1/completions\",code=\"400\"} 1",
                           "tachyon_requests_finished_total{reason=\"stop\"} 1",
                           "tachyon_requests_rejected_total{reason=\"queue_full\"} 1",
                           "tachyon_prompt_tokens_total 10", "tachyon_generation_tokens_total 3",
                           "tachyon_time_to_first_token_seconds_bucket{le=\"0.25\"} 1",
                           "tachyon_time_to_first_token_seconds_count 1",
                           "tachyon_inter_token_latency_seconds_bucket{le=\"0.05\"} 1",
                           "tachyon_inter_token_latency_seconds_bucket{le=\"0.1\"} 2",
                           "tachyon_inter_token_latency_seconds_bucket{le=\"+Inf\"} 2", "tachyon_queue_depth 2",
                           "tachyon_running_sequences 3", "# TYPE tachyon_inter_token_latency_seconds histogram"})
    EXPECT_NE(text.find(std::string(line) + "\n"), std::string::npos) << line << "\n" << text;
  // Without a drafter the speculative counters are 0 and say why.
  EXPECT_NE(text.find("tachyon_speculative_rounds_total 0\n"), std::string::npos);
  EXPECT_NE(text.find("this server runs without --draft"), std::string::npos);

  stats.speculative = true;
  stats.speculative_rounds = 4;
  stats.speculative_draft_tokens = 60;
  stats.speculative_accepted_tokens = 6;
  stats.speculative_committed_tokens = 10;
  stats.speculative_tokens_per_round = {0, 1, 2, 0, 1};
  const std::string spec = m.render(stats, 32);
  for (const char* line : {"tachyon_speculative_rounds_total 4", "tachyon_speculative_draft_tokens_total 60",
                           "tachyon_speculative_accepted_tokens_total 6", "tachyon_speculative_tau 2.5",
                           "tachyon_speculative_tokens_per_round_bucket{le=\"1\"} 1",
                           "tachyon_speculative_tokens_per_round_bucket{le=\"2\"} 3",
                           "tachyon_speculative_tokens_per_round_bucket{le=\"4\"} 4",
                           "tachyon_speculative_tokens_per_round_bucket{le=\"16\"} 4",
                           "tachyon_speculative_tokens_per_round_bucket{le=\"+Inf\"} 4",
                           "tachyon_speculative_tokens_per_round_sum 10", "tachyon_speculative_tokens_per_round_count 4"})
    EXPECT_NE(spec.find(std::string(line) + "\n"), std::string::npos) << line << "\n" << spec;
  EXPECT_EQ(spec.find("without --draft"), std::string::npos);
}

}  // namespace
}  // namespace tachyon::server
