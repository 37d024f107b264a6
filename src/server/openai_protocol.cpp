#include "server/openai_protocol.h"

#include <cmath>
#include <limits>
#include <set>

#include <fmt/format.h>

namespace tachyon::server {

using nlohmann::json;

namespace {

ApiError bad(const std::string& param, const std::string& message, const std::string& code = {}) {
  return ApiError(400, message, param, code);
}

ApiError unsupported(const std::string& param, const std::string& what) {
  return ApiError(400, fmt::format("'{}': {} is not supported by this server", param, what), param,
                  "unsupported_parameter");
}

const char* type_name(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    default: return "an integer";
  }
}

// A request body's fields, read with type and range checks. Unknown fields are refused like OpenAI
// does ("Unrecognized request argument supplied"), so a typo never silently changes nothing.
class Fields {
 public:
  Fields(const json& body, const std::set<std::string>& known) : body_(body) {
    if (!body.is_object()) throw bad("", fmt::format("the request body must be a JSON object, not {}", type_name(body)));
    for (const auto& [key, value] : body.items())
      if (!known.count(key)) throw ApiError(400, fmt::format("Unrecognized request argument supplied: {}", key), key,
                                            "unsupported_parameter");
  }

  // nullptr when absent or null (OpenAI treats null as "not given").
  const json* get(const std::string& name) const {
    auto it = body_.find(name);
    return it == body_.end() || it->is_null() ? nullptr : &*it;
  }

  std::optional<double> number(const std::string& name, double low, double high) const {
    const json* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_number()) throw bad(name, fmt::format("'{}' must be a number, not {}", name, type_name(*v)), "invalid_type");
    const double x = v->get<double>();
    if (!(x >= low && x <= high)) throw bad(name, fmt::format("'{}' must be in [{}, {}], got {}", name, low, high, x), "invalid_value");
    return x;
  }

  std::optional<int64_t> integer(const std::string& name) const {
    const json* v = get(name);
    if (!v) return std::nullopt;
    return as_integer(*v, name);
  }

  std::optional<bool> boolean(const std::string& name) const {
    const json* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) throw bad(name, fmt::format("'{}' must be a boolean, not {}", name, type_name(*v)), "invalid_type");
    return v->get<bool>();
  }

  std::optional<std::string> string(const std::string& name) const {
    const json* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_string()) throw bad(name, fmt::format("'{}' must be a string, not {}", name, type_name(*v)), "invalid_type");
    return v->get<std::string>();
  }

  static int64_t as_integer(const json& v, const std::string& name) {
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      return u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max()
                                                                           : static_cast<int64_t>(u);
    }
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float()) {
      // 16.0 is an integer to Python clients; 16.5 is not.
      const double x = v.get<double>();
      if (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 9.0e15) return static_cast<int64_t>(x);
    }
    throw bad(name, fmt::format("'{}' must be an integer, not {}", name, v.is_number() ? v.dump() : type_name(v)),
              "invalid_type");
  }

 private:
  const json& body_;
};

const std::set<std::string> kCommonFields = {
    "model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "seed", "user",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
    // extensions (vLLM spellings)
    "top_k", "min_p", "ignore_eos", "timeout"};

std::set<std::string> with(std::set<std::string> fields, std::initializer_list<const char*> more) {
  for (const char* f : more) fields.insert(f);
  return fields;
}

void read_common(const Fields& f, ParsedRequest& r) {
  auto model = f.string("model");
  if (!model) throw bad("model", "'model' is required", "missing_required_parameter");
  r.model = *model;

  if (auto n = f.integer("n"); n && *n != 1) throw unsupported("n", "n other than 1");
  for (const char* penalty : {"presence_penalty", "frequency_penalty"})
    if (auto p = f.number(penalty, -2.0, 2.0); p && *p != 0.0) throw unsupported(penalty, "a non-zero penalty");
  if (const json* bias = f.get("logit_bias")) {
    if (!bias->is_object()) throw bad("logit_bias", "'logit_bias' must be an object", "invalid_type");
    if (!bias->empty()) throw unsupported("logit_bias", "logit_bias");
  }
  f.string("user");  // accepted and ignored; must still be a string

  if (auto t = f.number("temperature", 0.0, 2.0)) r.sampling.temperature = static_cast<float>(*t);
  else r.sampling.temperature = 1.0f;  // OpenAI's default
  if (auto p = f.number("top_p", 0.0, 1.0)) {
    if (*p <= 0.0) throw bad("top_p", "'top_p' must be in (0, 1], got 0", "invalid_value");
    r.sampling.top_p = static_cast<float>(*p);
  }
  if (auto k = f.integer("top_k")) {
    if (*k < -1 || *k > std::numeric_limits<int>::max())
      throw bad("top_k", fmt::format("'top_k' must be >= 0 (or -1 for off), got {}", *k), "invalid_value");
    r.sampling.top_k = *k < 0 ? 0 : static_cast<int>(*k);
  }
  if (auto p = f.number("min_p", 0.0, 1.0)) r.sampling.min_p = static_cast<float>(*p);
  if (auto seed = f.integer("seed")) {
    r.sampling.seed = static_cast<uint64_t>(*seed);
    r.seed_given = true;
  }

  if (auto max_tokens = f.integer("max_tokens")) {
    if (*max_tokens < 1) throw bad("max_tokens", fmt::format("'max_tokens' must be at least 1, got {}", *max_tokens), "invalid_value");
    r.max_tokens = *max_tokens;
  }

  if (const json* stop = f.get("stop")) {
    if (stop->is_string()) {
      r.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > 4) throw bad("stop", fmt::format("'stop' takes at most 4 sequences, got {}", stop->size()), "invalid_value");
      for (const json& s : *stop) {
        if (!s.is_string()) throw bad("stop", fmt::format("'stop' must hold strings, not {}", type_name(s)), "invalid_type");
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      throw bad("stop", fmt::format("'stop' must be a string or an array of strings, not {}", type_name(*stop)), "invalid_type");
    }
    for (const std::string& s : r.stop)
      if (s.empty()) throw bad("stop", "'stop' sequences must not be empty", "invalid_value");
  }

  r.stream = f.boolean("stream").value_or(false);
  if (const json* options = f.get("stream_options")) {
    if (!options->is_object()) throw bad("stream_options", "'stream_options' must be an object", "invalid_type");
    if (!r.stream) throw bad("stream_options", "'stream_options' is only allowed with 'stream': true", "invalid_value");
    for (const auto& [key, value] : options->items()) {
      if (key == "include_usage") {
        if (!value.is_boolean()) throw bad("stream_options.include_usage", "'stream_options.include_usage' must be a boolean", "invalid_type");
        r.include_usage = value.get<bool>();
      } else if (key != "continuous_usage_stats") {
        throw bad("stream_options." + key, fmt::format("Unrecognized stream option: {}", key), "unsupported_parameter");
      }
    }
  }
  r.ignore_eos = f.boolean("ignore_eos").value_or(false);
  if (auto timeout = f.number("timeout", 0.0, 1e9)) {
    if (*timeout <= 0) throw bad("timeout", "'timeout' must be > 0 seconds", "invalid_value");
    r.timeout_seconds = *timeout;
  }
}

std::vector<int32_t> token_ids(const json& array, const std::string& param) {
  std::vector<int32_t> ids;
  for (const json& v : array) {
    const int64_t id = Fields::as_integer(v, param);
    if (id < 0 || id > std::numeric_limits<int32_t>::max())
      throw bad(param, fmt::format("token id {} is out of range", id), "invalid_value");
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

void read_prompt(const Fields& f, ParsedRequest& r) {
  const json* prompt = f.get("prompt");
  if (!prompt) throw bad("prompt", "'prompt' is required", "missing_required_parameter");
  auto only_one = [&](size_t count) {
    if (count != 1) throw unsupported("prompt", fmt::format("a batch of {} prompts (send one per request)", count));
  };
  if (prompt->is_string()) {
    r.prompt = prompt->get<std::string>();
  } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_string()) {
    only_one(prompt->size());
    r.prompt = (*prompt)[0].get<std::string>();
  } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_array()) {
    only_one(prompt->size());
    r.prompt_ids = token_ids((*prompt)[0], "prompt");
  } else if (prompt->is_array() && !prompt->empty()) {
    r.prompt_ids = token_ids(*prompt, "prompt");
  } else {
    throw bad("prompt", fmt::format("'prompt' must be a string, an array of token ids or a one-element array of either, "
                                    "not {}", prompt->is_array() ? "an empty array" : type_name(*prompt)),
              "invalid_type");
  }
}

std::string message_text(const json& content, size_t index) {
  const std::string param = fmt::format("messages[{}].content", index);
  if (content.is_null()) return {};
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    throw bad(param, fmt::format("'{}' must be a string or an array of content parts, not {}", param, type_name(content)),
              "invalid_type");
  std::string text;
  for (size_t j = 0; j < content.size(); ++j) {
    const json& part = content[j];
    const std::string part_param = fmt::format("{}[{}]", param, j);
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      throw bad(part_param, fmt::format("'{}' must be an object with a string 'type'", part_param), "invalid_type");
    if (part["type"] != "text") throw unsupported(part_param, fmt::format("content of type '{}'", part["type"].get<std::string>()));
    if (!part.contains("text") || !part["text"].is_string())
      throw bad(part_param + ".text", fmt::format("'{}.text' must be a string", part_param), "invalid_type");
    if (!text.empty()) text += "\n";  // as vLLM joins text parts
    text += part["text"].get<std::string>();
  }
  return text;
}

void read_messages(const Fields& f, ParsedRequest& r) {
  const json* messages = f.get("messages");
  if (!messages) throw bad("messages", "'messages' is required", "missing_required_parameter");
  if (!messages->is_array()) throw bad("messages", fmt::format("'messages' must be an array, not {}", type_name(*messages)), "invalid_type");
  if (messages->empty()) throw bad("messages", "'messages' must not be empty", "invalid_value");
  r.messages = json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string param = fmt::format("messages[{}]", i);
    if (!m.is_object()) throw bad(param, fmt::format("'{}' must be an object, not {}", param, type_name(m)), "invalid_type");
    if (!m.contains("role") || !m["role"].is_string())
      throw bad(param + ".role", fmt::format("'{}.role' must be a string", param), "invalid_type");
    static const std::set<std::string> roles = {"system", "developer", "user", "assistant", "tool"};
    const std::string role = m["role"].get<std::string>();
    if (!roles.count(role))
      throw bad(param + ".role", fmt::format("'{}.role' must be one of system, developer, user, assistant, tool; got '{}'", param, role),
                "invalid_value");
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) throw unsupported(param + ".tool_calls", "tool calls");
    json normalized = m;
    normalized["content"] = message_text(m.contains("content") ? m["content"] : json(nullptr), i);
    if (m.contains("name") && !m["name"].is_string())
      throw bad(param + ".name", fmt::format("'{}.name' must be a string", param), "invalid_type");
    r.messages.push_back(std::move(normalized));
  }
}

}  // namespace

json error_body(const ApiError& error) {
  return {{"error",
           {{"message", error.what()},
            {"type", error.type},
            {"param", error.param.empty() ? json(nullptr) : json(error.param)},
            {"code", error.code.empty() ? json(nullptr) : json(error.code)}}}};
}

json parse_json_body(const std::string& body) {
  if (body.empty()) throw bad("", "the request body is empty; expected a JSON object", "invalid_json");
  try {
    return json::parse(body);
  } catch (const json::parse_error& e) {
    // nlohmann's message names the byte offset and, for ill-formed UTF-8, says so.
    throw bad("", fmt::format("the request body is not valid JSON: {}", e.what()), "invalid_json");
  }
}

ParsedRequest parse_completion_request(const json& body) {
  Fields f(body, with(kCommonFields, {"prompt", "echo", "best_of", "suffix"}));
  ParsedRequest r;
  r.endpoint = Endpoint::completions;
  read_common(f, r);
  if (f.boolean("echo").value_or(false)) throw unsupported("echo", "echo");
  if (auto best_of = f.integer("best_of"); best_of && *best_of != 1) throw unsupported("best_of", "best_of other than 1");
  if (auto suffix = f.string("suffix"); suffix && !suffix->empty()) throw unsupported("suffix", "suffix");
  if (const json* logprobs = f.get("logprobs")) {
    Fields::as_integer(*logprobs, "logprobs");
    throw unsupported("logprobs", "logprobs");
  }
  read_prompt(f, r);
  return r;
}

ParsedRequest parse_chat_request(const json& body) {
  Fields f(body, with(kCommonFields, {"messages", "max_completion_tokens", "top_logprobs", "response_format", "tools",
                                      "tool_choice", "parallel_tool_calls", "store", "metadata"}));
  ParsedRequest r;
  r.endpoint = Endpoint::chat_completions;
  read_common(f, r);
  if (auto max_completion = f.integer("max_completion_tokens")) {
    if (*max_completion < 1)
      throw bad("max_completion_tokens", fmt::format("'max_completion_tokens' must be at least 1, got {}", *max_completion), "invalid_value");
    r.max_tokens = r.max_tokens ? std::min(*r.max_tokens, *max_completion) : *max_completion;
  }
  if (f.boolean("logprobs").value_or(false)) throw unsupported("logprobs", "logprobs");
  if (auto top = f.integer("top_logprobs"); top && *top != 0) throw unsupported("top_logprobs", "top_logprobs");
  if (const json* format = f.get("response_format")) {
    if (!format->is_object() || !format->contains("type") || !(*format)["type"].is_string())
      throw bad("response_format", "'response_format' must be an object with a string 'type'", "invalid_type");
    if ((*format)["type"] != "text") throw unsupported("response_format", fmt::format("response_format '{}'", (*format)["type"].get<std::string>()));
  }
  if (const json* tools = f.get("tools")) {
    if (!tools->is_array()) throw bad("tools", "'tools' must be an array", "invalid_type");
    if (!tools->empty()) throw unsupported("tools", "tool calling");
  }
  if (const json* choice = f.get("tool_choice")) {
    if (!choice->is_string() || (*choice != "none" && *choice != "auto")) throw unsupported("tool_choice", "tool_choice other than none/auto");
  }
  f.boolean("parallel_tool_calls");
  if (f.boolean("store").value_or(false)) throw unsupported("store", "storing completions");
  if (const json* metadata = f.get("metadata"); metadata && !metadata->is_object())
    throw bad("metadata", "'metadata' must be an object", "invalid_type");
  read_messages(f, r);
  return r;
}

namespace {
json usage_json(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}
json reason_json(const std::string& finish_reason) {
  return finish_reason.empty() ? json(nullptr) : json(finish_reason);
}
}  // namespace

json completion_response(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                         const std::string& finish_reason, const Usage& usage) {
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish_reason}}})},
          {"usage", usage_json(usage)}};
}

json chat_response(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                   const std::string& finish_reason, const Usage& usage) {
  return {{"id", id},
          {"object", "chat.completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({{{"index", 0},
                                    {"message", {{"role", "assistant"}, {"content", text}}},
                                    {"logprobs", nullptr},
                                    {"finish_reason", finish_reason}}})},
          {"usage", usage_json(usage)}};
}

json completion_chunk(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                      const std::string& finish_reason) {
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", reason_json(finish_reason)}}})}};
}

json chat_chunk(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                const std::string& finish_reason, bool role_chunk) {
  json delta = json::object();
  if (role_chunk) delta = {{"role", "assistant"}, {"content", ""}};
  else if (!text.empty()) delta = {{"content", text}};
  return {{"id", id},
          {"object", "chat.completion.chunk"},
          {"created", created},
          {"model", model},
          {"choices", json::array({{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", reason_json(finish_reason)}}})}};
}

json usage_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model, const Usage& usage) {
  return {{"id", id},
          {"object", endpoint == Endpoint::chat_completions ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array()},
          {"usage", usage_json(usage)}};
}

std::string dump_json(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace tachyon::server
