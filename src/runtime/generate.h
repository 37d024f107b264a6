// The generation loop of the CPU reference path: prefill the prompt, then sample one token at a
// time until a stop token, a stop string or max_tokens. Text is streamed in pieces that are
// complete UTF-8 and never contain (a prefix of) a stop string.
#pragma once
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "models/model.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace tachyon {

struct GenerationParams {
  int max_tokens = 256;
  SamplingParams sampling;
  std::vector<std::string> stop_strings;
  std::vector<int32_t> stop_token_ids;  // in addition to the tokenizer's EOS ids
  bool ignore_eos = false;
};

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids (a stop token is not included)
  std::string text;             // generated text, cut before a stop string
  std::string finish_reason;    // "stop" or "length"
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

using TextCallback = std::function<void(std::string_view piece)>;

// The ids that end a generation: params.stop_token_ids, plus the tokenizer's EOS ids unless ignore_eos.
std::vector<int32_t> stop_token_ids(const GenerationParams& params, const Tokenizer& tokenizer);

// A prompt's ids as `tachyon generate` builds them: with `chat`, one user turn (after an optional system turn)
// rendered by the model's chat template with the generation prompt, as apply_chat_template does (the template
// writes any BOS itself); otherwise BOS when the tokenizer adds one, then the text. `source` names the model in
// the error when chat is asked of a model without a template.
std::vector<int32_t> encode_prompt(const Tokenizer& tokenizer, const std::string& text, bool chat,
                                   const std::string& system = {}, const std::string& source = "the model");

GenerationResult generate(Model& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                          const GenerationParams& params, const TextCallback& on_text = {});

// Holds back the end of the stream that could still become a stop string.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Adds text; returns the part that is safe to emit. Sets stopped() when a stop string appears
  // (the stop string and everything after it are dropped).
  std::string push(std::string_view text);
  std::string flush();  // at the end: whatever was held back
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace tachyon
