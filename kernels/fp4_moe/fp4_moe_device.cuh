// Device helpers shared by the versions of the FP4 MoE kernels (fp4_moe.cu: version 1 and the dispatch;
// fp4_moe_v2.cu: version 2). See fp4_moe.cu for the design.
#pragma once
#include <cstdint>

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"
#include "fp4_moe/fp4_moe.h"

namespace tachyon::kernels::fp4_moe_detail {

constexpr int kTileRows = 16, kTileCols = 64, kTileCodeBytes = 512;
constexpr int kGateUpWarps = 4, kGateUpStages = 4;
constexpr int kDownWarps = 8, kDownStages = 6;
// Activations enter the MMAs as x / 16 (fp16 range) and codes as code * 2^-14 (decode_pair): results are scaled
// back by 16 * 2^14.
constexpr float kInputScale = 0.0625f, kOutputScale = 16.0f * 16384.0f;

template <bool NV>
struct Tile {
  static constexpr int kScaleBytes = NV ? 64 : 32;
  static constexpr int kBytes = kTileCodeBytes + kScaleBytes;
  static constexpr int kChunks = kBytes / 16;        // 16-byte pieces: 32 of codes, then the scales
  static constexpr int kScaleChunks = kScaleBytes / 16;
};

inline int tile_bytes(Fp4Kind kind) { return kTileCodeBytes + (kind == Fp4Kind::Nvfp4 ? 64 : 32); }

// The fp16 pair p (0..3) of a lane's word: A-fragment register p, the exact code values times 2^-14 (code 0.5 is an
// fp16 subnormal, which the tensor cores take exactly; kOutputScale undoes the 2^-14).
__device__ __forceinline__ uint32_t decode_pair(uint32_t word, int p) {
  const uint32_t q = word << (4 * p);
  return (q & 0x80008000u) | ((q & 0x70007000u) >> 3);
}

__device__ __forceinline__ float e8m0_to_float(uint32_t byte) {
  return byte == 0 ? __uint_as_float(0x00400000u) : __uint_as_float(byte << 23);  // 2^-127 is a float subnormal
}

__device__ __forceinline__ float2 e4m3x2_to_float2(uint32_t two_bytes) {
  const uint32_t pair = e4m3x2_to_f16x2(two_bytes);
  return __half22float2(*reinterpret_cast<const __half2*>(&pair));
}

// Block scales of rows g and g + 8 from their scale words (NVFP4: the row's 4 e4m3 bytes; MXFP4: its 2 e8m0 bytes in
// the low half): [block] for each of the two rows.
template <bool NV>
__device__ __forceinline__ void scales_from_words(uint32_t lo, uint32_t hi, float (&row_g)[4], float (&row_g8)[4]) {
  if constexpr (NV) {
    const float2 a = e4m3x2_to_float2(lo & 0xffff), b = e4m3x2_to_float2(lo >> 16);
    const float2 c = e4m3x2_to_float2(hi & 0xffff), d = e4m3x2_to_float2(hi >> 16);
    row_g[0] = a.x, row_g[1] = a.y, row_g[2] = b.x, row_g[3] = b.y;
    row_g8[0] = c.x, row_g8[1] = c.y, row_g8[2] = d.x, row_g8[3] = d.y;
  } else {
    row_g[0] = e8m0_to_float(lo & 0xff), row_g[1] = e8m0_to_float(lo >> 8);
    row_g8[0] = e8m0_to_float(hi & 0xff), row_g8[1] = e8m0_to_float(hi >> 8);
    row_g[2] = row_g[3] = row_g8[2] = row_g8[3] = 0.0f;
  }
}

// Block scales of rows g and g + 8 of a tile in shared memory: [block] for each of the two rows.
template <bool NV>
__device__ __forceinline__ void tile_scales(const uint8_t* scale_bytes, int g, float (&row_g)[4], float (&row_g8)[4]) {
  if constexpr (NV)
    scales_from_words<NV>(*reinterpret_cast<const uint32_t*>(scale_bytes + 4 * g),
                          *reinterpret_cast<const uint32_t*>(scale_bytes + 4 * (g + 8)), row_g, row_g8);
  else
    scales_from_words<NV>(*reinterpret_cast<const uint16_t*>(scale_bytes + 2 * g),
                          *reinterpret_cast<const uint16_t*>(scale_bytes + 2 * (g + 8)), row_g, row_g8);
}

// One value as the MMAs' B input: fp16 hi of value / 16 in the low half, fp16 lo (value / 16 - hi) in the high half.
// A lane of an even MMA column picks the hi halves, one of an odd column the lo halves (__byte_perm 0x5410 / 0x7632),
// so the two columns' sum is the float32 value's product to ~2^-22.
__device__ __forceinline__ uint32_t pack_hi_lo(float value) {
  const float scaled = value * kInputScale;
  const __half hi = __float2half_rn(scaled);
  const __half lo = __float2half_rn(scaled - __half2float(hi));
  return static_cast<uint32_t>(__half_as_ushort(hi)) | static_cast<uint32_t>(__half_as_ushort(lo)) << 16;
}

// B fragments of one 64-column tile for the lane's columns: hi/lo pairs per (token tile, 16-column step, register).
// Copies a tile's codes (one 16-byte piece per lane) and scales (pieces 32.., by lanes first_scale_lane..).
template <bool NV>
__device__ __forceinline__ void copy_tile(uint4* stage, const uint8_t* src, int lane, int first_scale_lane) {
  cp_async_16B(stage + lane, src + 16 * lane);
  const int scale_piece = lane - first_scale_lane;
  if (scale_piece >= 0 && scale_piece < Tile<NV>::kScaleChunks)
    cp_async_16B(stage + 32 + scale_piece, src + kTileCodeBytes + 16 * scale_piece);
}

struct GateUpParams {
  const uint8_t* gate;
  const uint8_t* up;
  int64_t gate_stride, up_stride;
  const float* gate_scales;
  const float* up_scales;
  int rows, cols;  // I, H
  const float* x;
  float* h;
  const int* active_count;
  const int* active_experts;
  const int* slot_offsets;
  const int* sorted_assignments;
  int top_k;
};

// The gpt-oss epilogue (ExpertEpilogue; version 2 only): own kernel instances take these, so the plain instances
// (GateUpParams, DownParams) compile exactly as before. Biases of expert e at + e * bias_stride.
struct GateUpEpilogueParams : GateUpParams {
  const float* gate_bias;
  const float* up_bias;
  int64_t bias_stride;
  float swiglu_limit, swiglu_alpha;  // clamped SwiGLU when swiglu_limit > 0 (the epilogue instances run iff so)
};

struct DownParams {
  const uint8_t* down;
  int64_t stride;
  const float* scales;
  int rows, cols;  // H, I
  const float* h;
  const float* topk_weights;
  float* out;
  const int* active_count;
  const int* active_experts;
  const int* slot_offsets;
  const int* sorted_assignments;
  int top_k, n_tokens;
  bool accumulate, after_gate_up;
};

struct DownBiasParams : DownParams {
  const float* bias;  // expert e's down bias at bias + e * bias_stride, weighted like its product; the bias
  int64_t bias_stride;  // instances run iff bias != nullptr
};

// Version 2 (fp4_moe_v2.cu).
void launch_gate_up_v2(const GateUpEpilogueParams& p, int max_active_experts, int n_tokens, bool nv, int k_split, int stages,
                       bool packed_h, cudaStream_t stream);
void launch_down_v2(const DownBiasParams& p, int n_tokens, bool nv, int warps, int stages, int k_split, bool packed_h,
                    cudaStream_t stream);

}  // namespace tachyon::kernels::fp4_moe_detail
