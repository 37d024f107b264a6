// The gemv kernel of kernels/gemv/gemv_bf16.cu (design, versions and measurements in that file's header comment):
// its tuning constants, parameter blocks and the one templated kernel body that every instance (dense, gated,
// expert, fused-norm, FP8, clusters) compiles from. Included by gemv_bf16.cu only (it holds the launches), so that
// neither file passes 1,000 lines; everything here stays in that translation unit's anonymous namespace.
#pragma once
#include <type_traits>

#include <cooperative_groups.h>

#include "common/device_helpers.cuh"
#include "gemv/gemv_bf16.h"
#include "norm/rms_norm_device.cuh"

namespace tachyon::kernels {
namespace {

namespace cg = cooperative_groups;

constexpr int kWarpsPerBlock = 4;
constexpr int kThreadsPerBlock = 32 * kWarpsPerBlock;
// A chunk is what one 4-lane group covers of a row: 4 lanes x 16 contiguous bytes = 32 bf16 or 64 e4m3 (FP8).
template <bool FP8>
constexpr int kChunkElements = FP8 ? 64 : 32;
// Chunks per pipeline step: 256 contiguous bytes of each row. FP8: 256 columns = two of its 128-column scale blocks
// at one token tile; at two token tiles (9..16 tokens) one block, 128 bytes, so that the activation registers stay
// as many as bf16's.
template <bool FP8, int N_TILES = 1>
constexpr int kChunksPerStep = FP8 && N_TILES > 1 ? 2 : 4;
// 16-byte loads per lane per step: chunks x m-tiles x 2 rows. Two m-tiles (32 rows per warp, 8 KB per step): 3 ring
// stages; one m-tile (16 rows, 4 KB per step, for matrices whose 32-row grid would leave SMs idle): 6 stages; FP8 steps
// of 2 chunks have twice the stages. The ring is 96 KB per block always (two blocks per SM).
template <int ROW_TILES, bool FP8 = false, int N_TILES = 1>
constexpr int kLoadsPerStep = kChunksPerStep<FP8, N_TILES> * ROW_TILES * 2;
constexpr int kRingLoadsPerLane = 48;  // 16-byte pieces per lane over the whole ring
template <int ROW_TILES, bool FP8 = false, int N_TILES = 1>
constexpr int kStages = kRingLoadsPerLane / kLoadsPerStep<ROW_TILES, FP8, N_TILES>;
constexpr int kRingBytes = kRingLoadsPerLane * 16 * 32 * kWarpsPerBlock;
static_assert(kStages<2> == 3 && kStages<1> == 6 && kStages<2, true, 2> == 6 && kStages<1, true, 2> == 12,
              "ring shapes");
// FP8 activations enter the fp16 MMAs as x / 16 (fp16's range is 65504; the codes are at most 448), undone in the
// per-step scale.
constexpr float kFp8InputScale = 0.0625f;

struct GemvParams {
  const __nv_bfloat16* weight;
  const __nv_bfloat16* up_weight;  // gated only
  // FP8 instances instead (Fp8Matrix): codes and scales of the weight (and up) matrices.
  const uint8_t* weight8;
  const uint8_t* up_weight8;
  const float* scales;
  const float* up_scales;
  int64_t expert_stride;
  const float* bias;
  const float* x;
  float* y;
  int n_tokens, out_features, in_features;
  // Expert mode when group_count != nullptr.
  const int* group_count;
  const int* group_expert;
  const int* group_offsets;
  const int* entry_source;  // x row of entry e: entry_source ? entry_source[e] / divisor : e
  int entry_source_divisor;
  ResidualNorm norm;  // NORM instances: x = add_rms_norm's output, computed in the prologue (x unused)
};

constexpr int kMaxNormTokens = 2;  // fused norms stage at most this many rows (shared memory: see fuse_norm)

// Expert mode with the gpt-oss epilogue (ExpertEpilogue): its own kernel instances (Params = this type), so the
// plain instances (Params = GemvParams) are compiled exactly as before. Biases of expert e at + e * bias_stride.
struct GemvEpilogueParams : GemvParams {
  const float* gate_bias;  // gated: added to the gate row
  const float* up_bias;    // gated: added to the up row
  const float* out_bias;   // not gated: added to the output row
  int64_t bias_stride;
  float swiglu_limit, swiglu_alpha;  // gated: clamped_swiglu (limit > 0 always here)
};

// add_rms_norm of n_tokens rows into `staged` (shared memory), the reduction laid out as the norm kernel's
// kNormLanes threads, so the bits are the same: norm lane L sums float4s L, L + 256, ...; this block's thread t
// holds float4s t + 128 m (m < kMaxNormVectors), i.e. lane t (m even) and lane t + 128 (m odd). Every load of a
// row is issued before any use (one memory round trip per row), and the weight was read before the PDL wait.
constexpr int kMaxNormVectors = 8;  // rows up to 8 x 128 float4s = 4096 wide (fuse_norm)

__device__ __forceinline__ void load_norm_weight(const ResidualNorm& norm, int in, float4 (&weight)[kMaxNormVectors]) {
  const int quads = in / 4;
#pragma unroll
  for (int m = 0; m < kMaxNormVectors; ++m) {
    const int i = threadIdx.x + m * kThreadsPerBlock;
    weight[m] = i < quads ? reinterpret_cast<const float4*>(norm.weight)[i] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
}

__device__ __forceinline__ void stage_normalized_rows(const ResidualNorm& norm, int n_tokens, int in,
                                                      const float4 (&weight)[kMaxNormVectors], float* staged) {
  static_assert(kNormLanes == 2 * kThreadsPerBlock, "thread t plays norm lanes t and t + 128");
  __shared__ float lane_group_sums[kMaxNormTokens][kNormLanes / 32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, quads = in / 4;
  const bool writer = blockIdx.x == 0;  // every block computes the same rows; one writes them out
  for (int t = 0; t < n_tokens; ++t) {
    const float4* row = reinterpret_cast<const float4*>(norm.residual + static_cast<int64_t>(t) * in);
    const float4* delta = norm.delta ? reinterpret_cast<const float4*>(norm.delta + static_cast<int64_t>(t) * in) : nullptr;
    float4 v[kMaxNormVectors], d[kMaxNormVectors];
#pragma unroll
    for (int m = 0; m < kMaxNormVectors; ++m) {
      const int i = threadIdx.x + m * kThreadsPerBlock;
      v[m] = i < quads ? row[i] : make_float4(0.f, 0.f, 0.f, 0.f);
      d[m] = i < quads && delta ? delta[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    float4* stage = reinterpret_cast<float4*>(staged + t * in);
    float4* out = reinterpret_cast<float4*>(norm.residual_out + static_cast<int64_t>(t) * in);
    float sum[2] = {0.f, 0.f};
#pragma unroll
    for (int m = 0; m < kMaxNormVectors; ++m) {
      const int i = threadIdx.x + m * kThreadsPerBlock;
      if (i >= quads) continue;
      if (delta) v[m] = add4(v[m], d[m]);
      stage[i] = v[m];
      if (writer) out[i] = v[m];
      sum[m & 1] = add_squares(sum[m & 1], v[m]);
    }
#pragma unroll
    for (int play = 0; play < 2; ++play) {
      const float group_sum = warp_sum(sum[play]);
      if (lane == 0) lane_group_sums[t][warp + play * kWarpsPerBlock] = group_sum;
    }
  }
  __syncthreads();
  for (int t = 0; t < n_tokens; ++t) {
    float total = 0;
    for (int group = 0; group < kNormLanes / 32; ++group) total += lane_group_sums[t][group];  // block_sum's order
    const float inv = inverse_rms(total, in, norm.eps);
    float4* stage = reinterpret_cast<float4*>(staged + t * in);
    float4* normed = reinterpret_cast<float4*>(norm.normed + static_cast<int64_t>(t) * in);
#pragma unroll
    for (int m = 0; m < kMaxNormVectors; ++m) {  // each thread rescales the float4s it stored itself
      const int i = threadIdx.x + m * kThreadsPerBlock;
      if (i >= quads) continue;
      const float4 y = scale_normalized(stage[i], weight[m], inv);
      stage[i] = y;
      if (writer) normed[i] = y;
    }
  }
  __syncthreads();
}

// ROW_TILES: m-tiles of 16 rows per warp (2, or 1 for small dense matrices; GATED: 2 = the gate and up tiles).
// EXPERT: expert mode (p.group_count set): work items looped over a one-wave grid. Dense instances run one item.
// NORM (dense, N_TILES 1): the rows x are add_rms_norm's output of p.norm, computed by every block into shared
// memory after the ring (rms_norm_device.cuh: the same bits as the norm kernel); block 0 also writes
// residual_out and normed for the kernels after this one. Removes the norm's launch from the decode chain.
// FP8 (dense only): the weights are e4m3 codes with a float scale per 16 rows x 128 columns (Fp8Matrix). A step is
// one 128-column scale block: its codes become fp16 in registers (exact), the MMAs take the activations split into
// fp16 hi + lo (x / 16), and the step's partial products join the accumulators times the step's scale.
template <int N_TILES, bool GATED, int K_SPLIT, bool EXPERT, typename Params, int ROW_TILES = 2, bool NORM = false,
          bool FP8 = false, int CLUSTER = 1>
__global__ void __launch_bounds__(kThreadsPerBlock) gemv_bf16_kernel(Params p) {
  static_assert(!NORM || (!EXPERT && N_TILES == 1), "fused norms: dense products with one token tile");
  static_assert(CLUSTER == 1 || (!EXPERT && K_SPLIT == kWarpsPerBlock),
                "cluster k-split: dense products whose block is one row group (warp 0 holds the block's sums)");
  static_assert(ROW_TILES == 2 || !GATED, "the gated kernel pairs a gate and an up tile");
  static_assert(!FP8 || !EXPERT, "FP8 weights: dense products only");
  constexpr bool kEpilogue = !std::is_same_v<Params, GemvParams>;
  constexpr int kRowGroupsPerBlock = kWarpsPerBlock / K_SPLIT;
  constexpr int kRowsPerWarp = GATED ? 16 : 16 * ROW_TILES;
  constexpr int kRowsPerBlock = kRowsPerWarp * kRowGroupsPerBlock;
  constexpr int kLoads = kLoadsPerStep<ROW_TILES, FP8, N_TILES>;
  constexpr int kRingStages = kStages<ROW_TILES, FP8, N_TILES>;
  constexpr int kChunks = kChunksPerStep<FP8, N_TILES>;
  constexpr int kBlocksPerStep = kChunks / 2;  // FP8: 128-column scale blocks per step
  constexpr int kPairs = kChunkElements<FP8> / 8;  // activation pairs per lane per chunk: 4 (bf16), 8 (FP8)
  using Weight = std::conditional_t<FP8, uint8_t, __nv_bfloat16>;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int group = lane >> 2, thread_in_group = lane & 3;
  const int row_group = warp / K_SPLIT, k_part = warp % K_SPLIT;
  // CLUSTER > 1: the blocks of a thread-block cluster share the rows and split the columns further (more steps in
  // parallel for matrices too small to fill the SMs with rows); rank 0 adds the others' sums.
  const int cluster_rank = CLUSTER > 1 ? static_cast<int>(cg::this_cluster().block_rank()) : 0;
  constexpr int kSplits = K_SPLIT * CLUSTER;
  const int k_index = k_part + K_SPLIT * cluster_rank;
  const int in = p.in_features, out = p.out_features;

  // Work items: one block of kRowsPerBlock rows of one matrix. Dense: item = blockIdx.x (one per block). Expert
  // mode: item = slot * row_blocks + row block over the active experts' slots, the blocks looping over items with
  // stride gridDim.x (a grid of about one wave); every warp's weight ring runs on across its items, so the stream
  // never drains between two items and no second wave starts cold.
  allow_next_kernel_to_start();
  const int row_blocks = (out + kRowsPerBlock - 1) / kRowsPerBlock;
  int n_items = row_blocks;
  int first_expert = 0;  // expert id of this block's first item (EXPERT)
  if (EXPERT) {
    wait_for_previous_kernel();  // the routing tables come from the previous kernel
    // The first item's expert is read together with the count (one memory round trip before the first weight copy
    // instead of two): the grid is at most row_blocks x max_active_experts blocks, so the slot is in bounds whether
    // or not it is active. A block whose first slot is inactive has no items, so n_items may depend on that id,
    // which keeps the compiler from sinking its load below this point.
    const int count = *p.group_count;
    first_expert = p.group_expert[blockIdx.x / row_blocks];
    n_items = first_expert < 0 ? 0 : count * row_blocks;
  }
  const int my_items = EXPERT ? (n_items > static_cast<int>(blockIdx.x)
                                          ? (n_items - blockIdx.x + gridDim.x - 1) / gridDim.x : 0)
                                   : 1;
  auto item_at = [&](int k) {
    return EXPERT ? static_cast<int>(blockIdx.x + k * gridDim.x) : static_cast<int>(blockIdx.x) / CLUSTER;
  };
  auto expert_weight = [&](int expert, const __nv_bfloat16* base) {
    return EXPERT ? base + static_cast<int64_t>(expert) * p.expert_stride : base;
  };
  auto weight_of = [&](int expert, const uint8_t* fp8, const __nv_bfloat16* bf16) -> const Weight* {
    if constexpr (FP8) return fp8;
    else return expert_weight(expert, bf16);
  };

  // Weights stream through a per-warp ring of kRingStages shared-memory slots filled with cp.async: the loads of
  // the next kRingStages - 1 steps (of this item or the next ones) are in flight while a step computes, whatever
  // order the compiler schedules the arithmetic in. Each lane reads back only the 16-byte pieces it copied itself,
  // so the ring needs no barrier, only the lane's own wait_group.
  extern __shared__ uint4 weight_ring[];  // [kRingStages][kWarpsPerBlock][kLoads][32 lanes]
  uint4* my_ring = weight_ring + warp * kLoads * 32 + lane;
  constexpr int kRingStride = kWarpsPerBlock * kLoads * 32;  // uint4s between stages
  const uint32_t my_ring_shared = static_cast<uint32_t>(__cvta_generic_to_shared(my_ring));

  // The k-split divides whole units of chunks between the warps: one chunk (bf16), or two (FP8: a scale block, so
  // every step of every warp lies in one block).
  const int n_chunks = in / kChunkElements<FP8>, n_units = FP8 ? (n_chunks + 1) / 2 : n_chunks;
  const int chunk_first = FP8 ? n_units * k_index / kSplits * 2 : n_chunks * k_index / kSplits;
  const int chunk_end = FP8 ? min(n_chunks, n_units * (k_index + 1) / kSplits * 2) : n_chunks * (k_index + 1) / kSplits;
  const int steps_per_item = (chunk_end - chunk_first + kChunks - 1) / kChunks;
  const int scale_cols = (n_chunks + 1) / 2;  // FP8: 128-column blocks per row group

  // The next step to issue: step issue_local of this block's item issue_k, into ring stage issue_stage. Steps are
  // issued strictly in order, so the state advances by counting (no division per step); the item's row pointers
  // are set up once per item.
  int issue_k = 0, issue_local = 0, issue_stage = 0;
  bool issue_rows_active = false;
  const Weight* w_row[ROW_TILES][2];  // this lane's first 16 bytes of each of its rows
  auto start_issue_item = [&] {
    if (issue_k >= my_items) return;
    const int item = item_at(issue_k);
    const int slot = item / row_blocks;
    const int row_base = (item - slot * row_blocks) * kRowsPerBlock + row_group * kRowsPerWarp;
    issue_rows_active = row_base < out;  // a row group wholly past the end loads nothing (never stored)
    const int expert = !EXPERT ? 0 : issue_k == 0 ? first_expert : p.group_expert[slot];
    const Weight* weight = weight_of(expert, p.weight8, p.weight);
    const Weight* up_weight = GATED ? weight_of(expert, p.up_weight8, p.up_weight) : nullptr;
#pragma unroll
    for (int tile = 0; tile < ROW_TILES; ++tile)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = GATED ? row_base + group + 8 * half : row_base + 16 * tile + group + 8 * half;
        w_row[tile][half] = ((GATED && tile == 1) ? up_weight : weight) + static_cast<int64_t>(min(row, out - 1)) * in +
                            thread_in_group * static_cast<int>(16 / sizeof(Weight));
      }
  };
  auto issue_step = [&] {
    // Dense: one item, its steps counted by issue_local alone.
    if (EXPERT ? issue_k < my_items : issue_local < steps_per_item) {
      const uint32_t ring_slot = my_ring_shared + issue_stage * kRingStride * 16;
      const int chunk0 = chunk_first + issue_local * kChunks;
      if (issue_rows_active) {
#pragma unroll
        for (int c = 0; c < kChunks; ++c)
          if (chunk0 + c < chunk_end)
#pragma unroll
            for (int tile = 0; tile < ROW_TILES; ++tile)
#pragma unroll
              for (int half = 0; half < 2; ++half)
                cp_async_16B_to_shared_address(ring_slot + ((c * ROW_TILES + tile) * 2 + half) * 32 * 16,
                                               w_row[tile][half] + (chunk0 + c) * kChunkElements<FP8>);
      }
      ++issue_local;
      if (EXPERT && issue_local == steps_per_item) {
        issue_local = 0;
        ++issue_k;
        start_issue_item();
      }
    }
    issue_stage = issue_stage + 1 == kRingStages ? 0 : issue_stage + 1;
    cp_async_commit();  // possibly empty: keeps one group per step so the wait count stays constant
  };

  start_issue_item();
#pragma unroll
  for (int s = 0; s < kRingStages - 1; ++s) issue_step();
  float4 norm_weight[NORM ? kMaxNormVectors : 1];
  if constexpr (NORM) load_norm_weight(p.norm, in, norm_weight);  // constant: before the wait
  // Dense weights never depend on the previous kernel: their first steps are in flight while it finishes.
  if (!EXPERT) wait_for_previous_kernel();
  float* staged = nullptr;  // NORM: [n_tokens][in] normalized rows
  if constexpr (NORM) {
    staged = reinterpret_cast<float*>(weight_ring + kRingStages * kRingStride);
    stage_normalized_rows(p.norm, p.n_tokens, in, norm_weight, staged);
  }

  int compute_stage = 0;
  for (int k = 0; k < my_items; ++k) {
    const int item = item_at(k);
    const int slot = item / row_blocks;
    const int row_base = (item - slot * row_blocks) * kRowsPerBlock + row_group * kRowsPerWarp;
    int n_cols = p.n_tokens, entry_base = 0;
    if (EXPERT) {
      entry_base = p.group_offsets[slot];
      n_cols = p.group_offsets[slot + 1] - entry_base;
    }
    // Activation rows of this lane's B columns (token group + 8 j); nullptr = padding column.
    const float* x_row[N_TILES];
#pragma unroll
    for (int j = 0; j < N_TILES; ++j) {
      const int col = group + 8 * j;
      x_row[j] = nullptr;
      if (col < n_cols) {
        const int entry = entry_base + col;
        const int source = p.entry_source ? p.entry_source[entry] / p.entry_source_divisor : entry;
        x_row[j] = (NORM ? staged : p.x) + static_cast<int64_t>(source) * in;
      }
    }
    // FP8: each tile's row of scales, from this warp's first block (16 rows share one scale per block).
    const float* scale_row[ROW_TILES];
    if constexpr (FP8) {
#pragma unroll
      for (int tile = 0; tile < ROW_TILES; ++tile) {
        const int tile_row = min(GATED ? row_base : row_base + 16 * tile, out - 1);
        const float* scales = (GATED && tile == 1) ? p.up_scales : p.scales;
        scale_row[tile] = scales + (tile_row / 16) * scale_cols + chunk_first / 2;
      }
    }
    float acc[ROW_TILES][N_TILES][4];
#pragma unroll
    for (int tile = 0; tile < ROW_TILES; ++tile)
#pragma unroll
      for (int j = 0; j < N_TILES; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[tile][j][r] = 0.0f;

    for (int local = 0; local < steps_per_item; ++local) {
      const int chunk0 = chunk_first + local * kChunks;
      const int valid_chunks = min(kChunks, chunk_end - chunk0);
      // Activations come through L1 (shared by the block's warps); issued before waiting on the weights. A lane's
      // pairs are its own columns of the chunk, the same k positions as its weight bytes.
      uint32_t x_hi[N_TILES][kChunks][kPairs], x_lo[N_TILES][kChunks][kPairs];
#pragma unroll
      for (int j = 0; j < N_TILES; ++j) {
#pragma unroll
        for (int c = 0; c < kChunks; ++c) {
          if constexpr (FP8) {  // 16 columns: four float4s, as fp16 hi + lo of x / 16
            const bool load = x_row[j] && c < valid_chunks;
            const float* src = x_row[j] + (chunk0 + c) * kChunkElements<FP8> + thread_in_group * 16;
#pragma unroll
            for (int q = 0; q < kPairs / 2; ++q) {
              float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
              if (load) v = NORM ? *reinterpret_cast<const float4*>(src + 4 * q)  // shared memory
                                 : __ldg(reinterpret_cast<const float4*>(src + 4 * q));
              split_f16x2(v.x * kFp8InputScale, v.y * kFp8InputScale, x_hi[j][c][2 * q], x_lo[j][c][2 * q]);
              split_f16x2(v.z * kFp8InputScale, v.w * kFp8InputScale, x_hi[j][c][2 * q + 1], x_lo[j][c][2 * q + 1]);
            }
          } else {  // 8 columns: two float4s, as bf16 hi + lo
            float4 v0 = make_float4(0.f, 0.f, 0.f, 0.f), v1 = v0;
            if (x_row[j] && c < valid_chunks) {
              const float* src = x_row[j] + (chunk0 + c) * kChunkElements<FP8> + thread_in_group * 8;
              if constexpr (NORM) {  // shared memory
                v0 = *reinterpret_cast<const float4*>(src);
                v1 = *reinterpret_cast<const float4*>(src + 4);
              } else {
                v0 = __ldg(reinterpret_cast<const float4*>(src));
                v1 = __ldg(reinterpret_cast<const float4*>(src + 4));
              }
            }
            split_bf16x2(v0.x, v0.y, x_hi[j][c][0], x_lo[j][c][0]);
            split_bf16x2(v0.z, v0.w, x_hi[j][c][1], x_lo[j][c][1]);
            split_bf16x2(v1.x, v1.y, x_hi[j][c][2], x_lo[j][c][2]);
            split_bf16x2(v1.z, v1.w, x_hi[j][c][3], x_lo[j][c][3]);
          }
        }
      }
      float step_scale[ROW_TILES][kBlocksPerStep];  // FP8: the step's block scales of each tile, times 16
      if constexpr (FP8) {
#pragma unroll
        for (int tile = 0; tile < ROW_TILES; ++tile)
#pragma unroll
          for (int b = 0; b < kBlocksPerStep; ++b)  // a step's second block may lie past the row's end
            step_scale[tile][b] = b == 0 || valid_chunks > 2
                                      ? __ldg(scale_row[tile] + local * kBlocksPerStep + b) / kFp8InputScale
                                      : 0.0f;
      }
      cp_async_wait<kRingStages - 2>();  // this step's group is complete
      const uint4* ring_slot = my_ring + compute_stage * kRingStride;
      compute_stage = compute_stage + 1 == kRingStages ? 0 : compute_stage + 1;
      if constexpr (FP8) {
        float part[ROW_TILES][N_TILES][4];
#pragma unroll
        for (int tile = 0; tile < ROW_TILES; ++tile)
#pragma unroll
          for (int j = 0; j < N_TILES; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) part[tile][j][r] = 0.0f;
        // The partial sums of a scale block join the accumulators times its scale (acc += scale * part).
        auto fold = [&](bool second_block) {
#pragma unroll
          for (int tile = 0; tile < ROW_TILES; ++tile) {
            const float scale = second_block ? step_scale[tile][kBlocksPerStep - 1] : step_scale[tile][0];
#pragma unroll
            for (int j = 0; j < N_TILES; ++j)
#pragma unroll
              for (int r = 0; r < 4; ++r) {
                acc[tile][j][r] = fmaf(scale, part[tile][j][r], acc[tile][j][r]);
                part[tile][j][r] = 0.0f;
              }
          }
        };
#pragma unroll
        for (int c = 0; c < kChunks; ++c) {
          if (c >= valid_chunks) break;
          if (c == 2) fold(false);  // the step's second scale block starts
#pragma unroll
          for (int tile = 0; tile < ROW_TILES; ++tile) {
            const uint4 a_lo = ring_slot[((c * ROW_TILES + tile) * 2 + 0) * 32];  // row group: 16 codes
            const uint4 a_hi = ring_slot[((c * ROW_TILES + tile) * 2 + 1) * 32];  // row group + 8
            const uint32_t lo_words[4] = {a_lo.x, a_lo.y, a_lo.z, a_lo.w};
            const uint32_t hi_words[4] = {a_hi.x, a_hi.y, a_hi.z, a_hi.w};
#pragma unroll
            for (int s = 0; s < 4; ++s) {  // k-step s: the lane's codes 4 s .. 4 s + 3 of both rows
              const uint32_t a[4] = {e4m3x2_to_f16x2(lo_words[s] & 0xffffu), e4m3x2_to_f16x2(hi_words[s] & 0xffffu),
                                     e4m3x2_to_f16x2(lo_words[s] >> 16), e4m3x2_to_f16x2(hi_words[s] >> 16)};
#pragma unroll
              for (int j = 0; j < N_TILES; ++j) {
                mma_f16_16x8x16(part[tile][j], a, x_hi[j][c][2 * s], x_hi[j][c][2 * s + 1]);
                mma_f16_16x8x16(part[tile][j], a, x_lo[j][c][2 * s], x_lo[j][c][2 * s + 1]);
              }
            }
          }
        }
        fold(valid_chunks > 2);
      } else {
#pragma unroll
        for (int c = 0; c < kChunks; ++c) {
          if (c >= valid_chunks) break;
#pragma unroll
          for (int tile = 0; tile < ROW_TILES; ++tile) {
            const uint4 a_lo = ring_slot[((c * ROW_TILES + tile) * 2 + 0) * 32];  // row group
            const uint4 a_hi = ring_slot[((c * ROW_TILES + tile) * 2 + 1) * 32];  // row group + 8
            const uint32_t a_step0[4] = {a_lo.x, a_hi.x, a_lo.y, a_hi.y};
            const uint32_t a_step1[4] = {a_lo.z, a_hi.z, a_lo.w, a_hi.w};
#pragma unroll
            for (int j = 0; j < N_TILES; ++j) {
              mma_bf16_16x8x16(acc[tile][j], a_step0, x_hi[j][c][0], x_hi[j][c][1]);
              mma_bf16_16x8x16(acc[tile][j], a_step0, x_lo[j][c][0], x_lo[j][c][1]);
              mma_bf16_16x8x16(acc[tile][j], a_step1, x_hi[j][c][2], x_hi[j][c][3]);
              mma_bf16_16x8x16(acc[tile][j], a_step1, x_lo[j][c][2], x_lo[j][c][3]);
            }
          }
        }
      }
      __syncwarp();  // the slot just read is refilled below (by the same lanes)
      issue_step();
    }

    if constexpr (K_SPLIT > 1) {
      __shared__ float partial[kWarpsPerBlock][ROW_TILES][N_TILES][4][32];
      if (k_part != 0) {
#pragma unroll
        for (int tile = 0; tile < ROW_TILES; ++tile)
#pragma unroll
          for (int j = 0; j < N_TILES; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) partial[warp][tile][j][r][lane] = acc[tile][j][r];
      }
      __syncthreads();
      if (k_part == 0) {
#pragma unroll
        for (int other = 1; other < K_SPLIT; ++other)
#pragma unroll
          for (int tile = 0; tile < ROW_TILES; ++tile)
#pragma unroll
            for (int j = 0; j < N_TILES; ++j)
#pragma unroll
              for (int r = 0; r < 4; ++r) acc[tile][j][r] += partial[warp + other][tile][j][r][lane];
      }
      if (k + 1 < my_items) __syncthreads();  // the next item's partial sums overwrite these (block-uniform)
    }
    if constexpr (CLUSTER > 1) {  // rank 0 adds the other blocks' sums in rank order (the same bits every run)
      __shared__ float cluster_sums[ROW_TILES][N_TILES][4][32];
      cg::cluster_group cluster = cg::this_cluster();
      if (cluster_rank != 0 && warp == 0) {
#pragma unroll
        for (int tile = 0; tile < ROW_TILES; ++tile)
#pragma unroll
          for (int j = 0; j < N_TILES; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) cluster_sums[tile][j][r][lane] = acc[tile][j][r];
      }
      cluster.sync();
      if (cluster_rank == 0 && warp == 0) {
        for (int other = 1; other < CLUSTER; ++other) {
          const float* sums = cluster.map_shared_rank(&cluster_sums[0][0][0][0], other);
#pragma unroll
          for (int tile = 0; tile < ROW_TILES; ++tile)
#pragma unroll
            for (int j = 0; j < N_TILES; ++j)
#pragma unroll
              for (int r = 0; r < 4; ++r) acc[tile][j][r] += sums[((tile * N_TILES + j) * 4 + r) * 32 + lane];
        }
      }
      cluster.sync();  // the other blocks' sums stay alive until rank 0 has read them
      if (cluster_rank != 0) continue;
    }
    if (k_part != 0 || row_base >= out) continue;

    // Accumulator r of tile/column-tile j holds row (group + 8 * (r >> 1)), token (8 j + 2 t + (r & 1)).
    constexpr int kTilesOut = GATED ? 1 : ROW_TILES;
#pragma unroll
    for (int tile = 0; tile < kTilesOut; ++tile) {
#pragma unroll
      for (int j = 0; j < N_TILES; ++j) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int row = row_base + 16 * tile + group + 8 * (r >> 1);
          const int col = 8 * j + 2 * thread_in_group + (r & 1);
          if (row >= out || col >= n_cols) continue;
          float value;
          if constexpr (kEpilogue) {  // gpt-oss experts
            const int64_t bias_at = p.group_expert[slot] * p.bias_stride + row;
            if constexpr (GATED) {
              value = clamped_swiglu(acc[0][j][r] + (p.gate_bias ? p.gate_bias[bias_at] : 0.0f),
                                     acc[1][j][r] + (p.up_bias ? p.up_bias[bias_at] : 0.0f), p.swiglu_alpha,
                                     p.swiglu_limit);
            } else {
              value = acc[tile][j][r];
              if (p.out_bias) value += p.out_bias[bias_at];
            }
          } else if constexpr (GATED) {
            value = silu(acc[0][j][r]) * acc[1][j][r];
          } else {
            value = acc[tile][j][r];
            if (p.bias) value += p.bias[row];
          }
          p.y[static_cast<int64_t>(entry_base + col) * out + row] = value;
        }
      }
    }
  }
  cp_async_wait<0>();
}

}  // namespace
}  // namespace tachyon::kernels
