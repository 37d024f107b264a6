// Llama (and SmolLM2, which is a Llama): RMSNorm, GQA attention with RoPE (default, linear or
// llama3 scaling), SwiGLU MLP. Optional attention biases (attention_bias).
#include "models/architectures.h"
#include "models/decoder.h"

namespace tachyon {

namespace {
class LlamaModel : public DecoderModel {
 public:
  explicit LlamaModel(const Checkpoint& checkpoint) : DecoderModel(checkpoint, "llama") {
    load_common();
    require_silu_mlp(config_);
    if (config_.get_bool("mlp_bias", false)) config_.fail_field("mlp_bias", "MLP biases are not supported for llama");
    const bool bias = config_.get_bool("attention_bias", false);
    const int64_t intermediate = config_.get_dim("intermediate_size", 1, 1 << 20);
    for (int i = 0; i < num_layers_; ++i) {
      attention_.push_back(load_attention(i, bias, bias, false));
      mlp_.push_back(load_mlp(tensor_name(i, "mlp"), intermediate));
    }
  }

 protected:
  void feed_forward(int layer, const float* x, int64_t n, float* out) override { run_mlp(mlp_[layer], x, n, out); }

 private:
  std::vector<MlpWeights> mlp_;
};
}  // namespace

std::unique_ptr<Model> make_llama(const Checkpoint& checkpoint) { return std::make_unique<LlamaModel>(checkpoint); }

}  // namespace tachyon
