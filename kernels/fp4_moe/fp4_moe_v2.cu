// fp4_moe_v2: version 2 of the FP4 MoE kernels (fp4_expert_gate_up, fp4_expert_down_combine). Same tile layout,
// same arithmetic (fp16 hi + lo of x / 16 against exactly decoded codes, float32 accumulation, block scales on
// each block's fresh partial sums) and same error bounds as version 1 (fp4_moe.cu, which also has the design);
// what changes is how much work the SM does per tile and how much stays in flight:
// - hi and lo of a token are two MMA columns (column 2e + 0 = hi of entry e, 2e + 1 = lo), so one n8 tile holds
//   4 tokens and a k16 step costs one MMA per 4 tokens instead of two per 8: half the MMAs at 1 token, and at 16
//   tokens (most experts then have 1..2 tokens) a quarter. The two columns are summed once at the end.
// - the number of n8 tiles is chosen per expert from ITS token count (1..4), not from the pass's token count;
// - the next step's activations are loaded one step ahead (their L1/L2 latency hides behind the MMAs);
// - the four k16 steps of a tile are independent MMA chains (fresh partial sums), scaled per block afterwards;
// - ring depth, warps per block and the split of H among warps (gate/up) or of each expert's columns into items
//   (down) are template / run-time parameters, swept by `tachyon eval --kernel-bench qwen3 --sweep`;
// - both kernels get the maximum shared-memory carveout (more blocks per SM) and opt in to > 48 KB rings;
// - (session 7) the gate/up kernels for 1..4 tokens split the activations once per block into shared memory
//   (gate_up_body, STAGED_X) and read the slot's routing-table words in one round trip: decode Qwen3 NVFP4 -1.8%,
//   gpt-oss -2.8% (same call, H100).
//
// Measured: NVIDIA H100 80GB HBM3 (132 SMs, driver 580.159.04, stream read 3113 GB/s = 100%), 2026-11-26 10:04 UTC,
// binaries of commit be74d84 + local changes (scripts/gpu/fp4.sh; results in .cache/gpu-results/fp4v2/). Qwen3-30B-A3B
// experts (H 2048, I 768, 128 experts, top-8), gate/up + down_combine (graph of back-to-back launches over weight
// copies > 4x L2), us and % of stream read; defaults as of be74d84 (gate/up k split 8 at 1 token, 1 at 16):
//   tokens (experts, MB NVFP4)   NVFP4 v1        NVFP4 v2          MXFP4 v2          BF16 experts (3.56x bytes)
//    1 (  8,  21.2)              41.96  16.3%    19.63  34.7%      18.92  34.1%      46.95  51.7%
//    2 ( 15,  39.8)              74.35  17.2%    28.15  45.4%      27.42  44.0%      70.91  64.1%
//    4 ( 29,  77.0)             152.38  16.2%    49.61  49.8%      50.25  46.5%     117.86  74.6%
//    8 ( 50, 132.7)             283.90  15.0%    85.92  49.6%      83.19  48.4%     189.66  79.9%
//   16 ( 81, 215.0)             495.94  13.9%   133.29  51.8%     129.74  50.3%     290.41  84.5%
// Sweep (each kernel alone, NVFP4; MXFP4 alike): 1 token gate/up ks8 12.16 us, ks4 11.98, ks2 11.81 (38.5%), s8
// always slower; down dw16 ds6 dk2 (the default) 8.25..8.38, hp1 7.68 (29.6%), dw8 or ds12 or dk3/4 no better.
// 16 tokens gate/up ks1 75.26, ks2 73.59 (62.6%), hp1 ks2 72.49; down dw16 ds6 dk1 (default) 58.29 (39.5%), hp1
// 51.66 (44.6%), dw8 slower (77+). Both kernels, best passing: 16 tokens ks2 129.52 (53.3%; MXFP4 126.87, 51.4%),
// 1 token MXFP4 ks4 17.96 (35.9%); with hp1 123.03 (56.1%) / 120.08 (54.3%) at 16 tokens. Hence the defaults since:
// gate/up k split 4 at 1 token and 2 from 2 tokens on (fp4_moe.cu), down unchanged, hp1 off at the time (its
// gate/up tests failed only on the h check's bound, which did not allow for the fp16 rounding of packed h; the bound
// was corrected in tests/gpu/test_fp4_moe.cpp and passed on a GPU in session 5; hp1 is the default since session 6,
// docs/fp4.md). Unexplained: at
// 1 token, NVFP4 ks2 in the both-kernel graph measured 25.0 us (24.5 with hp1) though its kernels alone sum to
// 20.1, while the decode with "v2 ks2 dw16 dk2 hp1" was faster than the default (below); so ks2 is not the 1-token
// default. ncu (one launch each, 1 token, NVFP4, defaults of be74d84): gate/up 16.6 us, DRAM 25.5%, issue slots
// 40% busy, 1.07 eligible warps per scheduler, 6.3 cycles per issued instruction, 102 registers, achieved occupancy
// 20%; down 12.7 us, DRAM 16.8%, issue 41%, 97 registers, occupancy 25%. 16 tokens: gate/up 94.0 us, DRAM 47.6%,
// issue 67%, 128 registers, occupancy 22%; down 74.7 us, DRAM 29.8%, issue 63%, occupancy 25%. So at 1 token
// latency-bound (few eligible warps, neither DRAM nor issue saturated), at 16 tokens nearer issue-bound.
// Decode, Qwen3-30B-A3B shape, random weights, batch 1, context 1024, graph: bf16 experts 197.3 tok/s (39.6% of
// roofline), NVFP4 262.6 (30.5%, 1.33x; v1 in an earlier run: 203.8), NVFP4 "v2 ks2 dw16 dk2 hp1" 265.6 (30.8%, 1.35x).
// Tests: every non-hp1 configuration passes (worst 0.0082 of the h bound, 0.007 of the output bound; hp1 down 0.007);
// memcheck and racecheck clean.
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include "cuda/stream.h"
#include "fp4_moe/fp4_moe_device.cuh"

namespace tachyon::kernels::fp4_moe_detail {

namespace {

// Lane (g, t) of n8 tile j is MMA column g: entry 4 j + g / 2, its hi part (g even) or lo part (g odd). Its B
// fragment of k16 step `sub` is the 16-byte piece at columns 16 sub + 4 t .. + 3 of the 64-column tile (the layout's
// k permutation): four floats of x or h (split below), or four packed h words (picked below). nullptr rows read 0.
template <int NT, typename Element, typename Vector>
__device__ __forceinline__ void load_columns(const Element* const (&row)[NT], int column0, int t, Vector (&v)[NT][4]) {
  static_assert(sizeof(Element) == 4 && sizeof(Vector) == 16, "four 32-bit columns per piece");
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int sub = 0; sub < 4; ++sub)
      v[j][sub] = row[j] ? __ldg(reinterpret_cast<const Vector*>(row[j] + column0 + 16 * sub + 4 * t)) : Vector{};
}

// hi = fp16(x / 16) (lo_select 0) or lo = fp16(x / 16 - hi) (lo_select 1), as an fp16 pair.
__device__ __forceinline__ uint32_t hi_or_lo(float a, float b, float lo_select) {
  a *= kInputScale;
  b *= kInputScale;
  const __half2 h = __floats2half2_rn(a, b);
  const float2 back = __half22float2(h);
  return half2_bits(__floats2half2_rn(fmaf(-lo_select, back.x, a), fmaf(-lo_select, back.y, b)));
}

template <int NT>
__device__ __forceinline__ void split_packed(const float4 (&v)[NT][4], float lo_select, uint32_t (&b)[NT][4][2]) {
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int sub = 0; sub < 4; ++sub) {
      b[j][sub][0] = hi_or_lo(v[j][sub].x, v[j][sub].y, lo_select);
      b[j][sub][1] = hi_or_lo(v[j][sub].z, v[j][sub].w, lo_select);
    }
}

// Packed h (Fp4MoeTuning::packed_h): gate/up writes each h value already split, as one 32-bit word (fp16 hi of
// h / 16 in the low half, fp16 lo in the high half); the down kernel's lanes then only pick their halves (one byte
// permute per B register) instead of converting: 2 instead of 16 instructions per k16 step and n8 tile (pack_hi_lo,
// fp4_moe_device.cuh).
// selector 0x5410: the hi halves of two words (lanes of even columns), 0x7632: the lo halves (odd columns).
template <int NT>
__device__ __forceinline__ void pick_packed(const uint4 (&v)[NT][4], uint32_t selector, uint32_t (&b)[NT][4][2]) {
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int sub = 0; sub < 4; ++sub) {
      b[j][sub][0] = __byte_perm(v[j][sub].x, v[j][sub].y, selector);
      b[j][sub][1] = __byte_perm(v[j][sub].z, v[j][sub].w, selector);
    }
}

// Load and split in one go (no float4 array kept live): for 3..4 n8 tiles, where registers are short.
template <int NT>
__device__ __forceinline__ void load_split(const float* const (&row)[NT], int column0, int t, float lo_select,
                                           uint32_t (&b)[NT][4][2]) {
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int sub = 0; sub < 4; ++sub) {
      const float4 v = row[j] ? __ldg(reinterpret_cast<const float4*>(row[j] + column0 + 16 * sub + 4 * t))
                              : make_float4(0.f, 0.f, 0.f, 0.f);
      b[j][sub][0] = hi_or_lo(v.x, v.y, lo_select);
      b[j][sub][1] = hi_or_lo(v.z, v.w, lo_select);
    }
}

// acc[j] += this tile's products. With one n8 tile, each scale block's MMAs start from zero (independent chains:
// NVFP4 4 blocks of one k16 step, MXFP4 2 blocks of two) and are scaled once; with more n8 tiles their MMAs are
// already independent, and one partial set (scaled at each block's end) keeps the registers down.
template <int NT, bool NV>
__device__ __forceinline__ void tile_product_packed(const uint4& codes, const uint8_t* scale_bytes, int g,
                                                    const uint32_t (&b)[NT][4][2], float (&acc)[NT][4]) {
  float scale_g[4], scale_g8[4];
  tile_scales<NV>(scale_bytes, g, scale_g, scale_g8);
  const uint32_t words[4] = {codes.x, codes.y, codes.z, codes.w};
  constexpr int kBlocks = NV ? 4 : 2;
  constexpr int kChains = NT == 1 ? kBlocks : 1;
  float part[kChains][NT][4];
#pragma unroll
  for (int k = 0; k < kChains; ++k)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) part[k][j][r] = 0.0f;
  auto scale_into_acc = [&](float (&q)[NT][4], int block) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      acc[j][0] += q[j][0] * scale_g[block];
      acc[j][1] += q[j][1] * scale_g[block];
      acc[j][2] += q[j][2] * scale_g8[block];
      acc[j][3] += q[j][3] * scale_g8[block];
#pragma unroll
      for (int r = 0; r < 4; ++r) q[j][r] = 0.0f;
    }
  };
#pragma unroll
  for (int sub = 0; sub < 4; ++sub) {
    const uint32_t a[4] = {decode_pair(words[sub], 0), decode_pair(words[sub], 1), decode_pair(words[sub], 2),
                           decode_pair(words[sub], 3)};
    const int block = NV ? sub : sub >> 1;
    float (&q)[NT][4] = part[kChains == 1 ? 0 : block];
#pragma unroll
    for (int j = 0; j < NT; ++j) mma_f16_16x8x16(q[j], a, b[j][sub][0], b[j][sub][1]);
    if (kChains == 1 && (NV || (sub & 1))) scale_into_acc(q, block);
  }
  if constexpr (kChains > 1) {
#pragma unroll
    for (int k = 0; k < kChains; ++k) scale_into_acc(part[k], k);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// gate/up: grid (row tiles / (WARPS / K_SPLIT), expert slots); K_SPLIT warps share a row tile and split H.

// Staged activations (the kernels for 1..4 tokens, STAGED_X): every warp of a block reads the same token rows of
// x, and each lane used to split its float4s into fp16 hi / lo at every step (~80 of the step loop's 339 SASS
// instructions at 1 token, NVFP4). Instead the block splits the slot's rows ONCE, into packed words (pack_hi_lo,
// as packed h) in shared memory after the ring, and a step only picks its halves (one byte permute per B
// register). Rows are kStagedPad words longer than x's so that the four entries' 64-byte pieces a warp reads at
// once fall on different banks. Shared memory: n_tokens x (cols + kStagedPad) x 4 bytes on top of the ring.
constexpr int kStagedPad = 16;

inline size_t staged_x_bytes(int n_tokens, int cols) {
  return static_cast<size_t>(n_tokens) * (cols + kStagedPad) * sizeof(uint32_t);
}

// EPI: the gpt-oss epilogue (biases, clamped SwiGLU) compiled in; separate instances, so the plain kernels are
// exactly what they were.
template <int WARPS, int K_SPLIT, int STAGES, int NT, bool NV, bool PACKED_H, bool EPI, bool STAGED_X, typename P>
__device__ __forceinline__ void gate_up_body(const P& p, uint4* ring, int expert, int entry_base,
                                             int n_cols, int row_tile, int k_part, bool rows_active, int kt_begin,
                                             int n_steps) {
  static_assert(!STAGED_X || NT == 1, "staged activations: at most 4 entries per slot");
  using T = Tile<NV>;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int col_tiles = p.cols / kTileCols;
  const int64_t row_offset = static_cast<int64_t>(row_tile) * col_tiles * T::kBytes;
  const uint8_t* gate_tiles = p.gate + expert * p.gate_stride + row_offset;
  const uint8_t* up_tiles = p.up + expert * p.up_stride + row_offset;
  uint4* my_ring = ring + warp * STAGES * 2 * T::kChunks;
  auto issue = [&](int step) {
    if (step < n_steps) {
      uint4* stage = my_ring + (step % STAGES) * 2 * T::kChunks;
      const int64_t offset = static_cast<int64_t>(kt_begin + step) * T::kBytes;
      copy_tile<NV>(stage, gate_tiles + offset, lane, 0);
      copy_tile<NV>(stage + T::kChunks, up_tiles + offset, lane, T::kScaleChunks);
    }
    cp_async_commit();
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) issue(s);

  const float lo_select = (g & 1) ? 1.0f : 0.0f;
  const uint32_t selector = (g & 1) ? 0x7632u : 0x5410u;  // pick_packed: lo halves for odd columns
  const int stride = p.cols + kStagedPad;
  uint32_t* staged = reinterpret_cast<uint32_t*>(ring + WARPS * STAGES * 2 * T::kChunks);  // STAGED_X rows
  const float* x_row[NT];
  if constexpr (STAGED_X) {
    // Entry e of the slot is row e of the staged block; every thread splits a share of the slot's rows.
    const int quads = p.cols / 4;
    for (int entry = 0; entry < n_cols; ++entry) {
      const int token = p.sorted_assignments[entry_base + entry] / p.top_k;
      const float4* in = reinterpret_cast<const float4*>(p.x + static_cast<int64_t>(token) * p.cols);
      uint4* out = reinterpret_cast<uint4*>(staged + entry * stride);
#pragma unroll 4
      for (int q = threadIdx.x; q < quads; q += WARPS * 32) {
        const float4 v = __ldg(in + q);
        out[q] = make_uint4(pack_hi_lo(v.x), pack_hi_lo(v.y), pack_hi_lo(v.z), pack_hi_lo(v.w));
      }
    }
    __syncthreads();
  } else {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int entry = 4 * j + (g >> 1);
      x_row[j] = entry < n_cols
                     ? p.x + static_cast<int64_t>(p.sorted_assignments[entry_base + entry] / p.top_k) * p.cols
                     : nullptr;
    }
  }
  // STAGED_X: this lane's staged row (entry g / 2), or none past the slot's entries.
  const uint32_t* my_staged = (g >> 1) < n_cols ? staged + (g >> 1) * stride + 4 * t : nullptr;
  float acc[2][NT][4];
#pragma unroll
  for (int w = 0; w < 2; ++w)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[w][j][r] = 0.0f;
  // The next step's activations one step ahead, up to 2 n8 tiles (beyond, the registers cost occupancy).
  constexpr bool kPrefetch = NT <= 2 && !STAGED_X;
  float4 v[kPrefetch ? NT : 1][4];
  if constexpr (kPrefetch)
    if (n_steps > 0) load_columns<NT>(x_row, kt_begin * kTileCols, t, v);
  for (int step = 0; step < n_steps; ++step) {
    uint32_t b[NT][4][2];
    if constexpr (STAGED_X) {
      uint4 w[NT][4];
      const int column0 = (kt_begin + step) * kTileCols;
#pragma unroll
      for (int sub = 0; sub < 4; ++sub)
        w[0][sub] = my_staged ? *reinterpret_cast<const uint4*>(my_staged + column0 + 16 * sub)
                              : make_uint4(0u, 0u, 0u, 0u);
      pick_packed<NT>(w, selector, b);
    } else if constexpr (kPrefetch) {
      split_packed<NT>(v, lo_select, b);
      if (step + 1 < n_steps) load_columns<NT>(x_row, (kt_begin + step + 1) * kTileCols, t, v);
    } else {
      load_split<NT>(x_row, (kt_begin + step) * kTileCols, t, lo_select, b);
    }
    cp_async_wait<STAGES - 2>();
    __syncwarp();  // scale pieces were copied by other lanes
    const uint4* stage = my_ring + (step % STAGES) * 2 * T::kChunks;
#pragma unroll
    for (int w = 0; w < 2; ++w)
      tile_product_packed<NT, NV>(stage[w * T::kChunks + lane],
                                  reinterpret_cast<const uint8_t*>(stage + w * T::kChunks + 32), g, b, acc[w]);
    __syncwarp();  // the stage just read is refilled below
    issue(step + STAGES - 1);
  }
  cp_async_wait<0>();

  // val[w][j][r]: matrix w, row g + 8 r, entry 4 j + t (hi column + lo column).
  float val[2][NT][2];
#pragma unroll
  for (int w = 0; w < 2; ++w)
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      val[w][j][0] = acc[w][j][0] + acc[w][j][1];
      val[w][j][1] = acc[w][j][2] + acc[w][j][3];
    }
  if constexpr (K_SPLIT > 1) {
    // The rings are free now (every copy of every warp has landed once all warps pass the barrier): the
    // partials of k parts 1.. go there, [warp][w][j][r][lane].
    __syncthreads();
    float* partial = reinterpret_cast<float*>(ring);
    auto at = [&](int wp, int w, int j, int r) { return partial + (((wp * 2 + w) * NT + j) * 2 + r) * 32 + lane; };
    if (k_part != 0) {
#pragma unroll
      for (int w = 0; w < 2; ++w)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int r = 0; r < 2; ++r) *at(warp, w, j, r) = val[w][j][r];
    }
    __syncthreads();
    if (k_part != 0) return;
#pragma unroll
    for (int other = 1; other < K_SPLIT; ++other)
#pragma unroll
      for (int w = 0; w < 2; ++w)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int r = 0; r < 2; ++r) val[w][j][r] += *at(warp + other, w, j, r);
  }
  if (!rows_active) return;
  const float gate_scale = (p.gate_scales ? p.gate_scales[expert] : 1.0f) * kOutputScale;
  const float up_scale = (p.up_scales ? p.up_scales[expert] : 1.0f) * kOutputScale;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int entry = 4 * j + t;
    if (entry < n_cols)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int64_t at = static_cast<int64_t>(entry_base + entry) * p.rows + row_tile * kTileRows + g + 8 * r;
        float value;
        if constexpr (EPI) {  // gpt-oss
          const int row = row_tile * kTileRows + g + 8 * r;
          value = clamped_swiglu(val[0][j][r] * gate_scale + (p.gate_bias ? p.gate_bias[expert * p.bias_stride + row] : 0.0f),
                                 val[1][j][r] * up_scale + (p.up_bias ? p.up_bias[expert * p.bias_stride + row] : 0.0f),
                                 p.swiglu_alpha, p.swiglu_limit);
        } else {
          value = silu(val[0][j][r] * gate_scale) * (val[1][j][r] * up_scale);
        }
        if constexpr (PACKED_H)
          reinterpret_cast<uint32_t*>(p.h)[at] = pack_hi_lo(value);
        else
          p.h[at] = value;
      }
  }
}

// Kernels with more than one n8 tile per expert are capped at 128 registers (16 warps per SM): at 16 tokens most
// experts take the 1-tile path, which needs far fewer, and would otherwise pay for the rare 4-tile one.
template <int WARPS, int K_SPLIT, int STAGES, int MAX_NT, bool NV, bool PACKED_H, bool EPI>
__global__ void __launch_bounds__(WARPS * 32, MAX_NT > 1 ? 512 / (WARPS * 32) : 1) fp4_gate_up_v2_kernel(
    std::conditional_t<EPI, GateUpEpilogueParams, GateUpParams> p) {
  wait_for_previous_kernel();    // the routing tables come from the previous kernel
  allow_next_kernel_to_start();  // the down kernel may start streaming weights; it waits for h itself
  const int slot = blockIdx.y;
  // One memory round trip for the four table reads (slot < max_active_experts = gridDim.y: in bounds whether or
  // not the slot is active), instead of the count first and the slot's entries after it: the exit test reads all
  // four, so the compiler cannot sink the slot's reads below it (for an active slot the last two terms are false).
  const int active = *p.active_count, expert = p.active_experts[slot];
  const int entry_base = p.slot_offsets[slot], entry_end = p.slot_offsets[slot + 1];
  if (slot >= active || entry_end < entry_base || expert < 0) return;  // block-uniform
  const int warp = threadIdx.x >> 5;
  const int n_cols = entry_end - entry_base;
  constexpr int kTilesPerBlock = WARPS / K_SPLIT;
  const int row_tiles = p.rows / kTileRows, col_tiles = p.cols / kTileCols;
  const int row_tile = blockIdx.x * kTilesPerBlock + warp / K_SPLIT, k_part = warp % K_SPLIT;
  const bool rows_active = row_tile < row_tiles;
  const int kt_begin = col_tiles * k_part / K_SPLIT, kt_end = col_tiles * (k_part + 1) / K_SPLIT;
  const int n_steps = rows_active ? kt_end - kt_begin : 0;
  const int safe_row_tile = min(row_tile, row_tiles - 1);
  extern __shared__ uint4 ring[];  // [warp][stage][gate, up][T::kChunks]
  const int nt = min((n_cols + 3) / 4, MAX_NT);  // block-uniform: every warp takes the same branch
  constexpr bool kStagedX = MAX_NT == 1;
  if constexpr (MAX_NT >= 4)
    if (nt == 4)
      return gate_up_body<WARPS, K_SPLIT, STAGES, 4, NV, PACKED_H, EPI, false>(p, ring, expert, entry_base, n_cols, safe_row_tile, k_part,
                                                         rows_active, kt_begin, n_steps);
  if constexpr (MAX_NT >= 3)
    if (nt == 3)
      return gate_up_body<WARPS, K_SPLIT, STAGES, 3, NV, PACKED_H, EPI, false>(p, ring, expert, entry_base, n_cols, safe_row_tile, k_part,
                                                         rows_active, kt_begin, n_steps);
  if constexpr (MAX_NT >= 2)
    if (nt == 2)
      return gate_up_body<WARPS, K_SPLIT, STAGES, 2, NV, PACKED_H, EPI, false>(p, ring, expert, entry_base, n_cols, safe_row_tile, k_part,
                                                         rows_active, kt_begin, n_steps);
  gate_up_body<WARPS, K_SPLIT, STAGES, 1, NV, PACKED_H, EPI, kStagedX>(p, ring, expert, entry_base, n_cols, safe_row_tile, k_part, rows_active,
                                              kt_begin, n_steps);
}

// ---------------------------------------------------------------------------------------------------------------
// down + combine: grid (row tiles of H). Work items (expert slot, k part of its I columns) go round-robin to the
// block's warps; each item's weighted result is added into the warp's [16 rows][16 tokens] tile in shared memory,
// and the warps' tiles are summed in a fixed order at the end (deterministic, no atomics).

// BIAS: the gpt-oss down bias compiled in (separate instances, as EPI above).
template <int STAGES, int NT, bool NV, bool PACKED_H, bool BIAS, typename P, typename Issue>
__device__ __forceinline__ void down_item(const P& p, float (&out_tile)[kTileRows][16], const uint4* my_ring,
                                          int expert, int entry_base, int n_cols, int kt0, int item_tiles, int step0,
                                          Issue& issue) {
  using T = Tile<NV>;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const float lo_select = (g & 1) ? 1.0f : 0.0f;
  const uint32_t selector = (g & 1) ? 0x7632u : 0x5410u;
  const float* x_row[NT];
  const uint32_t* packed_row[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int entry = 4 * j + (g >> 1);
    x_row[j] = entry < n_cols ? p.h + static_cast<int64_t>(entry_base + entry) * p.cols : nullptr;
    packed_row[j] = reinterpret_cast<const uint32_t*>(x_row[j]);
  }
  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[j][r] = 0.0f;
  constexpr bool kPrefetch = NT <= 2;
  float4 v[kPrefetch && !PACKED_H ? NT : 1][4];
  uint4 w[kPrefetch && PACKED_H ? NT : 1][4];
  if constexpr (kPrefetch) {
    if constexpr (PACKED_H)
      load_columns<NT>(packed_row, kt0 * kTileCols, t, w);
    else
      load_columns<NT>(x_row, kt0 * kTileCols, t, v);
  }
  for (int i = 0; i < item_tiles; ++i) {
    uint32_t b[NT][4][2];
    if constexpr (kPrefetch && PACKED_H) {
      pick_packed<NT>(w, selector, b);
      if (i + 1 < item_tiles) load_columns<NT>(packed_row, (kt0 + i + 1) * kTileCols, t, w);
    } else if constexpr (kPrefetch) {
      split_packed<NT>(v, lo_select, b);
      if (i + 1 < item_tiles) load_columns<NT>(x_row, (kt0 + i + 1) * kTileCols, t, v);
    } else if constexpr (PACKED_H) {
      uint4 now[NT][4];
      load_columns<NT>(packed_row, (kt0 + i) * kTileCols, t, now);
      pick_packed<NT>(now, selector, b);
    } else {
      load_split<NT>(x_row, (kt0 + i) * kTileCols, t, lo_select, b);
    }
    cp_async_wait<STAGES - 2>();
    __syncwarp();
    const uint4* stage = my_ring + ((step0 + i) % STAGES) * T::kChunks;
    tile_product_packed<NT, NV>(stage[lane], reinterpret_cast<const uint8_t*>(stage + 32), g, b, acc);
    __syncwarp();
    issue(step0 + i + STAGES - 1);
  }
  const float scale = (p.scales ? p.scales[expert] : 1.0f) * kOutputScale;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int entry = 4 * j + t;
    if (entry < n_cols) {
      const int assignment = p.sorted_assignments[entry_base + entry];
      const int token = assignment / p.top_k;
      if constexpr (BIAS) {  // gpt-oss: w * (down h + b), the bias added once per expert (by its first k part)
        const float* b = p.bias + expert * p.bias_stride + blockIdx.x * kTileRows;
        const float b0 = kt0 == 0 ? b[g] : 0.0f, b8 = kt0 == 0 ? b[g + 8] : 0.0f;
        const float weight = p.topk_weights[assignment];
        out_tile[g][token] += weight * fmaf(scale, acc[j][0] + acc[j][1], b0);
        out_tile[g + 8][token] += weight * fmaf(scale, acc[j][2] + acc[j][3], b8);
      } else {
        const float weight = p.topk_weights[assignment] * scale;
        out_tile[g][token] += weight * (acc[j][0] + acc[j][1]);
        out_tile[g + 8][token] += weight * (acc[j][2] + acc[j][3]);
      }
    }
  }
  __syncwarp();  // out_tile writes ordered before the next item's (other lanes may add to the same token)
}

template <int WARPS, int STAGES, int MAX_NT, bool NV, bool PACKED_H, bool BIAS>
__global__ void __launch_bounds__(WARPS * 32, MAX_NT > 1 ? 512 / (WARPS * 32) : 1) fp4_down_v2_kernel(
    std::conditional_t<BIAS, DownBiasParams, DownParams> p, int k_split) {
  using T = Tile<NV>;
  __shared__ float out_tile[WARPS][kTileRows][16];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (!p.after_gate_up) wait_for_previous_kernel();
  const int active = *p.active_count;
  const int row_tile = blockIdx.x, col_tiles = p.cols / kTileCols, item_tiles = col_tiles / k_split;
  const int n_items = active * k_split;
  const int my_items = n_items > warp ? (n_items - warp + WARPS - 1) / WARPS : 0;
  const int n_steps = my_items * item_tiles;
  for (int i = lane; i < kTileRows * 16; i += 32) out_tile[warp][i / 16][i % 16] = 0.0f;

  extern __shared__ uint4 ring[];  // [warp][stage][T::kChunks]
  uint4* my_ring = ring + warp * STAGES * T::kChunks;
  // The copy cursor moves one tile per call (calls come in step order): no division per tile, only per item.
  auto item_tiles_at = [&](int local) {
    const int item = warp + local * WARPS;
    const int kt = (item % k_split) * item_tiles;
    return p.down + p.active_experts[item / k_split] * p.stride + (static_cast<int64_t>(row_tile) * col_tiles + kt) * T::kBytes;
  };
  int issue_local = 0, issue_tile = 0;
  const uint8_t* issue_src = my_items > 0 ? item_tiles_at(0) : nullptr;
  auto issue = [&](int step) {
    if (step < n_steps) {
      copy_tile<NV>(my_ring + (step % STAGES) * T::kChunks, issue_src + static_cast<int64_t>(issue_tile) * T::kBytes,
                    lane, 0);
      if (++issue_tile == item_tiles) {
        issue_tile = 0;
        if (++issue_local < my_items) issue_src = item_tiles_at(issue_local);
      }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) issue(s);
  if (p.after_gate_up) wait_for_previous_kernel();  // h comes from the gate/up kernel
  allow_next_kernel_to_start();

  for (int local = 0; local < my_items; ++local) {
    const int item = warp + local * WARPS, slot = item / k_split, kt0 = (item % k_split) * item_tiles;
    const int expert = p.active_experts[slot];
    const int entry_base = p.slot_offsets[slot], n_cols = p.slot_offsets[slot + 1] - entry_base;
    const int nt = min((n_cols + 3) / 4, MAX_NT);  // warp-uniform
    const int step0 = local * item_tiles;
    if (MAX_NT >= 4 && nt == 4)
      down_item<STAGES, (MAX_NT >= 4 ? 4 : 1), NV, PACKED_H, BIAS>(p, out_tile[warp], my_ring, expert, entry_base, n_cols, kt0,
                                                   item_tiles, step0, issue);
    else if (MAX_NT >= 3 && nt == 3)
      down_item<STAGES, (MAX_NT >= 3 ? 3 : 1), NV, PACKED_H, BIAS>(p, out_tile[warp], my_ring, expert, entry_base, n_cols, kt0,
                                                   item_tiles, step0, issue);
    else if (MAX_NT >= 2 && nt == 2)
      down_item<STAGES, (MAX_NT >= 2 ? 2 : 1), NV, PACKED_H, BIAS>(p, out_tile[warp], my_ring, expert, entry_base, n_cols, kt0,
                                                   item_tiles, step0, issue);
    else
      down_item<STAGES, 1, NV, PACKED_H, BIAS>(p, out_tile[warp], my_ring, expert, entry_base, n_cols, kt0, item_tiles, step0, issue);
  }
  cp_async_wait<0>();
  __syncthreads();
  for (int i = threadIdx.x; i < kTileRows * p.n_tokens; i += blockDim.x) {
    const int token = i / kTileRows, row = i % kTileRows;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) sum += out_tile[w][row][token];
    float* o = p.out + static_cast<int64_t>(token) * p.rows + row_tile * kTileRows + row;
    *o = p.accumulate ? *o + sum : sum;
  }
}

// Once per kernel: rings above 48 KB need the opt-in; the maximum carveout lets more blocks share an SM.
template <typename Kernel>
void configure(Kernel kernel, size_t dynamic_shared) {
  TACHYON_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(dynamic_shared)));
  TACHYON_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                          cudaSharedmemCarveoutMaxShared));
}

template <int WARPS, int K_SPLIT, int STAGES, int MAX_NT, bool NV, bool PACKED_H = false, bool EPI = false>
void launch_gate_up_t(const GateUpEpilogueParams& all, int max_active_experts, int n_tokens, cudaStream_t stream) {
  const std::conditional_t<EPI, GateUpEpilogueParams, GateUpParams>& p = all;  // plain kernels: the base part
  constexpr size_t kRing = static_cast<size_t>(WARPS) * STAGES * 2 * Tile<NV>::kBytes;
  static_assert(kRing >= static_cast<size_t>(WARPS) * 4 * 2 * 2 * 32 * sizeof(float), "k-split partials fit the ring");
  // The kernels for 1..4 tokens stage the activations after the ring (gate_up_body, STAGED_X).
  const size_t shared = kRing + (MAX_NT == 1 ? staged_x_bytes(n_tokens, p.cols) : 0);
  auto kernel = fp4_gate_up_v2_kernel<WARPS, K_SPLIT, STAGES, MAX_NT, NV, PACKED_H, EPI>;
  static const size_t configured = [&] {  // all the device allows (the staged rows vary with the token count)
    cudaFuncAttributes attributes{};
    TACHYON_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
    const size_t bytes = cuda::current_device_info().shared_memory_per_block_optin - attributes.sharedSizeBytes;
    configure(kernel, bytes);
    return bytes;
  }();
  if (shared > configured) {
    std::ostringstream message;
    message << "fp4_expert_gate_up: " << n_tokens << " tokens of " << p.cols << " columns need " << shared
            << " bytes of shared memory, more than the device's " << configured;
    throw std::runtime_error(message.str());
  }
  const int row_tiles = p.rows / kTileRows, tiles_per_block = WARPS / K_SPLIT;
  const dim3 grid((row_tiles + tiles_per_block - 1) / tiles_per_block, max_active_experts);
  launch_programmatic("fp4_gate_up_v2_kernel", kernel, grid, dim3(WARPS * 32), shared, stream, p);
}

template <int MAX_NT, bool NV>
void launch_gate_up_nt(const GateUpEpilogueParams& p, int max_active_experts, int n_tokens, int k_split, int stages,
                       bool packed_h, cudaStream_t stream) {
  const bool deep = stages > 4;
  const bool epilogue = p.swiglu_limit > 0;  // gpt-oss: only with 4 stages (fp4_moe.cu checks)
  // Packed h only with 4 stages (fewer instantiations).
#define TACHYON_GATE_UP(W, K)                                                                              \
  epilogue ? (packed_h ? launch_gate_up_t<W, K, 4, MAX_NT, NV, true, true>(p, max_active_experts, n_tokens, stream)   \
                       : launch_gate_up_t<W, K, 4, MAX_NT, NV, false, true>(p, max_active_experts, n_tokens, stream)) \
  : packed_h ? launch_gate_up_t<W, K, 4, MAX_NT, NV, true>(p, max_active_experts, n_tokens, stream)                 \
  : deep   ? launch_gate_up_t<W, K, 8, MAX_NT, NV>(p, max_active_experts, n_tokens, stream)               \
           : launch_gate_up_t<W, K, 4, MAX_NT, NV>(p, max_active_experts, n_tokens, stream)
  switch (k_split) {
    case 1: TACHYON_GATE_UP(4, 1); break;
    case 2: TACHYON_GATE_UP(4, 2); break;
    case 4: TACHYON_GATE_UP(4, 4); break;
    default: TACHYON_GATE_UP(8, 8); break;
  }
#undef TACHYON_GATE_UP
}

template <int WARPS, int STAGES, int MAX_NT, bool NV, bool PACKED_H = false, bool BIAS = false>
void launch_down_t(const DownBiasParams& all, int k_split, cudaStream_t stream) {
  const std::conditional_t<BIAS, DownBiasParams, DownParams>& p = all;  // plain kernels: the base part
  constexpr size_t kShared = static_cast<size_t>(WARPS) * STAGES * Tile<NV>::kBytes;
  auto kernel = fp4_down_v2_kernel<WARPS, STAGES, MAX_NT, NV, PACKED_H, BIAS>;
  static const bool configured = (configure(kernel, kShared), true);
  (void)configured;
  launch_programmatic("fp4_down_v2_kernel", kernel, dim3(p.rows / kTileRows), dim3(WARPS * 32), kShared, stream, p,
                      k_split);
}

template <int MAX_NT, bool NV>
void launch_down_nt(const DownBiasParams& p, int warps, int stages, int k_split, bool packed_h, cudaStream_t stream) {
  const bool deep = stages > 6;
  if (p.bias && packed_h)  // gpt-oss: only with 6 stages (fp4_moe.cu checks)
    warps > 8 ? launch_down_t<16, 6, MAX_NT, NV, true, true>(p, k_split, stream)
              : launch_down_t<8, 6, MAX_NT, NV, true, true>(p, k_split, stream);
  else if (p.bias)
    warps > 8 ? launch_down_t<16, 6, MAX_NT, NV, false, true>(p, k_split, stream)
              : launch_down_t<8, 6, MAX_NT, NV, false, true>(p, k_split, stream);
  else if (packed_h)  // only with 6 stages (fewer instantiations)
    warps > 8 ? launch_down_t<16, 6, MAX_NT, NV, true>(p, k_split, stream) : launch_down_t<8, 6, MAX_NT, NV, true>(p, k_split, stream);
  else if (warps > 8)
    deep ? launch_down_t<16, 12, MAX_NT, NV>(p, k_split, stream) : launch_down_t<16, 6, MAX_NT, NV>(p, k_split, stream);
  else
    deep ? launch_down_t<8, 12, MAX_NT, NV>(p, k_split, stream) : launch_down_t<8, 6, MAX_NT, NV>(p, k_split, stream);
}

}  // namespace

void launch_gate_up_v2(const GateUpEpilogueParams& p, int max_active_experts, int n_tokens, bool nv, int k_split, int stages,
                       bool packed_h, cudaStream_t stream) {
#define TACHYON_NT(N) nv ? launch_gate_up_nt<N, true>(p, max_active_experts, n_tokens, k_split, stages, packed_h, stream) \
                         : launch_gate_up_nt<N, false>(p, max_active_experts, n_tokens, k_split, stages, packed_h, stream)
  if (n_tokens <= 4) TACHYON_NT(1);
  else if (n_tokens <= 8) TACHYON_NT(2);
  else TACHYON_NT(4);
#undef TACHYON_NT
}

void launch_down_v2(const DownBiasParams& p, int n_tokens, bool nv, int warps, int stages, int k_split, bool packed_h,
                    cudaStream_t stream) {
#define TACHYON_NT(N) nv ? launch_down_nt<N, true>(p, warps, stages, k_split, packed_h, stream) \
                         : launch_down_nt<N, false>(p, warps, stages, k_split, packed_h, stream)
  if (n_tokens <= 4) TACHYON_NT(1);
  else if (n_tokens <= 8) TACHYON_NT(2);
  else TACHYON_NT(4);
#undef TACHYON_NT
}

}  // namespace tachyon::kernels::fp4_moe_detail
