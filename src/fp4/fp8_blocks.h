// Block-scaled FP8 (E4M3) matrices on the CPU: the "everything else at 8 bits" option for attention and dense
// weights (issue 4), in the layout of the FP8 checkpoints of DeepSeek-V3 and Qwen3-*-FP8:
//   weight            e4m3 [rows, cols]
//   weight_scale_inv  float32 [ceil(rows / 128), ceil(cols / 128)]   w = e4m3 * scale of its 128 x 128 tile
// (the name is theirs: the stored float multiplies the codes). A tile's scale is amax / 448, so its largest weight
// lands on 448 and nothing saturates; codes are round to nearest, ties to even (fp4_codec.h's e4m3 encoder).
// This is the CPU definition the GPU FP8 gemv is checked against (tests/gpu/test_gemv_fp8.cpp); `tachyon quantize
// --attention fp8` writes it, and find_fp8_linears reads checkpoints stored this way.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "fp4/fp4_blocks.h"
#include "loader/weights.h"

namespace tachyon::fp4 {

struct Fp8BlockMatrix {
  static constexpr int64_t kBlock = 128;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> codes;  // [rows, cols]
  std::vector<float> scales;   // [row_blocks(), col_blocks()]

  static int64_t blocks(int64_t n) { return (n + kBlock - 1) / kBlock; }  // tiles along n rows or columns
  int64_t row_blocks() const { return blocks(rows); }
  int64_t col_blocks() const { return blocks(cols); }
  float scale_of(int64_t row, int64_t col) const { return scales[(row / kBlock) * col_blocks() + col / kBlock]; }
  void to_float(float* out) const;  // [rows, cols]
};

// out[r, c] = e4m3(codes[r, c]) * scales[r / 128, c / 128]: the one dequantization of both the in-memory matrix and a
// checkpoint's tensors.
void dequantize_fp8_block(const uint8_t* codes, const float* scales, int64_t rows, int64_t cols, float* out);

// w: float32 [rows, cols], any shape (edge tiles are partial); NaN or infinity throws Error naming `what`.
Fp8BlockMatrix quantize_fp8_block(const float* w, int64_t rows, int64_t cols, const std::string& what);

// A block-scaled FP8 linear of a checkpoint: "X.weight" F8_E4M3 [rows, cols] with "X.weight_scale_inv" F32 or BF16
// [ceil(rows / 128), ceil(cols / 128)] (the tensors point into the checkpoint).
struct Fp8Linear {
  std::string base;  // "model.layers.0.self_attn.q_proj"
  const TensorView* weight = nullptr;
  const TensorView* scale = nullptr;
  int64_t rows() const { return weight->shape[0]; }
  int64_t cols() const { return weight->shape[1]; }
  void to_float(float* out) const;  // [rows, cols]: code * its tile's scale
};

// Every F8_E4M3 "X.weight" with an "X.weight_scale_inv", in name order. Shapes and dtypes are checked (errors name
// the file and tensor); an F8_E4M3 weight without its scales is an error too (its values would mean nothing).
std::vector<Fp8Linear> find_fp8_linears(const WeightStore& store);


}  // namespace tachyon::fp4
