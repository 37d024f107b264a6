// Tokenizer::from_gguf_metadata (the tokenizer.ggml.* keys of a GGUF file) and
// Tokenizer::from_checkpoint, which picks tokenizer.json or GGUF metadata.
#include "core/error.h"
#include "loader/checkpoint.h"
#include "tokenizer/tokenizer_impl.h"

namespace tachyon {
namespace {

using nlohmann::json;

// GGUF names the pre-tokenizer (tokenizer.ggml.pre) instead of storing it; these are the
// pipelines the named families' tokenizer.json files describe.
void configure_family(const std::string& pre, bool add_prefix_space, Normalizer& normalizer,
                      PreTokenizer& pre_tokenizer, BpeOptions& options, const std::string& source) {
  std::string what = source + ": tokenizer.ggml.pre '" + pre + "'";
  if (pre == "default" || pre == "gpt-2" || pre == "phi-2") {
    pre_tokenizer.add_byte_level(add_prefix_space, true);
  } else if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe" || pre == "smaug-bpe") {
    pre_tokenizer.add_split(kLlama3Pattern, SplitBehavior::kIsolated, false, what);
    pre_tokenizer.add_byte_level(add_prefix_space, false);
    options.ignore_merges = true;  // Llama-3's tokenizer.json sets it
  } else if (pre == "qwen2") {
    normalizer = Normalizer({Normalizer::Step::kNfc});  // Qwen2's tokenizer.json normalizes
    pre_tokenizer.add_split(kQwen2Pattern, SplitBehavior::kIsolated, false, what);
    pre_tokenizer.add_byte_level(add_prefix_space, false);
  } else if (pre == "smollm" || pre == "starcoder") {
    pre_tokenizer.add_digits(true);
    pre_tokenizer.add_byte_level(add_prefix_space, true);
  } else {
    fail("{}: tokenizer.ggml.pre '{}' is not supported (supported: default, gpt-2, phi-2, llama3, llama-v3, "
         "llama-bpe, smaug-bpe, qwen2, smollm, starcoder)",
         source, pre);
  }
}

// GGUF stores merges as "left right"; byte-level tokens hold no spaces, but should one,
// the split that names two vocabulary tokens whose concatenation is one too is the merge.
std::pair<std::string, std::string> split_merge(const std::string& text, const TokenIdMap& vocab, size_t index,
                                                const std::string& source) {
  for (size_t space = text.find(' '); space != std::string::npos; space = text.find(' ', space + 1)) {
    std::string left = text.substr(0, space), right = text.substr(space + 1);
    if (vocab.count(left) && vocab.count(right) && vocab.count(left + right)) return {left, right};
  }
  fail("{}: tokenizer.ggml.merges[{}] '{}' is not two vocabulary tokens", source, index, text);
}

int64_t optional_id(const json& metadata, const char* key) {
  if (!metadata.contains(key) || !metadata[key].is_number_integer()) return -1;
  return metadata[key].get<int64_t>();
}

}  // namespace

Tokenizer Tokenizer::from_gguf_metadata(const nlohmann::json& metadata, const std::string& source_name) {
  Tokenizer tokenizer;
  Impl& im = *tokenizer.impl_;
  im.source = source_name;
  try {
    if (!metadata.is_object()) fail("{}: GGUF metadata is not a JSON object", source_name);
    std::string model = metadata.value("tokenizer.ggml.model", "");
    if (model != "gpt2") {
      fail("{}: tokenizer.ggml.model '{}' is not supported (only 'gpt2', byte-level BPE)", source_name, model);
    }
    const json& tokens = metadata.at("tokenizer.ggml.tokens");
    const json types = metadata.value("tokenizer.ggml.token_type", json::array());
    if (!types.empty() && types.size() != tokens.size()) {
      fail("{}: tokenizer.ggml.token_type has {} entries for {} tokens", source_name, types.size(), tokens.size());
    }

    // Every token is in the BPE vocabulary; control (3) and user-defined (4) tokens are also
    // added tokens, matched in the text first, as tokenizer.json's added_tokens are.
    TokenIdMap vocab;
    std::vector<AddedToken> added;
    for (size_t id = 0; id < tokens.size(); ++id) {
      std::string text = tokens[id].get<std::string>();
      int type = types.empty() ? 1 : types[id].get<int>();
      if (type == 3 || type == 4) {
        added.push_back({static_cast<int32_t>(id), text, /*special=*/type == 3});
      }
      vocab[std::move(text)] = static_cast<int32_t>(id);
    }

    std::vector<std::pair<std::string, std::string>> merges;
    const json merge_list = metadata.value("tokenizer.ggml.merges", json::array());
    merges.reserve(merge_list.size());
    for (size_t i = 0; i < merge_list.size(); ++i) {
      merges.push_back(split_merge(merge_list[i].get<std::string>(), vocab, i, source_name));
    }

    BpeOptions options;
    configure_family(metadata.value("tokenizer.ggml.pre", std::string("default")),
                     metadata.value("tokenizer.ggml.add_space_prefix", false), im.normalizer, im.pre_tokenizer,
                     options, source_name);
    im.model = BpeModel(std::move(vocab), merges, options, source_name);
    im.finish(added);

    auto valid = [&](int64_t id) { return id >= 0 && id < tokenizer.vocab_size() ? static_cast<int32_t>(id) : -1; };
    im.bos_id = valid(optional_id(metadata, "tokenizer.ggml.bos_token_id"));
    im.add_bos = im.bos_id >= 0 && metadata.value("tokenizer.ggml.add_bos_token", false);
    for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
      im.add_eos(valid(optional_id(metadata, key)));
    }
    im.chat_template = metadata.value("tokenizer.chat_template", std::string());
  } catch (const nlohmann::json::exception& e) {
    fail("{}: unexpected GGUF tokenizer metadata: {}", source_name, e.what());
  }
  return tokenizer;
}

Tokenizer Tokenizer::from_checkpoint(const Checkpoint& checkpoint) {
  Tokenizer tokenizer;
  if (checkpoint.tokenizer_json.is_object()) {
    tokenizer = from_hf_json(checkpoint.tokenizer_json, checkpoint.tokenizer_config, checkpoint.path + "/tokenizer.json");
  } else if (checkpoint.gguf_metadata.is_object() && checkpoint.gguf_metadata.contains("tokenizer.ggml.model")) {
    tokenizer = from_gguf_metadata(checkpoint.gguf_metadata, checkpoint.path);
  } else {
    fail("{}: no tokenizer.json and no tokenizer.ggml.* metadata", checkpoint.path);
  }
  // generation_config.json often names more stop tokens (e.g. Llama-3-Instruct's <|eot_id|>).
  const json& generation = checkpoint.generation_config;
  if (generation.is_object() && generation.contains("eos_token_id")) {
    const json& eos = generation["eos_token_id"];
    for (const json& id : eos.is_array() ? eos : json::array({eos})) {
      if (id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < tokenizer.vocab_size()) {
        tokenizer.impl_->add_eos(id.get<int32_t>());
      }
    }
  }
  return tokenizer;
}

}  // namespace tachyon
