// DeepSeek-V3 and DeepSeek-V2: Multi-head Latent Attention (MLA) and DeepSeekMoE. The two differ
// only in routing (and defaults), so both are this one class.
//
// MLA compresses what a token contributes to attention into a small latent:
//   q      = q_b(RMSNorm(q_a(x)))                (or q_proj(x) without q_lora_rank), per head
//            [q_nope (qk_nope_head_dim), q_rot (qk_rope_head_dim)]
//   c, kr  = kv_a_proj_with_mqa(x) = [latent (kv_lora_rank), k_rot (qk_rope_head_dim, one for all heads)]
//   k_nope, v = kv_b(RMSNorm(latent)), per head [k_nope (qk_nope_head_dim), v (v_head_dim)]
//   key = [k_nope, rope(k_rot)], query = [q_nope, rope(q_rot)], softmax scale qk_head_dim^-0.5
//   (times mscale(factor, mscale_all_dim)^2 under YaRN).
// This reference caches the decompressed per-head keys and values (the "naive" form); the
// absorbed form that caches only the latent is left to the GPU backend.
//
// DeepSeekMoE (layers >= first_k_dense_replace): routed SwiGLU experts plus always-on shared experts
// (one SwiGLU of n_shared_experts * moe_intermediate_size). The router of V3 is a sigmoid with a
// score-correction bias and group-limited top-k (route_sigmoid_group_limited); that of V2 a softmax
// with plain ("greedy") or group-limited top-k (route_softmax_group_limited).
#include <algorithm>
#include <cmath>

#include <fmt/ranges.h>

#include "core/error.h"
#include "models/architectures.h"
#include "models/decoder.h"
#include "models/moe.h"

namespace tachyon {

namespace {

// transformers builds q_a_layernorm and kv_a_layernorm without passing rms_norm_eps, so they keep
// the RMSNorm default (as DeepSeek's own code does).
constexpr float kLatentNormEps = 1e-6f;

struct MlaWeights {
  const TensorView* q = nullptr;    // without q_lora_rank
  const TensorView* q_a = nullptr;  // with q_lora_rank
  const TensorView* q_b = nullptr;
  std::vector<float> q_a_bias, q_a_norm;
  const TensorView* kv_a = nullptr;
  std::vector<float> kv_a_bias, kv_a_norm;
  const TensorView* kv_b = nullptr;
  const TensorView* o = nullptr;
  std::vector<float> o_bias;
};

enum class DeepseekVersion { V2, V3 };

class DeepseekModel : public DecoderModel {
 public:
  DeepseekModel(const Checkpoint& checkpoint, DeepseekVersion version)
      : DecoderModel(checkpoint, version == DeepseekVersion::V3 ? "deepseek_v3" : "deepseek_v2"), version_(version) {
    qk_rope_dim_ = static_cast<int>(config_.get_dim("qk_rope_head_dim", 2, 4096));
    // V2 always rotates adjacent pairs (complex multiplication); V3 unless rope_interleave is false.
    const bool interleaved = version == DeepseekVersion::V2 || config_.get_bool("rope_interleave", true);
    load_common({.rotary_dim = qk_rope_dim_, .rope_interleaved = interleaved, .grouped_query_attention = false});
    require_silu_mlp(config_);
    read_attention_config();
    read_moe_config();
    for (int i = 0; i < num_layers_; ++i) {
      mla_.push_back(load_mla(i));
      layers_.push_back(load_feed_forward(i));
    }
  }

 protected:
  std::pair<int64_t, int64_t> kv_widths(int) const override {
    return {int64_t{num_heads_} * (qk_nope_dim_ + qk_rope_dim_), int64_t{num_heads_} * v_dim_};
  }

  void attention(int layer, const float* x, int64_t n, int64_t start, KvLayer& kv, float* out) override {
    const MlaWeights& w = mla_[layer];
    const int heads = num_heads_, qk_dim = qk_nope_dim_ + qk_rope_dim_, kv_b_dim = qk_nope_dim_ + v_dim_;
    const int64_t compressed_dim = kv_lora_rank_ + qk_rope_dim_;

    std::vector<float> q(n * heads * qk_dim);
    if (w.q_a != nullptr) {
      std::vector<float> q_latent(n * q_lora_rank_);
      linear(*w.q_a, w.q_a_bias.empty() ? nullptr : w.q_a_bias.data(), x, n, q_latent.data());
      rms_norm(q_latent.data(), w.q_a_norm.data(), kLatentNormEps, n, q_lora_rank_, q_latent.data());
      linear(*w.q_b, nullptr, q_latent.data(), n, q.data());
    } else {
      linear(*w.q, nullptr, x, n, q.data());
    }

    std::vector<float> compressed(n * compressed_dim), latent(n * kv_lora_rank_), expanded(n * heads * kv_b_dim);
    linear(*w.kv_a, w.kv_a_bias.empty() ? nullptr : w.kv_a_bias.data(), x, n, compressed.data());
    for (int64_t t = 0; t < n; ++t)
      rms_norm(compressed.data() + t * compressed_dim, w.kv_a_norm.data(), kLatentNormEps, 1, kv_lora_rank_,
               latent.data() + t * kv_lora_rank_);
    linear(*w.kv_b, nullptr, latent.data(), n, expanded.data());

    for (int64_t t = 0; t < n; ++t) {
      const int64_t position = start + t;
      float* k_rot = compressed.data() + t * compressed_dim + kv_lora_rank_;
      rope_->apply(k_rot, position);
      float* key_row = kv.k_row(position);
      float* value_row = kv.v_row(position);
      for (int h = 0; h < heads; ++h) {
        rope_->apply(q.data() + (t * heads + h) * qk_dim + qk_nope_dim_, position);
        const float* k_nope_and_v = expanded.data() + (t * heads + h) * kv_b_dim;
        std::copy_n(k_nope_and_v, qk_nope_dim_, key_row + h * qk_dim);
        std::copy_n(k_rot, qk_rope_dim_, key_row + h * qk_dim + qk_nope_dim_);
        std::copy_n(k_nope_and_v + qk_nope_dim_, v_dim_, value_row + h * v_dim_);
      }
    }
    const AttentionShape shape{heads, heads, qk_dim, v_dim_, softmax_scale_, 0};
    std::vector<float> context(n * heads * v_dim_);
    cached_attention(q.data(), n, start, kv, shape, nullptr, context.data());
    linear(*w.o, w.o_bias.empty() ? nullptr : w.o_bias.data(), context.data(), n, out);
  }

  void feed_forward(int index, const float* x, int64_t n, float* out) override {
    const Layer& layer = layers_[index];
    if (!layer.sparse) return run_mlp(layer.dense, x, n, out);
    std::vector<float> logits(n * num_experts_);
    linear(*layer.router, nullptr, x, n, logits.data());
    Routing routing;
    if (version_ == DeepseekVersion::V3) {
      GroupLimitedRouting config = routing_;
      config.correction_bias = layer.correction_bias;
      routing = route_sigmoid_group_limited(logits.data(), n, num_experts_, config);
    } else {
      routing = route_softmax_group_limited(logits.data(), n, num_experts_, routing_.k, routing_.num_groups,
                                            routing_.top_groups, routing_.scaling);
    }
    run_routed_experts(routing, x, n, hidden_size_, num_experts_,
                       [&](int e, const float* rows, int64_t m, float* y) { layer.experts.run(e, rows, m, y); }, out);
    if (layer.shared.gate != nullptr) {
      std::vector<float> shared(n * hidden_size_);
      run_mlp(layer.shared, x, n, shared.data());
      for (int64_t i = 0; i < n * hidden_size_; ++i) out[i] += shared[i];
    }
  }

 private:
  struct Layer {
    bool sparse = false;
    MlpWeights dense;
    const TensorView* router = nullptr;
    std::vector<float> correction_bias;
    SwigluExperts experts;
    MlpWeights shared;  // gate == nullptr when n_shared_experts is 0
  };

  void read_attention_config() {
    q_lora_rank_ = static_cast<int>(config_.get_dim("q_lora_rank", 1, 1 << 16, 0));  // null/absent = no q compression
    kv_lora_rank_ = static_cast<int>(config_.get_dim("kv_lora_rank", 1, 1 << 16));
    qk_nope_dim_ = static_cast<int>(config_.get_dim("qk_nope_head_dim", 0, 4096));
    v_dim_ = static_cast<int>(config_.get_dim("v_head_dim", 1, 4096));
    attention_bias_ = config_.get_bool("attention_bias", false);
    // As transformers' yarn_apply_mscale: any scaled RoPE with mscale_all_dim sharpens the softmax.
    softmax_scale_ = 1.0f / std::sqrt(static_cast<float>(qk_nope_dim_ + qk_rope_dim_));
    const RopeConfig& rope = rope_->config();
    if (rope.type != RopeType::Default && rope.mscale_all_dim != 0 && rope.factor > 1) {
      const double mscale = 0.1 * rope.mscale_all_dim * std::log(rope.factor) + 1.0;
      softmax_scale_ = static_cast<float>(softmax_scale_ * mscale * mscale);
    }
  }

  // DeepSeek's own config fields that transformers ignores (scoring_func, moe_layer_freq) are
  // accepted only with the values transformers implicitly assumes.
  void require_string(const std::string& field, const std::string& fallback, const std::vector<std::string>& supported) const {
    const std::string value = config_.get_string(field, fallback);
    if (std::find(supported.begin(), supported.end(), value) == supported.end())
      config_.fail_field(field, fmt::format("'{}' is not supported ({} is)", value, fmt::join(supported, " or ")));
  }

  void read_moe_config() {
    const bool v3 = version_ == DeepseekVersion::V3;
    require_string("scoring_func", v3 ? "sigmoid" : "softmax", {v3 ? "sigmoid" : "softmax"});
    const std::string topk_method = v3 ? "noaux_tc" : config_.get_string("topk_method", "greedy");
    if (v3) require_string("topk_method", "noaux_tc", {"noaux_tc"});
    else require_string("topk_method", "greedy", {"greedy", "group_limited_greedy"});
    if (config_.get_int("moe_layer_freq", 1) != 1)
      config_.fail_field("moe_layer_freq", "only 1 (every layer after first_k_dense_replace) is supported");
    if (config_.get_bool("mlp_bias", false)) config_.fail_field("mlp_bias", "MLP biases are not supported");
    // transformers' DeepSeek-V2 router never renormalizes, whatever norm_topk_prob says.
    if (!v3 && config_.get_bool("norm_topk_prob", false))
      config_.fail_field("norm_topk_prob", "true is not supported for DeepSeek-V2 (transformers ignores it)");
    num_experts_ = static_cast<int>(config_.get_dim("n_routed_experts", 1, 1 << 16));
    first_dense_ = static_cast<int>(config_.get_dim("first_k_dense_replace", 0, 1 << 16, v3 ? 3 : 0));
    n_shared_ = static_cast<int>(config_.get_dim("n_shared_experts", 0, 1 << 10, v3 ? 1 : 2));
    moe_intermediate_ = config_.get_dim("moe_intermediate_size", 1, 1 << 20);
    routing_.k = static_cast<int>(v3 ? config_.get_dim("num_experts_per_tok", 1, num_experts_, 8)
                                     : config_.get_dim("num_experts_per_tok", 1, num_experts_));
    if (topk_method == "greedy") {
      routing_.num_groups = routing_.top_groups = 1;
    } else {
      routing_.num_groups = static_cast<int>(v3 ? config_.get_dim("n_group", 1, num_experts_, 8)
                                                : config_.get_dim("n_group", 1, num_experts_));
      routing_.top_groups = static_cast<int>(v3 ? config_.get_dim("topk_group", 1, routing_.num_groups, 4)
                                                : config_.get_dim("topk_group", 1, routing_.num_groups));
    }
    routing_.renormalize = v3 && config_.get_bool("norm_topk_prob", true);
    routing_.scaling = static_cast<float>(config_.get_float("routed_scaling_factor", v3 ? 2.5 : 1.0));
    // V3 sums each group's two best scores, so its groups need two experts.
    const int min_per_group = v3 ? 2 : 1;
    if (num_experts_ % routing_.num_groups != 0 || num_experts_ / routing_.num_groups < min_per_group)
      config_.fail_field("n_group", fmt::format("{} groups do not split n_routed_experts {} evenly into groups of {} or more",
                                                routing_.num_groups, num_experts_, min_per_group));
    if (routing_.k > routing_.top_groups * (num_experts_ / routing_.num_groups))
      config_.fail_field("num_experts_per_tok", fmt::format("{} is more than the experts of topk_group {} groups",
                                                            routing_.k, routing_.top_groups));
  }

  MlaWeights load_mla(int i) const {
    MlaWeights w;
    const int64_t heads = num_heads_, qk_dim = qk_nope_dim_ + qk_rope_dim_;
    auto vector = [&](const std::string& suffix, int64_t size) {
      return to_float_vector(weights_.get(tensor_name(i, "self_attn." + suffix), {size}));
    };
    if (q_lora_rank_ > 0) {
      w.q_a = &weights_.get(tensor_name(i, "self_attn.q_a_proj.weight"), {q_lora_rank_, hidden_size_});
      if (attention_bias_) w.q_a_bias = vector("q_a_proj.bias", q_lora_rank_);
      w.q_a_norm = vector("q_a_layernorm.weight", q_lora_rank_);
      w.q_b = &weights_.get(tensor_name(i, "self_attn.q_b_proj.weight"), {heads * qk_dim, q_lora_rank_});
    } else {
      w.q = &weights_.get(tensor_name(i, "self_attn.q_proj.weight"), {heads * qk_dim, hidden_size_});
    }
    const int64_t compressed_dim = kv_lora_rank_ + qk_rope_dim_;
    w.kv_a = &weights_.get(tensor_name(i, "self_attn.kv_a_proj_with_mqa.weight"), {compressed_dim, hidden_size_});
    if (attention_bias_) w.kv_a_bias = vector("kv_a_proj_with_mqa.bias", compressed_dim);
    w.kv_a_norm = vector("kv_a_layernorm.weight", kv_lora_rank_);
    w.kv_b = &weights_.get(tensor_name(i, "self_attn.kv_b_proj.weight"), {heads * (qk_nope_dim_ + v_dim_), kv_lora_rank_});
    w.o = &weights_.get(tensor_name(i, "self_attn.o_proj.weight"), {hidden_size_, heads * v_dim_});
    if (attention_bias_) w.o_bias = vector("o_proj.bias", hidden_size_);
    return w;
  }

  Layer load_feed_forward(int i) const {
    Layer layer;
    layer.sparse = i >= first_dense_;
    if (!layer.sparse) {
      layer.dense = load_mlp(tensor_name(i, "mlp"), config_.get_dim("intermediate_size", 1, 1 << 20));
      return layer;
    }
    layer.router = &weights_.get(tensor_name(i, "mlp.gate.weight"), {num_experts_, hidden_size_});
    if (version_ == DeepseekVersion::V3)
      layer.correction_bias = to_float_vector(weights_.get(tensor_name(i, "mlp.gate.e_score_correction_bias"), {num_experts_}));
    const std::string experts = tensor_name(i, "mlp.experts");
    layer.experts.gate = load_per_expert(weights_, experts, "gate_proj.weight", num_experts_, moe_intermediate_, hidden_size_);
    layer.experts.up = load_per_expert(weights_, experts, "up_proj.weight", num_experts_, moe_intermediate_, hidden_size_);
    layer.experts.down = load_per_expert(weights_, experts, "down_proj.weight", num_experts_, hidden_size_, moe_intermediate_);
    if (n_shared_ > 0) layer.shared = load_mlp(tensor_name(i, "mlp.shared_experts"), moe_intermediate_ * n_shared_);
    return layer;
  }

  DeepseekVersion version_;
  int q_lora_rank_ = 0, kv_lora_rank_ = 0, qk_nope_dim_ = 0, qk_rope_dim_ = 0, v_dim_ = 0;
  bool attention_bias_ = false;
  float softmax_scale_ = 0;
  int num_experts_ = 0, first_dense_ = 0, n_shared_ = 0;
  int64_t moe_intermediate_ = 0;
  GroupLimitedRouting routing_;
  std::vector<MlaWeights> mla_;
  std::vector<Layer> layers_;
};
}  // namespace

std::unique_ptr<Model> make_deepseek_v2(const Checkpoint& checkpoint) {
  return std::make_unique<DeepseekModel>(checkpoint, DeepseekVersion::V2);
}

std::unique_ptr<Model> make_deepseek_v3(const Checkpoint& checkpoint) {
  return std::make_unique<DeepseekModel>(checkpoint, DeepseekVersion::V3);
}

}  // namespace tachyon
