// fp4_moe: the expert MLPs of a MoE layer with FP4 weights (MXFP4: e2m1 + e8m0 per 32; NVFP4: e2m1 + e4m3 per 16
// and a float32 per matrix) for 1..16 tokens, in two launches after routing:
//   fp4_expert_gate_up:       h[entry] = silu(gate_e x[token]) * (up_e x[token])           grid (row tiles, slots)
//   fp4_expert_down_combine:  out[token] (+)= sum_j w[token, j] down_e h[entry(token, j)]  grid (hidden row tiles)
// Every touched expert's bytes are read exactly once per pass, however many tokens route to it.
//
// Design
// - Hopper has no FP4 tensor-core instruction and no e2m1 conversion (cvt ... e2m1x2 is sm_100a+). Codes are
//   decoded in registers with integer ops: the kernel tile layout (src/fp4/fp4_kernel_layout.h, written at load
//   time) orders each lane's nibbles so that (w << 4p) & 0x80008000 | ((w << 4p) & 0x70007000) >> 3 is an fp16
//   pair equal to the two codes times 2^-14 (sign to bit 15, exponent bits to the low exponent bits, mantissa bit
//   to the top mantissa bit; code 0.5 lands on an fp16 subnormal). The tensor cores take those pairs as they are
//   (fp16 subnormals are exact inputs of mma.sync; GpuFp4Moe.EveryCodeAndScaleDecodesExactly checks every code)
//   and the 2^14 is folded into the output scale (kOutputScale), so decoding is ~3 integer ops per weight pair and
//   nothing else (an mul.f16x2 by 2^14 per pair until 2026-11-26: 16 instructions per tile). The dot products run
//   on the tensor cores (mma.sync m16n8k16 f16 in, f32 accumulate), whose cost does not grow with the token count.
// - The layout also puts each lane's A-fragment codes of a 16-row x 64-column tile in one 16-byte load, and the
//   tile's block scales right after the codes: one tile = 576 (NVFP4) or 544 (MXFP4) contiguous bytes. A k16 MMA
//   step covers exactly one NVFP4 block (half an MXFP4 block), so block scales are applied to the step's fresh
//   float32 partial sums (acc += scale * partial), keeping the weights exact.
// - Activations are split into fp16 hi + lo (x / 16 ~= hi + lo to ~2^-22; the 1/16 keeps |x| < 1e6 in fp16 range),
//   two MMAs per step, read through L1 (__ldg). Below |x| ~ 1e-3 fp16 subnormals cap the split's absolute error at
//   ~5e-7 (x 16 / 2^25), which is what the tests' absolute terms allow for.
// - Tiles stream through a per-warp ring of shared-memory stages filled by cp.async (as gemv_bf16): the next
//   stages are always in flight. A lane reads back its own codes; scale bytes (copied by lanes 0..3) after a
//   __syncwarp.
// - gate/up: a warp owns 16 outputs (gate and up tiles share the B fragments), silu(g) * u in registers; k_split
//   warps of a block share outputs and split the input dimension (partials reduced in shared memory) so that
//   one token's 8 experts still fill the GPU.
// - down + combine: a block owns 16 hidden rows for ALL active experts (its 8 warps take every 8th expert), so the
//   weighted sum over a token's experts happens in shared memory in a fixed order: deterministic, no atomics,
//   no third launch. Launched right after gate/up with programmatic dependent launch, it starts streaming its
//   down tiles while gate/up finishes and waits (griddepcontrol.wait) only before reading h.
//
// Error bound (tests/gpu/test_fp4_moe.cpp): against the CPU reference (fp4_moe_reference, float32 math on the
// exactly dequantized weights), both formats: h within 1e-5 of the sums of |terms| of the gate and up products
// (+1e-7); out[t, i] within 1e-4 * sum_j w_j sum_k |down_e[i, k] h_j[k]| + 1e-6.
//
// Versions (Fp4MoeTuning, TACHYON_FP4_MOE, `tachyon eval --kernel-bench qwen3 --sweep`): version 1 is the code in
// this file; version 2 (fp4_moe_v2.cu, the default) packs hi and lo as two MMA columns, sizes the MMA N per expert,
// prefetches activations, and has configurable ring depth / warps / splits. Shared helpers: fp4_moe_device.cuh.
//
// Resources (sm_90a, ptxas -v): v1 gate/up 64..76 registers at 1..8 tokens, 95..106 at 9..16 (4 warps), down 48 /
// 60 (8 warps), no spills. v2 gate/up ~102 at 1..4 tokens; kernels for more than 4 tokens are capped at 128 (a few
// parameter spills at entry/exit only, none in the loops); down 95 (1..4 tokens), 117..128 beyond.
//
// Measured (H100 80GB HBM3, stream read 3117 GB/s, 2026-11-26, version 1, commit abdd5f6 + local): Qwen3-30B-A3B
// experts, both kernels: 1 token (8 experts, 21.2 MB NVFP4) 42.6 us = 16.0% of read; 16 tokens (81 experts,
// 215 MB) 498 us = 13.9%, slower than the BF16 expert kernels reading 3.5x the bytes (291 us, 84%). The time grew
// with the experts touched (~5.3 us each) at every token count: an SM retired one tile per ~265 cycles.
// Why (SASS of v1, no GPU profile yet): ~190 instructions per 576-byte tile (decode 76, activation split into
// hi/lo 32..64, e4m3 scales and their application 28, 8..16 MMAs), so at the read bandwidth (5.4 G tiles/s) the
// issue rate alone would need ~all of an H100's 4 x 132 x 1.98 G warp-instructions/s; and each warp's step was one
// serial chain (activation load from L1/L2 used at once -> split -> MMA -> dependent MMA -> scale FMA, the same
// registers reused by every k16 step) with 12..16 warps per SM to hide it. At 16 tokens every expert paid for 16
// columns (4 MMAs and two token tiles of splits per k16 step) though most had 1..2 tokens.
// Version 2 cuts the per-tile work where it is not the decode (MMAs halved at 1 token and quartered at 16, splits
// quartered at 16 tokens, no division per tile in the down kernel), hides the activation latency, makes the four
// k16 steps independent chains, and raises warps per SM (gate/up 8-way H split at 1 token: 23 warps per SM, every
// load of a warp in flight at once; down 16 warps and (expert, half) items). Its SASS (session 6, NVFP4, 1 token):
// gate/up 371 instructions per ring step of two tiles (144 decode, ~80 splitting the activations, ~40 scales, 8
// HMMA), 339 after the 2^14 fold; the down loop with packed h (Fp4MoeTuning::packed_h, "hp1": gate/up writes h
// already split, down only permutes; the process default since session 6, gpt-oss epilogue included) 267 per tile.
// Packed h: 7-11% faster down kernels, decode Qwen3 NVFP4 -0.8%, gpt-oss -1.6% (docs/fp4.md "Session 6").
// Version 2 measured (H100, 2026-11-26 10:04; table, sweep and ncu in the fp4_moe_v2.cu header):
// Qwen3-30B-A3B experts 1 token NVFP4 19.6 us = 34.7% of read, 16 tokens 133.3 us = 51.8%; decode 262.6 tok/s vs
// bf16 197.3. Next: two row tiles per gate/up warp (one split for four tiles), a persistent gate/up + down kernel
// (session 6 measured one such launch slower, docs/fp4.md). The 2^14 decode multiply is folded into kOutputScale
// since session 6.
#include "fp4_moe/fp4_moe.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

#include "cuda/stream.h"
#include "fp4_moe/fp4_moe_device.cuh"

namespace tachyon::kernels {

namespace {

using namespace fp4_moe_detail;

template <int N_TILES>
__device__ __forceinline__ void load_activations(const float* const (&x_row)[N_TILES], int column0, int t,
                                                 uint32_t (&b_hi)[N_TILES][4][2], uint32_t (&b_lo)[N_TILES][4][2]) {
#pragma unroll
  for (int j = 0; j < N_TILES; ++j) {
#pragma unroll
    for (int sub = 0; sub < 4; ++sub) {
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (x_row[j]) v = __ldg(reinterpret_cast<const float4*>(x_row[j] + column0 + 16 * sub + 4 * t));
      split_f16x2(v.x * kInputScale, v.y * kInputScale, b_hi[j][sub][0], b_lo[j][sub][0]);
      split_f16x2(v.z * kInputScale, v.w * kInputScale, b_hi[j][sub][1], b_lo[j][sub][1]);
    }
  }
}

// acc += this tile's contribution: 4 k16 steps, block scales applied to each block's fresh partial sums.
template <int N_TILES, bool NV>
__device__ __forceinline__ void tile_product(const uint4& codes, const uint8_t* scale_bytes, int g,
                                             const uint32_t (&b_hi)[N_TILES][4][2], const uint32_t (&b_lo)[N_TILES][4][2],
                                             float (&acc)[N_TILES][4]) {
  float scale_g[4], scale_g8[4];
  tile_scales<NV>(scale_bytes, g, scale_g, scale_g8);
  const uint32_t words[4] = {codes.x, codes.y, codes.z, codes.w};
  float part[N_TILES][4];
#pragma unroll
  for (int j = 0; j < N_TILES; ++j)
#pragma unroll
    for (int r = 0; r < 4; ++r) part[j][r] = 0.0f;
#pragma unroll
  for (int sub = 0; sub < 4; ++sub) {
    const uint32_t a[4] = {decode_pair(words[sub], 0), decode_pair(words[sub], 1), decode_pair(words[sub], 2),
                           decode_pair(words[sub], 3)};
#pragma unroll
    for (int j = 0; j < N_TILES; ++j) {
      mma_f16_16x8x16(part[j], a, b_hi[j][sub][0], b_hi[j][sub][1]);
      mma_f16_16x8x16(part[j], a, b_lo[j][sub][0], b_lo[j][sub][1]);
    }
    if (NV || (sub & 1)) {  // the end of a scale block (16 columns NVFP4, 32 MXFP4)
      const int block = NV ? sub : sub >> 1;
#pragma unroll
      for (int j = 0; j < N_TILES; ++j) {
        acc[j][0] += part[j][0] * scale_g[block];
        acc[j][1] += part[j][1] * scale_g[block];
        acc[j][2] += part[j][2] * scale_g8[block];
        acc[j][3] += part[j][3] * scale_g8[block];
#pragma unroll
        for (int r = 0; r < 4; ++r) part[j][r] = 0.0f;
      }
    }
  }
}



template <int N_TILES, int K_SPLIT, bool NV>
__global__ void __launch_bounds__(kGateUpWarps * 32) fp4_gate_up_kernel(GateUpParams p) {
  using T = Tile<NV>;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  wait_for_previous_kernel();     // the routing tables come from the previous kernel
  allow_next_kernel_to_start();   // the down kernel may start streaming weights; it waits for h itself
  const int slot = blockIdx.y;
  if (slot >= *p.active_count) return;  // block-uniform
  const int expert = p.active_experts[slot];
  const int entry_base = p.slot_offsets[slot], n_cols = p.slot_offsets[slot + 1] - entry_base;
  constexpr int kTilesPerBlock = kGateUpWarps / K_SPLIT;
  const int row_tiles = p.rows / kTileRows, col_tiles = p.cols / kTileCols;
  const int row_tile = blockIdx.x * kTilesPerBlock + warp / K_SPLIT, k_part = warp % K_SPLIT;
  const bool rows_active = row_tile < row_tiles;
  const int kt_begin = col_tiles * k_part / K_SPLIT, kt_end = col_tiles * (k_part + 1) / K_SPLIT;
  const int n_steps = rows_active ? kt_end - kt_begin : 0;
  const int64_t row_offset = static_cast<int64_t>(min(row_tile, row_tiles - 1)) * col_tiles * T::kBytes;
  const uint8_t* gate_tiles = p.gate + expert * p.gate_stride + row_offset;
  const uint8_t* up_tiles = p.up + expert * p.up_stride + row_offset;

  const float* x_row[N_TILES];
#pragma unroll
  for (int j = 0; j < N_TILES; ++j) {
    const int col = 8 * j + g;
    x_row[j] = col < n_cols ? p.x + static_cast<int64_t>(p.sorted_assignments[entry_base + col] / p.top_k) * p.cols
                            : nullptr;
  }

  extern __shared__ uint4 ring[];  // [warp][stage][gate, up][T::kChunks]
  uint4* my_ring = ring + warp * kGateUpStages * 2 * T::kChunks;
  auto issue = [&](int step) {
    if (step < n_steps) {
      uint4* stage = my_ring + (step % kGateUpStages) * 2 * T::kChunks;
      const int64_t offset = static_cast<int64_t>(kt_begin + step) * T::kBytes;
      copy_tile<NV>(stage, gate_tiles + offset, lane, 0);
      copy_tile<NV>(stage + T::kChunks, up_tiles + offset, lane, T::kScaleChunks);
    }
    cp_async_commit();  // possibly empty: one group per step keeps the wait count constant
  };
#pragma unroll
  for (int s = 0; s < kGateUpStages - 1; ++s) issue(s);

  float acc[2][N_TILES][4];
#pragma unroll
  for (int w = 0; w < 2; ++w)
#pragma unroll
    for (int j = 0; j < N_TILES; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[w][j][r] = 0.0f;

  for (int step = 0; step < n_steps; ++step) {
    uint32_t b_hi[N_TILES][4][2], b_lo[N_TILES][4][2];
    load_activations<N_TILES>(x_row, (kt_begin + step) * kTileCols, t, b_hi, b_lo);
    cp_async_wait<kGateUpStages - 2>();
    __syncwarp();  // scale pieces were copied by other lanes
    const uint4* stage = my_ring + (step % kGateUpStages) * 2 * T::kChunks;
#pragma unroll
    for (int w = 0; w < 2; ++w)
      tile_product<N_TILES, NV>(stage[w * T::kChunks + lane],
                                reinterpret_cast<const uint8_t*>(stage + w * T::kChunks + 32), g, b_hi, b_lo, acc[w]);
    __syncwarp();  // the stage just read is refilled below
    issue(step + kGateUpStages - 1);
  }
  cp_async_wait<0>();

  if constexpr (K_SPLIT > 1) {
    __shared__ float partial[kGateUpWarps][2][N_TILES][4][32];
    if (k_part != 0) {
#pragma unroll
      for (int w = 0; w < 2; ++w)
#pragma unroll
        for (int j = 0; j < N_TILES; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r) partial[warp][w][j][r][lane] = acc[w][j][r];
    }
    __syncthreads();
    if (k_part != 0) return;
#pragma unroll
    for (int other = 1; other < K_SPLIT; ++other)
#pragma unroll
      for (int w = 0; w < 2; ++w)
#pragma unroll
        for (int j = 0; j < N_TILES; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r) acc[w][j][r] += partial[warp + other][w][j][r][lane];
  }
  if (!rows_active) return;
  const float gate_scale = (p.gate_scales ? p.gate_scales[expert] : 1.0f) * kOutputScale;
  const float up_scale = (p.up_scales ? p.up_scales[expert] : 1.0f) * kOutputScale;
  // Accumulator r of token tile j: row g + 8 (r >> 1), column (entry) 8 j + 2 t + (r & 1).
#pragma unroll
  for (int j = 0; j < N_TILES; ++j)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int row = row_tile * kTileRows + g + 8 * (r >> 1), col = 8 * j + 2 * t + (r & 1);
      if (col < n_cols)
        p.h[static_cast<int64_t>(entry_base + col) * p.rows + row] = silu(acc[0][j][r] * gate_scale) * (acc[1][j][r] * up_scale);
    }
}



template <int N_TILES, bool NV>
__global__ void __launch_bounds__(kDownWarps * 32) fp4_down_combine_kernel(DownParams p) {
  using T = Tile<NV>;
  __shared__ float out_tile[kDownWarps][kTileRows][16];  // [warp][row][token]: each warp's weighted sums
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  // After fp4_expert_gate_up the routing tables are complete (that kernel waited for them before letting this one
  // start), so the weight stream can begin before h is ready.
  if (!p.after_gate_up) wait_for_previous_kernel();
  const int active = *p.active_count;
  const int row_tile = blockIdx.x, col_tiles = p.cols / kTileCols;
  const int my_slots = active > warp ? (active - warp + kDownWarps - 1) / kDownWarps : 0;
  const int n_steps = my_slots * col_tiles;
  for (int i = lane; i < kTileRows * 16; i += 32) out_tile[warp][i / 16][i % 16] = 0.0f;

  extern __shared__ uint4 ring[];  // [warp][stage][T::kChunks]
  uint4* my_ring = ring + warp * kDownStages * T::kChunks;
  auto issue = [&](int step) {
    if (step < n_steps) {
      const int slot = warp + (step / col_tiles) * kDownWarps, kt = step % col_tiles;
      const uint8_t* src = p.down + p.active_experts[slot] * p.stride +
                           (static_cast<int64_t>(row_tile) * col_tiles + kt) * T::kBytes;
      copy_tile<NV>(my_ring + (step % kDownStages) * T::kChunks, src, lane, 0);
    }
    cp_async_commit();
  };
#pragma unroll
  for (int s = 0; s < kDownStages - 1; ++s) issue(s);
  if (p.after_gate_up) wait_for_previous_kernel();  // h comes from the gate/up kernel
  allow_next_kernel_to_start();

  float acc[N_TILES][4];
  const float* x_row[N_TILES];
  int entry_base = 0, n_cols = 0, expert = 0;
  for (int step = 0; step < n_steps; ++step) {
    const int kt = step % col_tiles;
    if (kt == 0) {  // the next expert of this warp
      const int slot = warp + (step / col_tiles) * kDownWarps;
      expert = p.active_experts[slot];
      entry_base = p.slot_offsets[slot];
      n_cols = p.slot_offsets[slot + 1] - entry_base;
#pragma unroll
      for (int j = 0; j < N_TILES; ++j) {
        const int col = 8 * j + g;
        x_row[j] = col < n_cols ? p.h + static_cast<int64_t>(entry_base + col) * p.cols : nullptr;
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[j][r] = 0.0f;
      }
    }
    uint32_t b_hi[N_TILES][4][2], b_lo[N_TILES][4][2];
    load_activations<N_TILES>(x_row, kt * kTileCols, t, b_hi, b_lo);
    cp_async_wait<kDownStages - 2>();
    __syncwarp();
    const uint4* stage = my_ring + (step % kDownStages) * T::kChunks;
    tile_product<N_TILES, NV>(stage[lane], reinterpret_cast<const uint8_t*>(stage + 32), g, b_hi, b_lo, acc);
    if (kt == col_tiles - 1) {  // this expert is done: weighted into its tokens' sums
      const float scale = (p.scales ? p.scales[expert] : 1.0f) * kOutputScale;
#pragma unroll
      for (int j = 0; j < N_TILES; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int col = 8 * j + 2 * t + (r & 1);
          if (col < n_cols) {
            const int assignment = p.sorted_assignments[entry_base + col];
            out_tile[warp][g + 8 * (r >> 1)][assignment / p.top_k] += p.topk_weights[assignment] * acc[j][r] * scale;
          }
        }
    }
    __syncwarp();  // the stage is refilled below; out_tile writes ordered before the next expert's
    issue(step + kDownStages - 1);
  }
  cp_async_wait<0>();
  __syncthreads();
  for (int i = threadIdx.x; i < kTileRows * p.n_tokens; i += blockDim.x) {
    const int token = i / kTileRows, row = i % kTileRows;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kDownWarps; ++w) sum += out_tile[w][row][token];
    float* o = p.out + static_cast<int64_t>(token) * p.rows + row_tile * kTileRows + row;
    *o = p.accumulate ? *o + sum : sum;
  }
}

template <int N_TILES, int K_SPLIT, bool NV>
void launch_gate_up(dim3 grid, const GateUpParams& p, cudaStream_t stream) {
  const size_t shared = static_cast<size_t>(kGateUpWarps) * kGateUpStages * 2 * Tile<NV>::kBytes;
  launch_programmatic("fp4_gate_up_kernel", fp4_gate_up_kernel<N_TILES, K_SPLIT, NV>, grid, dim3(kGateUpWarps * 32),
                      shared, stream, p);
}

template <int N_TILES, bool NV>
void launch_gate_up_split(int k_split, dim3 grid, const GateUpParams& p, cudaStream_t stream) {
  switch (k_split) {
    case 1: launch_gate_up<N_TILES, 1, NV>(grid, p, stream); break;
    case 2: launch_gate_up<N_TILES, 2, NV>(grid, p, stream); break;
    default: launch_gate_up<N_TILES, 4, NV>(grid, p, stream); break;
  }
}

void check_matrices(const char* name, const Fp4ExpertMatrices& m, int rows, int cols) {
  TACHYON_REQUIRE(m.rows == rows && m.cols == cols, name, "expert matrix shapes do not match each other");
  TACHYON_REQUIRE(rows > 0 && rows % kTileRows == 0 && cols > 0 && cols % kTileCols == 0, name,
                  "FP4 expert matrices need rows % 16 == 0 and cols % 64 == 0");
  TACHYON_REQUIRE(m.tiles != nullptr && reinterpret_cast<uintptr_t>(m.tiles) % 16 == 0 && m.expert_stride % 16 == 0,
                  name, "tiles and expert_stride must be 16-byte aligned");
  TACHYON_REQUIRE(m.expert_stride >= fp4_tile_matrix_bytes(m.kind, rows, cols), name,
                  "expert_stride is smaller than one expert's tiles");
  TACHYON_REQUIRE((m.kind == Fp4Kind::Nvfp4) == (m.global_scales != nullptr), name,
                  "NVFP4 needs global_scales, MXFP4 takes none");
}

}  // namespace

int64_t fp4_tile_matrix_bytes(Fp4Kind kind, int rows, int cols) {
  return static_cast<int64_t>(rows / kTileRows) * (cols / kTileCols) * tile_bytes(kind);
}

Fp4MoeTuning parse_fp4_moe_tuning(const std::string& text) {
  Fp4MoeTuning t;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    auto value = [&](size_t prefix) {
      const std::string digits = word.substr(prefix);
      if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos)
        throw std::invalid_argument("parse_fp4_moe_tuning: bad field '" + word + "' in '" + text + "'");
      return std::stoi(digits);
    };
    if (word.rfind("ks", 0) == 0) t.k_split = value(2);
    else if (word.rfind("dw", 0) == 0) t.down_warps = value(2);
    else if (word.rfind("ds", 0) == 0) t.down_stages = value(2);
    else if (word.rfind("dk", 0) == 0) t.down_k_split = value(2);
    else if (word.rfind("hp", 0) == 0) t.packed_h = value(2);
    else if (word.rfind("v", 0) == 0) t.version = value(1);
    else if (word.rfind("s", 0) == 0) t.stages = value(1);
    else throw std::invalid_argument("parse_fp4_moe_tuning: unknown field '" + word + "' in '" + text + "'");
  }
  if (t.version < 0 || t.version > 2)
    throw std::invalid_argument("parse_fp4_moe_tuning: version is 1 or 2: '" + text + "'");
  return t;
}

std::string to_string(const Fp4MoeTuning& t) {
  std::string s = "v" + std::to_string(t.version);
  auto add = [&](const char* name, int v) {
    if (v) s += std::string(" ") + name + std::to_string(v);
  };
  add("ks", t.k_split);
  add("s", t.stages);
  add("dw", t.down_warps);
  add("ds", t.down_stages);
  add("dk", t.down_k_split);
  add("hp", t.packed_h);
  return s;
}

const Fp4MoeTuning& default_fp4_moe_tuning() {
  static const Fp4MoeTuning tuning = [] {
    const char* env = std::getenv("TACHYON_FP4_MOE");
    if (env && *env) return parse_fp4_moe_tuning(env);
    Fp4MoeTuning packed;  // packed h: the fastest measured (H100, 2026-11-26: Qwen3 NVFP4 decode -0.8%)
    packed.packed_h = 1;
    return packed;
  }();
  return tuning;
}

void fp4_expert_gate_up(const Fp4ExpertMatrices& gate, const Fp4ExpertMatrices& up, const ExpertRouting& routing,
                        const float* x, float* h, cudaStream_t stream, int k_split, const Fp4MoeTuning& tuning,
                        const ExpertEpilogue& epilogue) {
  const char* name = "fp4_expert_gate_up";
  check_matrices(name, gate, gate.rows, gate.cols);
  check_matrices(name, up, gate.rows, gate.cols);
  TACHYON_REQUIRE(gate.kind == up.kind, name, "gate and up must have the same FP4 format");
  TACHYON_REQUIRE(routing.n_tokens >= 1 && routing.n_tokens <= 16 && routing.top_k > 0, name, "1..16 tokens, top_k > 0");
  TACHYON_REQUIRE(reinterpret_cast<uintptr_t>(x) % 16 == 0, name, "x must be 16-byte aligned");
  if (routing.max_active_experts <= 0) return;
  GateUpEpilogueParams ep{};  // the plain kernels get its GateUpParams part only
  GateUpParams& p = ep;
  p = GateUpParams{gate.tiles, up.tiles, gate.expert_stride, up.expert_stride, gate.global_scales, up.global_scales,
                   gate.rows, gate.cols, x, h, routing.active_expert_count, routing.active_experts, routing.slot_offsets,
                   routing.sorted_assignments, routing.top_k};
  if (epilogue.any()) {
    TACHYON_REQUIRE(tuning.version != 1, name, "the gpt-oss epilogue (biases, clamped SwiGLU) is in version 2 only");
    TACHYON_REQUIRE(tuning.stages == 0 || tuning.stages == 4, name,
                    "the gpt-oss epilogue is compiled for 4 gate/up stages only (s4)");
    TACHYON_REQUIRE(!epilogue.down_bias, name, "down_bias belongs to fp4_expert_down_combine");
    TACHYON_REQUIRE(epilogue.swiglu_limit > 0, name, "gate/up biases are applied with the clamped SwiGLU only");
    TACHYON_REQUIRE(!(epilogue.gate_bias || epilogue.up_bias) || epilogue.gate_up_bias_stride >= gate.rows, name,
                    "gate_up_bias_stride must be >= rows");
    ep.gate_bias = epilogue.gate_bias;
    ep.up_bias = epilogue.up_bias;
    ep.bias_stride = epilogue.gate_up_bias_stride;
    ep.swiglu_limit = epilogue.swiglu_limit;
    ep.swiglu_alpha = epilogue.swiglu_alpha;
  }
  const int row_tiles = gate.rows / kTileRows;
  const bool nv = gate.kind == Fp4Kind::Nvfp4;
  if (k_split == 0) k_split = tuning.k_split;
  const int multiprocessors = cuda::current_device_info().multiprocessors;
  if (tuning.version != 1) {
    if (k_split != 1 && k_split != 2 && k_split != 4 && k_split != 8) {
      // Fewest warps per row tile (at least 2) that still give every SM ~8 warps, counting every possible expert
      // slot: at Qwen3-30B-A3B shapes 4 at 1 token, 2 from 2 tokens on. Measured (H100, sweep of 2026-11-26 10:04,
      // fp4_moe_v2.cu header): at 1 token ks4 beat the earlier ks8 (NVFP4 11.98 vs 12.16 us, MXFP4 11.47 vs 11.87,
      // the fastest MXFP4 configuration; ks2 was within noise for NVFP4); at 16 tokens ks2 beat the earlier ks1
      // (73.59 vs 75.26 us NVFP4, 72.27 vs 75.51 MXFP4, the fastest of both). 2, 4 and 8 tokens were not swept.
      k_split = 8;
      for (int candidate : {2, 4}) {
        if (static_cast<int64_t>(row_tiles) * candidate * routing.max_active_experts >= 8LL * multiprocessors) {
          k_split = candidate;
          break;
        }
      }
    }
    launch_gate_up_v2(ep, routing.max_active_experts, routing.n_tokens, nv, k_split, tuning.stages ? tuning.stages : 4,
                      tuning.packed_h != 0, stream);
    return;
  }
  if (k_split != 1 && k_split != 2 && k_split != 4) {
    // Fewest warps per output tile that still give every SM ~3 blocks (counting every possible expert slot).
    const int64_t target = 3LL * multiprocessors;
    k_split = 4;
    for (int candidate : {1, 2}) {
      const int64_t blocks = static_cast<int64_t>((row_tiles + kGateUpWarps / candidate - 1) / (kGateUpWarps / candidate)) *
                             routing.max_active_experts;
      if (blocks >= target) {
        k_split = candidate;
        break;
      }
    }
  }
  const int tiles_per_block = kGateUpWarps / k_split;
  const dim3 grid((row_tiles + tiles_per_block - 1) / tiles_per_block, routing.max_active_experts);
  if (routing.n_tokens <= 8) {
    nv ? launch_gate_up_split<1, true>(k_split, grid, p, stream) : launch_gate_up_split<1, false>(k_split, grid, p, stream);
  } else {
    nv ? launch_gate_up_split<2, true>(k_split, grid, p, stream) : launch_gate_up_split<2, false>(k_split, grid, p, stream);
  }
}

void fp4_expert_down_combine(const Fp4ExpertMatrices& down, const ExpertRouting& routing, const float* h,
                             const float* topk_weights, float* out, bool accumulate, cudaStream_t stream,
                             bool after_gate_up, const Fp4MoeTuning& tuning, const ExpertEpilogue& epilogue) {
  const char* name = "fp4_expert_down_combine";
  check_matrices(name, down, down.rows, down.cols);
  TACHYON_REQUIRE(routing.n_tokens >= 1 && routing.n_tokens <= 16 && routing.top_k > 0, name, "1..16 tokens, top_k > 0");
  TACHYON_REQUIRE(reinterpret_cast<uintptr_t>(h) % 16 == 0, name, "h must be 16-byte aligned");
  DownBiasParams bp{};  // the plain kernels get its DownParams part only
  DownParams& p = bp;
  p = DownParams{down.tiles, down.expert_stride, down.global_scales, down.rows, down.cols, h, topk_weights, out,
                 routing.active_expert_count, routing.active_experts, routing.slot_offsets, routing.sorted_assignments,
                 routing.top_k, routing.n_tokens, accumulate, after_gate_up};
  if (epilogue.down_bias) {
    TACHYON_REQUIRE(tuning.version != 1, name, "the gpt-oss down bias is in version 2 only");
    TACHYON_REQUIRE(tuning.down_stages == 0 || tuning.down_stages == 6, name,
                    "the gpt-oss down bias is compiled for 6 down stages only (ds6)");
    TACHYON_REQUIRE(epilogue.down_bias_stride >= down.rows, name, "down_bias_stride must be >= rows");
    bp.bias = epilogue.down_bias;
    bp.bias_stride = epilogue.down_bias_stride;
  }
  const bool nv = down.kind == Fp4Kind::Nvfp4;
  if (tuning.version != 1) {
    const int warps = tuning.down_warps == 8 ? 8 : 16;
    const int col_tiles = down.cols / kTileCols;
    // Items (expert, k part): at least one per warp when few experts are active (1 token: 8 experts, 16 warps:
    // 2 parts of 6 tiles each), whole experts otherwise; the parts must divide the expert's column tiles.
    int k_split = tuning.down_k_split;
    if (k_split <= 0)
      k_split = std::clamp((warps + std::max(1, routing.max_active_experts) - 1) / std::max(1, routing.max_active_experts), 1, 4);
    k_split = std::clamp(k_split, 1, col_tiles);
    while (col_tiles % k_split != 0) --k_split;
    launch_down_v2(bp, routing.n_tokens, nv, warps, tuning.down_stages ? tuning.down_stages : 6, k_split,
                   tuning.packed_h != 0, stream);
    return;
  }
  const dim3 grid(down.rows / kTileRows);
  const int threads = kDownWarps * 32;
  const size_t shared = static_cast<size_t>(kDownWarps) * kDownStages * tile_bytes(down.kind);
  auto kernel = routing.n_tokens <= 8 ? (nv ? fp4_down_combine_kernel<1, true> : fp4_down_combine_kernel<1, false>)
                                      : (nv ? fp4_down_combine_kernel<2, true> : fp4_down_combine_kernel<2, false>);
  launch_programmatic("fp4_down_combine_kernel", kernel, grid, threads, shared, stream, p);
}

void fp4_moe_experts(const Fp4ExpertMatrices& gate, const Fp4ExpertMatrices& up, const Fp4ExpertMatrices& down,
                     const ExpertRouting& routing, const float* x, const float* topk_weights, float* h_workspace,
                     float* out, bool accumulate, cudaStream_t stream, const Fp4MoeTuning& tuning,
                     const ExpertEpilogue& epilogue) {
  TACHYON_REQUIRE(down.cols == gate.rows && down.rows == gate.cols, "fp4_moe_experts",
                  "down must be [hidden, intermediate] for gate/up [intermediate, hidden]");
  fp4_expert_gate_up(gate, up, routing, x, h_workspace, stream, 0, tuning, epilogue.gate_up_part());
  // The down kernel may skip its entry wait only when a gate/up grid ran before it (it launches none when no
  // expert can be active).
  fp4_expert_down_combine(down, routing, h_workspace, topk_weights, out, accumulate, stream,
                          /*after_gate_up=*/routing.max_active_experts > 0, tuning, epilogue.down_part());
}

}  // namespace tachyon::kernels
