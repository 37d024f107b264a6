// The scalar encodings of FP4 weights, their scales and their round-to-nearest encoders.
//
//   e2m1 (4 bits):  bit 3 = sign, bits 0-2 index {0, 0.5, 1, 1.5, 2, 3, 4, 6}. No Inf/NaN.
//                   Two per byte in every ecosystem: element 2i in the low nibble, 2i + 1 in the high one.
//   e8m0 (8 bits):  the MXFP4 block scale 2^(byte - 127); 0xff is NaN.
//   e4m3 (8 bits):  the NVFP4 block scale (the "fn" variant: bias 7, max 448, no Inf, 0x7f/0xff NaN).
//
// Encoders round to nearest, ties to even, and saturate (as the hardware's cvt.rn.satfinite): the
// sign bit of an e2m1 code is the sign of the input even when the magnitude rounds to zero.
#pragma once
#include <cmath>
#include <cstdint>

namespace tachyon::fp4 {

inline constexpr float kE2M1Max = 6.0f;
inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE2M1Magnitudes[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

inline float e2m1_to_float(uint8_t code) {
  const float magnitude = kE2M1Magnitudes[code & 7];
  return (code & 8) ? -magnitude : magnitude;
}

// Nearest e2m1 code to x (ties to the even code: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2,
// 3.5 -> 4, 5 -> 4); |x| > 6 saturates to 6. NaN gives +0 (quantizers reject NaN before encoding).
inline uint8_t float_to_e2m1(float x) {
  const uint8_t sign = (!std::isnan(x) && std::signbit(x)) ? 8 : 0;
  const float a = x < 0.0f ? -x : x;
  uint8_t magnitude;
  if (!(a > 0.25f)) magnitude = 0;  // also NaN
  else if (a < 0.75f) magnitude = 1;
  else if (a <= 1.25f) magnitude = 2;
  else if (a < 1.75f) magnitude = 3;
  else if (a <= 2.5f) magnitude = 4;
  else if (a < 3.5f) magnitude = 5;
  else if (a <= 5.0f) magnitude = 6;
  else magnitude = 7;
  return static_cast<uint8_t>(sign | magnitude);
}

// 2^(byte - 127) (0xff: NaN).
float e8m0_to_float(uint8_t byte);
// Nearest e4m3 byte to x, saturating at +-448; NaN gives 0x7f.
uint8_t float_to_e4m3(float x);
float e4m3_to_float(uint8_t byte);

}  // namespace tachyon::fp4
