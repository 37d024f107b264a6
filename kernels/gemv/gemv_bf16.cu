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

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"
#include "cuda/stream.h"
#include "gemv/gemv_kernel.cuh"  // the kernel body and its parameter blocks
#include "norm/rms_norm.h"

namespace tachyon::kernels {

namespace {

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
