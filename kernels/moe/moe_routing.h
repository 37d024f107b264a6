// MoE routing on the GPU: router top-k (softmax or DeepSeek-V3 sigmoid/group-limited), grouping of the
// token x expert assignments by expert (consumed by expert_gated_gemv_bf16 / expert_gemv_bf16, which read
// each touched expert once per pass), and the weighted combine of the experts' outputs.
#pragma once
#include <cstddef>

#include <cuda_runtime_api.h>

#include "gemv/gemv_bf16.h"

namespace tachyon::kernels {

enum class RouterScoring {
  Softmax,  // probs = softmax(logits) over all experts; pick top_k (Qwen3-MoE, Mixtral, OLMoE, gpt-oss with renormalize)
  Sigmoid,  // DeepSeek-V3: scores = sigmoid(logits); pick by scores + correction_bias, group-limited
};

struct RouterConfig {
  int n_experts = 0;         // <= 512
  int top_k = 0;             // <= 32
  RouterScoring scoring = RouterScoring::Softmax;
  bool renormalize = true;   // weights /= sum of the top_k weights (norm_topk_prob; +1e-20 for Sigmoid)
  // Sigmoid (DeepSeek-V3) only:
  const float* correction_bias = nullptr;  // [n_experts] device, added for the choice only (e_score_correction_bias)
  int n_groups = 1;          // experts split into n_groups equal groups (n_group)
  int top_k_groups = 1;      // groups kept, ranked by the sum of their 2 best choice scores (topk_group)
  float routed_scaling = 1;  // multiplies the final weights (routed_scaling_factor)
};

// logits: float [n_tokens, n_experts] -> topk_ids int32 [n_tokens, top_k] (best first; ties -> lower id) and
// topk_weights float [n_tokens, top_k].
void moe_router_topk(const float* logits, int n_tokens, const RouterConfig& config, int* topk_ids, float* topk_weights,
                     cudaStream_t stream);

// Device buffers that moe_group_by_expert fills and ExpertRouting points into.
struct ExpertRoutingBuffers {
  int* active_expert_count;   // [1]
  int* active_experts;        // [n_experts]
  int* slot_offsets;          // [n_experts + 1]
  int* sorted_assignments;    // [n_tokens * top_k]
  int* assignment_entry;      // [n_tokens * top_k]
};
// ints needed for the buffers above, laid out in that order by expert_routing_buffers().
size_t expert_routing_ints(int n_experts, int max_assignments);
ExpertRoutingBuffers expert_routing_buffers(int* storage, int n_experts, int max_assignments);

// Groups the n_tokens * top_k assignments by expert (ascending expert id; within an expert, ascending token):
// no host round trip, so a decode step can be captured in a CUDA graph. n_tokens * top_k <= 4096.
// Returns the ExpertRouting view for the expert gemv kernels.
ExpertRouting moe_group_by_expert(const int* topk_ids, int n_tokens, int top_k, int n_experts,
                                  const ExpertRoutingBuffers& buffers, cudaStream_t stream);

// moe_router_topk + moe_group_by_expert in one launch (one block of 4 warps): the decode path.
ExpertRouting moe_route_and_group(const float* logits, int n_tokens, const RouterConfig& config, int* topk_ids,
                                  float* topk_weights, const ExpertRoutingBuffers& buffers, cudaStream_t stream);

// out[t, :] (+)= sum_j topk_weights[t, j] * expert_out[entry(t, j), :]; expert_out: float [n_entries, hidden]
// in entry order (the expert down-projection output). accumulate = add into out instead of overwriting.
void moe_combine(const float* expert_out, const float* topk_weights, const ExpertRouting& routing, int n_tokens,
                 int hidden, float* out, bool accumulate, cudaStream_t stream);

}  // namespace tachyon::kernels
