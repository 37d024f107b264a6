#include "spec/random_drafter.h"

#include <string>

#include "core/dtype.h"
#include "core/error.h"

namespace tachyon {

std::unique_ptr<RandomDrafterCheckpoint> random_dflash_checkpoint(const nlohmann::json& config, uint64_t seed) {
  auto out = std::make_unique<RandomDrafterCheckpoint>();
  auto dim = [&](const char* key) -> int64_t {
    if (!config.contains(key) || !config[key].is_number_integer() || config[key].get<int64_t>() < 1)
      fail("random drafter: the config needs a positive integer {}", key);
    return config[key].get<int64_t>();
  };
  const int64_t d = dim("hidden_size"), layers = dim("num_hidden_layers"), heads = dim("num_attention_heads");
  const int64_t kv_heads = dim("num_key_value_heads"), head_dim = dim("head_dim"), inter = dim("intermediate_size");
  const nlohmann::json& dflash = config.contains("dflash_config") ? config["dflash_config"] : config;
  const int64_t features =
      dflash.contains("target_layer_ids") ? static_cast<int64_t>(dflash["target_layer_ids"].size()) : layers;
  out->checkpoint.path = "<random DFlash drafter>";
  out->checkpoint.format = "safetensors";
  out->checkpoint.config = config;
  out->checkpoint.weights.set_source(out->checkpoint.path);
  // Tensor specs first: the buffers vector must not reallocate after views point into it.
  struct Spec {
    std::string name;
    std::vector<int64_t> shape;
    bool norm;
  };
  std::vector<Spec> specs = {{"fc.weight", {d, features * d}, false},
                             {"hidden_norm.weight", {d}, true},
                             {"norm.weight", {d}, true}};
  const int64_t q = heads * head_dim, kv = kv_heads * head_dim;
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    specs.push_back({p + "self_attn.q_proj.weight", {q, d}, false});
    specs.push_back({p + "self_attn.k_proj.weight", {kv, d}, false});
    specs.push_back({p + "self_attn.v_proj.weight", {kv, d}, false});
    specs.push_back({p + "self_attn.o_proj.weight", {d, q}, false});
    specs.push_back({p + "self_attn.q_norm.weight", {head_dim}, true});
    specs.push_back({p + "self_attn.k_norm.weight", {head_dim}, true});
    specs.push_back({p + "mlp.gate_proj.weight", {inter, d}, false});
    specs.push_back({p + "mlp.up_proj.weight", {inter, d}, false});
    specs.push_back({p + "mlp.down_proj.weight", {d, inter}, false});
    specs.push_back({p + "input_layernorm.weight", {d}, true});
    specs.push_back({p + "post_attention_layernorm.weight", {d}, true});
  }
  out->buffers.resize(specs.size());
  uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
  const float half_width = 0.02f * 1.7320508f;  // uniform(-a, a) has standard deviation a / sqrt(3)
  for (size_t s = 0; s < specs.size(); ++s) {
    int64_t count = 1;
    for (int64_t v : specs[s].shape) count *= v;
    std::vector<uint16_t>& bits = out->buffers[s];
    bits.resize(count);
    if (specs[s].norm) {
      std::fill(bits.begin(), bits.end(), float_to_bf16(1.0f));
    } else {
      for (uint16_t& b : bits) {  // xorshift64*: fast enough for half a billion values
        state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
        const uint32_t r = static_cast<uint32_t>((state * 0x2545f4914f6cdd1dull) >> 40);  // 24 bits
        b = float_to_bf16((static_cast<float>(r) * (2.0f / 16777216.0f) - 1.0f) * half_width);
      }
    }
    TensorView t;
    t.name = specs[s].name;
    t.dtype = DType::BF16;
    t.shape = specs[s].shape;
    t.data = reinterpret_cast<const uint8_t*>(bits.data());
    t.nbytes = count * sizeof(uint16_t);
    t.file = "<memory>";
    out->checkpoint.weights.add(t);
  }
  return out;
}

nlohmann::json qwen3_coder_dflash_config(const nlohmann::json& target) {
  nlohmann::json d = {{"architectures", {"DFlashDraftModel"}},
                      {"model_type", "qwen3"},
                      {"block_size", 16},
                      {"num_hidden_layers", 8},
                      {"intermediate_size", 6144},
                      {"hidden_act", "silu"},
                      {"attention_bias", false},
                      {"tie_word_embeddings", false}};
  for (const char* key : {"hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
                          "rms_norm_eps", "rope_theta", "max_position_embeddings"})
    if (target.contains(key)) d[key] = target[key];
  if (!target.contains("num_hidden_layers") || !target.contains("vocab_size"))
    fail("qwen3-coder-30b-a3b-dflash: the target's config has no num_hidden_layers / vocab_size");
  if (!d.contains("num_key_value_heads") && d.contains("num_attention_heads"))
    d["num_key_value_heads"] = d["num_attention_heads"];
  if (!d.contains("head_dim") && d.contains("hidden_size") && d.contains("num_attention_heads"))
    d["head_dim"] = d["hidden_size"].get<int64_t>() / d["num_attention_heads"].get<int64_t>();
  d["num_target_layers"] = target["num_hidden_layers"];
  // Any id inside the vocabulary serves for speed; z-lab's drafters use a reserved special token.
  d["dflash_config"] = {{"mask_token_id", target["vocab_size"].get<int64_t>() - 1}};
  return d;
}

}  // namespace tachyon
