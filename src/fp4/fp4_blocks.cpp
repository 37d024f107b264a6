#include "fp4/fp4_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "fp4/fp4_codec.h"

namespace tachyon::fp4 {

std::string_view format_name(Fp4Format format) { return format == Fp4Format::Mxfp4 ? "mxfp4" : "nvfp4"; }

bool parse_format(std::string_view name, Fp4Format* out) {
  if (name == "mxfp4") *out = Fp4Format::Mxfp4;
  else if (name == "nvfp4") *out = Fp4Format::Nvfp4;
  else return false;
  return true;
}

std::string_view scale_rule_name(Mxfp4ScaleRule rule) {
  switch (rule) {
    case Mxfp4ScaleRule::RoundUp: return "round-up";
    case Mxfp4ScaleRule::Ocp: return "ocp";
    case Mxfp4ScaleRule::BestOfTwo: return "mse";
  }
  return "?";
}

bool parse_scale_rule(std::string_view name, Mxfp4ScaleRule* out) {
  for (Mxfp4ScaleRule rule : {Mxfp4ScaleRule::RoundUp, Mxfp4ScaleRule::Ocp, Mxfp4ScaleRule::BestOfTwo}) {
    if (scale_rule_name(rule) == name) {
      *out = rule;
      return true;
    }
  }
  return false;
}

void Fp4MatrixView::row_to_float(int64_t row, float* out) const {
  const int block = block_size(format);
  const int64_t blocks = cols / block;
  const uint8_t* bytes = packed + row * (cols / 2);
  const uint8_t* row_scales = scales + row * blocks;
  for (int64_t b = 0; b < blocks; ++b) {
    const float scale = format == Fp4Format::Mxfp4 ? e8m0_to_float(row_scales[b])
                                                   : e4m3_to_float(row_scales[b]) * global_scale;
    const uint8_t* block_bytes = bytes + b * (block / 2);
    float* values = out + b * block;
    for (int i = 0; i < block / 2; ++i) {
      values[2 * i] = e2m1_to_float(block_bytes[i] & 0x0f) * scale;
      values[2 * i + 1] = e2m1_to_float(block_bytes[i] >> 4) * scale;
    }
  }
}

void Fp4MatrixView::to_float(float* out) const {
  for (int64_t r = 0; r < rows; ++r) row_to_float(r, out + r * cols);
}

float nvfp4_global_scale(float amax) { return amax > 0.0f ? amax / (kE2M1Max * kE4M3Max) : 1.0f; }

float max_magnitude(const float* w, int64_t count, const std::string& what) {
  float amax = 0.0f;
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(w[i])) fail("{}: element {} is {}, cannot be quantized", what, i, w[i]);
    amax = std::max(amax, std::fabs(w[i]));
  }
  return amax;
}

namespace {

// Codes of `count` values divided by `scale` (exact for powers of two), packed two per byte.
void encode_scaled(const float* x, int count, float scale, uint8_t* codes) {
  for (int i = 0; i < count; i += 2) {
    uint8_t lo, hi;
    if (scale == 0.0f) {  // a block whose scale underflowed to zero: every element is (signed) zero
      lo = std::signbit(x[i]) ? 8 : 0;
      hi = std::signbit(x[i + 1]) ? 8 : 0;
    } else {
      lo = float_to_e2m1(x[i] / scale);
      hi = float_to_e2m1(x[i + 1] / scale);
    }
    codes[i / 2] = static_cast<uint8_t>(lo | (hi << 4));
  }
}

double block_squared_error(const float* x, int count, float scale, const uint8_t* codes) {
  double sum = 0;
  for (int i = 0; i < count; ++i) {
    const uint8_t code = (i & 1) ? codes[i / 2] >> 4 : codes[i / 2] & 0x0f;
    const double e = static_cast<double>(x[i]) - static_cast<double>(e2m1_to_float(code)) * scale;
    sum += e * e;
  }
  return sum;
}

uint8_t round_up_scale_byte(float amax) {
  // As triton_kernels' downcast to MXFP4: amax / 6 in float, rounded up to a power of two through its bits.
  const float quotient = amax / kE2M1Max;
  uint32_t bits;
  std::memcpy(&bits, &quotient, 4);
  const uint32_t exponent = ((bits + 0x007fffffu) & 0x7f800000u) >> 23;
  return static_cast<uint8_t>(std::min<uint32_t>(exponent, 254));
}

}  // namespace

uint8_t quantize_mxfp4_block(const float* x, Mxfp4ScaleRule rule, uint8_t* codes) {
  float amax = 0.0f;
  for (int i = 0; i < kMxfp4Block; ++i) amax = std::max(amax, std::fabs(x[i]));
  const uint8_t up = round_up_scale_byte(amax);
  uint8_t ocp = 0;
  if (amax > 0.0f) {
    int binade = 0;
    std::frexp(amax, &binade);  // floor(log2 amax) = binade - 1
    ocp = static_cast<uint8_t>(std::clamp(binade - 1 - 2 + 127, 0, 254));
  }
  uint8_t chosen = rule == Mxfp4ScaleRule::Ocp ? ocp : up;
  encode_scaled(x, kMxfp4Block, e8m0_to_float(chosen), codes);
  if (rule == Mxfp4ScaleRule::BestOfTwo && ocp != up) {
    uint8_t other[kMxfp4Block / 2];
    encode_scaled(x, kMxfp4Block, e8m0_to_float(ocp), other);
    if (block_squared_error(x, kMxfp4Block, e8m0_to_float(ocp), other) <
        block_squared_error(x, kMxfp4Block, e8m0_to_float(up), codes)) {
      chosen = ocp;
      std::memcpy(codes, other, sizeof(other));
    }
  }
  return chosen;
}

uint8_t quantize_nvfp4_block(const float* x, float global_scale, uint8_t* codes) {
  float amax = 0.0f;
  for (int i = 0; i < kNvfp4Block; ++i) amax = std::max(amax, std::fabs(x[i]));
  // ModelOpt: block scale = block amax / (6 * global scale), stored as e4m3; elements divided by the
  // stored scale times the global scale.
  const uint8_t scale = float_to_e4m3(amax / (kE2M1Max * global_scale));
  encode_scaled(x, kNvfp4Block, e4m3_to_float(scale) * global_scale, codes);
  return scale;
}

Fp4Matrix quantize_mxfp4(const float* w, int64_t rows, int64_t cols, Mxfp4ScaleRule rule, const std::string& what) {
  if (cols % kMxfp4Block != 0) fail("{}: rows of {} values are not whole MXFP4 blocks of {}", what, cols, kMxfp4Block);
  max_magnitude(w, rows * cols, what);  // rejects NaN / Inf
  Fp4Matrix m;
  m.format = Fp4Format::Mxfp4;
  m.rows = rows;
  m.cols = cols;
  m.packed.resize(rows * cols / 2);
  m.scales.resize(rows * cols / kMxfp4Block);
  for (int64_t b = 0; b < rows * cols / kMxfp4Block; ++b)
    m.scales[b] = quantize_mxfp4_block(w + b * kMxfp4Block, rule, m.packed.data() + b * (kMxfp4Block / 2));
  return m;
}

Fp4Matrix quantize_nvfp4(const float* w, int64_t rows, int64_t cols, float global_scale, const std::string& what) {
  if (cols % kNvfp4Block != 0) fail("{}: rows of {} values are not whole NVFP4 blocks of {}", what, cols, kNvfp4Block);
  const float amax = max_magnitude(w, rows * cols, what);
  if (!(global_scale > 0.0f)) global_scale = nvfp4_global_scale(amax);
  Fp4Matrix m;
  m.format = Fp4Format::Nvfp4;
  m.rows = rows;
  m.cols = cols;
  m.global_scale = global_scale;
  m.packed.resize(rows * cols / 2);
  m.scales.resize(rows * cols / kNvfp4Block);
  for (int64_t b = 0; b < rows * cols / kNvfp4Block; ++b)
    m.scales[b] = quantize_nvfp4_block(w + b * kNvfp4Block, global_scale, m.packed.data() + b * (kNvfp4Block / 2));
  return m;
}

Fp4Matrix quantize(Fp4Format format, const float* w, int64_t rows, int64_t cols, Mxfp4ScaleRule rule,
                   float global_scale, const std::string& what) {
  return format == Fp4Format::Mxfp4 ? quantize_mxfp4(w, rows, cols, rule, what)
                                    : quantize_nvfp4(w, rows, cols, global_scale, what);
}

QuantizationError quantization_error(const float* w, const float* dequantized, int64_t count) {
  double error = 0, reference = 0, max_abs = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double x = w[i], e = x - dequantized[i];
    error += e * e;
    reference += x * x;
    max_abs = std::max(max_abs, std::fabs(e));
  }
  QuantizationError result;
  result.reference_norm = std::sqrt(reference);
  result.relative_l2 = reference > 0 ? std::sqrt(error / reference) : 0.0;
  result.max_abs = max_abs;
  return result;
}

QuantizationError quantization_error(const float* w, const Fp4MatrixView& q) {
  std::vector<float> values(static_cast<size_t>(q.rows * q.cols));
  q.to_float(values.data());
  return quantization_error(w, values.data(), q.rows * q.cols);
}

}  // namespace tachyon::fp4
