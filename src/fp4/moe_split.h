// A real MoE from a real dense model (shared/docs/benchmarks.md): a SwiGLU MLP of width I is the sum of E
// smaller SwiGLU MLPs that each take I/E of its gate/up rows and the matching down columns, because the
// activation is elementwise. Splitting every MLP of a Llama model gives a Mixtral model:
//   expert e:  w1 = gate[rows of group e, :],  w3 = up[same rows],  w2 = top_k * down[:, same columns];
// where the groups are I/E neurons each: contiguous, or (default) clustered by a balanced k-means on the
// normalized gate rows, so that neurons that fire together share an expert (MoEfication's parameter
// clustering; any grouping keeps the all-experts sum equal to the dense MLP).
//   router:    Mixtral's softmax over all experts, top-k, renormalized over the chosen k.
// With top_k = E and a zero router every weight is exactly 1/E, so the MoE equals the dense model (up to the
// order of float additions). With top_k < E the router is fitted to the experts' activations on calibration
// text: for each layer, a ridge regression from the MLP input to each expert's log output norm (centered
// per token), scaled down (router_scale) so that the renormalized weights stay within ~1e-3 of 1/k. The MoE
// then outputs the sum of the k experts predicted to contribute most: a genuinely sparse model with the
// dense model's real weights.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "fp4/fp4_checkpoint.h"

namespace tachyon::fp4 {

struct MoeSplitOptions {
  int experts = 8;
  int top_k = 2;
  // Token ids of calibration text (run through the dense model in chunks). Empty: a zero router, meaningful
  // only with top_k == experts.
  std::vector<int32_t> calibration_tokens;
  int calibration_chunk = 256;
  bool cluster_neurons = true;  // else contiguous groups of I/E neurons
  double ridge = 1e-3;        // lambda = ridge * trace(X^T X) / hidden
  float router_scale = 1e-3f;  // multiplies the fitted router (keeps the chosen experts' weights near 1/k)
};

// How well the fitted routers pick experts, measured on the calibration tokens of each layer:
// relative L2 error ||sum of chosen experts - dense MLP output|| / ||dense output|| for the fitted router and
// for the oracle (the k experts of largest output norm).
struct MoeSplitLayerReport {
  double fitted_error = 0, oracle_error = 0, fit_r2 = 0;
};
struct MoeSplitReport {
  std::vector<MoeSplitLayerReport> layers;
  int64_t calibration_tokens = 0;
  std::string summary() const;
};

// Balanced k-means of the rows of `rows` [n, dim] (cosine similarity) into `groups` groups of n / groups rows,
// deterministic; returns the row indices of each group, ascending.
std::vector<std::vector<int64_t>> balanced_row_clusters(const std::vector<float>& rows, int64_t n, int64_t dim, int groups);

// `dense` must be a Llama model (LlamaForCausalLM, no attention or MLP biases) whose intermediate size E divides.
std::unique_ptr<DerivedCheckpoint> split_mlp_into_experts(std::shared_ptr<const Checkpoint> dense,
                                                          const MoeSplitOptions& options, MoeSplitReport* report);

}  // namespace tachyon::fp4
