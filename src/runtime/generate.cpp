#include "runtime/generate.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "tokenizer/chat_template.h"

namespace tachyon {

std::string StopStringFilter::push(std::string_view text) {
  if (stopped_) return {};
  held_.append(text);
  size_t first_stop = std::string::npos;
  for (const auto& stop : stops_) {
    if (stop.empty()) continue;
    first_stop = std::min(first_stop, held_.find(stop));
  }
  if (first_stop != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, first_stop);
    held_.clear();
    return out;
  }
  // Keep the longest suffix of held_ that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& stop : stops_) {
    for (size_t len = std::min(stop.size() - (stop.empty() ? 0 : 1), held_.size()); len > keep; --len) {
      if (held_.compare(held_.size() - len, len, stop, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStringFilter::flush() {
  std::string out = stopped_ ? std::string() : held_;
  held_.clear();
  return out;
}

std::vector<int32_t> stop_token_ids(const GenerationParams& params, const Tokenizer& tokenizer) {
  std::vector<int32_t> ids = params.stop_token_ids;
  if (!params.ignore_eos) {
    const std::vector<int32_t> eos = tokenizer.eos_ids();
    ids.insert(ids.end(), eos.begin(), eos.end());
  }
  return ids;
}

std::vector<int32_t> encode_prompt(const Tokenizer& tokenizer, const std::string& text, bool chat,
                                   const std::string& system, const std::string& source) {
  if (chat) {
    if (tokenizer.chat_template().empty()) fail("{}: --chat given but the model has no chat template", source);
    nlohmann::json messages = nlohmann::json::array();
    if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});
    messages.push_back({{"role", "user"}, {"content", text}});
    const nlohmann::json context = {{"messages", messages},
                                    {"add_generation_prompt", true},
                                    {"bos_token", tokenizer.bos_text()},
                                    {"eos_token", tokenizer.eos_text()}};
    return tokenizer.encode(render_jinja_template(tokenizer.chat_template(), context));
  }
  std::vector<int32_t> ids;
  if (tokenizer.add_bos() && tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  const std::vector<int32_t> text_ids = tokenizer.encode(text);
  ids.insert(ids.end(), text_ids.begin(), text_ids.end());
  return ids;
}

GenerationResult generate(Model& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                          const GenerationParams& params, const TextCallback& on_text) {
  if (prompt.empty()) fail("the prompt is empty (no tokens)");
  if (params.max_tokens < 0) fail("max_tokens must be >= 0, got {}", params.max_tokens);
  GenerationResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  if (result.prompt_tokens >= model.max_context())
    fail("prompt of {} tokens does not fit the context length of {}", prompt.size(), model.max_context());

  const std::vector<int32_t> stop_ids = stop_token_ids(params, tokenizer);
  Sampler sampler(params.sampling);
  IncrementalDecoder decoder(tokenizer);
  StopStringFilter stop_filter(params.stop_strings);
  auto emit = [&](const std::string& piece) {
    if (piece.empty()) return;
    result.text += piece;
    if (on_text) on_text(piece);
  };

  KvCache cache = model.new_cache(std::min<int64_t>(model.max_context(), result.prompt_tokens + params.max_tokens));
  auto clock = std::chrono::steady_clock::now;
  auto started = clock();
  std::vector<float> logits = model.forward(prompt, cache);
  result.prefill_seconds = std::chrono::duration<double>(clock() - started).count();
  started = clock();
  result.finish_reason = "length";
  for (int i = 0; i < params.max_tokens; ++i) {
    int32_t token = sampler.sample(logits);
    if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
      result.finish_reason = "stop";
      break;
    }
    result.tokens.push_back(token);
    emit(stop_filter.push(decoder.push(token)));
    if (stop_filter.stopped()) {
      result.finish_reason = "stop";
      break;
    }
    if (i + 1 == params.max_tokens || cache.length() >= cache.max_positions()) break;
    int32_t next[1] = {token};
    logits = model.forward(next, cache);
  }
  if (!stop_filter.stopped()) emit(stop_filter.push(decoder.flush()));
  emit(stop_filter.flush());
  result.decode_seconds = std::chrono::duration<double>(clock() - started).count();
  return result;
}

}  // namespace tachyon
