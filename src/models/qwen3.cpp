// Qwen3 (dense): a Llama with a per-head RMSNorm on queries and keys before RoPE (q_norm, k_norm)
// and optional attention biases.
#include "models/architectures.h"
#include "models/decoder.h"

namespace tachyon {

namespace {
class Qwen3Model : public DecoderModel {
 public:
  explicit Qwen3Model(const Checkpoint& checkpoint) : DecoderModel(checkpoint, "qwen3") {
    load_common();
    require_silu_mlp(config_);
    reject_sliding_window(config_);
    const bool bias = config_.get_bool("attention_bias", false);
    const int64_t intermediate = config_.get_dim("intermediate_size", 1, 1 << 20);
    for (int i = 0; i < num_layers_; ++i) {
      attention_.push_back(load_attention(i, bias, bias, /*qk_norm=*/true));
      mlp_.push_back(load_mlp(tensor_name(i, "mlp"), intermediate));
    }
  }

 protected:
  void feed_forward(int layer, const float* x, int64_t n, float* out) override { run_mlp(mlp_[layer], x, n, out); }

 private:
  std::vector<MlpWeights> mlp_;
};
}  // namespace

std::unique_ptr<Model> make_qwen3(const Checkpoint& checkpoint) { return std::make_unique<Qwen3Model>(checkpoint); }

}  // namespace tachyon
