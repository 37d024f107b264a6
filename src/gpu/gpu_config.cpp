#include "gpu/gpu_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "loader/json_file.h"
#include "models/architectures.h"

namespace tachyon::gpu {

namespace {

const std::map<std::string, GpuFamily>& gpu_architectures() {
  static const std::map<std::string, GpuFamily> table = {
      {"LlamaForCausalLM", GpuFamily::Llama},
      {"Qwen2ForCausalLM", GpuFamily::Qwen2},
      {"Qwen3ForCausalLM", GpuFamily::Qwen3},
      {"Qwen3MoeForCausalLM", GpuFamily::Qwen3Moe},
      {"GptOssForCausalLM", GpuFamily::GptOss},
  };
  return table;
}

// Which layers route to experts: Qwen3-MoE's mlp_only_layers and decoder_sparse_step, as the CPU model.
std::vector<bool> read_sparse_layers(const ConfigReader& config, int layers, int experts) {
  std::vector<bool> dense(layers, false);
  if (config.has("mlp_only_layers")) {
    const auto& list = config.raw()["mlp_only_layers"];
    if (!list.is_array()) config.fail_field("mlp_only_layers", "expected a list of layer indices");
    for (const auto& index : list) {
      if (!index.is_number_integer() || index.get<int64_t>() < 0 || index.get<int64_t>() >= layers)
        config.fail_field("mlp_only_layers", "entry " + index.dump() + " is not a layer index");
      dense[index.get<int64_t>()] = true;
    }
  }
  const int64_t sparse_step = config.get_dim("decoder_sparse_step", 1, 1 << 16, 1);
  std::vector<bool> sparse(layers);
  for (int i = 0; i < layers; ++i) sparse[i] = !dense[i] && experts > 0 && (i + 1) % sparse_step == 0;
  return sparse;
}

// gpt-oss: the fields models/gpt_oss.cpp reads, with its defaults and checks.
void read_gpt_oss(const ConfigReader& config, const nlohmann::json& json, GpuModelConfig& c) {
  c.qkv_bias = c.o_bias = config.get_bool("attention_bias", true);
  c.attention_sinks = true;
  c.experts = static_cast<int>(config.get_dim("num_local_experts", 1, 512));  // the router kernel's limit
  c.top_k = static_cast<int>(config.get_dim("num_experts_per_tok", 1, std::min(c.experts, 32)));
  c.norm_topk_prob = true;  // softmax over the top-k logits == softmax over all, renormalized over the top k
  c.moe_intermediate = static_cast<int>(config.get_dim("intermediate_size", 1, 1 << 20));
  c.router_bias = c.expert_biases = true;
  c.swiglu_limit = static_cast<float>(config.get_float("swiglu_limit", 7.0));
  if (!(c.swiglu_limit > 0)) config.fail_field("swiglu_limit", "must be positive");
  c.swiglu_alpha = 1.702f;  // fixed in gpt-oss (not a config field)
  c.sliding_windows = read_layer_sliding_windows(config, c.layers);
  if (config.has("quantization_config")) {  // as GptOssModel::uses_mxfp4
    const auto& quantization = json["quantization_config"];
    const std::string method = quantization.is_object() && quantization.contains("quant_method") &&
                                       quantization["quant_method"].is_string()
                                   ? quantization["quant_method"].get<std::string>()
                                   : quantization.dump();
    if (method != "mxfp4")
      config.fail_field("quantization_config.quant_method", "'" + method + "' is not supported (mxfp4 is)");
    c.gpt_oss_mxfp4 = true;
  }
}

}  // namespace

bool GpuModelConfig::has_dense_layers() const {
  return std::any_of(sparse_layers.begin(), sparse_layers.end(), [](bool s) { return !s; });
}

float GpuModelConfig::hidden_norm_scale() const {
  return std::sqrt(static_cast<float>(hidden) / static_cast<float>(hidden_padded));
}

std::string GpuModelConfig::family_name() const {
  switch (family) {
    case GpuFamily::Llama:
      return "llama";
    case GpuFamily::Qwen2:
      return "qwen2";
    case GpuFamily::Qwen3:
      return "qwen3";
    case GpuFamily::Qwen3Moe:
      return "qwen3_moe";
    case GpuFamily::GptOss:
      return "gpt_oss";
  }
  return "?";
}

GpuModelConfig read_gpu_model_config(const nlohmann::json& json, const std::string& source) {
  ConfigReader config(json, source);
  GpuModelConfig c;
  if (!(json.contains("architectures") && json["architectures"].is_array() && !json["architectures"].empty() &&
        json["architectures"][0].is_string()))
    config.fail_field("architectures", "missing or not a list of strings");
  c.architecture = json["architectures"][0].get<std::string>();
  auto found = gpu_architectures().find(c.architecture);
  if (found == gpu_architectures().end()) {
    std::string supported;
    for (const auto& [name, family] : gpu_architectures()) supported += (supported.empty() ? "" : ", ") + name;
    fail("{}: architecture {} is not on the GPU yet (the CUDA backend runs {}; --device cpu runs the CPU reference)",
         source, c.architecture, supported);
  }
  c.family = found->second;

  // The same fields, bounds and defaults as DecoderModel::load_common.
  c.hidden = static_cast<int>(config.get_dim("hidden_size", 1, 1 << 16));
  c.layers = static_cast<int>(config.get_dim("num_hidden_layers", 1, 1024));
  c.heads = static_cast<int>(config.get_dim("num_attention_heads", 1, 4096));
  c.vocab = static_cast<int>(config.get_dim("vocab_size", 1, 1 << 24));
  c.rms_eps = static_cast<float>(config.get_float("rms_norm_eps", 1e-6));
  c.max_context = config.get_dim("max_position_embeddings", 1, int64_t{1} << 24, 4096);
  c.kv_heads = static_cast<int>(config.get_dim("num_key_value_heads", 1, 4096, c.heads));
  if (c.heads % c.kv_heads != 0)
    config.fail_field("num_key_value_heads",
                      fmt::format("{} does not divide num_attention_heads {}", c.kv_heads, c.heads));
  if (config.has("head_dim")) {
    c.head_dim = static_cast<int>(config.get_dim("head_dim", 1, 4096));
  } else {
    if (c.hidden % c.heads != 0)
      config.fail_field("num_attention_heads", fmt::format("{} does not divide hidden_size {}", c.heads, c.hidden));
    c.head_dim = c.hidden / c.heads;
  }
  c.attention_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  double partial = config.get_float("partial_rotary_factor", 1.0);
  if (config.has("rope_parameters") && json["rope_parameters"].is_object()) {
    ConfigReader params(json["rope_parameters"], source + " rope_parameters");
    partial = params.get_float("partial_rotary_factor", partial);
  }
  if (!(partial > 0 && partial <= 1)) config.fail_field("partial_rotary_factor", "must be in (0, 1]");
  if (c.family == GpuFamily::GptOss && !config.has("rope_parameters") && !config.has("rope_scaling"))
    config.fail_field("rope_parameters", "missing (gpt-oss needs its YaRN parameters)");  // as models/gpt_oss.cpp
  c.rope = read_rope_config(config, static_cast<int>(c.head_dim * partial),
                            c.family == GpuFamily::GptOss ? 150000.0 : 10000.0);
  c.tied_embeddings = config.get_bool("tie_word_embeddings", false);
  if (config.has("tachyon_rope_freqs_tensor"))  // llama.cpp's Llama-3 RoPE scaling stored as a tensor
    config.fail_field("tachyon_rope_freqs_tensor", "per-dimension RoPE frequency tensors are not on the GPU yet");

  require_silu_mlp(config);
  switch (c.family) {
    case GpuFamily::Llama:
      if (config.get_bool("mlp_bias", false)) config.fail_field("mlp_bias", "MLP biases are not supported for llama");
      c.qkv_bias = c.o_bias = config.get_bool("attention_bias", false);
      break;
    case GpuFamily::Qwen2:
      reject_sliding_window(config);
      c.qkv_bias = true;
      break;
    case GpuFamily::Qwen3:
    case GpuFamily::Qwen3Moe:
      reject_sliding_window(config);
      c.qkv_bias = c.o_bias = config.get_bool("attention_bias", false);
      c.qk_norm = true;
      break;
    case GpuFamily::GptOss:
      read_gpt_oss(config, json, c);
      break;
  }
  if (c.family == GpuFamily::Qwen3Moe) {
    // Hugging Face checkpoints say num_experts; transformers 5 saves num_local_experts.
    const char* experts_field = config.has("num_experts") ? "num_experts" : "num_local_experts";
    c.experts = static_cast<int>(config.get_dim(experts_field, 0, 512));  // the router kernel's limit
    c.top_k = static_cast<int>(config.get_dim("num_experts_per_tok", 1, std::max(std::min(c.experts, 32), 1), 1));
    c.norm_topk_prob = config.get_bool("norm_topk_prob", false);
    if (c.experts > 0) c.moe_intermediate = static_cast<int>(config.get_dim("moe_intermediate_size", 1, 1 << 20));
  }
  if (c.family == GpuFamily::GptOss)
    c.sparse_layers.assign(c.layers, true);  // every gpt-oss layer is an MoE
  else
    c.sparse_layers = read_sparse_layers(config, c.layers, c.experts);
  if (c.has_dense_layers()) c.intermediate = static_cast<int>(config.get_dim("intermediate_size", 1, 1 << 20));

  // What the kernels accept (see the header): padded widths, and limits that padding cannot hide.
  c.hidden_padded = round_up(c.hidden, 32);
  if (c.head_dim > 128)
    config.fail_field("head_dim", fmt::format("{} is above 128 (the GPU attention kernel's limit)", c.head_dim));
  c.head_dim_padded = c.head_dim <= 64 ? 64 : 128;
  c.intermediate_padded = round_up(c.intermediate, 32);
  c.moe_intermediate_padded = round_up(c.moe_intermediate, 32);
  if (c.rope.rotary_dim <= 0 || c.rope.rotary_dim % 2 != 0)
    config.fail_field("partial_rotary_factor",
                      fmt::format("rotary dimension {} must be even and positive", c.rope.rotary_dim));
  return c;
}

// Shapes from the models' config.json on the Hugging Face hub (HuggingFaceTB/SmolLM2-135M-Instruct,
// Qwen/Qwen3-30B-A3B, openai/gpt-oss-20b), kept to the fields the loaders read.
std::optional<nlohmann::json> builtin_model_config(const std::string& name) {
  if (name == "smollm2-135m") {
    return nlohmann::json::parse(R"({
      "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
      "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
      "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "max_position_embeddings": 8192,
      "rms_norm_eps": 1e-05, "rope_theta": 100000, "rope_scaling": null, "attention_bias": false,
      "mlp_bias": false, "tie_word_embeddings": true, "initializer_range": 0.041666666666666664,
      "bos_token_id": 1, "eos_token_id": 2})");
  }
  if (name == "qwen3-30b-a3b") {
    return nlohmann::json::parse(R"({
      "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_act": "silu",
      "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768, "num_hidden_layers": 48,
      "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
      "num_experts_per_tok": 8, "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": [],
      "vocab_size": 151936, "max_position_embeddings": 40960, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
      "rope_scaling": null, "attention_bias": false, "tie_word_embeddings": false, "use_sliding_window": false,
      "initializer_range": 0.02, "bos_token_id": 151643, "eos_token_id": 151645})");
  }
  if (name == "gpt-oss-20b") {
    // openai/gpt-oss-20b config.json (transformers 4.55 release), the fields the loaders read: 24 layers alternating
    // sliding (window 128) and full attention, 64 query / 8 KV heads of 64, per-head sinks, q/k/v/o biases, YaRN
    // (factor 32 over 4096 positions, theta 150000), 32 experts of width 2880, top-4, MXFP4 experts
    // (quantization_config: random weights make the experts as gpt-oss MXFP4 blocks / scales, gpu/gpt_oss_experts.cpp).
    nlohmann::json config = nlohmann::json::parse(R"({
      "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_act": "silu",
      "attention_bias": true, "attention_dropout": 0.0, "head_dim": 64, "hidden_size": 2880,
      "initial_context_length": 4096, "initializer_range": 0.02, "intermediate_size": 2880,
      "max_position_embeddings": 131072, "num_attention_heads": 64, "num_experts_per_tok": 4,
      "experts_per_token": 4, "num_hidden_layers": 24, "num_key_value_heads": 8, "num_local_experts": 32,
      "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                              "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"},
      "rms_norm_eps": 1e-05,
      "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                       "rope_type": "yarn", "truncate": false},
      "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
      "tie_word_embeddings": false, "use_cache": true, "vocab_size": 201088,
      "eos_token_id": 200002, "pad_token_id": 199999})");
    nlohmann::json types = nlohmann::json::array();
    for (int i = 0; i < 24; ++i) types.push_back(i % 2 == 0 ? "sliding_attention" : "full_attention");
    config["layer_types"] = types;  // 12 x ["sliding_attention", "full_attention"], as published
    return config;
  }
  return std::nullopt;
}

std::vector<std::string> builtin_model_config_names() { return {"smollm2-135m", "qwen3-30b-a3b", "gpt-oss-20b"}; }

nlohmann::json random_weights_config(const std::string& what) {
  if (auto builtin = builtin_model_config(what)) return *builtin;
  std::filesystem::path path(what);
  if (std::filesystem::is_directory(path)) path /= "config.json";
  if (!std::filesystem::exists(path)) {
    std::string names;
    for (const auto& name : builtin_model_config_names()) names += (names.empty() ? "" : ", ") + name;
    fail("--random-weights {}: neither a config.json nor a built-in shape ({})", what, names);
  }
  return read_json_file(path.string());
}

}  // namespace tachyon::gpu
