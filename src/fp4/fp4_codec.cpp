#include "fp4/fp4_codec.h"

#include <cmath>

namespace tachyon::fp4 {

float e8m0_to_float(uint8_t byte) { return byte == 0xff ? NAN : std::ldexp(1.0f, static_cast<int>(byte) - 127); }

float e4m3_to_float(uint8_t byte) {
  const int exponent = (byte >> 3) & 0xf, mantissa = byte & 7;
  float value;
  if (exponent == 15 && mantissa == 7) value = NAN;
  else if (exponent == 0) value = std::ldexp(static_cast<float>(mantissa), -9);
  else value = std::ldexp(static_cast<float>(mantissa | 8), exponent - 10);
  return (byte & 0x80) ? -value : value;
}

uint8_t float_to_e4m3(float x) {
  if (std::isnan(x)) return 0x7f;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const float a = std::fabs(x);
  if (a >= kE4M3Max) return sign | 0x7e;  // saturate (448 itself is 0x7e)
  // The spacing of representable values around a: 2^-9 among subnormals (a < 2^-6), else 1/8 of the
  // binade. Dividing by a power of two is exact, so nearbyint rounds the exact quotient (ties to even).
  int binade = 0;
  std::frexp(a, &binade);  // a = f * 2^binade, f in [0.5, 1)
  const int step_exponent = a < 0.015625f ? -9 : binade - 1 - 3;
  const float steps = std::nearbyint(std::ldexp(a, -step_exponent));
  if (a < 0.015625f) return sign | static_cast<uint8_t>(steps);  // 8 steps = 2^-6 = code 0x08, still right
  // steps in [8, 16]: 16 means the rounding carried into the next binade.
  int exponent = binade - 1, mantissa = static_cast<int>(steps) - 8;
  if (mantissa == 8) {
    ++exponent;
    mantissa = 0;
  }
  const int code = ((exponent + 7) << 3) | mantissa;
  return sign | static_cast<uint8_t>(code > 0x7e ? 0x7e : code);
}

}  // namespace tachyon::fp4
