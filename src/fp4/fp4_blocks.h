// Block-scaled FP4 matrices on the CPU: quantization (round to nearest) and dequantization of MXFP4 and NVFP4.
// These functions are the definition that the checkpoint layouts (fp4_layouts.h) and the GPU kernels
// (kernels/fp4_moe) are checked against.
//
// A matrix [rows, cols] is quantized along its rows (the K / in_features axis of a linear weight):
//   packed [rows, cols / 2]      two e2m1 codes per byte, element 2i in the low nibble;
//   scales [rows, cols / block]  one scale byte per block of consecutive elements of a row;
//   MXFP4: block 32, e8m0 scales:         w = e2m1 * 2^(scale - 127)                    (4.25 bits/weight)
//   NVFP4: block 16, e4m3 scales and one float32 global scale per matrix:
//                                         w = e2m1 * e4m3(scale) * global_scale          (4.5 bits/weight)
// NVFP4's global_scale is ModelOpt's weight_scale_2 (amax / (6 * 448)); compressed-tensors stores its inverse.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tachyon::fp4 {

enum class Fp4Format { Mxfp4, Nvfp4 };

inline constexpr int kMxfp4Block = 32;
inline constexpr int kNvfp4Block = 16;
inline int block_size(Fp4Format format) { return format == Fp4Format::Mxfp4 ? kMxfp4Block : kNvfp4Block; }
std::string_view format_name(Fp4Format format);  // "mxfp4", "nvfp4"
// Parses "mxfp4" / "nvfp4"; false otherwise.
bool parse_format(std::string_view name, Fp4Format* out);

// How an MXFP4 block picks its power-of-two scale from the block's largest magnitude amax.
enum class Mxfp4ScaleRule {
  // 2^ceil(log2(amax / 6)), computed on the float amax / 6 as triton_kernels (gpt-oss) does: no element
  // is clipped, but the largest may use only the 4 or 6 codes.
  RoundUp,
  // The OCP MX specification: 2^(floor(log2 amax) - 2). Elements above 6 * scale saturate to 6 * scale.
  Ocp,
  // Per block, whichever of the two above gives the smaller squared error (RoundUp on ties).
  BestOfTwo,
};
std::string_view scale_rule_name(Mxfp4ScaleRule rule);  // "round-up", "ocp", "mse"
bool parse_scale_rule(std::string_view name, Mxfp4ScaleRule* out);

// A quantized matrix in memory, not owning its bytes (checkpoint tensors are mmapped).
struct Fp4MatrixView {
  Fp4Format format = Fp4Format::Nvfp4;
  int64_t rows = 0, cols = 0;
  const uint8_t* packed = nullptr;  // [rows, cols / 2]
  const uint8_t* scales = nullptr;  // [rows, cols / block]
  float global_scale = 1.0f;        // NVFP4 only

  int64_t blocks_per_row() const { return cols / block_size(format); }
  // Writes row `row` as float32 into out[cols].
  void row_to_float(int64_t row, float* out) const;
  void to_float(float* out) const;  // all rows, [rows, cols]
};

// A quantized matrix that owns its bytes.
struct Fp4Matrix {
  Fp4Format format = Fp4Format::Nvfp4;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> packed, scales;
  float global_scale = 1.0f;

  Fp4MatrixView view() const { return {format, rows, cols, packed.data(), scales.data(), global_scale}; }
};

// The NVFP4 global scale that ModelOpt picks for a tensor whose largest magnitude is amax: amax / (6 * 448)
// (1 for an all-zero tensor), so that the largest block scale is 448.
float nvfp4_global_scale(float amax);
// Largest |w| of count values; throws Error naming `what` on NaN or infinity.
float max_magnitude(const float* w, int64_t count, const std::string& what);

// w: float32 [rows, cols], cols a multiple of the block size (else Error naming `what`).
Fp4Matrix quantize_mxfp4(const float* w, int64_t rows, int64_t cols, Mxfp4ScaleRule rule, const std::string& what);
// global_scale <= 0 picks nvfp4_global_scale(max |w|); pass one explicitly to share it between matrices
// (gate and up of one expert, as vLLM's ModelOpt loader expects).
Fp4Matrix quantize_nvfp4(const float* w, int64_t rows, int64_t cols, float global_scale, const std::string& what);
Fp4Matrix quantize(Fp4Format format, const float* w, int64_t rows, int64_t cols, Mxfp4ScaleRule rule,
                   float global_scale, const std::string& what);

// One block (the inner step of the quantizers, exposed for tests): codes[i / 2] gets element i's nibble.
uint8_t quantize_mxfp4_block(const float* x, Mxfp4ScaleRule rule, uint8_t* codes /* [16] */);
uint8_t quantize_nvfp4_block(const float* x, float global_scale, uint8_t* codes /* [8] */);

// ||w - dequantized|| / ||w|| over a matrix (0 for an all-zero w), and the largest absolute error.
struct QuantizationError {
  double relative_l2 = 0;
  double max_abs = 0;
  double reference_norm = 0;
};
QuantizationError quantization_error(const float* w, const float* dequantized, int64_t count);
QuantizationError quantization_error(const float* w, const Fp4MatrixView& q);  // dequantizes q first

}  // namespace tachyon::fp4
