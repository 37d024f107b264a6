#include "fp4/hf_export.h"

#include "core/error.h"
#include "tokenizer/pretokenizer.h"

namespace tachyon::fp4 {

using nlohmann::json;

std::vector<int64_t> unpermute_rows_for_hf(int64_t rows, int64_t heads) {
  if (heads <= 0 || rows % heads != 0 || (rows / heads) % 2 != 0)
    fail("cannot un-permute {} rows as {} heads of an even size", rows, heads);
  const int64_t d = rows / heads, half = d / 2;
  std::vector<int64_t> order(rows);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < half; ++i) order[h * d + j * half + i] = h * d + 2 * i + j;
  return order;
}

std::vector<float> read_rows(const TensorView& tensor, const std::vector<int64_t>& order) {
  if (order.empty()) return tensor.to_float();
  // A vector (a bias) is reordered element by element.
  const int64_t cols = tensor.shape.size() == 1 ? 1 : tensor.cols();
  const int64_t rows = tensor.numel() / cols;
  if (static_cast<int64_t>(order.size()) != rows)
    fail("{}: tensor {}: a row order of {} rows for {} rows", tensor.file, tensor.name, order.size(), rows);
  std::vector<float> values(rows * cols);
  for (int64_t r = 0; r < rows; ++r) tensor.to_float(order[r] * cols, cols, values.data() + r * cols);
  return values;
}

namespace {

json byte_level(bool add_prefix_space, bool trim_offsets, bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"trim_offsets", trim_offsets}, {"use_regex", use_regex}};
}

json split_regex(const char* pattern) {
  return {{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}};
}

std::string token_text(const json& tokens, const json& metadata, const char* key) {
  if (!metadata.contains(key) || !metadata[key].is_number_integer()) return "";
  const int64_t id = metadata[key].get<int64_t>();
  return id >= 0 && id < static_cast<int64_t>(tokens.size()) ? tokens[id].get<std::string>() : "";
}

}  // namespace

json gguf_tokenizer_json(const json& metadata, const std::string& source) {
  try {
    if (metadata.value("tokenizer.ggml.model", "") != "gpt2")
      fail("{}: tokenizer.ggml.model '{}' cannot be exported (only byte-level BPE, 'gpt2')", source,
           metadata.value("tokenizer.ggml.model", ""));
    const json& tokens = metadata.at("tokenizer.ggml.tokens");
    const json types = metadata.value("tokenizer.ggml.token_type", json::array());
    const std::string pre = metadata.value("tokenizer.ggml.pre", std::string("default"));
    const bool prefix_space = metadata.value("tokenizer.ggml.add_space_prefix", false);

    json vocab = json::object(), added = json::array();
    for (size_t id = 0; id < tokens.size(); ++id) {
      const std::string text = tokens[id].get<std::string>();
      vocab[text] = id;
      const int type = types.empty() ? 1 : types[id].get<int>();
      if (type == 3 || type == 4)
        added.push_back({{"id", id}, {"content", text}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                         {"normalized", type != 3}, {"special", type == 3}});
    }
    json normalizer = nullptr, pre_tokenizer;
    bool ignore_merges = false;
    if (pre == "default" || pre == "gpt-2" || pre == "phi-2") {
      pre_tokenizer = byte_level(prefix_space, true, true);
    } else if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe" || pre == "smaug-bpe") {
      pre_tokenizer = {{"type", "Sequence"},
                       {"pretokenizers", {split_regex(kLlama3Pattern), byte_level(prefix_space, true, false)}}};
      ignore_merges = true;
    } else if (pre == "qwen2") {
      normalizer = {{"type", "NFC"}};
      pre_tokenizer = {{"type", "Sequence"},
                       {"pretokenizers", {split_regex(kQwen2Pattern), byte_level(prefix_space, false, false)}}};
    } else if (pre == "smollm" || pre == "starcoder") {
      pre_tokenizer = {{"type", "Sequence"},
                       {"pretokenizers",
                        {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(prefix_space, true, true)}}};
    } else {
      fail("{}: tokenizer.ggml.pre '{}' cannot be exported to tokenizer.json", source, pre);
    }
    json model = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"ignore_merges", ignore_merges},
                  {"vocab", vocab},
                  {"merges", metadata.value("tokenizer.ggml.merges", json::array())}};
    return {{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", added},
            {"normalizer", normalizer},
            {"pre_tokenizer", pre_tokenizer},
            {"post_processor", byte_level(prefix_space, false, true)},
            {"decoder", byte_level(prefix_space, true, true)},
            {"model", model}};
  } catch (const json::exception& e) {
    fail("{}: unexpected GGUF tokenizer metadata: {}", source, e.what());
  }
}

json gguf_tokenizer_config(const json& metadata, const json& config, const std::string& source) {
  try {
    const json& tokens = metadata.at("tokenizer.ggml.tokens");
    json out = {{"add_prefix_space", metadata.value("tokenizer.ggml.add_space_prefix", false)},
                {"clean_up_tokenization_spaces", false},
                {"tokenizer_class", "GPT2Tokenizer"}};
    const std::pair<const char*, const char*> specials[] = {{"bos_token", "tokenizer.ggml.bos_token_id"},
                                                           {"eos_token", "tokenizer.ggml.eos_token_id"},
                                                           {"pad_token", "tokenizer.ggml.padding_token_id"},
                                                           {"unk_token", "tokenizer.ggml.unknown_token_id"}};
    for (const auto& [field, key] : specials) {
      const std::string text = token_text(tokens, metadata, key);
      if (!text.empty()) out[field] = text;
    }
    if (metadata.value("tokenizer.ggml.add_bos_token", false)) out["add_bos_token"] = true;
    if (metadata.contains("tokenizer.chat_template")) out["chat_template"] = metadata["tokenizer.chat_template"];
    if (config.contains("max_position_embeddings")) out["model_max_length"] = config["max_position_embeddings"];
    return out;
  } catch (const json::exception& e) {
    fail("{}: unexpected GGUF tokenizer metadata: {}", source, e.what());
  }
}

HfExport plan_hf_export(const Checkpoint& checkpoint) {
  HfExport plan;
  plan.config = checkpoint.config;
  plan.generation_config = checkpoint.generation_config;
  if (checkpoint.config.contains("tachyon_rope_freqs_tensor"))
    fail("{}: Llama-3 RoPE scaling stored as a rope_freqs tensor cannot be exported to an HF config yet",
         checkpoint.path);
  const bool interleaved = checkpoint.config.value("tachyon_rope_interleaved", false);
  for (auto it = plan.config.begin(); it != plan.config.end();) {
    if (it.key().rfind("tachyon_", 0) == 0) it = plan.config.erase(it);
    else ++it;
  }
  if (interleaved) {
    const int64_t heads = checkpoint.config.at("num_attention_heads").get<int64_t>();
    const int64_t kv_heads = checkpoint.config.value("num_key_value_heads", heads);
    for (const auto& [name, tensor] : checkpoint.weights.all()) {
      const bool q = name.ends_with("self_attn.q_proj.weight") || name.ends_with("self_attn.q_proj.bias");
      const bool k = name.ends_with("self_attn.k_proj.weight") || name.ends_with("self_attn.k_proj.bias");
      if (q || k) plan.row_order[name] = unpermute_rows_for_hf(tensor.shape.at(0), q ? heads : kv_heads);
    }
  }
  if (checkpoint.tokenizer_json.is_null() && checkpoint.gguf_metadata.is_object() &&
      checkpoint.gguf_metadata.contains("tokenizer.ggml.model")) {
    plan.tokenizer_json = gguf_tokenizer_json(checkpoint.gguf_metadata, checkpoint.path);
    plan.tokenizer_config = gguf_tokenizer_config(checkpoint.gguf_metadata, plan.config, checkpoint.path);
  } else {
    plan.tokenizer_json = checkpoint.tokenizer_json;
    plan.tokenizer_config = checkpoint.tokenizer_config;
  }
  return plan;
}

}  // namespace tachyon::fp4
