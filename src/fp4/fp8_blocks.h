// Block-scaled FP8 (E4M3) matrices on the CPU: the "everything else at 8 bits" option for attention and dense
// weights (issue 4), in the layout of the FP8 checkpoints of DeepSeek-V3 and Qwen3-*-FP8:
//   weight            e4m3 [rows, cols]
//   weight_scale_inv  float32 [ceil(rows / 128), ceil(cols / 128)]   w = e4m3 * scale of its 128 x 128 tile
// (the name is theirs: the stored float multiplies the codes). A tile's scale is amax / 448, so its largest weight
// lands on 448 and nothing saturates; codes are round to nearest, ties to even (fp4_codec.h's e4m3 encoder).
// This is the CPU definition a GPU FP8 kernel will be checked against; so far only `tachyon eval` uses it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "fp4/fp4_blocks.h"

namespace tachyon::fp4 {

struct Fp8BlockMatrix {
  static constexpr int64_t kBlock = 128;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> codes;  // [rows, cols]
  std::vector<float> scales;   // [row_blocks(), col_blocks()]

  int64_t row_blocks() const { return (rows + kBlock - 1) / kBlock; }
  int64_t col_blocks() const { return (cols + kBlock - 1) / kBlock; }
  float scale_of(int64_t row, int64_t col) const { return scales[(row / kBlock) * col_blocks() + col / kBlock]; }
  void to_float(float* out) const;  // [rows, cols]
};

// w: float32 [rows, cols], any shape (edge tiles are partial); NaN or infinity throws Error naming `what`.
Fp8BlockMatrix quantize_fp8_block(const float* w, int64_t rows, int64_t cols, const std::string& what);


}  // namespace tachyon::fp4
