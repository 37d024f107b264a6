// gpt-oss: GQA attention with biases, a learned per-head sink logit in every softmax, and layers
// alternating between a sliding window and full attention (layer_types); YaRN RoPE on the two
// halves of each head. The feed-forward of every layer is an MoE:
//   router:  logits = x R^T + b; the num_experts_per_tok largest, softmax over those only;
//   expert:  [g, u] = x W_gu + b_gu with gate/up interleaved (even = gate, odd = up),
//            g = min(g, limit), u = clamp(u, -limit, limit), h = (u + 1) * g * sigmoid(1.702 g),
//            y = h W_down + b_down.
// Expert matrices come either as transformers saves them ([E, H, 2I] and [E, I, H], used as x @ W)
// or MXFP4 as gpt-oss ships them (*_blocks / *_scales, one output feature per row).
#include <algorithm>

#include "core/error.h"
#include "models/architectures.h"
#include "models/decoder.h"
#include "models/moe.h"

namespace tachyon {

namespace {

constexpr float kSwigluAlpha = 1.702f;  // fixed in gpt-oss (not a config field)

class GptOssModel : public DecoderModel {
 public:
  explicit GptOssModel(const Checkpoint& checkpoint) : DecoderModel(checkpoint, "gpt_oss") {
    // transformers substitutes its own YaRN defaults when a config has no RoPE parameters; real
    // configs always carry them, so their absence is treated as an error rather than guessed.
    if (!config_.has("rope_parameters") && !config_.has("rope_scaling"))
      config_.fail_field("rope_parameters", "missing (gpt-oss needs its YaRN parameters)");
    load_common({.default_rope_theta = 150000.0});  // transformers' GptOssConfig default
    require_silu_mlp(config_);
    num_experts_ = static_cast<int>(config_.get_dim("num_local_experts", 1, 1 << 16));
    top_k_ = static_cast<int>(config_.get_dim("num_experts_per_tok", 1, num_experts_));
    intermediate_ = config_.get_dim("intermediate_size", 1, 1 << 20);
    swiglu_limit_ = static_cast<float>(config_.get_float("swiglu_limit", 7.0));
    mxfp4_ = uses_mxfp4();
    const bool bias = config_.get_bool("attention_bias", true);
    const std::vector<int> windows = layer_sliding_windows();
    for (int i = 0; i < num_layers_; ++i) {
      AttentionWeights attention = load_attention(i, bias, bias, false);
      attention.sliding_window = windows[i];
      attention.sinks = to_float_vector(weights_.get(tensor_name(i, "self_attn.sinks"), {num_heads_}));
      attention_.push_back(std::move(attention));
      layers_.push_back(load_moe(i));
    }
  }

 protected:
  void feed_forward(int index, const float* x, int64_t n, float* out) override {
    const Layer& layer = layers_[index];
    std::vector<float> logits(n * num_experts_);
    linear(*layer.router, layer.router_bias.data(), x, n, logits.data());
    const Routing routing = route_top_k_softmax(logits.data(), n, num_experts_, top_k_);
    run_routed_experts(routing, x, n, hidden_size_, num_experts_,
                       [&](int e, const float* rows, int64_t m, float* y) { run_expert(layer, e, rows, m, y); }, out);
  }

 private:
  struct Layer {
    const TensorView* router = nullptr;
    std::vector<float> router_bias;
    ExpertMatrices gate_up, down;
    std::vector<float> gate_up_bias, down_bias;  // [E, 2I], [E, H]
  };

  bool uses_mxfp4() const {
    if (config_.has("quantization_config")) {
      const auto& quantization = config_.raw()["quantization_config"];
      const std::string method = quantization.is_object() && quantization.contains("quant_method") &&
                                         quantization["quant_method"].is_string()
                                     ? quantization["quant_method"].get<std::string>()
                                     : quantization.dump();
      if (method != "mxfp4")
        config_.fail_field("quantization_config.quant_method", "'" + method + "' is not supported (mxfp4 is)");
      return true;
    }
    return weights_.has(tensor_name(0, "mlp.experts.gate_up_proj_blocks"));
  }

  Layer load_moe(int i) const {
    Layer layer;
    const int64_t experts = num_experts_, hidden = hidden_size_, gate_up_width = 2 * intermediate_;
    layer.router = &weights_.get(tensor_name(i, "mlp.router.weight"), {experts, hidden});
    layer.router_bias = to_float_vector(weights_.get(tensor_name(i, "mlp.router.bias"), {experts}));
    const std::string prefix = tensor_name(i, "mlp.experts.");
    if (mxfp4_) {
      layer.gate_up = ExpertMatrices::mxfp4(weights_.get(prefix + "gate_up_proj_blocks"),
                                            weights_.get(prefix + "gate_up_proj_scales"), experts, gate_up_width, hidden);
      layer.down = ExpertMatrices::mxfp4(weights_.get(prefix + "down_proj_blocks"), weights_.get(prefix + "down_proj_scales"),
                                         experts, hidden, intermediate_);
    } else {
      layer.gate_up = ExpertMatrices::stacked_input_major(weights_.get(prefix + "gate_up_proj", {experts, hidden, gate_up_width}));
      layer.down = ExpertMatrices::stacked_input_major(weights_.get(prefix + "down_proj", {experts, intermediate_, hidden}));
    }
    layer.gate_up_bias = to_float_vector(weights_.get(prefix + "gate_up_proj_bias", {experts, gate_up_width}));
    layer.down_bias = to_float_vector(weights_.get(prefix + "down_proj_bias", {experts, hidden}));
    return layer;
  }

  void run_expert(const Layer& layer, int expert, const float* x, int64_t n, float* y) const {
    const int64_t width = 2 * intermediate_;
    std::vector<float> gate_up(n * width), hidden(n * intermediate_);
    layer.gate_up.multiply(expert, x, n, layer.gate_up_bias.data() + expert * width, gate_up.data());
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < intermediate_; ++i) {
        const float gate = std::min(gate_up[t * width + 2 * i], swiglu_limit_);
        const float up = std::clamp(gate_up[t * width + 2 * i + 1], -swiglu_limit_, swiglu_limit_);
        hidden[t * intermediate_ + i] = (up + 1.0f) * gate * sigmoid(kSwigluAlpha * gate);
      }
    }
    layer.down.multiply(expert, hidden.data(), n, layer.down_bias.data() + int64_t{expert} * hidden_size_, y);
  }

  int num_experts_ = 0, top_k_ = 0;
  int64_t intermediate_ = 0;
  float swiglu_limit_ = 7.0f;
  bool mxfp4_ = false;
  std::vector<Layer> layers_;
};
}  // namespace

std::unique_ptr<Model> make_gpt_oss(const Checkpoint& checkpoint) { return std::make_unique<GptOssModel>(checkpoint); }

}  // namespace tachyon
