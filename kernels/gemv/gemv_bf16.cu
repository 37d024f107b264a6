// gemv_bf16: y[t, o] = W[o, :] . x[t, :] for 1..16 tokens, W bf16 (or block-scaled FP8) [out, in] row-major, x and
// y float32 row-major [tokens, features]. THE hot kernel of batch-1 decoding: every weight byte must stream from
// memory once per call for all tokens, so the kernel is built around the weight stream.
//
// Design
// - Tensor cores (mma.sync m16n8k16, bf16 in, float32 accumulate) do the arithmetic: at 16 tokens a
//   float32 FMA loop would need ~90% of the SM's FMA rate just to keep up with HBM; the tensor cores
//   idle at ~20%. A = 16 weight rows x 16 k, B = 16 k x 8 tokens (1 or 2 token tiles).
// - Weights stream through a per-warp ring of 3 shared-memory stages filled by cp.async (16 x 16-byte copies
//   per lane per step, 8 KB per warp): two steps are always in flight whatever order the compiler schedules
//   the arithmetic in. Each lane reads back only the bytes it copied, so the ring needs no barrier. The dot
//   product does not care about the order of k, so a lane's 16 contiguous bytes (8 bf16) of a row become its
//   A registers of two k-steps, and its B (activation) registers take the same 8 positions. A 4-lane group
//   covers 64 contiguous bytes of a row per chunk, 4 chunks = 256 bytes per row per step.
// - Activations are split into bf16 hi + bf16 lo (x ~= hi + lo to 2^-17), two products per tile:
//   near-float32 accuracy vs the CPU reference at no cost in bandwidth. They come through L1 (__ldg).
// - A warp owns 32 output rows (two m-tiles sharing the B fragments; for the gated SwiGLU variant the
//   two tiles are the gate and up rows of the same 16 outputs, combined as silu(g) * u in registers), or 16 rows
//   (one m-tile, 6 ring stages of 4 KB) for dense matrices whose 32-row blocks would leave SMs idle.
//   4 warps per block; k_split of them share rows and split in_features (partial sums reduced in shared
//   memory) so that small out_features still fill 132 SMs. Long rows in 16-row blocks that still leave SMs idle
//   (Qwen3's o_proj, 2048 x 4096) run as clusters of two blocks, each with half of the columns: half the steps per
//   warp, rank 0 adding the other block's sums through distributed shared memory (GemvTuning::cluster).
// - Launched with programmatic dependent launch: the first weight steps stream while the previous kernel
//   finishes; griddepcontrol.wait precedes the first activation read (expert mode waits first: the routing
//   tables come from the previous kernel).
// - Fused pre-norm (ResidualNorm, NORM instances, 1..2 tokens): the product after a norm computes add_rms_norm
//   itself. Every block loads the rows (one round trip: all loads of a row issued before any use; the norm weight
//   read before the PDL wait), reduces them with the norm kernel's exact lane layout (norm/rms_norm_device.cuh, so
//   the bits match the two-launch path used at more tokens), and keeps the normalized rows in shared memory after
//   the ring, where the steps read them; block 0 writes the new residual (to another buffer: the other blocks
//   still read the old one) and the normed rows. Taken only where no second wave and no occupancy is lost
//   (fuse_norm): not for the vocabulary-wide lm_head, whose thousands of blocks would each redo the norm.
// - FP8 instances (Fp8Matrix: e4m3 codes, a float scale per 16 rows x 128 columns): the same ring and 16-byte pieces
//   (64 codes per 4-lane chunk), a step = 4 chunks = two 128-column scale blocks (2 chunks = one block at 9..16
//   tokens, for the registers); codes become exact fp16 pairs (cvt.rn.f16x2.e4m3x2), the MMAs are fp16 against x / 16
//   split into fp16 hi + lo, and each block's partial sums join the accumulators times its scale (x 16). The k-split
//   divides whole scale blocks. docs/fp4.md "FP8 on the GPU".
// - Expert (MoE) mode: work items = (active expert slot, row block), the slot count read on the device; a grid
//   of one wave of blocks loops over them, each warp's weight ring running on from one item into the next (no
//   second wave of blocks starting cold). Each item reads one expert's rows once for all the tokens routed to it
//   (gathered through the routing tables).
//
// Error bound (tests/gpu/test_gemv.cpp): |y - y_cpu| <= 1e-4 * max|x| * ||w_row|| + 1e-5.
//
// Measured, H100 80GB HBM3 (stream read 3121 GB/s), 2026-11-26, graph replays, weights from HBM:
//   v0 (not run) weights -> registers directly: the SASS showed the compiler interleaving the loads with the
//      MMAs, 4-6 loads per lane in flight; replaced by the ring before any measurement.
//   v1 cp.async ring: 6144x4096 T=1 21.6 us (75%), T=16 26.2 us (63%); 4096x2048 T=1 10.5 us (51%);
//      151936x2048 T=1 219 us (91%).
//   v2 + programmatic dependent launch and a fixed max-shared carveout (this file): 6144x4096 T=1 19.0 us (85%),
//      T=16 22.7 us (72%); 4096x2048 T=1 8.1 us (67%); 151936x2048 T=1 218 us (92%), T=16 229 us (88%).
//      cuBLASLt on the same shapes: 78%, 77%, 62%, 92%, 90%.
//   v3 (session 5) 16-row warps for small dense grids (Qwen3 o_proj 64 -> 128 blocks) and the one-wave expert
//      grid, cp.async to a precomputed shared address: Qwen3-30B-A3B bf16 decode step 4676 -> 4466 -> 4395 -> 4317
//      us (nsys, exposed per layer: o_proj 11.1 -> 8.4 us; expert gate/up + down 40.1 -> 37.7 us against a 24.3 us
//      floor).
//   v4 (session 7) the fused pre-norm: decode Qwen3 NVFP4 3105 -> 2972 us, SmolLM2 shape 699 -> 665, gpt-oss 2573 ->
//      2536, bf16 4167 -> 4139 (same calls; a first prologue with serialized loads was 2.6-4.8% slower everywhere).
//      The expert instances read their first item's expert id together with the slot count.
//   v5 (session 8) FP8 instances: 151936x2048 T=1 110 us (91% of stream read; bf16 213 us), 5120x2048 T=1 6.4 us vs
//      9.7, 2048x4096 T=16 15.4 us vs 13.5 (slower: twice the MMAs and splits per byte). Decode with FP8 attention
//      and lm_head: Qwen3 NVFP4 2988 -> 2617 us, gpt-oss-20b 2545 -> 2152 (BENCHMARKS.md "FP8 dense weights"). Steps
//      of two scale blocks at 1 token (82780a7) gained 1.3-1.7% of decode over steps of one (6c78c7b).
//   v6 (session 9) clusters of two 16-row blocks for rows of >= 4096 columns: 2048x4096 T=1 10.47 -> 9.88 us, T=16
//      13.48 -> 12.11 (FP8 15.21 -> 11.56); decode Qwen3 NVFP4 + FP8 2603 -> 2555 us, bf16 4152 -> 4087 (short rows
//      lose: SmolLM2's 576-1536 columns +0.5-1 us per product).
//   Full tables: docs/gpu-kernels.md.
#include "gemv/gemv_bf16.h"

#include <algorithm>
#include <type_traits>

#include <cooperative_groups.h>

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"
#include "cuda/stream.h"
#include "norm/rms_norm.h"
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

size_t staged_norm_bytes(int n_tokens, int in_features) {
  return static_cast<size_t>(n_tokens) * in_features * sizeof(float);
}

template <int N_TILES, bool GATED, int K_SPLIT, bool EXPERT, typename Params, int ROW_TILES = 2, bool NORM = false,
          bool FP8 = false, int CLUSTER = 1>
void launch_instance(dim3 grid, const Params& p, cudaStream_t stream) {
  constexpr auto kernel = gemv_bf16_kernel<N_TILES, GATED, K_SPLIT, EXPERT, Params, ROW_TILES, NORM, FP8, CLUSTER>;
  // Once per kernel instance (the engine uses one device per process): the opt-in to over 48 KB of dynamic shared
  // memory (NORM: up to the device maximum, for the staged rows), and the blocks resident per SM (two 96 KB
  // rings), which sizes the expert grid to one wave.
  static const int resident_per_sm = [] {
    int max_bytes = kRingBytes;
    if (NORM) {  // the opt-in maximum less the kernel's static shared memory (k-split partials, norm sums)
      cudaFuncAttributes attributes{};
      TACHYON_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
      max_bytes = static_cast<int>(cuda::current_device_info().shared_memory_per_block_optin - attributes.sharedSizeBytes);
    }
    TACHYON_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_bytes));
    TACHYON_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
    int blocks = 0;
    TACHYON_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreadsPerBlock, kRingBytes));
    return blocks;
  }();
  if (EXPERT) {  // grid.x = the number of (slot, row block) items: as many blocks as fit at once, looping over them
    const unsigned wave = static_cast<unsigned>(std::max(resident_per_sm, 1) * cuda::current_device_info().multiprocessors);
    grid.x = std::min(grid.x, wave);
  }
  const size_t shared = kRingBytes + (NORM ? staged_norm_bytes(p.n_tokens, p.in_features) : 0);
  // Programmatic dependent launch: the kernel may start before the previous one ends (it waits for it
  // before reading x), so launch latency and the weight pipeline's ramp-up overlap the previous kernel.
  grid.x *= CLUSTER;  // grid: the items (row blocks); a cluster of CLUSTER blocks per item
  launch_programmatic_clusters("gemv_bf16_kernel", kernel, grid, dim3(kThreadsPerBlock), shared, stream, CLUSTER, p);
}

template <int N_TILES, bool GATED, bool EXPERT, typename Params, bool NORM = false, bool FP8 = false>
void launch_with_split(int k_split, dim3 grid, const Params& p, cudaStream_t stream) {
  switch (k_split) {
    case 1: launch_instance<N_TILES, GATED, 1, EXPERT, Params, 2, NORM, FP8>(grid, p, stream); break;
    case 2: launch_instance<N_TILES, GATED, 2, EXPERT, Params, 2, NORM, FP8>(grid, p, stream); break;
    default: launch_instance<N_TILES, GATED, 4, EXPERT, Params, 2, NORM, FP8>(grid, p, stream); break;
  }
}

// Expert or dense instances by the params (experts: routing tables set).
template <int N_TILES, bool GATED, bool FP8, typename Params>
void launch_by_mode(int k_split, dim3 grid, const Params& p, cudaStream_t stream) {
  if constexpr (!FP8) {
    if (p.group_count) {
      launch_with_split<N_TILES, GATED, true>(k_split, grid, p, stream);
      return;
    }
  }
  if constexpr (std::is_same_v<Params, GemvParams>) {
    launch_with_split<N_TILES, GATED, false, Params, false, FP8>(k_split, grid, p, stream);
  } else {  // no dense instance takes the epilogue: refused, not skipped (the expert entry points always route)
    TACHYON_REQUIRE(false, "gemv_bf16", "the gpt-oss expert epilogue needs expert routing (group_count)");
  }
}

// Whether a dense product fuses its norm (ResidualNorm) into its prologue: only where that costs no occupancy and
// no second wave, since every block recomputes the norm (a 152k-row lm_head would do it ~4,700 times, in waves).
bool fuse_norm(const GemvParams& p, int grid_blocks) {
  if (p.n_tokens > kMaxNormTokens || p.in_features > 4 * kThreadsPerBlock * kMaxNormVectors) return false;
  const ResidualNorm& n = p.norm;
  for (const void* ptr : {static_cast<const void*>(n.residual), static_cast<const void*>(n.delta),
                          static_cast<const void*>(n.weight), static_cast<const void*>(n.residual_out),
                          static_cast<const void*>(n.normed)})
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) return false;  // the prologue reads and writes float4s
  constexpr size_t kStaticBound = 8 << 10;  // the kernels' static shared memory (k-split partials 4 KB, norm sums)
  const cuda::DeviceInfo& device = cuda::current_device_info();
  const size_t block_bytes = kRingBytes + staged_norm_bytes(p.n_tokens, p.in_features) + kStaticBound;
  if (block_bytes > device.shared_memory_per_block_optin) return false;
  const int per_sm = static_cast<int>(
      std::min<size_t>(2, device.shared_memory_per_multiprocessor / (block_bytes + device.shared_memory_reserved_per_block)));
  return grid_blocks <= per_sm * device.multiprocessors;
}

// FP8: the weights are p.weight8 / p.up_weight8 with their scales (dense products only).
template <bool FP8 = false, typename Params>
void launch_gemv(const char* name, const Params& p, bool gated, int max_cols, int groups, GemvTuning tuning,
                 cudaStream_t stream) {
  TACHYON_REQUIRE(p.in_features > 0 && p.in_features % kChunkElements<FP8> == 0, name,
                  FP8 ? "in_features must be a positive multiple of 64"
                      : "in_features must be a positive multiple of 32");
  TACHYON_REQUIRE(p.out_features > 0, name, "out_features must be positive");
  TACHYON_REQUIRE(max_cols >= 1 && max_cols <= 16, name, "1..16 tokens per expert or call");
  TACHYON_REQUIRE(reinterpret_cast<uintptr_t>(FP8 ? static_cast<const void*>(p.weight8) : p.weight) % 16 == 0 &&
                      (p.norm.weight || reinterpret_cast<uintptr_t>(p.x) % 16 == 0),
                  name, "weight and x must be 16-byte aligned");
  TACHYON_REQUIRE(!FP8 || (p.scales && (!gated || (p.up_weight8 && p.up_scales)) && !p.group_count), name,
                  "FP8 products need their scales (and up matrix when gated) and no expert routing");
  TACHYON_REQUIRE(p.expert_stride % 8 == 0, name, "expert_stride must keep 16-byte alignment");
  if (groups <= 0) return;
  const int rows_per_warp = gated ? 16 : 32;
  int k_split = tuning.k_split;
  if (k_split != 1 && k_split != 2 && k_split != 4 && !p.group_count && max_cols <= 4 && p.in_features >= 2048) {
    // Few tokens and long rows: 4 warps per 32 rows wins even when rows alone would fill the GPU
    // (151936x2048 at 1 token: 94% of stream read vs 92% with k_split 1; run-3 sweep, docs/gpu-kernels.md).
    k_split = 4;
    // FP8 rows are half the bytes: where 2 warps per row still make many waves (a vocabulary-wide lm_head), they
    // carry what 4 bf16 warps do (151936x2048 FP8, 1 token: 112 us at k_split 2 vs 120 at 4; session-8 sweep).
    const int64_t blocks_at_two = (p.out_features + 2 * rows_per_warp - 1) / (2 * rows_per_warp);
    if (FP8 && blocks_at_two >= 8LL * cuda::current_device_info().multiprocessors) k_split = 2;
  }
  if (k_split != 1 && k_split != 2 && k_split != 4) {
    // Fewest warps per row that still give every SM ~3 blocks: more rows per block means the
    // activations (read through L1) are shared by more weight rows.
    const int64_t target_blocks = 3LL * cuda::current_device_info().multiprocessors;
    k_split = 4;
    for (int candidate : {1, 2}) {
      if (FP8 && candidate == 1) continue;  // never the fastest FP8 split in the session-8 sweep
      const int64_t rows_per_block = static_cast<int64_t>(rows_per_warp) * (kWarpsPerBlock / candidate);
      if ((p.out_features + rows_per_block - 1) / rows_per_block * groups >= target_blocks) {
        k_split = candidate;
        break;
      }
    }
  }
  const int rows_per_block = rows_per_warp * (kWarpsPerBlock / k_split);
  const int row_blocks = (p.out_features + rows_per_block - 1) / rows_per_block;
  // Experts: row_blocks x groups items over one wave of blocks (launch_instance caps grid.x).
  const dim3 grid(p.group_count ? row_blocks * groups : row_blocks);
  // A dense matrix whose 32-row blocks would leave SMs idle (Qwen3's o_proj: 2048 rows = 64 blocks): warps of 16
  // rows, twice the blocks, each warp with twice the ring stages of half the size (as many bytes in flight).
  const bool small_grid = row_blocks < cuda::current_device_info().multiprocessors;
  const bool one_row_tile = !gated && !p.group_count && k_split == 4 &&
                            (tuning.row_tiles == 1 || (tuning.row_tiles == 0 && small_grid));
  const dim3 grid16((p.out_features + 15) / 16);  // one_row_tile's grid
  // one_row_tile with a cluster of two blocks per 16 rows (each a half of the columns): half the steps per warp, for
  // long rows whose 16-row blocks still leave SMs idle, where the doubled grid fits one wave of two blocks per SM.
  // Session-9 sweep (H100): Qwen3 o_proj 2048x4096, 1 token 10.47 -> 9.88 us (FP8 7.95 -> 7.30), 16 tokens 13.48 ->
  // 12.11 (FP8 15.21 -> 11.56); but SmolLM2's 576-1536-wide rows (1-3 steps per warp) lose 0.5-1 us to the
  // cluster's two barriers (decode +10%): rows of at least kClusterMinColumns only.
  constexpr int kClusterMinColumns = 4096;
  const bool cluster =
      one_row_tile &&
      (tuning.cluster == 2 ||
       (tuning.cluster == 0 && p.in_features >= kClusterMinColumns &&
        2 * static_cast<int64_t>(grid16.x) <= 2LL * cuda::current_device_info().multiprocessors));
  if constexpr (std::is_same_v<Params, GemvParams>) {
    if (p.norm.weight) {
      const ResidualNorm& n = p.norm;
      if (!fuse_norm(p, static_cast<int>(one_row_tile ? grid16.x : grid.x))) {  // the two launches it stands for
        add_rms_norm_to(n.residual, n.delta, n.weight, n.normed, p.n_tokens, p.in_features, n.eps, n.residual_out,
                        stream);
        GemvParams plain = p;
        plain.norm = ResidualNorm{};
        plain.x = n.normed;
        launch_gemv<FP8>(name, plain, gated, max_cols, groups, tuning, stream);
        return;
      }
      // No cluster instance here: no engine product with a fused norm has rows that long (the norm takes <= 4096).
      if (one_row_tile) launch_instance<1, false, 4, false, Params, 1, true, FP8>(grid16, p, stream);
      else if (gated) launch_with_split<1, true, false, Params, true, FP8>(k_split, grid, p, stream);
      else launch_with_split<1, false, false, Params, true, FP8>(k_split, grid, p, stream);
      return;
    }
    if (one_row_tile && cluster) {
      max_cols <= 8 ? launch_instance<1, false, 4, false, Params, 1, false, FP8, 2>(grid16, p, stream)
                    : launch_instance<2, false, 4, false, Params, 1, false, FP8, 2>(grid16, p, stream);
      return;
    }
    if (one_row_tile) {
      max_cols <= 8 ? launch_instance<1, false, 4, false, Params, 1, false, FP8>(grid16, p, stream)
                    : launch_instance<2, false, 4, false, Params, 1, false, FP8>(grid16, p, stream);
      return;
    }
  }
  if (max_cols <= 8) {
    gated ? launch_by_mode<1, true, FP8>(k_split, grid, p, stream)
          : launch_by_mode<1, false, FP8>(k_split, grid, p, stream);
  } else {
    gated ? launch_by_mode<2, true, FP8>(k_split, grid, p, stream)
          : launch_by_mode<2, false, FP8>(k_split, grid, p, stream);
  }
}

GemvParams dense_params(const __nv_bfloat16* weight, const __nv_bfloat16* up, const float* bias, const float* x,
                        float* y, int n_tokens, int out_features, int in_features) {
  GemvParams p{};
  p.weight = weight;
  p.up_weight = up;
  p.bias = bias;
  p.x = x;
  p.y = y;
  p.n_tokens = n_tokens;
  p.out_features = out_features;
  p.in_features = in_features;
  p.entry_source_divisor = 1;
  return p;
}

GemvParams expert_params(const __nv_bfloat16* weight, const __nv_bfloat16* up, int64_t expert_stride,
                         const ExpertRouting& routing, const float* x, float* y, int out_features, int in_features,
                         bool x_by_token) {
  GemvParams p = dense_params(weight, up, nullptr, x, y, 16, out_features, in_features);
  p.expert_stride = expert_stride;
  p.group_count = routing.active_expert_count;
  p.group_expert = routing.active_experts;
  p.group_offsets = routing.slot_offsets;
  p.entry_source = x_by_token ? routing.sorted_assignments : nullptr;
  p.entry_source_divisor = x_by_token ? routing.top_k : 1;
  return p;
}

}  // namespace

void gemv_bf16(const __nv_bfloat16* weight, const float* bias, const float* x, float* y, int n_tokens,
               int out_features, int in_features, cudaStream_t stream, GemvTuning tuning) {
  launch_gemv("gemv_bf16", dense_params(weight, nullptr, bias, x, y, n_tokens, out_features, in_features), false,
              n_tokens, 1, tuning, stream);
}

void gated_gemv_bf16(const __nv_bfloat16* gate_weight, const __nv_bfloat16* up_weight, const float* x, float* h,
                     int n_tokens, int out_features, int in_features, cudaStream_t stream, GemvTuning tuning) {
  TACHYON_REQUIRE(reinterpret_cast<uintptr_t>(up_weight) % 16 == 0, "gated_gemv_bf16", "up_weight must be 16-byte aligned");
  launch_gemv("gated_gemv_bf16", dense_params(gate_weight, up_weight, nullptr, x, h, n_tokens, out_features, in_features),
              true, n_tokens, 1, tuning, stream);
}

namespace {
void check_norm(const char* name, const ResidualNorm& norm, int n_tokens, int in_features) {
  TACHYON_REQUIRE(norm.residual && norm.weight && norm.residual_out && norm.normed, name,
                  "the fused norm needs residual, weight, residual_out and normed");
  const size_t bytes = static_cast<size_t>(n_tokens) * in_features * sizeof(float);
  const auto* in = reinterpret_cast<const char*>(norm.residual);
  const auto* out = reinterpret_cast<const char*>(norm.residual_out);
  TACHYON_REQUIRE(in + bytes <= out || out + bytes <= in, name,
                  "residual_out must not overlap residual (other blocks still read it)");
}
}  // namespace

void gemv_bf16(const ResidualNorm& norm, const __nv_bfloat16* weight, const float* bias, float* y, int n_tokens,
               int out_features, int in_features, cudaStream_t stream, GemvTuning tuning) {
  check_norm("gemv_bf16", norm, n_tokens, in_features);
  GemvParams p = dense_params(weight, nullptr, bias, nullptr, y, n_tokens, out_features, in_features);
  p.norm = norm;
  launch_gemv("gemv_bf16", p, false, n_tokens, 1, tuning, stream);
}

void gated_gemv_bf16(const ResidualNorm& norm, const __nv_bfloat16* gate_weight, const __nv_bfloat16* up_weight,
                     float* h, int n_tokens, int out_features, int in_features, cudaStream_t stream, GemvTuning tuning) {
  check_norm("gated_gemv_bf16", norm, n_tokens, in_features);
  TACHYON_REQUIRE(reinterpret_cast<uintptr_t>(up_weight) % 16 == 0, "gated_gemv_bf16", "up_weight must be 16-byte aligned");
  GemvParams p = dense_params(gate_weight, up_weight, nullptr, nullptr, h, n_tokens, out_features, in_features);
  p.norm = norm;
  launch_gemv("gated_gemv_bf16", p, true, n_tokens, 1, tuning, stream);
}

namespace {
GemvParams fp8_params(const Fp8Matrix& weight, const Fp8Matrix* up, const float* bias, const float* x, float* y,
                      int n_tokens, int out_features, int in_features) {
  GemvParams p = dense_params(nullptr, nullptr, bias, x, y, n_tokens, out_features, in_features);
  p.weight8 = weight.codes;
  p.scales = weight.scales;
  if (up) {
    p.up_weight8 = up->codes;
    p.up_scales = up->scales;
  }
  return p;
}
}  // namespace

void gemv_fp8(const Fp8Matrix& weight, const float* bias, const float* x, float* y, int n_tokens, int out_features,
              int in_features, cudaStream_t stream, GemvTuning tuning) {
  launch_gemv<true>("gemv_fp8", fp8_params(weight, nullptr, bias, x, y, n_tokens, out_features, in_features), false,
                    n_tokens, 1, tuning, stream);
}

void gated_gemv_fp8(const Fp8Matrix& gate, const Fp8Matrix& up, const float* x, float* h, int n_tokens,
                    int out_features, int in_features, cudaStream_t stream, GemvTuning tuning) {
  launch_gemv<true>("gated_gemv_fp8", fp8_params(gate, &up, nullptr, x, h, n_tokens, out_features, in_features), true,
                    n_tokens, 1, tuning, stream);
}

void gemv_fp8(const ResidualNorm& norm, const Fp8Matrix& weight, const float* bias, float* y, int n_tokens,
              int out_features, int in_features, cudaStream_t stream, GemvTuning tuning) {
  check_norm("gemv_fp8", norm, n_tokens, in_features);
  GemvParams p = fp8_params(weight, nullptr, bias, nullptr, y, n_tokens, out_features, in_features);
  p.norm = norm;
  launch_gemv<true>("gemv_fp8", p, false, n_tokens, 1, tuning, stream);
}

void gated_gemv_fp8(const ResidualNorm& norm, const Fp8Matrix& gate, const Fp8Matrix& up, float* h, int n_tokens,
                    int out_features, int in_features, cudaStream_t stream, GemvTuning tuning) {
  check_norm("gated_gemv_fp8", norm, n_tokens, in_features);
  GemvParams p = fp8_params(gate, &up, nullptr, nullptr, h, n_tokens, out_features, in_features);
  p.norm = norm;
  launch_gemv<true>("gated_gemv_fp8", p, true, n_tokens, 1, tuning, stream);
}

void expert_gated_gemv_bf16(const __nv_bfloat16* gate_weights, const __nv_bfloat16* up_weights,
                            int64_t expert_stride, const ExpertRouting& routing, const float* x, float* h,
                            int out_features, int in_features, cudaStream_t stream, GemvTuning tuning,
                            const ExpertEpilogue& epilogue) {
  TACHYON_REQUIRE(routing.top_k > 0, "expert_gated_gemv_bf16", "routing.top_k must be positive");
  TACHYON_REQUIRE(reinterpret_cast<uintptr_t>(up_weights) % 16 == 0, "expert_gated_gemv_bf16", "up_weights must be 16-byte aligned");
  const GemvParams p =
      expert_params(gate_weights, up_weights, expert_stride, routing, x, h, out_features, in_features, true);
  if (!epilogue.any()) {
    launch_gemv("expert_gated_gemv_bf16", p, true, routing.n_tokens, routing.max_active_experts, tuning, stream);
    return;
  }
  TACHYON_REQUIRE(!epilogue.down_bias, "expert_gated_gemv_bf16", "down_bias belongs to expert_gemv_bf16");
  TACHYON_REQUIRE(epilogue.swiglu_limit > 0, "expert_gated_gemv_bf16",
                  "gate/up biases are applied with the clamped SwiGLU only (swiglu_limit > 0)");
  TACHYON_REQUIRE(!(epilogue.gate_bias || epilogue.up_bias) || epilogue.gate_up_bias_stride >= out_features,
                  "expert_gated_gemv_bf16", "gate_up_bias_stride must be >= out_features");
  GemvEpilogueParams e{};
  static_cast<GemvParams&>(e) = p;
  e.gate_bias = epilogue.gate_bias;
  e.up_bias = epilogue.up_bias;
  e.bias_stride = epilogue.gate_up_bias_stride;
  e.swiglu_limit = epilogue.swiglu_limit;
  e.swiglu_alpha = epilogue.swiglu_alpha;
  launch_gemv("expert_gated_gemv_bf16", e, true, routing.n_tokens, routing.max_active_experts, tuning, stream);
}

void expert_gemv_bf16(const __nv_bfloat16* weights, int64_t expert_stride, const ExpertRouting& routing,
                      const float* x, float* y, int out_features, int in_features, cudaStream_t stream,
                      GemvTuning tuning, const ExpertEpilogue& epilogue) {
  const GemvParams p = expert_params(weights, nullptr, expert_stride, routing, x, y, out_features, in_features, false);
  if (!epilogue.any()) {
    launch_gemv("expert_gemv_bf16", p, false, routing.n_tokens, routing.max_active_experts, tuning, stream);
    return;
  }
  TACHYON_REQUIRE(!epilogue.gate_bias && !epilogue.up_bias && epilogue.swiglu_limit <= 0, "expert_gemv_bf16",
                  "only down_bias applies to a single expert product");
  TACHYON_REQUIRE(epilogue.down_bias_stride >= out_features, "expert_gemv_bf16", "down_bias_stride must be >= out_features");
  GemvEpilogueParams e{};
  static_cast<GemvParams&>(e) = p;
  e.out_bias = epilogue.down_bias;
  e.bias_stride = epilogue.down_bias_stride;
  launch_gemv("expert_gemv_bf16", e, false, routing.n_tokens, routing.max_active_experts, tuning, stream);
}

}  // namespace tachyon::kernels
