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

namespace tachyon::kernels {

namespace {

constexpr int kRouterWarps = 4;
constexpr int kMaxExperts = 512;

// The top_k choices of one warp, best first (ties -> lower index, as torch.topk): lane j < top_k gets the j-th
// index in `picked` and score[index] in `picked_score`; returns the sum of the picked scores (every lane). The choice
// values live in registers (lane holds experts lane, lane + 32, ...), a taken bit per register: a round is a local
// scan and a 5-step warp reduction, no shared-memory traffic (the first version kept choice / taken in shared
// memory, with two warp barriers per round).
template <int PER_LANE>
__device__ __forceinline__ float warp_top_k(const float* choice, const float* score, int n, int top_k, int lane,
                                            int& picked, float& picked_score) {
  float v[PER_LANE];
#pragma unroll
  for (int r = 0; r < PER_LANE; ++r) v[r] = lane + 32 * r < n ? choice[lane + 32 * r] : 0.0f;
  unsigned taken = 0;
  float score_sum = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    float best = -INFINITY;
    int best_index = n;
#pragma unroll
    for (int r = 0; r < PER_LANE; ++r) {
      const int i = lane + 32 * r;
      if (i < n && !((taken >> r) & 1u) && (v[r] > best || best_index == n)) {
        best = v[r];
        best_index = i;
      }
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float other = __shfl_xor_sync(0xffffffffu, best, offset);
      const int other_index = __shfl_xor_sync(0xffffffffu, best_index, offset);
      if (other > best || (other == best && other_index < best_index)) {
        best = other;
        best_index = other_index;
      }
    }
    if ((best_index & 31) == lane) taken |= 1u << (best_index >> 5);
    const float w = score[best_index];
    if (lane == j) picked = best_index, picked_score = w;
    score_sum += w;
  }
  return score_sum;
}

// Routes one token with one warp; score/choice are this warp's shared scratch of n_experts entries. Returns, in lane
// j < top_k, the j-th chosen expert.
__device__ int route_token(const float* logits, int token, const RouterConfig& config, float* score, float* choice,
                           int* topk_ids, float* topk_weights) {
  const int lane = threadIdx.x & 31;
  const int n = config.n_experts;
  const float* row = logits + static_cast<int64_t>(token) * n;

  if (config.scoring == RouterScoring::Softmax) {
    float max = -INFINITY;
    for (int i = lane; i < n; i += 32) max = fmaxf(max, row[i]);
    max = warp_max(max);
    float sum = 0;
    for (int i = lane; i < n; i += 32) sum += (score[i] = expf(row[i] - max));
    sum = warp_sum(sum);
    for (int i = lane; i < n; i += 32) {
      score[i] /= sum;
      choice[i] = score[i];
    }
  } else {
    for (int i = lane; i < n; i += 32) {
      score[i] = 1.0f / (1.0f + expf(-row[i]));
      choice[i] = score[i] + (config.correction_bias ? config.correction_bias[i] : 0.0f);
    }
  }
  __syncwarp();

  if (config.scoring == RouterScoring::Sigmoid && config.n_groups > 1) {
    // Group score = sum of the group's two best choice scores; keep the top_k_groups best groups and, as
    // transformers does (masked_fill with 0.0), give the other experts a choice score of 0.
    const int per_group = n / config.n_groups;
    float group_score = -INFINITY;
    if (lane < config.n_groups) {
      float first = -INFINITY, second = -INFINITY;
      for (int i = lane * per_group; i < (lane + 1) * per_group; ++i) {
        const float v = choice[i];
        if (v > first) second = first, first = v;
        else if (v > second) second = v;
      }
      group_score = first + second;
    }
    unsigned kept_groups = 0;
    for (int round = 0; round < config.top_k_groups; ++round) {
      float best = lane < config.n_groups && !((kept_groups >> lane) & 1u) ? group_score : -INFINITY;
      int best_group = lane < config.n_groups && !((kept_groups >> lane) & 1u) ? lane : 32;
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) {
        const float other = __shfl_xor_sync(0xffffffffu, best, offset);
        const int other_group = __shfl_xor_sync(0xffffffffu, best_group, offset);
        if (other > best || (other == best && other_group < best_group)) best = other, best_group = other_group;
      }
      if (best_group < 32) kept_groups |= 1u << best_group;
    }
    for (int i = lane; i < n; i += 32)
      if (!((kept_groups >> (i / per_group)) & 1u)) choice[i] = 0.0f;
    __syncwarp();
  }

  float picked_weight = 0;
  int picked_id = 0;
  const float weight_sum = n <= 128 ? warp_top_k<4>(choice, score, n, config.top_k, lane, picked_id, picked_weight)
                                    : warp_top_k<kMaxExperts / 32>(choice, score, n, config.top_k, lane, picked_id,
                                                                   picked_weight);
  if (lane < config.top_k) {
    float w = picked_weight;
    if (config.renormalize)
      w = config.scoring == RouterScoring::Sigmoid ? w / (weight_sum + 1e-20f) : w / weight_sum;
    if (config.scoring == RouterScoring::Sigmoid) w *= config.routed_scaling;
    topk_ids[static_cast<int64_t>(token) * config.top_k + lane] = picked_id;
    topk_weights[static_cast<int64_t>(token) * config.top_k + lane] = w;
  }
  __syncwarp();  // the scratch is reused by the warp's next token
  return picked_id;
}

__global__ void moe_router_kernel(const float* logits, int n_tokens, RouterConfig config, int* topk_ids,
                                  float* topk_weights) {
  __shared__ float score_buffer[kRouterWarps][kMaxExperts];   // weights source (probabilities / sigmoid)
  __shared__ float choice_buffer[kRouterWarps][kMaxExperts];  // what top-k ranks
  const int warp = threadIdx.x / 32;
  const int token = blockIdx.x * kRouterWarps + warp;
  if (token >= n_tokens) return;
  route_token(logits, token, config, score_buffer[warp], choice_buffer[warp], topk_ids, topk_weights);
}

constexpr int kGroupThreads = 1024;

// The whole block groups the assignments (reads topk_ids once; any block size that is a multiple of 32).
__device__ void group_assignments(const int* topk_ids, int n_assignments, int n_experts, const ExpertRoutingBuffers& out) {
  __shared__ int counts[kMaxExperts];
  __shared__ int expert_offset[kMaxExperts];
  __shared__ int ids[4096];
  for (int e = threadIdx.x; e < n_experts; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int a = threadIdx.x; a < n_assignments; a += blockDim.x) {
    const int e = topk_ids[a];
    ids[a] = e;
    atomicAdd(&counts[e], 1);
  }
  __syncthreads();
  // Exclusive scans of counts and of (count > 0) by warp 0: each lane owns a run of consecutive experts.
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x, per_lane = (n_experts + 31) / 32;
    const int first = lane * per_lane, last = min(n_experts, first + per_lane);
    int entries = 0, active = 0;
    for (int e = first; e < last; ++e) entries += counts[e], active += counts[e] > 0;
    int entries_before = entries, active_before = active;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int e_up = __shfl_up_sync(0xffffffffu, entries_before, offset);
      const int a_up = __shfl_up_sync(0xffffffffu, active_before, offset);
      if (lane >= offset) entries_before += e_up, active_before += a_up;
    }
    entries_before -= entries, active_before -= active;  // inclusive -> exclusive
    for (int e = first; e < last; ++e) {
      expert_offset[e] = entries_before;
      if (counts[e] > 0) {
        out.active_experts[active_before] = e;
        out.slot_offsets[active_before] = entries_before;
        ++active_before;
      }
      entries_before += counts[e];
    }
    if (lane == 31) {
      *out.active_expert_count = active_before;
      out.slot_offsets[active_before] = n_assignments;
    }
  }
  __syncthreads();
  for (int a = threadIdx.x; a < n_assignments; a += blockDim.x) {
    const int e = ids[a];
    int rank = 0;
    for (int b = 0; b < a; ++b) rank += ids[b] == e;
    const int entry = expert_offset[e] + rank;
    out.sorted_assignments[entry] = a;
    out.assignment_entry[a] = entry;
  }
}

__global__ void __launch_bounds__(kGroupThreads)
moe_group_by_expert_kernel(const int* topk_ids, int n_assignments, int n_experts, ExpertRoutingBuffers out) {
  allow_next_kernel_to_start();
  group_assignments(topk_ids, n_assignments, n_experts, out);
}

// Router top-k and grouping in one launch (one block of 4 warps): decode passes route <= 16 tokens, so a launch saved
// is worth more than the parallelism of the router's own grid.
constexpr int kFusedWarps = 4;  // 4 x 4 KB of router scratch + 20 KB of grouping: under the 48 KB static limit
__global__ void __launch_bounds__(32 * kFusedWarps)
moe_route_and_group_kernel(const float* logits, int n_tokens, RouterConfig config, int* topk_ids, float* topk_weights,
                           ExpertRoutingBuffers out) {
  __shared__ float score_buffer[kFusedWarps][kMaxExperts];
  __shared__ float choice_buffer[kFusedWarps][kMaxExperts];
  wait_for_previous_kernel();  // launched programmatically: the logits come from the router gemv
  allow_next_kernel_to_start();
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  if (n_tokens == 1) {
    // Plain decode: one warp routes and groups. The top_k experts of one token are distinct, so grouping is a sort
    // of top_k ids: lane j's slot is the number of chosen ids below its own (what group_assignments computes for
    // one token, without its block barriers and shared-memory counting).
    if (warp != 0) return;
    const int id = route_token(logits, 0, config, score_buffer[0], choice_buffer[0], topk_ids, topk_weights);
    int slot = 0;
    for (int j = 0; j < config.top_k; ++j) slot += __shfl_sync(0xffffffffu, id, j) < id;
    if (lane < config.top_k) {
      out.active_experts[slot] = id;
      out.slot_offsets[slot] = slot;
      out.sorted_assignments[slot] = lane;
      out.assignment_entry[lane] = slot;
    }
    if (lane == 0) {
      *out.active_expert_count = config.top_k;
      out.slot_offsets[config.top_k] = config.top_k;
    }
    return;
  }
  for (int token = warp; token < n_tokens; token += kFusedWarps)
    route_token(logits, token, config, score_buffer[warp], choice_buffer[warp], topk_ids, topk_weights);
  __syncthreads();  // topk_ids written by this block's threads are visible to all of them after the barrier
  group_assignments(topk_ids, n_tokens * config.top_k, config.n_experts, out);
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

ExpertRouting routing_view(const ExpertRoutingBuffers& buffers, int n_tokens, int top_k, int n_experts) {
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

}  // namespace

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
  return routing_view(buffers, n_tokens, top_k, n_experts);
}

ExpertRouting moe_route_and_group(const float* logits, int n_tokens, const RouterConfig& config, int* topk_ids,
                                  float* topk_weights, const ExpertRoutingBuffers& buffers, cudaStream_t stream) {
  const char* name = "moe_route_and_group";
  check_router_config(name, config);
  const int n_assignments = n_tokens * config.top_k;
  TACHYON_REQUIRE(n_assignments > 0 && n_assignments <= 4096, name, "n_tokens * top_k must be in 1..4096");
  launch_programmatic("moe_route_and_group_kernel", moe_route_and_group_kernel, dim3(1), dim3(32 * kFusedWarps), 0,
                      stream, logits, n_tokens, config, topk_ids, topk_weights, buffers);
  return routing_view(buffers, n_tokens, config.top_k, config.n_experts);
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
