// Dispatch from config.json to the architecture files. Only dispatches.
#include "models/model.h"

#include <functional>
#include <map>

#include "core/error.h"
#include "models/architectures.h"

namespace tachyon {

namespace {
using Factory = std::function<std::unique_ptr<Model>(const Checkpoint&)>;

const std::map<std::string, Factory>& factories() {
  static const std::map<std::string, Factory> table = {
      {"LlamaForCausalLM", make_llama},
      {"Qwen2ForCausalLM", make_qwen2},
      {"Qwen3ForCausalLM", make_qwen3},
      {"Qwen3MoeForCausalLM", make_qwen3_moe},
      {"MixtralForCausalLM", make_mixtral},
      {"DeepseekV2ForCausalLM", make_deepseek_v2},
      {"DeepseekV3ForCausalLM", make_deepseek_v3},
      {"GptOssForCausalLM", make_gpt_oss},
  };
  return table;
}
}  // namespace

std::vector<std::string> supported_architectures() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : factories()) names.push_back(name);
  return names;
}

std::unique_ptr<Model> create_model(const Checkpoint& checkpoint) {
  const auto& config = checkpoint.config;
  std::string name;
  if (config.contains("architectures") && config["architectures"].is_array() && !config["architectures"].empty() &&
      config["architectures"][0].is_string())
    name = config["architectures"][0].get<std::string>();
  else fail("{}: config field architectures is missing or not a list of strings", checkpoint.path);
  auto it = factories().find(name);
  if (it == factories().end()) {
    std::string supported;
    for (const auto& n : supported_architectures()) supported += (supported.empty() ? "" : ", ") + n;
    fail("{}: architecture {} is not supported; supported: {}", checkpoint.path, name, supported);
  }
  return it->second(checkpoint);
}

void require_silu_mlp(const ConfigReader& config) {
  std::string act = config.get_string("hidden_act", "silu");
  if (act != "silu" && act != "swish") config.fail_field("hidden_act", "activation '" + act + "' is not supported (silu is)");
}

void reject_sliding_window(const ConfigReader& config) {
  if (config.get_bool("use_sliding_window", false))
    config.fail_field("use_sliding_window", "sliding-window attention is not supported for this architecture yet");
}

ParameterCounts count_parameters(const WeightStore& weights) {
  ParameterCounts counts;
  auto contains = [](const std::string& s, const char* part) { return s.find(part) != std::string::npos; };
  for (const auto& [name, tensor] : weights.all()) {
    int64_t n = tensor.numel();
    // MXFP4 blocks pack two 4-bit values per byte; their scales are not parameters.
    if (name.ends_with("_blocks")) n *= 2;
    if (name.ends_with("_scales") || name.ends_with("weight_scale") || name.ends_with("weight_scale_2")) continue;
    if (contains(name, "embed_tokens") || contains(name, "lm_head")) counts.embeddings += n;
    else if (contains(name, "norm")) counts.norms += n;
    else if (contains(name, "self_attn")) counts.attention += n;
    else if (contains(name, ".experts.") || contains(name, ".experts_")) counts.experts += n;
    else if (contains(name, "mlp.gate.") || contains(name, "router") || contains(name, "block_sparse_moe.gate") ||
             contains(name, "e_score_correction_bias"))
      counts.router += n;
    else if (contains(name, "mlp") || contains(name, "shared_expert")) counts.dense_mlp += n;
    else counts.other += n;
  }
  return counts;
}

}  // namespace tachyon
