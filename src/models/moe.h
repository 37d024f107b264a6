// Mixture-of-experts pieces shared by the MoE architectures: routing functions (which experts each
// token uses and with what weight), expert weight matrices in every storage layout the supported
// checkpoints use, and the loop that runs each token through its experts.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "loader/weights.h"
#include "models/mxfp4.h"

namespace tachyon {

// Each of n tokens goes to k experts: token t uses experts[t * k + j] with weights[t * k + j].
struct Routing {
  int k = 0;
  std::vector<int> experts;
  std::vector<float> weights;
};

// softmax over all experts, then the k most probable; renormalize divides their probabilities by
// their sum (Mixtral always; Qwen3-MoE when norm_topk_prob). logits: [n, num_experts].
Routing route_softmax_top_k(const float* logits, int64_t n, int num_experts, int k, bool renormalize);

// The k largest logits, then a softmax over those k only (gpt-oss).
Routing route_top_k_softmax(const float* logits, int64_t n, int num_experts, int k);

// DeepSeek-V3 routing ("noaux_tc"): scores = sigmoid(logits); experts are chosen by score + correction
// bias, but only inside the top_groups groups of experts whose two best biased scores sum highest;
// the weights are the unbiased scores of the chosen experts, optionally renormalized (the sum gets
// 1e-20 added, as transformers), times routed_scaling_factor.
struct GroupLimitedRouting {
  int k = 0;
  int num_groups = 1, top_groups = 1;
  bool renormalize = true;
  float scaling = 1.0f;
  std::vector<float> correction_bias;  // [num_experts]
};
Routing route_sigmoid_group_limited(const float* logits, int64_t n, int num_experts, const GroupLimitedRouting& routing);

// DeepSeek-V2 routing: scores = softmax(logits); the k best scores inside the top_groups groups whose
// single best score is highest (num_groups = top_groups = 1 is plain top-k, "greedy"). The weights
// are the chosen scores, not renormalized, times `scaling`.
Routing route_softmax_group_limited(const float* logits, int64_t n, int num_experts, int k, int num_groups,
                                    int top_groups, float scaling);

// One weight matrix per expert, applied as y = x W^T + bias with W [out, in] whatever the storage:
//   separate [out, in] tensors per expert (Qwen3-MoE, Mixtral, DeepSeek);
//   one [E, in, out] tensor used as x @ W (transformers' gpt-oss layout);
//   MXFP4 blocks/scales [E, out, ...] (gpt-oss checkpoints).
class ExpertMatrices {
 public:
  static ExpertMatrices per_expert(std::vector<const TensorView*> matrices);
  static ExpertMatrices stacked_input_major(const TensorView& stacked);
  static ExpertMatrices mxfp4(const TensorView& blocks, const TensorView& scales, int64_t experts, int64_t out,
                              int64_t in);

  int num_experts() const { return num_experts_; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  // x: [n, in], bias: [out] or null, y: [n, out].
  void multiply(int expert, const float* x, int64_t n, const float* bias, float* y) const;

 private:
  enum class Layout { PerExpert, StackedInputMajor, Mxfp4 };
  Layout layout_ = Layout::PerExpert;
  int num_experts_ = 0;
  int64_t in_ = 0, out_ = 0;
  std::vector<const TensorView*> per_expert_;
  const TensorView* stacked_ = nullptr;
  Mxfp4Matrices mxfp4_;
};

// Loads `prefix`.{expert}.`suffix` for every expert, each of shape [out, in].
ExpertMatrices load_per_expert(const WeightStore& weights, const std::string& prefix, const std::string& suffix,
                               int num_experts, int64_t out, int64_t in);

// The gate/up/down SwiGLU experts of Mixtral, Qwen3-MoE and DeepSeek: down(silu(gate x) * up x).
struct SwigluExperts {
  ExpertMatrices gate, up, down;
  void run(int expert, const float* x, int64_t n, float* y) const;
};

// Computes expert `expert` for n gathered token rows x [n, hidden] into y [n, hidden].
using ExpertFunction = std::function<void(int expert, const float* x, int64_t n, float* y)>;

// out[t] = sum_j weights[t, j] * expert_{experts[t, j]}(x[t]). Tokens are grouped by expert so that
// each expert runs once per call on all the tokens routed to it.
void run_routed_experts(const Routing& routing, const float* x, int64_t n, int64_t hidden, int num_experts,
                        const ExpertFunction& expert, float* out);

}  // namespace tachyon
