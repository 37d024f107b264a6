// Device bodies of the FP4 MoE kernels, version 2 (fp4_moe_v2.cu: the two-launch kernels; fp4_moe_fused.cu:
// version 3, both phases in one launch). Design and measurements: the header of fp4_moe_v2.cu.
#pragma once
#include "fp4_moe/fp4_moe_device.cuh"

namespace tachyon::kernels::fp4_moe_detail {

namespace {

// Lane (g, t) of n8 tile j is MMA column g: entry 4 j + g / 2, its hi part (g even) or lo part (g odd). Its B
// fragment of k16 step `sub` is the float4 at columns 16 sub + 4 t .. + 3 of the 64-column tile (the layout's k
// permutation), split below.
// COHERENT: the rows were written earlier in the same launch by other blocks (the fused kernel's h), so they are
// read through L2 (ld.global.cg); otherwise through the read-only path.
template <bool COHERENT>
__device__ __forceinline__ float4 load_activation4(const float* at) {
  if constexpr (COHERENT) return __ldcg(reinterpret_cast<const float4*>(at));
  else return __ldg(reinterpret_cast<const float4*>(at));
}

template <int NT, bool COHERENT = false>
__device__ __forceinline__ void load_raw(const float* const (&row)[NT], int column0, int t, float4 (&v)[NT][4]) {
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int sub = 0; sub < 4; ++sub)
      v[j][sub] = row[j] ? load_activation4<COHERENT>(row[j] + column0 + 16 * sub + 4 * t) : make_float4(0.f, 0.f, 0.f, 0.f);
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
// permute per B register) instead of converting: 2 instead of 16 instructions per k16 step and n8 tile.
__device__ __forceinline__ uint32_t pack_hi_lo(float value) {
  const float scaled = value * kInputScale;
  const __half hi = __float2half_rn(scaled);
  const __half lo = __float2half_rn(scaled - __half2float(hi));
  return static_cast<uint32_t>(__half_as_ushort(hi)) | static_cast<uint32_t>(__half_as_ushort(lo)) << 16;
}

template <int NT>
__device__ __forceinline__ void load_packed(const uint32_t* const (&row)[NT], int column0, int t, uint4 (&v)[NT][4]) {
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int sub = 0; sub < 4; ++sub)
      v[j][sub] = row[j] ? __ldg(reinterpret_cast<const uint4*>(row[j] + column0 + 16 * sub + 4 * t))
                         : make_uint4(0u, 0u, 0u, 0u);
}

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
template <int NT, bool COHERENT = false>
__device__ __forceinline__ void load_split(const float* const (&row)[NT], int column0, int t, float lo_select,
                                           uint32_t (&b)[NT][4][2]) {
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int sub = 0; sub < 4; ++sub) {
      const float4 v = row[j] ? load_activation4<COHERENT>(row[j] + column0 + 16 * sub + 4 * t)
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

// EPI: the gpt-oss epilogue (biases, clamped SwiGLU) compiled in; separate instances, so the plain kernels are
// exactly what they were.
template <int WARPS, int K_SPLIT, int STAGES, int NT, bool NV, bool PACKED_H, bool EPI, typename P>
__device__ __forceinline__ void gate_up_body(const P& p, uint4* ring, int expert, int entry_base,
                                             int n_cols, int row_tile, int k_part, bool rows_active, int kt_begin,
                                             int n_steps) {
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
  const float* x_row[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int entry = 4 * j + (g >> 1);
    x_row[j] = entry < n_cols
                   ? p.x + static_cast<int64_t>(p.sorted_assignments[entry_base + entry] / p.top_k) * p.cols
                   : nullptr;
  }
  float acc[2][NT][4];
#pragma unroll
  for (int w = 0; w < 2; ++w)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[w][j][r] = 0.0f;
  // The next step's activations one step ahead, up to 2 n8 tiles (beyond, the registers cost occupancy).
  constexpr bool kPrefetch = NT <= 2;
  float4 v[kPrefetch ? NT : 1][4];
  if constexpr (kPrefetch)
    if (n_steps > 0) load_raw<NT>(x_row, kt_begin * kTileCols, t, v);
  for (int step = 0; step < n_steps; ++step) {
    uint32_t b[NT][4][2];
    if constexpr (kPrefetch) {
      split_packed<NT>(v, lo_select, b);
      if (step + 1 < n_steps) load_raw<NT>(x_row, (kt_begin + step + 1) * kTileCols, t, v);
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
// ---------------------------------------------------------------------------------------------------------------
// down + combine: grid (row tiles of H). Work items (expert slot, k part of its I columns) go round-robin to the
// block's warps; each item's weighted result is added into the warp's [16 rows][16 tokens] tile in shared memory,
// and the warps' tiles are summed in a fixed order at the end (deterministic, no atomics).

// BIAS: the gpt-oss down bias compiled in (separate instances, as EPI above).
// COHERENT: h was written in this launch (the fused kernel), read through L2. row_tile: the block's 16 rows of H.
template <int STAGES, int NT, bool NV, bool PACKED_H, bool BIAS, bool COHERENT, typename P, typename Issue>
__device__ __forceinline__ void down_item(const P& p, float (&out_tile)[kTileRows][16], const uint4* my_ring,
                                          int row_tile, int expert, int entry_base, int n_cols, int kt0, int item_tiles,
                                          int step0, Issue& issue) {
  static_assert(!(COHERENT && PACKED_H), "packed h is read only by the two-launch kernels");
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
      load_packed<NT>(packed_row, kt0 * kTileCols, t, w);
    else
      load_raw<NT, COHERENT>(x_row, kt0 * kTileCols, t, v);
  }
  for (int i = 0; i < item_tiles; ++i) {
    uint32_t b[NT][4][2];
    if constexpr (kPrefetch && PACKED_H) {
      pick_packed<NT>(w, selector, b);
      if (i + 1 < item_tiles) load_packed<NT>(packed_row, (kt0 + i + 1) * kTileCols, t, w);
    } else if constexpr (kPrefetch) {
      split_packed<NT>(v, lo_select, b);
      if (i + 1 < item_tiles) load_raw<NT, COHERENT>(x_row, (kt0 + i + 1) * kTileCols, t, v);
    } else if constexpr (PACKED_H) {
      uint4 now[NT][4];
      load_packed<NT>(packed_row, (kt0 + i) * kTileCols, t, now);
      pick_packed<NT>(now, selector, b);
    } else {
      load_split<NT, COHERENT>(x_row, (kt0 + i) * kTileCols, t, lo_select, b);
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
        const float* b = p.bias + expert * p.bias_stride + row_tile * kTileRows;
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

template <typename Kernel>
void configure(Kernel kernel, size_t dynamic_shared) {
  TACHYON_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(dynamic_shared)));
  TACHYON_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                          cudaSharedmemCarveoutMaxShared));
}

}  // namespace

}  // namespace tachyon::kernels::fp4_moe_detail
