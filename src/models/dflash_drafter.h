// The DFlash block-diffusion drafter (z-lab layout, architectures ["DFlashDraftModel"]): a small Qwen3-style
// stack that fills a whole block [bonus, MASK, ..., MASK] in ONE forward pass, conditioned on the target's
// own hidden states. Algorithm: shared/docs/dflash.md; independent PyTorch version: tools/dflash_reference.py.
//
//   ctx = hidden_norm(fc([f_l0 | f_l1 | ... | f_lK-1]))      f_l = target feature of layer l, ctx: [c, D]
//   x   = embed_target(block) * input_embedding_scale        block rows only: [b, D]
//   per layer i:  h = input_layernorm(x)
//                 K = rope(k_norm(W_k [ctx; h])), V = W_v [ctx; h], Q = rope(q_norm(W_q h))
//                 x += W_o attention(Q, K, V)       no mask: every block row sees every ctx row and every block row
//                 x += mlp(post_attention_layernorm(x))
//   logits of slot j (1..b-1) = lm_head_target(norm(x_j)) * output_multiplier   (slot j predicts the token AT j)
//
// The ctx rows' K/V of every layer go into the drafter's own KvCache and are reused across rounds (their
// positions are the absolute positions of the target rows they summarize); the block's K/V are written past
// the cache length and dropped (the cache is not advanced). The drafter has no embedding or lm_head of its
// own: it reads the target's.
#pragma once
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "loader/checkpoint.h"
#include "models/config.h"
#include "models/layers.h"
#include "models/rope.h"

namespace tachyon {

// What the target must provide to a drafter (the CPU target: DecoderModel's weights).
struct DrafterTargetInfo {
  int num_layers = 0, hidden_size = 0, vocab_size = 0;
  const TensorView* embed_tokens = nullptr;  // [vocab, hidden]
  const TensorView* lm_head = nullptr;       // [vocab, hidden]
};

// The drafter's configuration: config.json with dflash_config laid over it, checked against the target's sizes.
// Shared by the CPU DFlashDrafter and the GPU one (src/gpu/gpu_drafter), so both accept and refuse the same
// checkpoints with the same messages.
struct DFlashDrafterConfig {
  int hidden_size = 0, num_layers = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0, intermediate_size = 0;
  int block_size = 16;
  int32_t mask_token_id = 0;
  float rms_eps = 1e-6f, attention_scale = 0, embedding_scale = 1, output_multiplier = 1, softcap = 0;
  bool attention_bias = false;  // q/k/v/o biases present
  std::vector<int> target_layer_ids;
  RopeConfig rope;
  std::string prefix;  // tensor-name prefix: "" (z-lab) or "model."
  // Per layer. z-lab: sliding_attention layers are causal (a config-wide is_causal overrides); a windowed query at
  // p sees keys j with p - j < window, and also j - p < window when not causal.
  struct LayerAttention {
    bool causal = false;
    int sliding_window = 0;  // 0 = full
  };
  std::vector<LayerAttention> layers;
};

// Reads and checks the checkpoint's config (only target.num_layers / hidden_size / vocab_size are used; the
// tensor pointers may be null). Throws Error naming the file and field at fault.
DFlashDrafterConfig read_dflash_drafter_config(const Checkpoint& checkpoint, const DrafterTargetInfo& target);

// z-lab's default feature layers: K layers spread from 1 to n-3 with Python's round (half to even);
// n // 2 when K == 1.
std::vector<int> default_dflash_target_layers(int num_target_layers, int num_features);

class DFlashDrafter {
 public:
  // Throws Error naming the file and field at fault (wrong architecture, sizes that do not fit the target,
  // feature layers outside the target, missing tensors).
  DFlashDrafter(const Checkpoint& checkpoint, const DrafterTargetInfo& target);
  DFlashDrafter(const DFlashDrafter&) = delete;  // layers_ point into the checkpoint's tensors
  DFlashDrafter& operator=(const DFlashDrafter&) = delete;

  int block_size() const { return config_.block_size; }  // from the checkpoint
  int32_t mask_token_id() const { return config_.mask_token_id; }
  const std::vector<int>& target_layer_ids() const { return config_.target_layer_ids; }
  const DFlashDrafterConfig& config() const { return config_; }
  int feature_width() const { return static_cast<int>(config_.target_layer_ids.size()) * config_.hidden_size; }
  int num_layers() const { return config_.num_layers; }
  int vocab_size() const { return target_.vocab_size; }

  KvCache new_cache(int64_t max_positions) const;
  // Appends n context rows at positions [cache.length(), + n): features [n, feature_width()] of the target rows
  // at those positions. Advances the cache.
  void add_context(const float* features, int64_t n, KvCache& cache) const;
  // One drafting pass over `block` (its first token is the bonus, the rest normally mask_token_id()) at positions
  // [cache.length(), + block.size()). Returns the logits of slots 1..b-1, [b - 1, vocab]. The cache keeps its
  // length (the block is transient).
  std::vector<float> draft(std::span<const int32_t> block, KvCache& cache) const;

 private:
  struct Layer {
    const TensorView *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
    std::vector<float> q_bias, k_bias, v_bias, o_bias;  // empty = none
    std::vector<float> q_norm, k_norm, input_norm, post_attention_norm;
    const TensorView *gate = nullptr, *up = nullptr, *down = nullptr;
    bool causal = false;  // z-lab: sliding_attention layers are causal (config is_causal overrides)
    int sliding_window = 0;
  };
  // k_norm + RoPE on n rows of keys at positions [start, start + n), stored in the cache with their values.
  void store_keys_values(const Layer& layer, const float* input, int64_t n, int64_t start, KvLayer& kv) const;
  const TensorView& tensor(const std::string& name, std::initializer_list<int64_t> shape) const;

  DFlashDrafterConfig config_;
  const WeightStore& weights_;
  DrafterTargetInfo target_;
  std::optional<Rope> rope_;
  const TensorView* fc_ = nullptr;  // [D, K * D]
  std::vector<float> hidden_norm_, final_norm_;
  std::vector<Layer> layers_;
};

}  // namespace tachyon
