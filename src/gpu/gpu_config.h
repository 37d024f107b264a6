// What the GPU model runner needs to know about a model, read from its config.json with the CPU backend's
// ConfigReader / read_rope_config (same fields, same defaults, same error messages), plus the padded sizes
// the kernels run at. Pure host code: no CUDA here, so it is usable (and testable) without a GPU.
//
// Padding: the attention kernel takes head_dim 64 or 128 and the gemv kernels need in_features % 32 == 0, so a
// smaller head is stored zero-padded to 64/128 (its projection rows and the o_proj columns of the padding are
// zero, the attention scale stays 1/sqrt(real head_dim)), and the hidden, MLP and expert widths are rounded up
// to a multiple of 32 with zero rows/columns. Padded activations stay exactly zero; RMSNorms over a padded width
// divide by the padded count, which the stored norm weights (x sqrt(real / padded)) and eps (x real / padded)
// undo exactly. Real models (SmolLM2, Qwen3) need no padding; the tiny test fixtures do.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/config.h"

namespace tachyon::gpu {

// The architectures that run on the GPU; everything else fails with "not on the GPU yet".
enum class GpuFamily { Llama, Qwen2, Qwen3, Qwen3Moe, GptOss };

// How routed experts are stored on the GPU: bf16, or FP4 in the kernel tile layout (src/gpu/fp4_experts.h).
enum class ExpertFormat { Bf16, Nvfp4, Mxfp4 };

// Dense matrices stored as block-scaled FP8 on the GPU (kernels::Fp8Matrix; src/gpu/fp8_weights.h). Set by
// set_fp8_weights, never by config.json.
struct Fp8Weights {
  bool attention = false;  // q, k, v and o projections
  bool mlp = false;        // dense MLPs (not the MoE router, not routed experts)
  bool lm_head = false;
  bool any() const { return attention || mlp || lm_head; }
};

struct GpuModelConfig {
  std::string architecture;  // config.json architectures[0], e.g. Qwen3MoeForCausalLM
  GpuFamily family = GpuFamily::Llama;
  int hidden = 0, layers = 0, vocab = 0;
  int hidden_padded = 0;  // as stored on the GPU: a multiple of 32
  int heads = 0, kv_heads = 0;
  int head_dim = 0;                               // the model's
  int head_dim_padded = 0;                        // as stored on the GPU: 64 or 128
  int intermediate = 0, intermediate_padded = 0;  // dense MLP width (0 when no layer is dense)
  int64_t max_context = 0;                        // max_position_embeddings
  float rms_eps = 1e-6f;
  float attention_scale = 0;  // 1 / sqrt(head_dim)
  RopeConfig rope;
  bool tied_embeddings = false;
  bool qkv_bias = false, o_bias = false, qk_norm = false;
  // Mixture of experts (Qwen3-MoE); experts == 0 for dense models.
  int experts = 0, top_k = 0;
  int moe_intermediate = 0, moe_intermediate_padded = 0;
  bool norm_topk_prob = false;
  std::vector<bool> sparse_layers;  // per layer: routed experts (true) or a dense MLP
  // gpt-oss (models/gpt_oss.cpp): per-head attention sinks, a sliding window per layer (0 = full attention), router
  // bias, expert biases, gate/up rows interleaved in the checkpoint, and the clamped SwiGLU (limit > 0).
  bool attention_sinks = false;
  std::vector<int> sliding_windows;  // per layer; empty or 0 = full attention
  bool router_bias = false, expert_biases = false;
  float swiglu_limit = 0, swiglu_alpha = 0;
  bool gpt_oss_mxfp4 = false;  // the checkpoint (or random shape) stores experts as gpt-oss MXFP4 blocks / scales
  ExpertFormat expert_format = ExpertFormat::Bf16;  // set by set_expert_format (fp4_experts.h), never by config.json
  Fp8Weights fp8;                                  // set by set_fp8_weights (fp8_weights.h)

  int q_width() const { return heads * head_dim_padded; }
  int kv_width() const { return kv_heads * head_dim_padded; }
  int qkv_width() const { return q_width() + 2 * kv_width(); }
  // RMSNorm over the padded hidden width: eps and weight scale that give the real width's norm.
  float hidden_norm_eps() const { return rms_eps * static_cast<float>(hidden) / static_cast<float>(hidden_padded); }
  float hidden_norm_scale() const;
  bool is_sparse(int layer) const { return sparse_layers[layer]; }
  int sliding_window(int layer) const { return sliding_windows.empty() ? 0 : sliding_windows[layer]; }
  bool has_dense_layers() const;
  std::string family_name() const;
};

// Reads config.json. `source` names it in errors ("<source>: field <f>: <why>").
GpuModelConfig read_gpu_model_config(const nlohmann::json& config, const std::string& source);

// Built-in model shapes for `tachyon bench --random-weights NAME`: their config.json, verbatim from the
// Hugging Face repositories (only the fields the loaders read). nullopt for an unknown name.
std::optional<nlohmann::json> builtin_model_config(const std::string& name);
std::vector<std::string> builtin_model_config_names();
// The config.json that --random-weights WHAT names: a built-in shape, a config.json, or a directory holding one.
nlohmann::json random_weights_config(const std::string& what);

// Rounds up to a multiple of `multiple`.
inline int round_up(int value, int multiple) { return (value + multiple - 1) / multiple * multiple; }

}  // namespace tachyon::gpu
