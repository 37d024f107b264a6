// fp4_moe_fused: version 3 of the FP4 MoE experts, for passes of 1..4 tokens (decode): gate/up + SiLU and down +
// combine in ONE launch, the two phases separated by a grid-wide barrier instead of a kernel boundary.
//
// Why (session 5's trace of the Qwen3-30B-A3B NVFP4 decode step, scripts/gpu/timeline.sh): per MoE layer the
// version-2 gate/up kernel added 10.6 us to the step (floor 4.6 us) and the down kernel 7.8 us more (floor 2.3). The
// down kernel is launched programmatically so that it could stream its weights while gate/up runs, but its blocks
// (16 warps x ~97 registers) do not fit beside the gate/up blocks still resident, so they start when gate/up
// retires: a second ramp (launch, first loads) after the first. Here the down weights do not depend on h, so every
// block issues its first down tiles into a ring of its own BEFORE the gate/up work, and after the barrier only the
// h reads (L2) and the last down tiles remain.
//
// Shape of the launch: a one-wave grid (occupancy API x SMs; every block resident, which the spin barrier needs) of
// WARPS-warp blocks, 16 warps per SM (registers capped at 128).
// - gate/up: block items (expert slot, WARPS / K_SPLIT row tiles of I), K_SPLIT warps per row tile splitting H, the
//   items strided over the grid; the body is version 2's (gate_up_body: same ring, same arithmetic, same bounds).
// - down + combine: block b owns rows [16 b, 16 b + 16) of H (and b + grid, ... when H / 16 > grid), items (slot,
//   k part) round-robin over its warps, each warp's ring filled before the gate/up phase; body down_item of
//   version 2, h read through L2 (it was written in this launch), the warps' [16 x 16] tiles summed in a fixed
//   order: deterministic, no atomics.
// - The barrier: one arrival counter and one generation word per device (a __device__ variable, self-resetting:
//   the last block to arrive zeroes the counter and bumps the generation). Fused launches must therefore not run
//   concurrently on one device (tachyon runs a model's passes on one stream). The next kernel is allowed to start
//   only after the barrier, when every block of this grid is resident.
// Token counts above 4 (verify passes) keep the two launches of version 2: their items have up to 4 column tiles
// and the down weights of ~80 experts do not fit in the rings anyway.
#include <cuda/atomic>

#include <algorithm>
#include <type_traits>

#include "cuda/stream.h"
#include "fp4_moe/fp4_moe_v2_body.cuh"

namespace tachyon::kernels::fp4_moe_detail {

namespace {

constexpr int kFusedGateUpStages = 4, kFusedDownStages = 6;

__device__ unsigned int g_fused_barrier[2];  // [0] blocks arrived, [1] generation

__device__ __forceinline__ void grid_barrier() {
  __syncthreads();
  if (threadIdx.x == 0) {
    ::cuda::atomic_ref<unsigned int, ::cuda::thread_scope_device> arrived(g_fused_barrier[0]), generation(g_fused_barrier[1]);
    // Read before arriving: the generation can only move once every block (this one included) has arrived.
    const unsigned int mine = generation.load(::cuda::memory_order_relaxed);
    __threadfence();  // the block's h writes (ordered before by __syncthreads) are visible before the arrival
    if (arrived.fetch_add(1u, ::cuda::memory_order_acq_rel) == gridDim.x - 1) {
      arrived.store(0u, ::cuda::memory_order_relaxed);
      generation.fetch_add(1u, ::cuda::memory_order_release);
    } else {
      while (generation.load(::cuda::memory_order_acquire) == mine) __nanosleep(32);
    }
    __threadfence();
  }
  __syncthreads();
}

template <bool EPI>
struct FusedParams {
  std::conditional_t<EPI, GateUpEpilogueParams, GateUpParams> gate_up;
  std::conditional_t<EPI, DownBiasParams, DownParams> down;
  int down_k_split;
};

// EPI: the gpt-oss epilogue in both phases (gate/up biases + clamped SwiGLU, down biases).
template <int WARPS, int K_SPLIT, bool NV, bool EPI>
__global__ void __launch_bounds__(WARPS * 32, 16 / WARPS) fp4_moe_fused_kernel(FusedParams<EPI> p) {
  using T = Tile<NV>;
  constexpr int GS = kFusedGateUpStages, DS = kFusedDownStages;
  extern __shared__ uint4 smem[];  // gate/up rings [WARPS][GS][gate, up][T::kChunks], then down rings [WARPS][DS][..]
  __shared__ float out_tile[WARPS][kTileRows][16];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint4* gate_up_ring = smem;
  uint4* down_ring = smem + WARPS * GS * 2 * T::kChunks + warp * DS * T::kChunks;
  const auto& g = p.gate_up;
  const auto& d = p.down;

  wait_for_previous_kernel();  // the routing tables come from the previous kernel
  const int active = *d.active_count;

  // Down: this warp's items (slot, k part) of the block's row tile, and a copy cursor over their tiles (as in
  // fp4_down_v2_kernel: one tile per call, calls in step order).
  const int k_split = p.down_k_split;
  const int down_row_tiles = d.rows / kTileRows, down_col_tiles = d.cols / kTileCols;
  const int item_tiles = down_col_tiles / k_split, n_items = active * k_split;
  const int my_items = n_items > warp ? (n_items - warp + WARPS - 1) / WARPS : 0;
  const int n_steps = my_items * item_tiles;
  int row_tile = blockIdx.x;
  int issue_local = 0, issue_tile = 0;
  const uint8_t* issue_src = nullptr;
  auto item_src = [&](int local) {
    const int item = warp + local * WARPS;
    const int kt = (item % k_split) * item_tiles;
    return d.down + d.active_experts[item / k_split] * d.stride +
           (static_cast<int64_t>(row_tile) * down_col_tiles + kt) * T::kBytes;
  };
  auto issue = [&](int step) {
    if (step < n_steps) {
      copy_tile<NV>(down_ring + (step % DS) * T::kChunks, issue_src + static_cast<int64_t>(issue_tile) * T::kBytes,
                    lane, 0);
      if (++issue_tile == item_tiles) {
        issue_tile = 0;
        if (++issue_local < my_items) issue_src = item_src(issue_local);
      }
    }
    cp_async_commit();
  };
  auto start_row_tile = [&] {
    issue_local = issue_tile = 0;
    issue_src = my_items > 0 ? item_src(0) : nullptr;
#pragma unroll
    for (int s = 0; s < DS - 1; ++s) issue(s);
  };
  // The first row tile's down weights stream in during the gate/up phase (they do not depend on h). Their copy
  // groups are older than gate/up's, so gate/up's ring waits cover them too (a few tiles, issued first).
  if (row_tile < down_row_tiles) start_row_tile();

  // Gate/up: block items (slot, group of WARPS / K_SPLIT row tiles).
  constexpr int kTilesPerItem = WARPS / K_SPLIT;
  const int gate_row_tiles = g.rows / kTileRows, gate_col_tiles = g.cols / kTileCols;
  const int row_groups = (gate_row_tiles + kTilesPerItem - 1) / kTilesPerItem;
  const int k_part = warp % K_SPLIT;
  const int kt_begin = gate_col_tiles * k_part / K_SPLIT, kt_end = gate_col_tiles * (k_part + 1) / K_SPLIT;
  for (int item = blockIdx.x; item < active * row_groups; item += gridDim.x) {  // block-uniform
    const int slot = item / row_groups;
    const int gate_row_tile = (item % row_groups) * kTilesPerItem + warp / K_SPLIT;
    const bool rows_active = gate_row_tile < gate_row_tiles;
    const int entry_base = g.slot_offsets[slot];
    gate_up_body<WARPS, K_SPLIT, GS, 1, NV, false, EPI>(
        g, gate_up_ring, g.active_experts[slot], entry_base, g.slot_offsets[slot + 1] - entry_base,
        min(gate_row_tile, gate_row_tiles - 1), k_part, rows_active, kt_begin, rows_active ? kt_end - kt_begin : 0);
    __syncthreads();  // the k parts' partials (in the gate/up ring) are read before the next item refills it
  }

  grid_barrier();                // every h row of every slot is written and visible
  allow_next_kernel_to_start();  // every block of this grid is resident by now

  for (; row_tile < down_row_tiles; row_tile += gridDim.x) {
    if (row_tile != static_cast<int>(blockIdx.x)) start_row_tile();
    for (int i = lane; i < kTileRows * 16; i += 32) out_tile[warp][i / 16][i % 16] = 0.0f;
    __syncwarp();
    for (int local = 0; local < my_items; ++local) {
      const int item = warp + local * WARPS, slot = item / k_split;
      const int entry_base = d.slot_offsets[slot];
      down_item<DS, 1, NV, false, EPI, true>(d, out_tile[warp], down_ring, row_tile, d.active_experts[slot], entry_base,
                                             d.slot_offsets[slot + 1] - entry_base, (item % k_split) * item_tiles,
                                             item_tiles, local * item_tiles, issue);
    }
    cp_async_wait<0>();
    __syncthreads();
    for (int i = threadIdx.x; i < kTileRows * d.n_tokens; i += blockDim.x) {
      const int token = i / kTileRows, row = i % kTileRows;
      float sum = 0.0f;
#pragma unroll
      for (int w = 0; w < WARPS; ++w) sum += out_tile[w][row][token];
      float* o = d.out + static_cast<int64_t>(token) * d.rows + row_tile * kTileRows + row;
      *o = d.accumulate ? *o + sum : sum;
    }
    __syncthreads();  // the tiles are summed before the next row tile zeroes them
  }
}

template <int WARPS, int K_SPLIT, bool NV, bool EPI>
void launch_fused_t(const GateUpEpilogueParams& gate_up, const DownBiasParams& down, int down_k_split,
                    int max_active_experts, cudaStream_t stream) {
  FusedParams<EPI> p{gate_up, down, down_k_split};  // the plain instances take the base parts
  constexpr size_t kShared = static_cast<size_t>(WARPS) * Tile<NV>::kBytes * (kFusedGateUpStages * 2 + kFusedDownStages);
  auto kernel = fp4_moe_fused_kernel<WARPS, K_SPLIT, NV, EPI>;
  // Blocks that fit on one SM beside each other: the grid must be resident all at once for the barrier.
  static const int blocks_per_sm = [&] {
    configure(kernel, kShared);
    int blocks = 0;
    TACHYON_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, WARPS * 32, kShared));
    return blocks;
  }();
  TACHYON_REQUIRE(blocks_per_sm > 0, "fp4_moe_experts", "the fused kernel (version 3) does not fit on an SM");
  const int row_tiles = gate_up.rows / kTileRows, tiles_per_item = WARPS / K_SPLIT;
  const int gate_up_items = max_active_experts * ((row_tiles + tiles_per_item - 1) / tiles_per_item);
  const int grid = std::min(blocks_per_sm * cuda::current_device_info().multiprocessors,
                            std::max(down.rows / kTileRows, gate_up_items));
  launch_programmatic("fp4_moe_fused_kernel", kernel, dim3(grid), dim3(WARPS * 32), kShared, stream, p);
}

template <int WARPS, bool NV, bool EPI>
void launch_fused_k(const GateUpEpilogueParams& gate_up, const DownBiasParams& down, int k_split, int down_k_split,
                    int max_active_experts, cudaStream_t stream) {
  if (k_split == 4) launch_fused_t<WARPS, 4, NV, EPI>(gate_up, down, down_k_split, max_active_experts, stream);
  else launch_fused_t<WARPS, 8, NV, EPI>(gate_up, down, down_k_split, max_active_experts, stream);
}

}  // namespace

void launch_fused_v3(const GateUpEpilogueParams& gate_up, const DownBiasParams& down, int max_active_experts, bool nv,
                     int warps, int k_split, int down_k_split, cudaStream_t stream) {
  const bool epilogue = gate_up.swiglu_limit > 0;  // gpt-oss: then the down bias is set too (fp4_moe.cu checks)
#define TACHYON_FUSED(W, NV_, EPI_) \
  launch_fused_k<W, NV_, EPI_>(gate_up, down, k_split, down_k_split, max_active_experts, stream)
  if (warps == 8) {
    nv ? (epilogue ? TACHYON_FUSED(8, true, true) : TACHYON_FUSED(8, true, false))
       : (epilogue ? TACHYON_FUSED(8, false, true) : TACHYON_FUSED(8, false, false));
  } else {
    nv ? (epilogue ? TACHYON_FUSED(16, true, true) : TACHYON_FUSED(16, true, false))
       : (epilogue ? TACHYON_FUSED(16, false, true) : TACHYON_FUSED(16, false, false));
  }
#undef TACHYON_FUSED
}

}  // namespace tachyon::kernels::fp4_moe_detail
