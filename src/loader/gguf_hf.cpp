// The Hugging Face view of a GGUF file: an HF-style config.json synthesized from the metadata, and
// llama.cpp tensor names translated to HF names, so that model code only knows one layout.
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>

#include <fmt/format.h>

#include "core/error.h"
#include "loader/gguf.h"
#include "loader/json_file.h"

namespace tachyon {

using nlohmann::json;

namespace {

// Typed, required-or-optional access to untrusted metadata; every failure names the file and key.
class Metadata {
 public:
  Metadata(const json& metadata, const std::string& file_name) : metadata_(metadata), file_name_(file_name) {}

  const json* find(const std::string& key) const {
    auto it = metadata_.find(key);
    return it == metadata_.end() ? nullptr : &*it;
  }
  const json& require(const std::string& key) const {
    const json* value = find(key);
    if (value == nullptr) fail("{}: metadata key {} is missing", file_name_, key);
    return *value;
  }

  std::optional<int64_t> optional_integer(const std::string& key) const {
    const json* value = find(key);
    if (value == nullptr) return std::nullopt;
    // Some converters write per-layer values as arrays; a uniform array means one value.
    if (value->is_array() && !value->empty()) {
      for (const json& element : *value) {
        if (element != value->front())
          fail("{}: metadata key {} varies per layer, which is not supported", file_name_, key);
      }
      value = &value->front();
    }
    if (value->is_number_integer() && !(value->is_number_unsigned() &&
                                        value->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())))
      return value->get<int64_t>();
    fail("{}: metadata key {} is {}, expected an integer", file_name_, key, json_kind(*value));
  }
  int64_t positive(const std::string& key) const {
    require(key);
    const int64_t value = *optional_integer(key);
    if (value <= 0) fail("{}: metadata key {} is {}, expected a positive integer", file_name_, key, value);
    return value;
  }
  std::optional<double> optional_number(const std::string& key) const {
    const json* value = find(key);
    if (value == nullptr) return std::nullopt;
    if (!value->is_number()) fail("{}: metadata key {} is {}, expected a number", file_name_, key, json_kind(*value));
    return value->get<double>();
  }
  double number(const std::string& key) const {
    require(key);
    return *optional_number(key);
  }
  std::optional<std::string> optional_string(const std::string& key) const {
    const json* value = find(key);
    if (value == nullptr) return std::nullopt;
    if (!value->is_string()) fail("{}: metadata key {} is {}, expected a string", file_name_, key, json_kind(*value));
    return value->get<std::string>();
  }
  std::string string(const std::string& key) const {
    require(key);
    return *optional_string(key);
  }

 private:
  const json& metadata_;
  const std::string& file_name_;
};

struct Architecture {
  const char* gguf_name;
  const char* hf_class;
  const char* model_type;
};
constexpr Architecture kArchitectures[] = {
    {"llama", "LlamaForCausalLM", "llama"},
    {"qwen2", "Qwen2ForCausalLM", "qwen2"},
    {"qwen3", "Qwen3ForCausalLM", "qwen3"},
    {"qwen3moe", "Qwen3MoeForCausalLM", "qwen3_moe"},
};

const TensorView* find_tensor(const std::vector<TensorView>& tensors, std::string_view name) {
  for (const TensorView& tensor : tensors) {
    if (tensor.name == name) return &tensor;
  }
  return nullptr;
}

// HF's rope_scaling object from llama.cpp's rope.scaling.* keys; null when the model uses plain RoPE.
json rope_scaling(const Metadata& md, const std::string& arch) {
  const std::string prefix = arch + ".rope.scaling.";
  std::optional<std::string> type = md.optional_string(prefix + "type");
  std::optional<double> factor = md.optional_number(prefix + "factor");
  if (!type) {
    // Older converters wrote only a linear scale factor.
    std::optional<double> linear = md.optional_number(arch + ".rope.scale_linear");
    if (!linear || *linear == 1.0) return nullptr;
    type = "linear";
    factor = linear;
  }
  if (*type == "none") return nullptr;
  json scaling = {{"rope_type", *type}, {"type", *type}};  // "type" is the pre-4.45 transformers spelling
  if (factor) scaling["factor"] = *factor;
  if (auto original = md.optional_integer(prefix + "original_context_length"))
    scaling["original_max_position_embeddings"] = *original;
  if (*type == "yarn") {
    if (auto attention = md.optional_number(prefix + "attn_factor")) scaling["attention_factor"] = *attention;
    if (auto fast = md.optional_number(prefix + "yarn_beta_fast")) scaling["beta_fast"] = *fast;
    if (auto slow = md.optional_number(prefix + "yarn_beta_slow")) scaling["beta_slow"] = *slow;
  }
  return scaling;
}

// Per-layer GGUF names (after "blk.N.") and their HF equivalents (after "model.layers.N.").
struct LayerName {
  std::string_view gguf;
  std::string_view hf;
};
constexpr LayerName kLayerNames[] = {
    {"attn_norm", "input_layernorm"},         {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},           {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"},      {"attn_q_norm", "self_attn.q_norm"},
    {"attn_k_norm", "self_attn.k_norm"},      {"ffn_norm", "post_attention_layernorm"},
    {"ffn_gate", "mlp.gate_proj"},            {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},            {"ffn_gate_inp", "mlp.gate"},
};
constexpr LayerName kExpertNames[] = {
    {"ffn_gate_exps", "gate_proj"}, {"ffn_up_exps", "up_proj"}, {"ffn_down_exps", "down_proj"},
};

// Splits "blk.12.attn_q.weight" into layer "12", base "attn_q" and suffix "weight".
bool split_layer_name(std::string_view name, std::string_view* layer, std::string_view* base, std::string_view* suffix) {
  constexpr std::string_view kPrefix = "blk.";
  if (name.substr(0, kPrefix.size()) != kPrefix) return false;
  name.remove_prefix(kPrefix.size());
  size_t dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot > 9) return false;
  for (char c : name.substr(0, dot)) {
    if (c < '0' || c > '9') return false;
  }
  *layer = name.substr(0, dot);
  std::string_view rest = name.substr(dot + 1);
  size_t last_dot = rest.rfind('.');
  if (last_dot == std::string_view::npos) return false;
  *base = rest.substr(0, last_dot);
  *suffix = rest.substr(last_dot + 1);
  return *suffix == "weight" || *suffix == "bias";
}

// Largest expert count of any released MoE is a few hundred; more means a broken file.
constexpr int64_t kMaxExperts = 4096;

void add_expert_views(const TensorView& stacked, std::string_view layer, std::string_view hf_base,
                      std::vector<TensorView>& out) {
  if (stacked.shape.size() != 3)
    fail("{}: tensor {} has shape {}, expected [experts, out, in]", stacked.file, stacked.name, stacked.shape_string());
  const int64_t experts = stacked.shape[0];
  if (experts <= 0 || experts > kMaxExperts) fail("{}: tensor {} has {} experts, more than {}", stacked.file, stacked.name, experts, kMaxExperts);
  // Rows are whole blocks (checked by the parser), so each expert's slice is a whole number of blocks.
  const uint64_t expert_bytes = stacked.nbytes / static_cast<uint64_t>(experts);
  for (int64_t e = 0; e < experts; ++e) {
    TensorView view = stacked;
    view.name = fmt::format("model.layers.{}.mlp.experts.{}.{}.weight", layer, e, hf_base);
    view.shape = {stacked.shape[1], stacked.shape[2]};
    view.data = stacked.data + static_cast<uint64_t>(e) * expert_bytes;
    view.nbytes = expert_bytes;
    out.push_back(std::move(view));
  }
}

}  // namespace

json gguf_hf_config(const json& metadata, const std::vector<TensorView>& tensors, const std::string& file_name) {
  const Metadata md(metadata, file_name);
  const std::string arch = md.string("general.architecture");
  const Architecture* architecture = nullptr;
  for (const Architecture& candidate : kArchitectures) {
    if (arch == candidate.gguf_name) architecture = &candidate;
  }
  if (architecture == nullptr)
    fail("{}: GGUF architecture '{}' is not supported (supported: llama, qwen2, qwen3, qwen3moe)", file_name, arch);
  const std::string p = arch + ".";

  json config;
  config["architectures"] = json::array({architecture->hf_class});
  config["model_type"] = architecture->model_type;
  config["hidden_act"] = "silu";
  const int64_t hidden = md.positive(p + "embedding_length");
  const int64_t heads = md.positive(p + "attention.head_count");
  config["hidden_size"] = hidden;
  config["num_hidden_layers"] = md.positive(p + "block_count");
  config["num_attention_heads"] = heads;
  config["num_key_value_heads"] = md.find(p + "attention.head_count_kv") ? md.positive(p + "attention.head_count_kv") : heads;
  config["head_dim"] = md.find(p + "attention.key_length") ? md.positive(p + "attention.key_length") : hidden / heads;
  config["rms_norm_eps"] = md.number(p + "attention.layer_norm_rms_epsilon");
  config["rope_theta"] = md.optional_number(p + "rope.freq_base").value_or(10000.0);
  config["rope_scaling"] = rope_scaling(md, arch);
  config["max_position_embeddings"] = md.positive(p + "context_length");

  // The embedding's row count is what the weights actually hold; the metadata keys are fallbacks.
  const TensorView* embedding = find_tensor(tensors, "token_embd.weight");
  if (embedding != nullptr && embedding->shape.size() == 2) {
    config["vocab_size"] = embedding->shape[0];
  } else if (md.find(p + "vocab_size")) {
    config["vocab_size"] = md.positive(p + "vocab_size");
  } else if (const json* tokens = md.find("tokenizer.ggml.tokens"); tokens != nullptr && tokens->is_array()) {
    config["vocab_size"] = tokens->size();
  } else {
    fail("{}: cannot tell the vocabulary size (no token_embd.weight, {}vocab_size or tokenizer.ggml.tokens)", file_name, p);
  }
  config["tie_word_embeddings"] = find_tensor(tensors, "output.weight") == nullptr;
  config["attention_bias"] = find_tensor(tensors, "blk.0.attn_q.bias") != nullptr;
  if (auto bos = md.optional_integer("tokenizer.ggml.bos_token_id")) config["bos_token_id"] = *bos;
  if (auto eos = md.optional_integer("tokenizer.ggml.eos_token_id")) config["eos_token_id"] = *eos;

  if (arch == "qwen3moe") {
    config["num_experts"] = md.positive(p + "expert_count");
    config["num_experts_per_tok"] = md.positive(p + "expert_used_count");
    config["moe_intermediate_size"] = md.positive(p + "expert_feed_forward_length");
    config["norm_topk_prob"] = true;
    config["decoder_sparse_step"] = 1;
    config["mlp_only_layers"] = json::array();
    // The dense size only matters for mlp_only_layers, which llama.cpp does not support either.
    config["intermediate_size"] = md.find(p + "feed_forward_length") ? md.positive(p + "feed_forward_length")
                                                                      : config["moe_intermediate_size"].get<int64_t>();
  } else {
    config["intermediate_size"] = md.positive(p + "feed_forward_length");
  }
  if (find_tensor(tensors, "rope_freqs.weight") != nullptr) {
    // llama.cpp stores Llama 3 rope scaling not as metadata but as a tensor of per-dimension
    // divisors of the RoPE inverse frequencies; its HF parameters cannot be recovered exactly, so
    // model code that supports it must read the tensor named here.
    config["tachyon_rope_freqs_tensor"] = "rope_freqs.weight";
  }
  if (arch == "llama") {
    // llama.cpp's convert script permutes the rows of q_proj and k_proj so that ggml's RoPE, which
    // rotates adjacent pairs (x[2i], x[2i+1]), gives the same result as HF's rotate-half RoPE on the
    // original weights. Rather than un-permute every q/k weight at load time, model code reads this
    // flag and applies adjacent-pair RoPE to GGUF llama weights.
    config["tachyon_rope_interleaved"] = true;
  }
  return config;
}

std::string gguf_to_hf_tensor_name(const std::string& gguf_name) {
  if (gguf_name == "token_embd.weight") return "model.embed_tokens.weight";
  if (gguf_name == "output_norm.weight") return "model.norm.weight";
  if (gguf_name == "output.weight") return "lm_head.weight";
  std::string_view layer, base, suffix;
  if (!split_layer_name(gguf_name, &layer, &base, &suffix)) return gguf_name;
  for (const LayerName& entry : kLayerNames) {
    if (entry.gguf == base) return fmt::format("model.layers.{}.{}.{}", layer, entry.hf, suffix);
  }
  return gguf_name;
}

std::vector<TensorView> gguf_tensors_to_hf(const std::vector<TensorView>& tensors) {
  std::vector<TensorView> out;
  out.reserve(tensors.size());
  for (const TensorView& tensor : tensors) {
    std::string_view layer, base, suffix;
    const LayerName* expert = nullptr;
    if (split_layer_name(tensor.name, &layer, &base, &suffix) && suffix == "weight") {
      for (const LayerName& entry : kExpertNames) {
        if (entry.gguf == base) expert = &entry;
      }
    }
    if (expert != nullptr) {
      add_expert_views(tensor, layer, expert->hf, out);
      continue;
    }
    TensorView renamed = tensor;
    renamed.name = gguf_to_hf_tensor_name(tensor.name);
    out.push_back(std::move(renamed));
  }
  return out;
}

void fill_checkpoint_from_gguf(GgufContents contents, const std::string& file_name, Checkpoint& checkpoint) {
  checkpoint.path = file_name;
  checkpoint.format = "gguf";
  checkpoint.config = gguf_hf_config(contents.metadata, contents.tensors, file_name);
  const Metadata md(contents.metadata, file_name);
  // What HF keeps in generation_config.json; GGUF only knows the special token ids.
  checkpoint.generation_config = json::object();
  if (checkpoint.config.contains("bos_token_id")) checkpoint.generation_config["bos_token_id"] = checkpoint.config["bos_token_id"];
  if (checkpoint.config.contains("eos_token_id")) checkpoint.generation_config["eos_token_id"] = checkpoint.config["eos_token_id"];
  checkpoint.tokenizer_json = nullptr;  // the tokenizer is built from gguf_metadata instead
  checkpoint.tokenizer_config = json::object();
  if (auto chat_template = md.optional_string("tokenizer.chat_template"))
    checkpoint.tokenizer_config["chat_template"] = *chat_template;
  checkpoint.weights.set_source(file_name);
  for (TensorView& tensor : gguf_tensors_to_hf(contents.tensors)) checkpoint.weights.add(std::move(tensor));
  checkpoint.gguf_metadata = std::move(contents.metadata);
}

void load_gguf_checkpoint(const std::string& path, Checkpoint& checkpoint) {
  auto file = std::make_shared<MappedFile>(path);
  GgufContents contents = parse_gguf(file->data(), file->size(), path);
  checkpoint.weights.keep_alive(file);
  fill_checkpoint_from_gguf(std::move(contents), path, checkpoint);
}

}  // namespace tachyon
