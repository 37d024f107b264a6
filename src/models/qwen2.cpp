// Qwen2 / Qwen2.5: a Llama with biases on the q, k and v projections (none on o_proj).
#include "models/architectures.h"
#include "models/decoder.h"

namespace tachyon {

namespace {
class Qwen2Model : public DecoderModel {
 public:
  explicit Qwen2Model(const Checkpoint& checkpoint) : DecoderModel(checkpoint, "qwen2") {
    load_common();
    require_silu_mlp(config_);
    reject_sliding_window(config_);
    const int64_t intermediate = config_.get_dim("intermediate_size", 1, 1 << 20);
    for (int i = 0; i < num_layers_; ++i) {
      attention_.push_back(load_attention(i, /*qkv_bias=*/true, /*o_bias=*/false, /*qk_norm=*/false));
      mlp_.push_back(load_mlp(tensor_name(i, "mlp"), intermediate));
    }
  }

 protected:
  void feed_forward(int layer, const float* x, int64_t n, float* out) override { run_mlp(mlp_[layer], x, n, out); }

 private:
  std::vector<MlpWeights> mlp_;
};
}  // namespace

std::unique_ptr<Model> make_qwen2(const Checkpoint& checkpoint) { return std::make_unique<Qwen2Model>(checkpoint); }

}  // namespace tachyon
