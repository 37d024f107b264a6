// Writing safetensors files: an 8-byte little-endian header length, the JSON header (padded with spaces to
// a multiple of 8 bytes) naming each tensor's dtype, shape and byte range, then the bytes in header order.
// Tensors are produced one at a time, so a checkpoint larger than memory can be written.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"

namespace tachyon::fp4 {

struct PlannedTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;
};

// Writes `path` (through a temporary file renamed at the end, so that a failure leaves no partial file).
// produce(i, bytes) must fill `bytes` with exactly tensors[i].nbytes() bytes; it is called in order.
// metadata: string -> string pairs for "__metadata__" ({"format": "pt"} is always added).
void write_safetensors(const std::string& path, const std::vector<PlannedTensor>& tensors,
                       const std::function<void(size_t index, std::vector<uint8_t>& bytes)>& produce,
                       const nlohmann::json& metadata = nlohmann::json::object());

// float32 values -> bytes of dtype (F32, F16 or BF16; round to nearest even).
void encode_floats(const float* values, int64_t count, DType dtype, std::vector<uint8_t>& bytes);

}  // namespace tachyon::fp4
