// MXFP4 (OCP microscaling FP4) as gpt-oss checkpoints store their expert matrices, decoded to
// float32. Shared by the CPU reference and, later, as the definition GPU kernels are checked against.
//
// A matrix [rows, cols] is stored as two uint8 tensors:
//   blocks [rows, cols / 32, 16]: 32 e2m1 codes per block, two per byte; element 2i of a block is
//                                 the low nibble of byte i, element 2i + 1 the high nibble;
//   scales [rows, cols / 32]:     one E8M0 byte per block, the power of two 2^(byte - 127).
// An e2m1 code has bit 3 as the sign and bits 0-2 indexing {0, 0.5, 1, 1.5, 2, 3, 4, 6}.
// gpt-oss stacks experts in front: blocks [E, rows, cols / 32, 16], scales [E, rows, cols / 32].
#pragma once
#include <cmath>
#include <cstdint>

#include "loader/weights.h"

namespace tachyon {

inline constexpr int kMxfp4BlockSize = 32;
inline constexpr float kE2M1Values[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                          -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// The E8M0 scale byte as a float: 2^(v - 127); 0xff is NaN (as the F8_E8M0 dtype in core/dtype).
inline float e8m0_to_float(uint8_t v) { return v == 0xff ? NAN : std::ldexp(1.0f, static_cast<int>(v) - 127); }

// Decodes `count` values (a multiple of 32) from count / 2 block bytes and count / 32 scale bytes.
void mxfp4_decode(const uint8_t* blocks, const uint8_t* scales, int64_t count, float* out);

// A stack of MXFP4 matrices [experts, rows, cols] over a blocks/scales tensor pair, after checking
// their dtypes and shapes against each other and against the expected sizes.
class Mxfp4Matrices {
 public:
  Mxfp4Matrices() = default;
  Mxfp4Matrices(const TensorView& blocks, const TensorView& scales, int64_t experts, int64_t rows, int64_t cols);
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  // Decodes row `row` of matrix `expert` into out[cols].
  void row_to_float(int64_t expert, int64_t row, float* out) const;

 private:
  const uint8_t* blocks_ = nullptr;
  const uint8_t* scales_ = nullptr;
  int64_t experts_ = 0, rows_ = 0, cols_ = 0;
};

}  // namespace tachyon
