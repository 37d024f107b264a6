// Safetensors reading: an 8-byte little-endian header length, a JSON header describing each tensor
// (dtype, shape, data_offsets relative to the data section), then the raw tensor bytes.
// Every field of the header is untrusted and validated before a view is made from it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/weights.h"

namespace tachyon {

struct SafetensorsContents {
  std::vector<TensorView> tensors;  // views into the parsed buffer, in header order
  nlohmann::json metadata;          // the __metadata__ object, or {} when absent
};

// Parses a whole safetensors file image. `file_name` is used in error messages and TensorView::file.
// The views point into `data`, which must outlive them.
SafetensorsContents parse_safetensors(const uint8_t* data, size_t size, const std::string& file_name);

// Maps one .safetensors file and adds its tensors to the store (which keeps the mapping alive).
void load_safetensors_file(const std::string& path, WeightStore& store);

// Loads the weights of a Hugging Face model directory: the shards listed by
// model.safetensors.index.json, else model.safetensors, else every *.safetensors file.
void load_safetensors_dir(const std::string& dir, WeightStore& store);

}  // namespace tachyon
