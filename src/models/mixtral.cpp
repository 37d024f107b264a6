// Mixtral: Llama attention (no biases, optional sliding_window on every layer) with a sparse MoE
// feed-forward in every layer, named block_sparse_moe: gate routes each token to its
// num_experts_per_tok most probable experts (softmax over all experts, renormalized over the chosen),
// and expert e is a SwiGLU with w1 = gate, w3 = up, w2 = down.
#include "models/architectures.h"
#include "models/decoder.h"
#include "models/moe.h"

namespace tachyon {

namespace {
class MixtralModel : public DecoderModel {
 public:
  explicit MixtralModel(const Checkpoint& checkpoint) : DecoderModel(checkpoint, "mixtral") {
    load_common({.default_rope_theta = 1e6});  // transformers' MixtralConfig default
    require_silu_mlp(config_);
    num_experts_ = static_cast<int>(config_.get_dim("num_local_experts", 1, 1 << 16));
    top_k_ = static_cast<int>(config_.get_dim("num_experts_per_tok", 1, num_experts_));
    const int window = static_cast<int>(config_.get_dim("sliding_window", 1, 1 << 30, 0));
    const int64_t intermediate = config_.get_dim("intermediate_size", 1, 1 << 20);
    for (int i = 0; i < num_layers_; ++i) {
      attention_.push_back(load_attention(i, false, false, false));
      attention_.back().sliding_window = window;
      Layer layer;
      layer.router = &weights_.get(tensor_name(i, "block_sparse_moe.gate.weight"), {num_experts_, hidden_size_});
      const std::string experts = tensor_name(i, "block_sparse_moe.experts");
      layer.experts.gate = load_per_expert(weights_, experts, "w1.weight", num_experts_, intermediate, hidden_size_);
      layer.experts.up = load_per_expert(weights_, experts, "w3.weight", num_experts_, intermediate, hidden_size_);
      layer.experts.down = load_per_expert(weights_, experts, "w2.weight", num_experts_, hidden_size_, intermediate);
      layers_.push_back(std::move(layer));
    }
  }

 protected:
  void feed_forward(int index, const float* x, int64_t n, float* out) override {
    const Layer& layer = layers_[index];
    std::vector<float> logits(n * num_experts_);
    linear(*layer.router, nullptr, x, n, logits.data());
    const Routing routing = route_softmax_top_k(logits.data(), n, num_experts_, top_k_, /*renormalize=*/true);
    run_routed_experts(routing, x, n, hidden_size_, num_experts_,
                       [&](int e, const float* rows, int64_t m, float* y) { layer.experts.run(e, rows, m, y); }, out);
  }

 private:
  struct Layer {
    const TensorView* router = nullptr;
    SwigluExperts experts;
  };
  std::vector<Layer> layers_;
  int num_experts_ = 0, top_k_ = 0;
};
}  // namespace

std::unique_ptr<Model> make_mixtral(const Checkpoint& checkpoint) { return std::make_unique<MixtralModel>(checkpoint); }

}  // namespace tachyon
