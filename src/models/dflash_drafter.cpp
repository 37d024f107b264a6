#include "models/dflash_drafter.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/parallel.h"

namespace tachyon {

std::vector<int> default_dflash_target_layers(int num_target_layers, int num_features) {
  if (num_features <= 0) fail("DFlash: number of target feature layers must be positive, got {}", num_features);
  if (num_features == 1) return {num_target_layers / 2};
  const double start = 1, end = num_target_layers - 3;
  std::vector<int> ids;
  // std::nearbyint rounds half to even in the default rounding mode, as Python's round() does
  // (z-lab's helper): for 30 layers and K = 5 the ids are 1, 8, 14, 20, 27, not 1, 8, 14, 21, 27.
  for (int i = 0; i < num_features; ++i)
    ids.push_back(static_cast<int>(std::nearbyint(start + i * (end - start) / (num_features - 1))));
  return ids;
}

namespace {
// config.json with the fields of dflash_config laid over the top level: newer drafters put block_size,
// rope parameters and scales there, and z-lab reads dflash_config first.
nlohmann::json merged_config(const nlohmann::json& config) {
  nlohmann::json merged = config;
  if (config.contains("dflash_config") && config["dflash_config"].is_object())
    for (const auto& [key, value] : config["dflash_config"].items()) merged[key] = value;
  return merged;
}
}  // namespace

const TensorView& DFlashDrafter::tensor(const std::string& name, std::initializer_list<int64_t> shape) const {
  return weights_.get(config_.prefix + name, shape);
}

DFlashDrafterConfig read_dflash_drafter_config(const Checkpoint& checkpoint, const DrafterTargetInfo& target) {
  const nlohmann::json merged = merged_config(checkpoint.config);
  const ConfigReader config(merged, checkpoint.path + " config");
  DFlashDrafterConfig c;
  std::string architecture;
  if (config.has("architectures") && config.raw()["architectures"].is_array() &&
      !config.raw()["architectures"].empty() && config.raw()["architectures"][0].is_string())
    architecture = config.raw()["architectures"][0].get<std::string>();
  if (architecture != "DFlashDraftModel")
    config.fail_field("architectures", fmt::format("expected [\"DFlashDraftModel\"] (z-lab DFlash drafter), got {}",
                                                   architecture.empty() ? "nothing" : architecture));

  c.hidden_size = static_cast<int>(config.get_dim("hidden_size", 1, 1 << 16));
  if (c.hidden_size != target.hidden_size)
    config.fail_field("hidden_size", fmt::format("{} differs from the target's hidden size {}", c.hidden_size,
                                                 target.hidden_size));
  c.num_layers = static_cast<int>(config.get_dim("num_hidden_layers", 1, 256));
  c.num_heads = static_cast<int>(config.get_dim("num_attention_heads", 1, 4096));
  c.num_kv_heads = static_cast<int>(config.get_dim("num_key_value_heads", 1, 4096, c.num_heads));
  if (c.num_heads % c.num_kv_heads != 0)
    config.fail_field("num_key_value_heads", fmt::format("{} does not divide num_attention_heads {}", c.num_kv_heads,
                                                         c.num_heads));
  c.head_dim = static_cast<int>(config.get_dim("head_dim", 2, 4096, c.hidden_size / c.num_heads));
  c.intermediate_size = static_cast<int>(config.get_dim("intermediate_size", 1, 1 << 20));
  c.rms_eps = static_cast<float>(config.get_float("rms_norm_eps", 1e-6));
  c.attention_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  c.block_size = static_cast<int>(config.get_dim("block_size", 2, 1024, 16));
  c.mask_token_id = static_cast<int32_t>(config.get_dim("mask_token_id", 0, target.vocab_size - 1));
  c.embedding_scale = static_cast<float>(config.get_float("input_embedding_scale", 1.0));
  c.output_multiplier = static_cast<float>(config.get_float("output_multiplier", 1.0));
  c.softcap = static_cast<float>(config.get_float("final_logit_softcapping", 0.0));
  std::string act = config.get_string("hidden_act", "silu");
  if (act != "silu" && act != "swish") config.fail_field("hidden_act", "activation '" + act + "' is not supported (silu is)");
  if (config.has("num_target_layers") && config.get_int("num_target_layers") != target.num_layers)
    config.fail_field("num_target_layers",
                      fmt::format("the drafter was made for a target of {} layers; this target has {}",
                                  config.get_int("num_target_layers"), target.num_layers));

  if (config.has("target_layer_ids")) {
    const auto& ids = config.raw()["target_layer_ids"];
    if (!ids.is_array() || ids.empty()) config.fail_field("target_layer_ids", "expected a non-empty list of layer ids");
    for (const auto& id : ids) {
      if (!id.is_number_integer()) config.fail_field("target_layer_ids", "expected integers, got " + id.dump());
      c.target_layer_ids.push_back(id.get<int>());
    }
  } else {
    c.target_layer_ids = default_dflash_target_layers(target.num_layers, c.num_layers);
  }
  for (int id : c.target_layer_ids)
    if (id < 0 || id >= target.num_layers)
      config.fail_field("target_layer_ids", fmt::format("layer {} is outside the target's layers [0, {})", id,
                                                        target.num_layers));

  c.rope = read_rope_config(config, c.head_dim, 10000.0);
  c.attention_bias = config.get_bool("attention_bias", false);
  c.prefix = checkpoint.weights.has("fc.weight") || !checkpoint.weights.has("model.fc.weight") ? "" : "model.";

  const std::vector<int> windows = read_layer_sliding_windows(config, c.num_layers);
  const bool has_is_causal = config.has("is_causal");
  for (int i = 0; i < c.num_layers; ++i) {
    DFlashDrafterConfig::LayerAttention layer;
    layer.sliding_window = windows[i];
    layer.causal = has_is_causal ? config.get_bool("is_causal", false) : layer.sliding_window > 0;
    c.layers.push_back(layer);
  }
  return c;
}

DFlashDrafter::DFlashDrafter(const Checkpoint& checkpoint, const DrafterTargetInfo& target)
    : config_(read_dflash_drafter_config(checkpoint, target)), weights_(checkpoint.weights), target_(target) {
  const DFlashDrafterConfig& c = config_;
  if (!target.embed_tokens || !target.lm_head) fail("{}: the target provides no embedding / lm_head", checkpoint.path);
  rope_.emplace(c.rope);

  const int64_t d = c.hidden_size, k_features = static_cast<int64_t>(c.target_layer_ids.size());
  fc_ = &tensor("fc.weight", {d, k_features * d});
  hidden_norm_ = to_float_vector(tensor("hidden_norm.weight", {d}));
  final_norm_ = to_float_vector(tensor("norm.weight", {d}));

  const int64_t q_width = int64_t{c.num_heads} * c.head_dim, kv_width = int64_t{c.num_kv_heads} * c.head_dim;
  const bool bias = c.attention_bias;
  for (int i = 0; i < c.num_layers; ++i) {
    Layer layer;
    auto name = [&](const std::string& suffix) { return fmt::format("layers.{}.{}", i, suffix); };
    layer.q = &tensor(name("self_attn.q_proj.weight"), {q_width, d});
    layer.k = &tensor(name("self_attn.k_proj.weight"), {kv_width, d});
    layer.v = &tensor(name("self_attn.v_proj.weight"), {kv_width, d});
    layer.o = &tensor(name("self_attn.o_proj.weight"), {d, q_width});
    if (bias) {
      layer.q_bias = to_float_vector(tensor(name("self_attn.q_proj.bias"), {q_width}));
      layer.k_bias = to_float_vector(tensor(name("self_attn.k_proj.bias"), {kv_width}));
      layer.v_bias = to_float_vector(tensor(name("self_attn.v_proj.bias"), {kv_width}));
      layer.o_bias = to_float_vector(tensor(name("self_attn.o_proj.bias"), {d}));
    }
    layer.q_norm = to_float_vector(tensor(name("self_attn.q_norm.weight"), {c.head_dim}));
    layer.k_norm = to_float_vector(tensor(name("self_attn.k_norm.weight"), {c.head_dim}));
    layer.input_norm = to_float_vector(tensor(name("input_layernorm.weight"), {d}));
    layer.post_attention_norm = to_float_vector(tensor(name("post_attention_layernorm.weight"), {d}));
    layer.gate = &tensor(name("mlp.gate_proj.weight"), {c.intermediate_size, d});
    layer.up = &tensor(name("mlp.up_proj.weight"), {c.intermediate_size, d});
    layer.down = &tensor(name("mlp.down_proj.weight"), {d, c.intermediate_size});
    layer.causal = c.layers[i].causal;
    layer.sliding_window = c.layers[i].sliding_window;
    layers_.push_back(std::move(layer));
  }
}

KvCache DFlashDrafter::new_cache(int64_t max_positions) const {
  const DFlashDrafterConfig& c = config_;
  const int64_t kv_width = int64_t{c.num_kv_heads} * c.head_dim;
  return KvCache(std::vector<std::pair<int64_t, int64_t>>(c.num_layers, {kv_width, kv_width}), max_positions);
}

void DFlashDrafter::store_keys_values(const Layer& layer, const float* input, int64_t n, int64_t start,
                                      KvLayer& kv) const {
  const DFlashDrafterConfig& c = config_;
  const int64_t kv_width = int64_t{c.num_kv_heads} * c.head_dim;
  std::vector<float> k(n * kv_width), v(n * kv_width);
  linear(*layer.k, layer.k_bias.empty() ? nullptr : layer.k_bias.data(), input, n, k.data());
  linear(*layer.v, layer.v_bias.empty() ? nullptr : layer.v_bias.data(), input, n, v.data());
  rms_norm(k.data(), layer.k_norm.data(), c.rms_eps, n * c.num_kv_heads, c.head_dim, k.data());
  for (int64_t t = 0; t < n; ++t) {
    for (int h = 0; h < c.num_kv_heads; ++h) rope_->apply(k.data() + (t * c.num_kv_heads + h) * c.head_dim, start + t);
    std::copy_n(k.data() + t * kv_width, kv_width, kv.k_row(start + t));
    std::copy_n(v.data() + t * kv_width, kv_width, kv.v_row(start + t));
  }
}

void DFlashDrafter::add_context(const float* features, int64_t n, KvCache& cache) const {
  const DFlashDrafterConfig& c = config_;
  if (n == 0) return;
  const int64_t start = cache.length(), d = c.hidden_size;
  cache.reserve_for(n);
  std::vector<float> ctx(n * d);
  linear(*fc_, nullptr, features, n, ctx.data());
  rms_norm(ctx.data(), hidden_norm_.data(), c.rms_eps, n, d, ctx.data());
  // ctx rows skip input_layernorm, Q, o_proj and the MLP: they only lend keys and values to every layer.
  for (int i = 0; i < c.num_layers; ++i) store_keys_values(layers_[i], ctx.data(), n, start, cache.layer(i));
  cache.advance(n);
}

std::vector<float> DFlashDrafter::draft(std::span<const int32_t> block, KvCache& cache) const {
  const DFlashDrafterConfig& c = config_;
  const int64_t n = static_cast<int64_t>(block.size()), start = cache.length(), d = c.hidden_size;
  if (n < 2) fail("DFlash draft: a block needs at least 2 slots (bonus + 1 mask), got {}", n);
  for (int32_t id : block)
    if (id < 0 || id >= target_.vocab_size) fail("DFlash draft: token id {} is outside the vocabulary [0, {})", id, target_.vocab_size);
  cache.reserve_for(n);  // the block's keys/values go to [start, start + n) without advancing

  const int64_t q_width = int64_t{c.num_heads} * c.head_dim, keys = start + n;
  const int group = c.num_heads / c.num_kv_heads;
  std::vector<float> x(n * d), h(n * d), q(n * q_width), context(n * q_width), delta(n * d);
  std::vector<float> gate(n * c.intermediate_size), up(n * c.intermediate_size);
  for (int64_t t = 0; t < n; ++t) {
    target_.embed_tokens->row_to_float(block[t], x.data() + t * d);
    if (c.embedding_scale != 1.0f)
      for (int64_t i = 0; i < d; ++i) x[t * d + i] *= c.embedding_scale;
  }
  for (int li = 0; li < c.num_layers; ++li) {
    const Layer& layer = layers_[li];
    KvLayer& kv = cache.layer(li);
    rms_norm(x.data(), layer.input_norm.data(), c.rms_eps, n, d, h.data());
    store_keys_values(layer, h.data(), n, start, kv);
    linear(*layer.q, layer.q_bias.empty() ? nullptr : layer.q_bias.data(), h.data(), n, q.data());
    rms_norm(q.data(), layer.q_norm.data(), c.rms_eps, n * c.num_heads, c.head_dim, q.data());
    for (int64_t t = 0; t < n; ++t)
      for (int hd = 0; hd < c.num_heads; ++hd) rope_->apply(q.data() + (t * c.num_heads + hd) * c.head_dim, start + t);
    // Block rows attend to every cached ctx row and to every block row (bidirectional), unless the layer is
    // causal / windowed. Key j is the cache row at position j.
    parallel_for(n * c.num_heads, [&](int64_t begin, int64_t end) {
      std::vector<float> scores(keys);
      for (int64_t job = begin; job < end; ++job) {
        const int64_t t = job / c.num_heads, pos = start + t;
        const int head = static_cast<int>(job % c.num_heads), kv_head = head / group;
        const float* qh = q.data() + (t * c.num_heads + head) * c.head_dim;
        float max = -INFINITY;
        for (int64_t j = 0; j < keys; ++j) {
          bool visible = !layer.causal || j <= pos;
          if (layer.sliding_window > 0) {
            visible = visible && pos - j < layer.sliding_window;
            if (!layer.causal) visible = visible && j - pos < layer.sliding_window;
          }
          scores[j] = visible ? dot(qh, kv.k_row(j) + kv_head * c.head_dim, c.head_dim) * c.attention_scale : -INFINITY;
          max = std::max(max, scores[j]);
        }
        float sum = 0;
        for (int64_t j = 0; j < keys; ++j) sum += scores[j] = scores[j] == -INFINITY ? 0.0f : std::exp(scores[j] - max);
        float* out = context.data() + (t * c.num_heads + head) * c.head_dim;
        std::fill(out, out + c.head_dim, 0.0f);
        for (int64_t j = 0; j < keys; ++j) {
          if (scores[j] == 0.0f) continue;
          const float p = scores[j] / sum;
          const float* vh = kv.v_row(j) + kv_head * c.head_dim;
          for (int i = 0; i < c.head_dim; ++i) out[i] += p * vh[i];
        }
      }
    });
    linear(*layer.o, layer.o_bias.empty() ? nullptr : layer.o_bias.data(), context.data(), n, delta.data());
    for (int64_t i = 0; i < n * d; ++i) x[i] += delta[i];
    rms_norm(x.data(), layer.post_attention_norm.data(), c.rms_eps, n, d, h.data());
    linear(*layer.gate, nullptr, h.data(), n, gate.data());
    linear(*layer.up, nullptr, h.data(), n, up.data());
    swiglu(gate.data(), up.data(), n * c.intermediate_size, gate.data());
    linear(*layer.down, nullptr, gate.data(), n, delta.data());
    for (int64_t i = 0; i < n * d; ++i) x[i] += delta[i];
  }
  // Slot 0 (the bonus) predicts nothing; slots 1..n-1 each predict their own token.
  rms_norm(x.data() + d, final_norm_.data(), c.rms_eps, n - 1, d, h.data());
  std::vector<float> logits((n - 1) * target_.vocab_size);
  linear(*target_.lm_head, nullptr, h.data(), n - 1, logits.data());
  if (c.output_multiplier != 1.0f)
    for (float& l : logits) l *= c.output_multiplier;
  if (c.softcap > 0)
    for (float& l : logits) l = std::tanh(l / c.softcap) * c.softcap;
  return logits;
}

}  // namespace tachyon
