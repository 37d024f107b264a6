#include "core/dtype.h"

#include <cmath>

#include "core/error.h"

namespace tachyon {

namespace {
constexpr DTypeInfo kInfo[] = {
    {"F32", 1, 4, true},     {"F16", 1, 2, true},     {"BF16", 1, 2, true},   {"F64", 1, 8, true},
    {"I8", 1, 1, true},      {"I16", 1, 2, true},     {"I32", 1, 4, true},    {"I64", 1, 8, true},
    {"U8", 1, 1, true},      {"U16", 1, 2, true},     {"U32", 1, 4, true},    {"U64", 1, 8, true},
    {"BOOL", 1, 1, true},    {"F8_E4M3", 1, 1, true}, {"F8_E5M2", 1, 1, true}, {"F8_E8M0", 1, 1, true},
    {"Q8_0", 32, 34, true},  {"Q4_0", 32, 18, true},  {"Q4_1", 32, 20, true},
};

template <typename T>
void convert_plain(const void* src, int64_t count, float* dst) {
  const T* s = static_cast<const T*>(src);
  for (int64_t i = 0; i < count; ++i) {
    T v;
    std::memcpy(&v, s + i, sizeof(T));  // unaligned-safe: mmap offsets need not be aligned
    dst[i] = static_cast<float>(v);
  }
}

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
}  // namespace

const DTypeInfo& dtype_info(DType t) { return kInfo[static_cast<int>(t)]; }

bool dtype_from_safetensors_name(std::string_view name, DType* out) {
  for (int i = 0; i <= static_cast<int>(DType::F8_E8M0); ++i) {
    if (kInfo[i].name == name) {
      *out = static_cast<DType>(i);
      return true;
    }
  }
  return false;
}

uint64_t dtype_bytes(DType t, uint64_t elements) {
  const DTypeInfo& info = dtype_info(t);
  return elements / info.block_elements * info.block_bytes;
}

float f16_to_float(uint16_t h) {
  // Bit assembly, not ldexp: this runs twice per 32 weights of every Q4_0/Q4_1/Q8_0 row the CPU path reads
  // (ldexp made it most of a decode step's time). Every f16 value is exact in float32 either way.
  const uint32_t sign = (h >> 15) & 1, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  float value;
  if (exponent == 0) {
    value = static_cast<float>(mantissa) * 0x1p-24f;  // subnormal: mantissa * 2^-24, exact
  } else if (exponent == 31) {
    value = mantissa ? NAN : INFINITY;
  } else {
    const uint32_t bits = ((exponent + 112) << 23) | (mantissa << 13);  // rebias 15 -> 127
    std::memcpy(&value, &bits, 4);
  }
  return sign ? -value : value;
}

uint16_t float_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint32_t sign = (bits >> 16) & 0x8000;
  uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00);
  if (abs_bits >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00);  // overflow -> inf
  float a;
  std::memcpy(&a, &abs_bits, 4);
  if (abs_bits < 0x38800000u) {  // subnormal half: round a / 2^-24 to nearest even integer
    float scaled = std::nearbyint(a * 16777216.0f);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(scaled));
  }
  uint32_t rounded = abs_bits + 0xfffu + ((abs_bits >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

float fp8_e4m3_to_float(uint8_t v) {
  uint32_t sign = v >> 7, exponent = (v >> 3) & 0xf, mantissa = v & 7;
  float value;
  if (exponent == 15 && mantissa == 7) value = NAN;  // e4m3fn: no infinities
  else if (exponent == 0) value = std::ldexp(static_cast<float>(mantissa), -9);
  else value = std::ldexp(static_cast<float>(mantissa | 8), static_cast<int>(exponent) - 10);
  return sign ? -value : value;
}

float fp8_e5m2_to_float(uint8_t v) { return f16_to_float(static_cast<uint16_t>(v) << 8); }

void dequantize(DType t, const void* src, int64_t count, float* dst) {
  const uint8_t* bytes = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::F32: std::memcpy(dst, src, count * 4); return;
    case DType::F64: convert_plain<double>(src, count, dst); return;
    case DType::F16:
      for (int64_t i = 0; i < count; ++i) dst[i] = f16_to_float(load_u16(bytes + 2 * i));
      return;
    case DType::BF16:
      for (int64_t i = 0; i < count; ++i) dst[i] = bf16_to_float(load_u16(bytes + 2 * i));
      return;
    case DType::I8: convert_plain<int8_t>(src, count, dst); return;
    case DType::I16: convert_plain<int16_t>(src, count, dst); return;
    case DType::I32: convert_plain<int32_t>(src, count, dst); return;
    case DType::I64: convert_plain<int64_t>(src, count, dst); return;
    case DType::U8: case DType::BOOL: convert_plain<uint8_t>(src, count, dst); return;
    case DType::U16: convert_plain<uint16_t>(src, count, dst); return;
    case DType::U32: convert_plain<uint32_t>(src, count, dst); return;
    case DType::U64: convert_plain<uint64_t>(src, count, dst); return;
    case DType::F8_E4M3:
      for (int64_t i = 0; i < count; ++i) dst[i] = fp8_e4m3_to_float(bytes[i]);
      return;
    case DType::F8_E5M2:
      for (int64_t i = 0; i < count; ++i) dst[i] = fp8_e5m2_to_float(bytes[i]);
      return;
    case DType::F8_E8M0:  // power-of-two scale byte (MXFP4): 2^(v-127), 0xff is NaN
      for (int64_t i = 0; i < count; ++i) dst[i] = bytes[i] == 0xff ? NAN : std::ldexp(1.0f, bytes[i] - 127);
      return;
    case DType::Q8_0:  // {f16 d; int8 q[32]}: x = d * q
      for (int64_t b = 0; b < count / 32; ++b) {
        const uint8_t* block = bytes + b * 34;
        float d = f16_to_float(load_u16(block));
        for (int i = 0; i < 32; ++i) dst[b * 32 + i] = d * static_cast<int8_t>(block[2 + i]);
      }
      return;
    case DType::Q4_0:  // {f16 d; u8 qs[16]}: low nibbles are elements 0..15, high nibbles 16..31; x = d*(q-8)
      for (int64_t b = 0; b < count / 32; ++b) {
        const uint8_t* block = bytes + b * 18;
        float d = f16_to_float(load_u16(block));
        for (int i = 0; i < 16; ++i) {
          dst[b * 32 + i] = d * (static_cast<int>(block[2 + i] & 0xf) - 8);
          dst[b * 32 + i + 16] = d * (static_cast<int>(block[2 + i] >> 4) - 8);
        }
      }
      return;
    case DType::Q4_1:  // {f16 d; f16 m; u8 qs[16]}: x = d*q + m, same nibble order as Q4_0
      for (int64_t b = 0; b < count / 32; ++b) {
        const uint8_t* block = bytes + b * 20;
        float d = f16_to_float(load_u16(block)), m = f16_to_float(load_u16(block + 2));
        for (int i = 0; i < 16; ++i) {
          dst[b * 32 + i] = d * (block[4 + i] & 0xf) + m;
          dst[b * 32 + i + 16] = d * (block[4 + i] >> 4) + m;
        }
      }
      return;
  }
  fail("dequantize: unsupported dtype {}", dtype_name(t));
}

}  // namespace tachyon
