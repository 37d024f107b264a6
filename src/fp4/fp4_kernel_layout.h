// The tile layout that kernels/fp4_moe reads FP4 expert matrices in, written at load time from any checkpoint
// layout (ModelOpt, compressed-tensors, gpt-oss), and the CPU reference of the fused MoE those kernels compute.
//
// A matrix [rows, cols] (rows % 16 == 0, cols % 64 == 0) is cut into tiles of 16 rows x 64 columns, stored
// tile-row-major ([rows / 16][cols / 64]), each tile kFp4TileBytes(format) bytes:
//   bytes [0, 512):   codes. Lane l = 4 g + t of a warp owns bytes [16 l, 16 l + 16): four 32-bit words, word j
//                     for columns [16 j, 16 j + 16) of the tile, holding the codes of rows g and g + 8 at
//                     columns 16 j + 4 t + {0, 1, 2, 3} (call them s0..s3) in these nibbles (0 = least significant):
//                       n3 = (g, s0)  n7 = (g, s1)  n2 = (g+8, s0)  n6 = (g+8, s1)
//                       n1 = (g, s2)  n5 = (g, s3)  n0 = (g+8, s2)  n4 = (g+8, s3)
//                     so that (word << 4p) & 0x80008000 | ((word << 4p) & 0x70007000) >> 3 is, for p = 0..3, the
//                     fp16 pair (times 2^-14) of the m16n8k16 A fragment register p of that lane, with the k order
//                     s0, s1 | s2, s3 standing for MMA k = 2t, 2t+1 | 2t+8, 2t+9.
//   bytes [512, ...): block scales, [16 rows][blocks per tile]: NVFP4 4 e4m3 bytes per row (64 bytes),
//                     MXFP4 2 e8m0 bytes per row (32 bytes).
// NVFP4's per-matrix global scale travels beside the tiles (one float per expert).
#pragma once
#include <cstdint>
#include <vector>

#include "fp4/fp4_blocks.h"

namespace tachyon::fp4 {

inline constexpr int kFp4TileRows = 16;
inline constexpr int kFp4TileCols = 64;
inline constexpr int kFp4TileCodeBytes = 512;
inline constexpr int fp4_tile_scale_bytes(Fp4Format format) { return format == Fp4Format::Nvfp4 ? 64 : 32; }
inline constexpr int fp4_tile_bytes(Fp4Format format) { return kFp4TileCodeBytes + fp4_tile_scale_bytes(format); }
int64_t fp4_kernel_matrix_bytes(Fp4Format format, int64_t rows, int64_t cols);

// Tiles of one matrix; Error unless rows % 16 == 0 and cols % 64 == 0.
std::vector<uint8_t> pack_kernel_tiles(const Fp4MatrixView& matrix);
void pack_kernel_tiles(const Fp4MatrixView& matrix, uint8_t* out);
// The inverse (tests): codes and scales back in the row-major layout of Fp4Matrix.
Fp4Matrix unpack_kernel_tiles(const uint8_t* tiles, Fp4Format format, int64_t rows, int64_t cols, float global_scale);

// The CPU reference of kernels/fp4_moe: for token t and its choices j,
//   h = silu(gate_e x_t) * (up_e x_t),  out_t = sum_j weight_{t,j} down_e h   (e = expert_ids[t * top_k + j]),
// with weights dequantized exactly (float32) and float32 dot products. gate/up: [I, H], down: [H, I] per expert.
struct Fp4ExpertSet {
  std::vector<Fp4MatrixView> gate, up, down;  // one per expert
};
// With `epilogue` (gpt-oss, the kernels' ExpertEpilogue): g += gate_bias_e, u += up_bias_e,
// h = (clamp(u, -limit, limit) + 1) * min(g, limit) * sigmoid(alpha min(g, limit)), out_t += sum_j weight * down_bias_e.
struct Fp4MoeReferenceEpilogue {
  const float* gate_bias = nullptr;  // [E][I] or nullptr
  const float* up_bias = nullptr;    // [E][I]
  const float* down_bias = nullptr;  // [E][H]
  float swiglu_limit = 0;            // > 0: the clamped SwiGLU
  float swiglu_alpha = 0;
};
void fp4_moe_reference(const Fp4ExpertSet& experts, const int* expert_ids, const float* weights, int n_tokens, int top_k,
                       const float* x, float* out, const Fp4MoeReferenceEpilogue& epilogue = {});

}  // namespace tachyon::fp4
