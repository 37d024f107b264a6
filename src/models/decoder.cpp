#include "models/decoder.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace tachyon {

DecoderModel::DecoderModel(const Checkpoint& checkpoint, const std::string& architecture)
    : checkpoint_(checkpoint), config_(checkpoint.config, checkpoint.path + " config"), weights_(checkpoint.weights) {
  architecture_ = architecture;
}

std::string DecoderModel::tensor_name(int layer, const std::string& suffix) const {
  return fmt::format("model.layers.{}.{}", layer, suffix);
}

void DecoderModel::load_common(const CommonOptions& options) {
  // Upper bounds reject absurd configs before anything is sized from them.
  hidden_size_ = static_cast<int>(config_.get_dim("hidden_size", 1, 1 << 16));
  num_layers_ = static_cast<int>(config_.get_dim("num_hidden_layers", 1, 1024));
  num_heads_ = static_cast<int>(config_.get_dim("num_attention_heads", 1, 4096));
  vocab_size_ = static_cast<int>(config_.get_dim("vocab_size", 1, 1 << 24));
  rms_eps_ = static_cast<float>(config_.get_float("rms_norm_eps", 1e-6));
  max_context_ = config_.get_dim("max_position_embeddings", 1, int64_t{1} << 24, 4096);
  if (options.grouped_query_attention) {
    num_kv_heads_ = static_cast<int>(config_.get_dim("num_key_value_heads", 1, 4096, num_heads_));
    if (num_heads_ % num_kv_heads_ != 0)
      config_.fail_field("num_key_value_heads",
                         fmt::format("{} does not divide num_attention_heads {}", num_kv_heads_, num_heads_));
    if (config_.has("head_dim")) {
      head_dim_ = static_cast<int>(config_.get_dim("head_dim", 1, 4096));
    } else {
      if (hidden_size_ % num_heads_ != 0)
        config_.fail_field("num_attention_heads",
                           fmt::format("{} does not divide hidden_size {}", num_heads_, hidden_size_));
      head_dim_ = hidden_size_ / num_heads_;
    }
    attention_scale_ = 1.0f / std::sqrt(static_cast<float>(head_dim_));
  }

  int rotary_dim = options.rotary_dim;
  if (rotary_dim == 0) {
    double partial = config_.get_float("partial_rotary_factor", 1.0);
    if (config_.has("rope_parameters") && config_.raw()["rope_parameters"].is_object()) {
      ConfigReader params(config_.raw()["rope_parameters"], config_.source() + " rope_parameters");
      partial = params.get_float("partial_rotary_factor", partial);
    }
    if (!(partial > 0 && partial <= 1)) config_.fail_field("partial_rotary_factor", "must be in (0, 1]");
    rotary_dim = static_cast<int>(head_dim_ * partial);  // int() as transformers
  }
  RopeConfig rope = read_rope_config(config_, rotary_dim, options.default_rope_theta);
  rope.interleaved = rope.interleaved || options.rope_interleaved;
  rope_.emplace(rope);

  embed_tokens_ = &weights_.get("model.embed_tokens.weight", {vocab_size_, hidden_size_});
  final_norm_ = to_float_vector(weights_.get("model.norm.weight", {hidden_size_}));
  const bool tied = config_.get_bool("tie_word_embeddings", false);
  lm_head_ = tied ? embed_tokens_ : &weights_.get("lm_head.weight", {vocab_size_, hidden_size_});

  input_norm_.resize(num_layers_);
  post_attention_norm_.resize(num_layers_);
  for (int i = 0; i < num_layers_; ++i) {
    input_norm_[i] = to_float_vector(weights_.get(tensor_name(i, "input_layernorm.weight"), {hidden_size_}));
    post_attention_norm_[i] =
        to_float_vector(weights_.get(tensor_name(i, "post_attention_layernorm.weight"), {hidden_size_}));
  }
}

std::vector<int> DecoderModel::layer_sliding_windows() const {
  return read_layer_sliding_windows(config_, num_layers_);
}

AttentionWeights DecoderModel::load_attention(int layer, bool qkv_bias, bool o_bias, bool qk_norm) const {
  AttentionWeights a;
  const int64_t q_width = int64_t{num_heads_} * head_dim_, kv_width = int64_t{num_kv_heads_} * head_dim_;
  a.q = &weights_.get(tensor_name(layer, "self_attn.q_proj.weight"), {q_width, hidden_size_});
  a.k = &weights_.get(tensor_name(layer, "self_attn.k_proj.weight"), {kv_width, hidden_size_});
  a.v = &weights_.get(tensor_name(layer, "self_attn.v_proj.weight"), {kv_width, hidden_size_});
  a.o = &weights_.get(tensor_name(layer, "self_attn.o_proj.weight"), {hidden_size_, q_width});
  if (qkv_bias) {
    a.q_bias = to_float_vector(weights_.get(tensor_name(layer, "self_attn.q_proj.bias"), {q_width}));
    a.k_bias = to_float_vector(weights_.get(tensor_name(layer, "self_attn.k_proj.bias"), {kv_width}));
    a.v_bias = to_float_vector(weights_.get(tensor_name(layer, "self_attn.v_proj.bias"), {kv_width}));
  }
  if (o_bias) a.o_bias = to_float_vector(weights_.get(tensor_name(layer, "self_attn.o_proj.bias"), {hidden_size_}));
  if (qk_norm) {
    a.q_norm = to_float_vector(weights_.get(tensor_name(layer, "self_attn.q_norm.weight"), {head_dim_}));
    a.k_norm = to_float_vector(weights_.get(tensor_name(layer, "self_attn.k_norm.weight"), {head_dim_}));
  }
  return a;
}

MlpWeights DecoderModel::load_mlp(const std::string& prefix, int64_t intermediate) const {
  MlpWeights m;
  m.gate = &weights_.get(prefix + ".gate_proj.weight", {intermediate, hidden_size_});
  m.up = &weights_.get(prefix + ".up_proj.weight", {intermediate, hidden_size_});
  m.down = &weights_.get(prefix + ".down_proj.weight", {hidden_size_, intermediate});
  return m;
}

void DecoderModel::run_mlp(const MlpWeights& mlp, const float* x, int64_t n, float* out) const {
  const int64_t intermediate = mlp.gate->shape[0];
  std::vector<float> gate(n * intermediate), up(n * intermediate);
  linear(*mlp.gate, nullptr, x, n, gate.data());
  linear(*mlp.up, nullptr, x, n, up.data());
  swiglu(gate.data(), up.data(), n * intermediate, gate.data());
  linear(*mlp.down, nullptr, gate.data(), n, out);
}

std::pair<int64_t, int64_t> DecoderModel::kv_widths(int) const {
  return {int64_t{num_kv_heads_} * head_dim_, int64_t{num_kv_heads_} * head_dim_};
}

KvCache DecoderModel::new_cache(int64_t max_positions) const {
  std::vector<std::pair<int64_t, int64_t>> widths;
  for (int i = 0; i < num_layers_; ++i) widths.push_back(kv_widths(i));
  return KvCache(widths, max_positions > 0 ? max_positions : max_context_);
}

void DecoderModel::attention(int layer, const float* x, int64_t n, int64_t start, KvLayer& kv, float* out) {
  const AttentionWeights& a = attention_[layer];
  const int64_t q_width = int64_t{num_heads_} * head_dim_, kv_width = int64_t{num_kv_heads_} * head_dim_;
  std::vector<float> q(n * q_width), k(n * kv_width), v(n * kv_width);
  linear(*a.q, a.q_bias.empty() ? nullptr : a.q_bias.data(), x, n, q.data());
  linear(*a.k, a.k_bias.empty() ? nullptr : a.k_bias.data(), x, n, k.data());
  linear(*a.v, a.v_bias.empty() ? nullptr : a.v_bias.data(), x, n, v.data());
  if (!a.q_norm.empty()) {
    rms_norm(q.data(), a.q_norm.data(), rms_eps_, n * num_heads_, head_dim_, q.data());
    rms_norm(k.data(), a.k_norm.data(), rms_eps_, n * num_kv_heads_, head_dim_, k.data());
  }
  for (int64_t t = 0; t < n; ++t) {
    for (int h = 0; h < num_heads_; ++h) rope_->apply(q.data() + (t * num_heads_ + h) * head_dim_, start + t);
    for (int h = 0; h < num_kv_heads_; ++h) rope_->apply(k.data() + (t * num_kv_heads_ + h) * head_dim_, start + t);
    std::copy_n(k.data() + t * kv_width, kv_width, kv.k_row(start + t));
    std::copy_n(v.data() + t * kv_width, kv_width, kv.v_row(start + t));
  }
  AttentionShape shape{num_heads_, num_kv_heads_, head_dim_, head_dim_, attention_scale_, a.sliding_window};
  std::vector<float> context(n * q_width);
  cached_attention(q.data(), n, start, kv, shape, a.sinks.empty() ? nullptr : a.sinks.data(), context.data());
  linear(*a.o, a.o_bias.empty() ? nullptr : a.o_bias.data(), context.data(), n, out);
}

void DecoderModel::set_feature_layers(std::vector<int> layers) {
  for (int layer : layers)
    if (layer < 0 || layer >= num_layers_) fail("feature layer {} is outside [0, {})", layer, num_layers_);
  feature_layers_ = std::move(layers);
}

std::vector<float> DecoderModel::forward(std::span<const int32_t> tokens, KvCache& cache, bool all_rows) {
  const int64_t n = static_cast<int64_t>(tokens.size()), start = cache.length(), d = hidden_size_;
  if (n == 0) fail("forward: no tokens");
  for (int32_t id : tokens)
    if (id < 0 || id >= vocab_size_) fail("token id {} is outside the vocabulary [0, {})", id, vocab_size_);
  cache.reserve_for(n);

  std::vector<float> x(n * d), normed(n * d), delta(n * d);
  const int64_t feature_width = static_cast<int64_t>(feature_layers_.size()) * d;
  features_.assign(n * feature_width, 0.0f);
  auto record_features = [&](int layer) {
    for (size_t f = 0; f < feature_layers_.size(); ++f) {
      if (feature_layers_[f] != layer) continue;
      std::vector<float> normed_rows;
      const float* rows = x.data();
      if (layer == num_layers_ - 1) {
        normed_rows.resize(n * d);
        rms_norm(x.data(), final_norm_.data(), rms_eps_, n, d, normed_rows.data());
        rows = normed_rows.data();
      }
      for (int64_t t = 0; t < n; ++t) std::copy_n(rows + t * d, d, features_.data() + t * feature_width + f * d);
    }
  };
  for (int64_t t = 0; t < n; ++t) embed_tokens_->row_to_float(tokens[t], x.data() + t * d);
  for (int layer = 0; layer < num_layers_; ++layer) {
    rms_norm(x.data(), input_norm_[layer].data(), rms_eps_, n, d, normed.data());
    attention(layer, normed.data(), n, start, cache.layer(layer), delta.data());
    for (int64_t i = 0; i < n * d; ++i) x[i] += delta[i];
    rms_norm(x.data(), post_attention_norm_[layer].data(), rms_eps_, n, d, normed.data());
    feed_forward(layer, normed.data(), n, delta.data());
    for (int64_t i = 0; i < n * d; ++i) x[i] += delta[i];
    if (!feature_layers_.empty()) record_features(layer);
  }
  cache.advance(n);

  const int64_t rows = all_rows ? n : 1;
  const float* first_row = x.data() + (n - rows) * d;
  rms_norm(first_row, final_norm_.data(), rms_eps_, rows, d, normed.data());
  std::vector<float> logits(rows * vocab_size_);
  linear(*lm_head_, nullptr, normed.data(), rows, logits.data());
  return logits;
}

}  // namespace tachyon
