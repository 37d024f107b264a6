// argmax_rows and sample_rows: token selection from float32 logits [rows, vocab] without leaving the GPU.
//
// sample_rows, one block of 1024 threads per row:
//   1. max logit (z_i = (l_i - max) / temperature <= 0; weight_i = exp(z_i) <= 1);
//   2. top_k: the k-th largest logit by radix select on order-preserving 32-bit keys (three 11-bit digits,
//      histograms in shared memory, warp-aggregated atomics so that a crowded bin costs one atomic per warp);
//   3. top_p: the same radix walk over the kept keys, histograms of weight in 2^-40 fixed point (integer
//      atomics: the threshold is deterministic), cut where the mass from the top reaches top_p x kept mass;
//   4. Gumbel-max over the kept tokens: argmax z_i + g_i, g_i = -log(-log(u_i)), u_i from Philox4x32-10:
//      an exact draw from the renormalized distribution, in one pass, without a sort.
// Pure temperature sampling (no top_k, top_p = 1) is step 4 alone.
// Fast path, taken whenever it provably holds the answer (top_k <= 512, or top_p alone with the mass at the
// top): candidates >= the k-th largest of the per-thread maxima, at most 2048, sorted in shared memory; top_k,
// top_p and Gumbel-max then run on those. The radix path above is the fallback (flat distributions).
// Each pass reads the row from L2 (608 KB for a 151,936 vocab): ~7-9 passes, one SM per row.
// argmax_rows: one pass, one cluster of 8 blocks per row.
// Both are launched programmatically (common/launch.cuh) and wait for the previous kernel first thing.
// Measured, H100, 2026-11-26, vocab 151,936: argmax_rows 9.6 us (1 or 16 rows; one block per row then: the cluster
// version of session 7 was measured only inside the decode step, with two other changes); sample_rows T=0.7 top_k=50
// top_p=0.9 99 us (fast path); top_p=0.95 alone on flat logits 1.25 ms (radix fallback: the thing to fix).
#include "sampling/sampling.h"

#include <climits>

#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"

namespace tachyon::kernels {

namespace cg = cooperative_groups;

namespace {

constexpr int kThreads = 512;
constexpr int kDigitBits = 11;
constexpr int kBins = 1 << kDigitBits;

__host__ __device__ inline uint32_t mul_hi_u32(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011); returns word 0.
__host__ __device__ inline uint32_t philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                                   uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = mul_hi_u32(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = mul_hi_u32(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0, c1 = lo1, c2 = n2, c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}

__host__ __device__ inline float philox_uniform(uint64_t seed, uint32_t token, uint32_t row, uint64_t offset) {
  const uint32_t r = philox4x32_10(token, row, static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                                   static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return (static_cast<float>(r >> 8) + 0.5f) * (1.0f / 16777216.0f);  // (0, 1), never 0 or 1
}

// Larger float -> larger unsigned key.
__device__ __forceinline__ uint32_t order_key(float v) {
  const uint32_t bits = __float_as_uint(v);
  return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}

struct ArgMax {
  float value;
  int index;
};
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
}

__device__ ArgMax block_argmax(ArgMax v, ArgMax* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    ArgMax other{__shfl_xor_sync(0xffffffffu, v.value, offset), __shfl_xor_sync(0xffffffffu, v.index, offset)};
    v = better(v, other);
  }
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  ArgMax result = scratch[0];
  for (int w = 1; w < kThreads / 32; ++w) result = better(result, scratch[w]);
  return result;
}

// Block argmax of a row; *thread_max (optional) gets this thread's own maximum (the sampler's candidate
// threshold needs the per-thread maxima, and this saves a pass over the row).
__device__ ArgMax row_argmax(const float* row, int vocab, ArgMax* scratch, float* thread_max = nullptr) {
  ArgMax best{-INFINITY, vocab};
  int start = 0;
  if (reinterpret_cast<uintptr_t>(row) % 16 == 0) {
    // 16-byte loads, 4 in flight per thread: one SM has to pull the whole row.
    const int n_vectors = vocab / 4;
    const float4* vectors = reinterpret_cast<const float4*>(row);
    int v = threadIdx.x;
    for (; v + 3 * kThreads < n_vectors; v += 4 * kThreads) {
      float4 q[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) q[u] = __ldg(vectors + v + u * kThreads);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int i = 4 * (v + u * kThreads);
        best = better(best, ArgMax{q[u].x, i});
        best = better(best, ArgMax{q[u].y, i + 1});
        best = better(best, ArgMax{q[u].z, i + 2});
        best = better(best, ArgMax{q[u].w, i + 3});
      }
    }
    for (; v < n_vectors; v += kThreads) {
      const float4 q = __ldg(vectors + v);
      best = better(best, ArgMax{q.x, 4 * v});
      best = better(best, ArgMax{q.y, 4 * v + 1});
      best = better(best, ArgMax{q.z, 4 * v + 2});
      best = better(best, ArgMax{q.w, 4 * v + 3});
    }
    start = 4 * n_vectors;
  }
  for (int i = start + threadIdx.x; i < vocab; i += kThreads) best = better(best, ArgMax{row[i], i});
  if (thread_max) *thread_max = best.value;
  return block_argmax(best, scratch);
}

// argmax_rows: a row is split among the kArgmaxBlocks blocks of one thread-block cluster (one SM pulling a
// 152k-float row out of L2 took ~10 us); each block reduces its slice, then block 0 merges the slice winners
// through distributed shared memory. Same answer as one block: the largest value, ties to the lower index, NaN
// never chosen.
constexpr int kArgmaxBlocks = 8;  // the portable cluster size

__global__ void __cluster_dims__(kArgmaxBlocks, 1, 1) __launch_bounds__(kThreads)
    argmax_rows_kernel(const float* logits, int vocab, int* token_out) {
  __shared__ ArgMax scratch[kThreads / 32];
  __shared__ ArgMax slice_best;
  wait_for_previous_kernel();  // launched programmatically: the logits come from the lm_head gemv
  allow_next_kernel_to_start();
  cg::cluster_group cluster = cg::this_cluster();
  const int part = static_cast<int>(cluster.block_rank());
  // Slices of whole float4s, so that an aligned row keeps its slices aligned.
  const int slice = (vocab + 4 * kArgmaxBlocks - 1) / (4 * kArgmaxBlocks) * 4;
  const int begin = min(part * slice, vocab), length = min(begin + slice, vocab) - begin;
  const ArgMax best = row_argmax(logits + static_cast<int64_t>(blockIdx.y) * vocab + begin, length, &scratch[0]);
  if (threadIdx.x == 0) slice_best = ArgMax{best.value, best.index < length ? begin + best.index : vocab};
  cluster.sync();
  if (part == 0 && threadIdx.x == 0) {
    ArgMax result = slice_best;
    for (int other = 1; other < kArgmaxBlocks; ++other) result = better(result, *cluster.map_shared_rank(&slice_best, other));
    token_out[blockIdx.y] = result.index < vocab ? result.index : 0;
  }
  cluster.sync();  // the other blocks' slice_best stays alive until block 0 has read it
}

// Radix walk from the top: finds the key at which the running total (count or mass) of keys >= it, among keys
// >= floor_key, first reaches `need`. weight_of(i) gives token i's contribution.
template <typename WeightOf>
__device__ uint32_t radix_select_from_top(const float* row, int vocab, uint32_t floor_key, unsigned long long need,
                                          unsigned long long* histogram, WeightOf weight_of) {
  __shared__ uint32_t chosen_prefix;
  __shared__ unsigned long long remaining;
  auto warp = cg::tiled_partition<32>(cg::this_thread_block());
  uint32_t prefix = 0, mask = 0;
  if (threadIdx.x == 0) remaining = need;
  for (int digit = 0; digit < 3; ++digit) {
    const int shift = digit == 0 ? 21 : (digit == 1 ? 10 : 0);  // 11, 11 and 10 new bits
    for (int b = threadIdx.x; b < kBins; b += kThreads) histogram[b] = 0;
    __syncthreads();
    // Whole warps iterate together so that the labeled partition below always sees 32 lanes.
    for (int base = 0; base < vocab; base += kThreads) {
      const int i = base + threadIdx.x;
      const uint32_t key = i < vocab ? order_key(row[i]) : 0;
      const bool counted = i < vocab && key >= floor_key && (key & mask) == prefix;
      const uint32_t bin = counted ? (key >> shift) & (kBins - 1) : kBins;  // kBins = not counted
      const unsigned long long w = counted ? weight_of(i, row[i]) : 0ull;
      auto peers = cg::labeled_partition(warp, bin);
      const unsigned long long total = cg::reduce(peers, w, cg::plus<unsigned long long>());
      if (peers.thread_rank() == 0 && bin < kBins && total > 0) atomicAdd(&histogram[bin], total);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long above = 0;
      int d = kBins - 1;
      for (; d > 0; --d) {
        if (above + histogram[d] >= remaining) break;
        above += histogram[d];
      }
      remaining -= above;
      chosen_prefix = prefix | (static_cast<uint32_t>(d) << shift);
    }
    __syncthreads();
    prefix = chosen_prefix;
    mask |= static_cast<uint32_t>(kBins - 1) << shift;
  }
  return prefix;
}

// Sorts n (a power of two) (value, id) pairs in shared memory, best first: larger value, then lower id.
__device__ void bitonic_sort_best_first(float* value, int* id, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int j = i ^ stride;
        if (j <= i) continue;
        const bool i_better = value[i] > value[j] || (value[i] == value[j] && id[i] < id[j]);
        if (((i & size) == 0) != i_better) {
          const float tv = value[i];
          value[i] = value[j], value[j] = tv;
          const int ti = id[i];
          id[i] = id[j], id[j] = ti;
        }
      }
      __syncthreads();
    }
  }
}

constexpr int kCandidateCapacity = 2048;

__global__ void __launch_bounds__(kThreads)
sample_rows_kernel(const float* logits, int vocab, SamplingParams host_params, const SamplingParams* device_params,
                   const uint64_t* rng_offset, int* token_out) {
  __shared__ ArgMax scratch[kThreads / 32];
  __shared__ unsigned long long histogram[kBins];
  wait_for_previous_kernel();  // launched programmatically: the logits (and rng_offset) come from earlier kernels
  allow_next_kernel_to_start();
  // device_params: read at run time (sample_rows_from_device), so a captured graph serves any parameters.
  const SamplingParams params = device_params ? *device_params : host_params;
  const int row_index = blockIdx.x;
  const float* row = logits + static_cast<int64_t>(row_index) * vocab;
  float my_max = -INFINITY;
  const ArgMax best = row_argmax(row, vocab, scratch, &my_max);
  if (params.temperature <= 0.0f || params.top_k == 1) {
    if (threadIdx.x == 0) token_out[row_index] = best.index < vocab ? best.index : 0;
    return;
  }
  const float max_logit = best.value, inv_temperature = 1.0f / params.temperature;
  const uint64_t rng_counter = (rng_offset ? *rng_offset : 0) + (params.consecutive_offsets ? row_index : 0);
  const uint32_t rng_row = params.consecutive_offsets ? 0u : static_cast<uint32_t>(row_index);
  const bool restricted = (params.top_k > 0 && params.top_k < vocab) || params.top_p < 1.0f;

  // Fast path: a small candidate set that provably holds every token top_k / top_p can keep, sorted in
  // shared memory. The threshold is the k-th largest of the 512 per-thread maxima (k = top_k, or 512 for
  // top_p alone): at least k tokens reach it, so all of the top k do.
  __shared__ float candidate_value[kCandidateCapacity];
  __shared__ int candidate_id[kCandidateCapacity];
  __shared__ int candidate_count, keep_count;
  __shared__ float block_floats[kThreads / 32];
  if (restricted && params.top_k <= kThreads) {
    candidate_value[threadIdx.x] = my_max;
    candidate_id[threadIdx.x] = threadIdx.x;
    __syncthreads();
    bitonic_sort_best_first(candidate_value, candidate_id, kThreads);
    const int k_threshold = params.top_k > 0 ? params.top_k : kThreads;
    const float threshold = candidate_value[k_threshold - 1];
    __syncthreads();
    float count = 0, mass_above = 0, mass_total = 0;
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float w = expf((row[i] - max_logit) * inv_temperature);
      mass_total += w;
      if (row[i] >= threshold) count += 1.0f, mass_above += w;
    }
    count = block_sum(count, block_floats);
    mass_above = block_sum(mass_above, block_floats);
    mass_total = block_sum(mass_total, block_floats);
    const bool fits = count <= kCandidateCapacity &&
                      (params.top_k > 0 || mass_above >= params.top_p * mass_total);
    if (fits) {
      if (threadIdx.x == 0) candidate_count = 0;
      for (int i = threadIdx.x; i < kCandidateCapacity; i += kThreads) candidate_value[i] = -INFINITY, candidate_id[i] = INT_MAX;
      __syncthreads();
      for (int i = threadIdx.x; i < vocab; i += kThreads) {
        if (row[i] >= threshold) {
          const int slot = atomicAdd(&candidate_count, 1);  // arrival order varies; the sort below fixes it
          candidate_value[slot] = row[i];
          candidate_id[slot] = i;
        }
      }
      __syncthreads();
      bitonic_sort_best_first(candidate_value, candidate_id, kCandidateCapacity);
      if (threadIdx.x < 32) {
        const int n = candidate_count, lane = threadIdx.x;
        int keep = params.top_k > 0 ? min(params.top_k, n) : n;
        while (keep < n && candidate_value[keep] == candidate_value[keep - 1]) ++keep;  // ties with the k-th stay
        if (params.top_p < 1.0f) {
          // Cut where the running mass from the top reaches top_p of the kept mass (of the whole row when
          // there is no top_k): one warp, each lane a contiguous run, an exclusive scan of the runs.
          const int per_lane = (keep + 31) / 32, first = lane * per_lane, last = min(keep, first + per_lane);
          float run = 0;
          for (int i = first; i < last; ++i) run += expf((candidate_value[i] - max_logit) * inv_temperature);
          float before = run;
          for (int offset = 1; offset < 32; offset <<= 1) {
            const float up = __shfl_up_sync(0xffffffffu, before, offset);
            if (lane >= offset) before += up;
          }
          const float kept_mass = __shfl_sync(0xffffffffu, before, 31);
          before -= run;
          const float target = params.top_p * (params.top_k > 0 ? kept_mass : mass_total);
          int cut = keep;  // first index whose running mass reaches the target, + 1
          float cumulative = before;
          for (int i = first; i < last; ++i) {
            cumulative += expf((candidate_value[i] - max_logit) * inv_temperature);
            if (cumulative >= target) {
              cut = i + 1;
              break;
            }
          }
#pragma unroll
          for (int offset = 16; offset > 0; offset >>= 1) cut = min(cut, __shfl_xor_sync(0xffffffffu, cut, offset));
          keep = max(1, cut);
          while (keep < n && candidate_value[keep] == candidate_value[keep - 1]) ++keep;
        }
        if (lane == 0) keep_count = keep;
      }
      __syncthreads();
      ArgMax pick{-INFINITY, vocab};
      for (int c = threadIdx.x; c < keep_count; c += kThreads) {
        const int i = candidate_id[c];
        const float u = philox_uniform(params.seed, static_cast<uint32_t>(i), rng_row, rng_counter);
        pick = better(pick, ArgMax{(candidate_value[c] - max_logit) * inv_temperature - logf(-logf(u)), i});
      }
      pick = block_argmax(pick, scratch);
      if (threadIdx.x == 0) token_out[row_index] = pick.index < vocab ? pick.index : best.index;
      return;
    }
    __syncthreads();
  }

  // Weight in 2^-40 fixed point: integer sums are exact, so the thresholds do not depend on thread timing.
  auto fixed_weight = [&](int, float logit) {
    return static_cast<unsigned long long>(expf((logit - max_logit) * inv_temperature) * 1099511627776.0f);
  };
  auto one = [](int, float) { return 1ull; };

  uint32_t floor_key = 0;
  if (params.top_k > 0 && params.top_k < vocab)
    floor_key = radix_select_from_top(row, vocab, 0, static_cast<unsigned long long>(params.top_k), histogram, one);
  if (params.top_p < 1.0f) {
    unsigned long long kept_mass = 0;  // exact integer sum, reduced in a fixed order
    {
      unsigned long long local = 0;
      for (int i = threadIdx.x; i < vocab; i += kThreads)
        if (order_key(row[i]) >= floor_key) local += fixed_weight(i, row[i]);
      __shared__ unsigned long long mass_scratch[kThreads / 32];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) local += __shfl_xor_sync(0xffffffffu, local, offset);
      if ((threadIdx.x & 31) == 0) mass_scratch[threadIdx.x >> 5] = local;
      __syncthreads();
      for (int w = 0; w < kThreads / 32; ++w) kept_mass += mass_scratch[w];
    }
    unsigned long long need = static_cast<unsigned long long>(static_cast<double>(params.top_p) * kept_mass);
    if (need == 0) need = 1;
    const uint32_t top_p_key = radix_select_from_top(row, vocab, floor_key, need, histogram, fixed_weight);
    floor_key = max(floor_key, top_p_key);
  }
  ArgMax pick{-INFINITY, vocab};
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float logit = row[i];
    if (order_key(logit) < floor_key) continue;
    const float u = philox_uniform(params.seed, static_cast<uint32_t>(i), rng_row, rng_counter);
    pick = better(pick, ArgMax{(logit - max_logit) * inv_temperature - logf(-logf(u)), i});
  }
  pick = block_argmax(pick, scratch);
  if (threadIdx.x == 0) token_out[row_index] = pick.index < vocab ? pick.index : best.index;
}

}  // namespace

void argmax_rows(const float* logits, int rows, int vocab, int* token_out, cudaStream_t stream) {
  TACHYON_REQUIRE(vocab > 0, "argmax_rows", "vocab must be positive");
  if (rows <= 0) return;
  launch_programmatic("argmax_rows_kernel", argmax_rows_kernel, dim3(kArgmaxBlocks, rows), dim3(kThreads), 0, stream,
                      logits, vocab, token_out);
}

void sample_rows(const float* logits, int rows, int vocab, const SamplingParams& params, const uint64_t* rng_offset,
                 int* token_out, cudaStream_t stream) {
  TACHYON_REQUIRE(vocab > 0, "sample_rows", "vocab must be positive");
  TACHYON_REQUIRE(params.top_k >= 0, "sample_rows", "top_k must be >= 0");
  TACHYON_REQUIRE(params.top_p > 0.0f && params.top_p <= 1.0f, "sample_rows", "top_p must be in (0, 1]");
  if (rows <= 0) return;
  launch_programmatic("sample_rows_kernel", sample_rows_kernel, dim3(rows), dim3(kThreads), 0, stream, logits, vocab,
                      params, static_cast<const SamplingParams*>(nullptr), rng_offset, token_out);
}

void sample_rows_from_device(const float* logits, int rows, int vocab, const SamplingParams* params,
                             const uint64_t* rng_offset, int* token_out, cudaStream_t stream) {
  TACHYON_REQUIRE(vocab > 0, "sample_rows_from_device", "vocab must be positive");
  TACHYON_REQUIRE(params != nullptr, "sample_rows_from_device", "params must point to device memory");
  if (rows <= 0) return;
  launch_programmatic("sample_rows_kernel", sample_rows_kernel, dim3(rows), dim3(kThreads), 0, stream, logits, vocab,
                      SamplingParams{}, params, rng_offset, token_out);
}

float philox_uniform_host(uint64_t seed, uint32_t token, uint32_t row, uint64_t offset) {
  return philox_uniform(seed, token, row, offset);
}

}  // namespace tachyon::kernels
