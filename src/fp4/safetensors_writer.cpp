#include "fp4/safetensors_writer.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace tachyon::fp4 {

uint64_t PlannedTensor::nbytes() const {
  uint64_t count = 1;
  for (int64_t d : shape) count *= static_cast<uint64_t>(d);
  return dtype_bytes(dtype, count);
}

void encode_floats(const float* values, int64_t count, DType dtype, std::vector<uint8_t>& bytes) {
  if (dtype == DType::F32) {
    bytes.resize(count * 4);
    std::memcpy(bytes.data(), values, count * 4);
  } else if (dtype == DType::BF16 || dtype == DType::F16) {
    bytes.resize(count * 2);
    for (int64_t i = 0; i < count; ++i) {
      const uint16_t h = dtype == DType::BF16 ? float_to_bf16(values[i]) : float_to_f16(values[i]);
      bytes[2 * i] = static_cast<uint8_t>(h & 0xff);
      bytes[2 * i + 1] = static_cast<uint8_t>(h >> 8);
    }
  } else {
    fail("encode_floats: cannot write float values as {}", dtype_name(dtype));
  }
}

void write_safetensors(const std::string& path, const std::vector<PlannedTensor>& tensors,
                       const std::function<void(size_t index, std::vector<uint8_t>& bytes)>& produce,
                       const nlohmann::json& metadata) {
  nlohmann::json header = nlohmann::json::object();
  nlohmann::json meta = metadata.is_object() ? metadata : nlohmann::json::object();
  meta["format"] = "pt";
  header["__metadata__"] = meta;
  uint64_t offset = 0;
  for (const PlannedTensor& t : tensors) {
    if (header.contains(t.name)) fail("{}: tensor {} planned twice", path, t.name);
    const uint64_t end = offset + t.nbytes();
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  const std::string temporary = path + ".partial";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) fail("{}: cannot open for writing", temporary);
    uint8_t length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    std::vector<uint8_t> bytes;
    for (size_t i = 0; i < tensors.size(); ++i) {
      bytes.clear();
      produce(i, bytes);
      if (bytes.size() != tensors[i].nbytes())
        fail("{}: tensor {} was produced with {} bytes, its dtype and shape need {}", path, tensors[i].name,
             bytes.size(), tensors[i].nbytes());
      out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
      if (!out) fail("{}: write failed (disk full?)", temporary);
    }
    out.close();
    if (!out) fail("{}: write failed (disk full?)", temporary);
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) fail("{}: cannot rename to {}: {}", temporary, path, error.message());
}

}  // namespace tachyon::fp4
