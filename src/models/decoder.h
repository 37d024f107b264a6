// The decoder-only transformer that every supported architecture is a variation of:
//   x = embed(tokens); for each layer: x += attention(norm(x)); x += feed_forward(norm(x));
//   logits = lm_head(norm(x)).
// Architecture files (llama.cpp, qwen3_moe.cpp, ...) derive from DecoderModel, load their weights
// and override feed_forward() (and attention() where it differs, e.g. MLA). No batching or
// scheduling logic lives here.
#pragma once
#include <optional>

#include "models/config.h"
#include "models/model.h"
#include "models/rope.h"

namespace tachyon {

// Standard multi-head / grouped-query attention weights of one layer (HF naming self_attn.*).
struct AttentionWeights {
  const TensorView* q = nullptr;
  const TensorView* k = nullptr;
  const TensorView* v = nullptr;
  const TensorView* o = nullptr;
  std::vector<float> q_bias, k_bias, v_bias, o_bias;  // empty = none
  std::vector<float> q_norm, k_norm;                  // per-head RMSNorm weights (Qwen3), empty = none
  std::vector<float> sinks;                           // per-head sink logits (gpt-oss), empty = none
  int sliding_window = 0;
};

// A SwiGLU MLP (gate/up/down) with optional biases.
struct MlpWeights {
  const TensorView* gate = nullptr;
  const TensorView* up = nullptr;
  const TensorView* down = nullptr;
};

// What load_common() needs to know about an architecture beyond config.json.
struct CommonOptions {
  // Rotated dimensions per head; 0 = head_dim * partial_rotary_factor.
  int rotary_dim = 0;
  // Rotate adjacent pairs (DeepSeek rope_interleave) instead of the two halves of the head.
  bool rope_interleaved = false;
  double default_rope_theta = 10000.0;
  // false for attention that does not use num_key_value_heads / head_dim (MLA).
  bool grouped_query_attention = true;
};

class DecoderModel : public Model {
 public:
  KvCache new_cache(int64_t max_positions = 0) const override;
  std::vector<float> forward(std::span<const int32_t> tokens, KvCache& cache, bool all_rows = false) override;

  // Speculative decoding (src/spec) hooks. From now on every forward() records, for each row, the target
  // features of `layers` (0-based): HF hidden_states[l + 1], i.e. the residual stream after layer l, except
  // that for the last layer HF reports it after the final norm (so it is recorded normed too). Empty = off.
  void set_feature_layers(std::vector<int> layers);
  // [n, layers.size() * hidden] of the last forward(), layer blocks side by side in the order given.
  const std::vector<float>& features() const { return features_; }
  const TensorView& embedding_weights() const { return *embed_tokens_; }
  const TensorView& lm_head_weights() const { return *lm_head_; }

 protected:
  DecoderModel(const Checkpoint& checkpoint, const std::string& architecture);

  // Reads the fields every architecture has (sizes, eps, RoPE) and the embedding / final norm /
  // lm_head. head_dim defaults to hidden / heads.
  void load_common(const CommonOptions& options = {});
  // Sliding window of each layer from config.json layer_types ("sliding_attention" layers get
  // sliding_window, "full_attention" ones 0); all 0 when there is no layer_types.
  std::vector<int> layer_sliding_windows() const;
  // Loads self_attn.{q,k,v,o}_proj of layer i (with biases and q/k norms when present).
  AttentionWeights load_attention(int layer, bool qkv_bias, bool o_bias, bool qk_norm) const;
  MlpWeights load_mlp(const std::string& prefix, int64_t intermediate) const;
  // out = down(silu(gate x) * up x)
  void run_mlp(const MlpWeights& mlp, const float* x, int64_t n, float* out) const;

  // Attention of layer `layer` for n rows at positions [start, start + n); writes [n, hidden].
  virtual void attention(int layer, const float* x, int64_t n, int64_t start, KvLayer& kv, float* out);
  virtual void feed_forward(int layer, const float* x, int64_t n, float* out) = 0;
  // Key and value widths per position of a layer's cache (defaults: kv_heads * head_dim).
  virtual std::pair<int64_t, int64_t> kv_widths(int layer) const;

  std::string tensor_name(int layer, const std::string& suffix) const;  // model.layers.{i}.{suffix}

  const Checkpoint& checkpoint_;
  ConfigReader config_;
  const WeightStore& weights_;
  int num_heads_ = 0, num_kv_heads_ = 0, head_dim_ = 0;
  float rms_eps_ = 1e-6f;
  float attention_scale_ = 0;
  std::optional<Rope> rope_;
  const TensorView* embed_tokens_ = nullptr;
  const TensorView* lm_head_ = nullptr;
  std::vector<float> final_norm_;
  std::vector<AttentionWeights> attention_;
  std::vector<std::vector<float>> input_norm_, post_attention_norm_;
  std::vector<int> feature_layers_;
  std::vector<float> features_;
};

}  // namespace tachyon
