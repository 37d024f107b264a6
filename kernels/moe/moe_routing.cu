// moe_router_topk, moe_group_by_expert, moe_combine (see moe_routing.h for semantics).
// Router: one warp per token, the expert scores staged in shared memory (n_experts <= 512); top-k by k
// rounds of a warp argmax (ties -> lower id, as torch.topk and the CPU top_k_indices). Grouping: one block,
// a thread per assignment ranks itself among the assignments of its expert (O(n_assignments) per thread,
// deterministic, no host round trip). Combine: one block per token. All memory-trivial (a 16 x 128 logit
// block is 8 KB); each costs its launch. The decode-path ones (moe_route_and_group, moe_combine) are launched
// programmatically (common/launch.cuh) and wait for the previous kernel first thing.
// Error bounds vs CPU: router weights 2e-6 relative; combine 1e-6 relative (summation order only).
// Measured, H100, 2026-11-26, Qwen3-30B-A3B layer (5 kernels incl. router gemv and the expert gemvs): 58.6 us
// at 1 token (8 experts; the expert gemvs alone 39.9 us), 308 us at 16 tokens (74 experts).
#include "moe/moe_routing.h"

#include <cstdint>

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"
#include "moe/moe_routing_device.cuh"

namespace tachyon::kernels {

namespace {

constexpr int kRouterWarps = 4;
using moe_detail::kMaxExperts;
using moe_detail::RouteScratch;

__global__ void moe_router_kernel(const float* logits, int n_tokens, RouterConfig config, int* topk_ids,
                                  float* topk_weights) {
  __shared__ float score_buffer[kRouterWarps][kMaxExperts];   // weights source (probabilities / sigmoid)
  __shared__ float choice_buffer[kRouterWarps][kMaxExperts];  // what top-k ranks
  const int warp = threadIdx.x / 32;
  const int token = blockIdx.x * kRouterWarps + warp;
  if (token >= n_tokens) return;
  moe_detail::route_token(logits, token, config, score_buffer[warp], choice_buffer[warp], topk_ids, topk_weights);
}

constexpr int kGroupThreads = 1024;

__global__ void __launch_bounds__(kGroupThreads)
moe_group_by_expert_kernel(const int* topk_ids, int n_assignments, int n_experts, ExpertRoutingBuffers out) {
  allow_next_kernel_to_start();
  __shared__ int counts[kMaxExperts], expert_offset[kMaxExperts], ids[moe_detail::kMaxAssignments];
  moe_detail::group_assignments(topk_ids, n_assignments, n_experts, out,
                                RouteScratch{nullptr, nullptr, counts, expert_offset, ids});
}

// Router top-k and grouping in one launch (one block of 4 warps): decode passes route <= 16 tokens, so a launch saved
// is worth more than the parallelism of the router's own grid.
constexpr int kFusedWarps = moe_detail::kRouteWarps;  // 4 x 4 KB of router scratch + 20 KB of grouping: under the 48 KB static limit
__global__ void __launch_bounds__(32 * kFusedWarps)
moe_route_and_group_kernel(const float* logits, int n_tokens, RouterConfig config, int* topk_ids, float* topk_weights,
                           ExpertRoutingBuffers out) {
  wait_for_previous_kernel();  // launched programmatically: the logits come from the router gemv
  allow_next_kernel_to_start();
  __shared__ float score[moe_detail::kRouteWarps * kMaxExperts], choice[moe_detail::kRouteWarps * kMaxExperts];
  __shared__ int counts[kMaxExperts], expert_offset[kMaxExperts], ids[moe_detail::kMaxAssignments];
  const RouteScratch scratch{score, choice, counts, expert_offset, ids};
  moe_detail::route_and_group_block(logits, n_tokens, config, topk_ids, topk_weights, out, scratch);
}

// One block per (token, 1024-float slice of the row): the routing of the token goes to shared memory first, so that
// every expert row load of a thread is independent of the others and all of them are in flight together (the
// first version, one block per token looping over the row, paid a chain of dependent L2 round trips per element
// group: 11 us per MoE layer on an H100 for 8 x 2048 floats, serialized under ncu).
constexpr int kCombineThreads = 256;
constexpr int kCombineFloats = 4 * kCombineThreads;  // one float4 per thread

__global__ void __launch_bounds__(kCombineThreads)
    moe_combine_kernel(const float* expert_out, const float* topk_weights, const int* assignment_entry, int top_k,
                       int hidden, float* out, bool accumulate) {
  wait_for_previous_kernel();  // launched programmatically: expert outputs, weights and `out` come from earlier kernels
  allow_next_kernel_to_start();
  __shared__ float weight[32];
  __shared__ const float* row[32];
  const int token = blockIdx.y;
  if (threadIdx.x < top_k) {
    const int a = token * top_k + threadIdx.x;
    weight[threadIdx.x] = topk_weights[a];
    row[threadIdx.x] = expert_out + static_cast<int64_t>(assignment_entry[a]) * hidden;
  }
  __syncthreads();
  const int i = blockIdx.x * kCombineFloats + 4 * threadIdx.x;
  if (i >= hidden) return;
  float* out_row = out + static_cast<int64_t>(token) * hidden;
  float4 sum = accumulate ? *reinterpret_cast<const float4*>(out_row + i) : make_float4(0.f, 0.f, 0.f, 0.f);
  // Fixed order over j (deterministic); the loads do not depend on each other.
#pragma unroll 8
  for (int j = 0; j < top_k; ++j) {
    const float4 v = *reinterpret_cast<const float4*>(row[j] + i);
    const float w = weight[j];
    sum.x += w * v.x;
    sum.y += w * v.y;
    sum.z += w * v.z;
    sum.w += w * v.w;
  }
  *reinterpret_cast<float4*>(out_row + i) = sum;
}

}  // namespace

void check_router_config(const char* name, const RouterConfig& config) {
  TACHYON_REQUIRE(config.n_experts > 0 && config.n_experts <= kMaxExperts, name, "n_experts must be in 1..512");
  TACHYON_REQUIRE(config.top_k > 0 && config.top_k <= 32 && config.top_k <= config.n_experts, name,
                  "top_k must be in 1..min(32, n_experts)");
  if (config.scoring == RouterScoring::Sigmoid && config.n_groups > 1) {
    TACHYON_REQUIRE(config.n_groups <= 32 && config.n_experts % config.n_groups == 0, name,
                    "n_groups must divide n_experts and be <= 32");
    TACHYON_REQUIRE(config.top_k_groups >= 1 && config.top_k_groups <= config.n_groups, name,
                    "top_k_groups must be in 1..n_groups");
  }
}

ExpertRouting expert_routing_view(const ExpertRoutingBuffers& buffers, int n_tokens, int top_k, int n_experts) {
  const int n_assignments = n_tokens * top_k;
  ExpertRouting routing;
  routing.active_expert_count = buffers.active_expert_count;
  routing.active_experts = buffers.active_experts;
  routing.slot_offsets = buffers.slot_offsets;
  routing.sorted_assignments = buffers.sorted_assignments;
  routing.assignment_entry = buffers.assignment_entry;
  routing.max_active_experts = n_assignments < n_experts ? n_assignments : n_experts;
  routing.top_k = top_k;
  routing.n_tokens = n_tokens;
  return routing;
}

void moe_router_topk(const float* logits, int n_tokens, const RouterConfig& config, int* topk_ids, float* topk_weights,
                     cudaStream_t stream) {
  check_router_config("moe_router_topk", config);
  if (n_tokens <= 0) return;
  moe_router_kernel<<<(n_tokens + kRouterWarps - 1) / kRouterWarps, 32 * kRouterWarps, 0, stream>>>(
      logits, n_tokens, config, topk_ids, topk_weights);
  TACHYON_CUDA_CHECK_LAUNCH("moe_router_kernel");
}

size_t expert_routing_ints(int n_experts, int max_assignments) {
  return 1 + static_cast<size_t>(n_experts) + (n_experts + 1) + 2 * static_cast<size_t>(max_assignments);
}

ExpertRoutingBuffers expert_routing_buffers(int* storage, int n_experts, int max_assignments) {
  ExpertRoutingBuffers b;
  b.active_expert_count = storage;
  b.active_experts = b.active_expert_count + 1;
  b.slot_offsets = b.active_experts + n_experts;
  b.sorted_assignments = b.slot_offsets + n_experts + 1;
  b.assignment_entry = b.sorted_assignments + max_assignments;
  return b;
}

ExpertRouting moe_group_by_expert(const int* topk_ids, int n_tokens, int top_k, int n_experts,
                                  const ExpertRoutingBuffers& buffers, cudaStream_t stream) {
  const char* name = "moe_group_by_expert";
  const int n_assignments = n_tokens * top_k;
  TACHYON_REQUIRE(n_experts > 0 && n_experts <= kMaxExperts, name, "n_experts must be in 1..512");
  TACHYON_REQUIRE(n_assignments > 0 && n_assignments <= 4096, name, "n_tokens * top_k must be in 1..4096");
  moe_group_by_expert_kernel<<<1, kGroupThreads, 0, stream>>>(topk_ids, n_assignments, n_experts, buffers);
  TACHYON_CUDA_CHECK_LAUNCH("moe_group_by_expert_kernel");
  return expert_routing_view(buffers, n_tokens, top_k, n_experts);
}

ExpertRouting moe_route_and_group(const float* logits, int n_tokens, const RouterConfig& config, int* topk_ids,
                                  float* topk_weights, const ExpertRoutingBuffers& buffers, cudaStream_t stream) {
  const char* name = "moe_route_and_group";
  check_router_config(name, config);
  const int n_assignments = n_tokens * config.top_k;
  TACHYON_REQUIRE(n_assignments > 0 && n_assignments <= 4096, name, "n_tokens * top_k must be in 1..4096");
  launch_programmatic("moe_route_and_group_kernel", moe_route_and_group_kernel, dim3(1), dim3(32 * kFusedWarps), 0,
                      stream, logits, n_tokens, config, topk_ids, topk_weights, buffers);
  return expert_routing_view(buffers, n_tokens, config.top_k, config.n_experts);
}

void moe_combine(const float* expert_out, const float* topk_weights, const ExpertRouting& routing, int n_tokens,
                 int hidden, float* out, bool accumulate, cudaStream_t stream) {
  if (n_tokens <= 0) return;
  TACHYON_REQUIRE(hidden > 0 && hidden % 4 == 0, "moe_combine", "hidden must be a positive multiple of 4");
  TACHYON_REQUIRE(routing.top_k > 0 && routing.top_k <= 32, "moe_combine", "top_k must be in 1..32");
  TACHYON_REQUIRE(reinterpret_cast<uintptr_t>(expert_out) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0,
                  "moe_combine", "expert_out and out must be 16-byte aligned");
  const dim3 grid((hidden + kCombineFloats - 1) / kCombineFloats, n_tokens);
  launch_programmatic("moe_combine_kernel", moe_combine_kernel, grid, dim3(kCombineThreads), 0, stream, expert_out,
                      topk_weights, routing.assignment_entry, routing.top_k, hidden, out, accumulate);
}

}  // namespace tachyon::kernels
