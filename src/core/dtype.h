// Element types of tensors in checkpoints, and conversion of any of them to float32.
// Block-quantized GGUF types (Q8_0, Q4_0, Q4_1) store `block_elements` values in
// `block_bytes` bytes; plain types have block_elements == 1.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace tachyon {

enum class DType : uint8_t {
  F32, F16, BF16, F64,
  I8, I16, I32, I64, U8, U16, U32, U64, BOOL,
  F8_E4M3, F8_E5M2, F8_E8M0,
  Q8_0, Q4_0, Q4_1,  // GGUF blocks of 32
};

struct DTypeInfo {
  std::string_view name;   // safetensors spelling where one exists
  int block_elements;      // values per block
  int block_bytes;         // bytes per block
  bool is_float_convertible;  // dequantize() supports it
};

const DTypeInfo& dtype_info(DType t);
inline std::string_view dtype_name(DType t) { return dtype_info(t).name; }
// Parses the safetensors dtype spelling ("BF16", "F8_E4M3", ...); false if unknown.
bool dtype_from_safetensors_name(std::string_view name, DType* out);
// Bytes of `elements` values of type t; elements must be a multiple of the block size.
uint64_t dtype_bytes(DType t, uint64_t elements);

// Converts `count` values starting at element 0 of `src` to float32. For block types, count must be
// a multiple of the block size and src must point at a block boundary.
void dequantize(DType t, const void* src, int64_t count, float* dst);

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// Round-to-nearest-even, NaN preserved.
inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
float f16_to_float(uint16_t h);
uint16_t float_to_f16(float f);
float fp8_e4m3_to_float(uint8_t v);
float fp8_e5m2_to_float(uint8_t v);

}  // namespace tachyon
