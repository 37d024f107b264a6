// MoE routing device code shared by the routing kernels (moe_routing.cu) and the router gemv that routes in its last
// block (gemv_bf16.cu, router_gemv_and_route): the router top-k of one token per warp and the grouping of the
// assignments by expert, on scratch the caller provides (static shared memory in the routing kernels, the gemv's
// drained weight ring in the fused one), so both compute the same bits.
#pragma once
#include <cstdint>

#include "common/device_helpers.cuh"
#include "moe/moe_routing.h"

namespace tachyon::kernels::moe_detail {

constexpr int kMaxExperts = 512;
constexpr int kMaxAssignments = 4096;
constexpr int kRouteWarps = 4;  // route_and_group_block runs on 4 warps

// Shared-memory scratch of route_and_group_block: per-warp expert scores and choices, and the grouping's counts.
struct RouteScratch {
  float* score;        // [kRouteWarps][kMaxExperts]
  float* choice;       // [kRouteWarps][kMaxExperts]
  int* counts;         // [kMaxExperts]
  int* expert_offset;  // [kMaxExperts]
  int* ids;            // [kMaxAssignments]
};
constexpr size_t kRouteScratchBytes =
    (2 * kRouteWarps * kMaxExperts) * sizeof(float) + (2 * kMaxExperts + kMaxAssignments) * sizeof(int);

// Carves RouteScratch out of `base` (shared memory, kRouteScratchBytes, 4-byte aligned).
__device__ __forceinline__ RouteScratch route_scratch(void* base) {
  RouteScratch s;
  s.score = static_cast<float*>(base);
  s.choice = s.score + kRouteWarps * kMaxExperts;
  s.counts = reinterpret_cast<int*>(s.choice + kRouteWarps * kMaxExperts);
  s.expert_offset = s.counts + kMaxExperts;
  s.ids = s.expert_offset + kMaxExperts;
  return s;
}


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
__device__ __forceinline__ int route_token(const float* logits, int token, const RouterConfig& config, float* score, float* choice,
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

// The whole block groups the assignments (reads topk_ids once; any block size that is a multiple of 32).
__device__ __forceinline__ void group_assignments(const int* topk_ids, int n_assignments, int n_experts,
                                                  const ExpertRoutingBuffers& out, const RouteScratch& scratch) {
  int* counts = scratch.counts;
  int* expert_offset = scratch.expert_offset;
  int* ids = scratch.ids;
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

// Router top-k of n_tokens rows of logits and their grouping by expert, by a block of kRouteWarps warps: what
// moe_route_and_group computes (one warp routes and groups a single token, without barriers).
__device__ __forceinline__ void route_and_group_block(const float* logits, int n_tokens, const RouterConfig& config,
                                                      int* topk_ids, float* topk_weights,
                                                      const ExpertRoutingBuffers& out, const RouteScratch& scratch) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  if (n_tokens == 1) {
    // Plain decode: one warp routes and groups. The top_k experts of one token are distinct, so grouping is a sort
    // of top_k ids: lane j's slot is the number of chosen ids below its own (what group_assignments computes for
    // one token, without its block barriers and shared-memory counting).
    if (warp != 0) return;
    const int id = route_token(logits, 0, config, scratch.score, scratch.choice, topk_ids, topk_weights);
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
  for (int token = warp; token < n_tokens; token += kRouteWarps)
    route_token(logits, token, config, scratch.score + warp * kMaxExperts, scratch.choice + warp * kMaxExperts,
                topk_ids, topk_weights);
  __syncthreads();  // topk_ids written by this block's threads are visible to all of them after the barrier
  group_assignments(topk_ids, n_tokens * config.top_k, config.n_experts, out, scratch);
}

}  // namespace tachyon::kernels::moe_detail
