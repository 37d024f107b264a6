// Qwen3-MoE: Qwen3 attention (per-head q/k RMSNorm) with sparse MoE feed-forward layers. A layer is
// dense (mlp.{gate,up,down}_proj of intermediate_size) when listed in mlp_only_layers or when
// (layer + 1) is not a multiple of decoder_sparse_step; otherwise mlp.gate routes each token to its
// num_experts_per_tok most probable experts (softmax over all, renormalized when norm_topk_prob).
#include "core/error.h"
#include "models/architectures.h"
#include "models/decoder.h"
#include "models/moe.h"

namespace tachyon {

namespace {
class Qwen3MoeModel : public DecoderModel {
 public:
  explicit Qwen3MoeModel(const Checkpoint& checkpoint) : DecoderModel(checkpoint, "qwen3_moe") {
    load_common();
    require_silu_mlp(config_);
    reject_sliding_window(config_);
    const bool bias = config_.get_bool("attention_bias", false);
    // Hugging Face checkpoints say num_experts; transformers 5 saves num_local_experts.
    const char* experts_field = config_.has("num_experts") ? "num_experts" : "num_local_experts";
    num_experts_ = static_cast<int>(config_.get_dim(experts_field, 0, 1 << 16));
    top_k_ = static_cast<int>(config_.get_dim("num_experts_per_tok", 1, std::max(num_experts_, 1), 1));
    normalize_ = config_.get_bool("norm_topk_prob", false);
    const int64_t sparse_step = config_.get_dim("decoder_sparse_step", 1, 1 << 16, 1);
    std::vector<bool> dense(num_layers_, false);
    if (config_.has("mlp_only_layers")) {
      const auto& list = config_.raw()["mlp_only_layers"];
      if (!list.is_array()) config_.fail_field("mlp_only_layers", "expected a list of layer indices");
      for (const auto& index : list) {
        if (!index.is_number_integer() || index.get<int64_t>() < 0 || index.get<int64_t>() >= num_layers_)
          config_.fail_field("mlp_only_layers", "entry " + index.dump() + " is not a layer index");
        dense[index.get<int64_t>()] = true;
      }
    }

    const int64_t moe_intermediate = num_experts_ > 0 ? config_.get_dim("moe_intermediate_size", 1, 1 << 20) : 0;
    layers_.resize(num_layers_);
    for (int i = 0; i < num_layers_; ++i) {
      attention_.push_back(load_attention(i, bias, bias, /*qk_norm=*/true));
      Layer& layer = layers_[i];
      layer.sparse = !dense[i] && num_experts_ > 0 && (i + 1) % sparse_step == 0;
      if (!layer.sparse) {
        layer.mlp = load_mlp(tensor_name(i, "mlp"), config_.get_dim("intermediate_size", 1, 1 << 20));
        continue;
      }
      layer.router = &weights_.get(tensor_name(i, "mlp.gate.weight"), {num_experts_, hidden_size_});
      const std::string experts = tensor_name(i, "mlp.experts");
      layer.experts.gate = load_per_expert(weights_, experts, "gate_proj.weight", num_experts_, moe_intermediate, hidden_size_);
      layer.experts.up = load_per_expert(weights_, experts, "up_proj.weight", num_experts_, moe_intermediate, hidden_size_);
      layer.experts.down = load_per_expert(weights_, experts, "down_proj.weight", num_experts_, hidden_size_, moe_intermediate);
    }
  }

 protected:
  void feed_forward(int index, const float* x, int64_t n, float* out) override {
    const Layer& layer = layers_[index];
    if (!layer.sparse) return run_mlp(layer.mlp, x, n, out);
    std::vector<float> logits(n * num_experts_);
    linear(*layer.router, nullptr, x, n, logits.data());
    const Routing routing = route_softmax_top_k(logits.data(), n, num_experts_, top_k_, normalize_);
    run_routed_experts(routing, x, n, hidden_size_, num_experts_,
                       [&](int e, const float* rows, int64_t m, float* y) { layer.experts.run(e, rows, m, y); }, out);
  }

 private:
  struct Layer {
    bool sparse = false;
    MlpWeights mlp;  // dense layers
    const TensorView* router = nullptr;
    SwigluExperts experts;
  };
  std::vector<Layer> layers_;
  int num_experts_ = 0, top_k_ = 0;
  bool normalize_ = false;
};
}  // namespace

std::unique_ptr<Model> make_qwen3_moe(const Checkpoint& checkpoint) { return std::make_unique<Qwen3MoeModel>(checkpoint); }

}  // namespace tachyon
