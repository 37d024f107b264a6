#include "loader/safetensors.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"
#include "loader/json_file.h"

namespace tachyon {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// JSON numbers that must be sizes or offsets: nlohmann stores non-negative integers as unsigned,
// negatives as signed and anything else (1.5, 1e30) as float, so only the unsigned kind passes.
bool as_size(const json& value, uint64_t* out) {
  if (value.is_number_unsigned()) {
    *out = value.get<uint64_t>();
    return true;
  }
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(value.get<int64_t>());
    return true;
  }
  return false;
}

TensorView parse_entry(const std::string& name, const json& entry, const uint8_t* data_section,
                       uint64_t data_size, const std::string& file_name) {
  if (!entry.is_object()) fail("{}: tensor {}: header entry is {}, expected an object", file_name, name, json_kind(entry));
  TensorView tensor;
  tensor.name = name;
  tensor.file = file_name;

  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) fail("{}: tensor {} has no dtype string", file_name, name);
  const std::string& dtype_name_text = dtype_it->get_ref<const std::string&>();
  if (!dtype_from_safetensors_name(dtype_name_text, &tensor.dtype))
    fail("{}: tensor {} has unknown dtype {}", file_name, name, dtype_name_text);

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) fail("{}: tensor {} has no shape array", file_name, name);
  // Element counts stay below 2^62 so that numel() and byte counts fit int64 with room to spare.
  constexpr uint64_t kMaxElements = uint64_t{1} << 62;
  uint64_t elements = 1;
  for (const json& dim_json : *shape_it) {
    uint64_t dim = 0;
    if (!as_size(dim_json, &dim))
      fail("{}: tensor {} has a shape entry that is not a non-negative integer: {}", file_name, name,
           dim_json.dump(-1, ' ', false, json::error_handler_t::replace));
    if (dim > kMaxElements || (dim != 0 && elements > kMaxElements / dim))
      fail("{}: tensor {} has a shape {} whose element count overflows", file_name, name,
           shape_it->dump(-1, ' ', false, json::error_handler_t::replace));
    elements *= dim;
    tensor.shape.push_back(static_cast<int64_t>(dim));
  }
  // Safetensors dtypes are all one element per block, so bytes = elements * block_bytes.
  uint64_t expected_bytes = 0;
  if (__builtin_mul_overflow(elements, static_cast<uint64_t>(dtype_info(tensor.dtype).block_bytes), &expected_bytes))
    fail("{}: tensor {} has a shape {} whose byte size overflows", file_name, name, tensor.shape_string());

  auto offsets_it = entry.find("data_offsets");
  uint64_t begin = 0, end = 0;
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !as_size((*offsets_it)[0], &begin) || !as_size((*offsets_it)[1], &end))
    fail("{}: tensor {} needs data_offsets [begin, end] of non-negative integers", file_name, name);
  if (begin > end) fail("{}: tensor {} has data_offsets [{}, {}] with begin after end", file_name, name, begin, end);
  if (end > data_size)
    fail("{}: tensor {} has data_offsets [{}, {}] past the end of the data section ({} bytes)", file_name, name,
         begin, end, data_size);
  if (end - begin != expected_bytes)
    fail("{}: tensor {} has {} bytes, but dtype {} and shape {} need {}", file_name, name, end - begin,
         dtype_name(tensor.dtype), tensor.shape_string(), expected_bytes);
  tensor.data = data_section + begin;
  tensor.nbytes = expected_bytes;
  return tensor;
}

// Shard names come from an untrusted index file; keep them inside the model directory.
bool is_plain_relative_path(const std::string& name) {
  if (name.empty()) return false;
  fs::path path(name);
  if (path.is_absolute()) return false;
  return std::none_of(path.begin(), path.end(), [](const fs::path& part) { return part == ".."; });
}

void load_from_index(const fs::path& dir, const fs::path& index_path, WeightStore& store) {
  const std::string index_name = index_path.string();
  json index = read_json_file(index_name);
  if (!index.is_object()) fail("{}: expected a JSON object, got {}", index_name, json_kind(index));
  auto map_it = index.find("weight_map");
  if (map_it == index.end() || !map_it->is_object()) fail("{}: has no weight_map object", index_name);

  std::set<std::string> shards;
  for (const auto& [tensor_name, shard] : map_it->items()) {
    if (!shard.is_string() || !is_plain_relative_path(shard.get<std::string>()))
      fail("{}: tensor {} maps to an invalid shard name", index_name, tensor_name);
    shards.insert(shard.get<std::string>());
  }
  if (shards.empty()) fail("{}: weight_map is empty", index_name);
  std::vector<std::string> missing;
  for (const std::string& shard : shards) {
    if (!fs::is_regular_file(dir / shard)) missing.push_back(shard);
  }
  if (!missing.empty()) fail("{}: missing shard files: {}", index_name, fmt::join(missing, ", "));

  for (const std::string& shard : shards) load_safetensors_file((dir / shard).string(), store);
  // The index is a promise about where each tensor is; a mismatch means a broken download.
  for (const auto& [tensor_name, shard] : map_it->items()) {
    const TensorView* tensor = store.find(tensor_name);
    const std::string shard_path = (dir / shard.get<std::string>()).string();
    if (tensor == nullptr || tensor->file != shard_path)
      fail("{}: tensor {} is listed in {} but that shard does not contain it", index_name, tensor_name,
           shard.get<std::string>());
  }
}

}  // namespace

SafetensorsContents parse_safetensors(const uint8_t* data, size_t size, const std::string& file_name) {
  if (size < 8) fail("{}: too short for a safetensors file ({} bytes)", file_name, size);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | data[i];
  if (header_size > size - 8)
    fail("{}: header length {} goes past the end of the file ({} bytes)", file_name, header_size, size);

  json header;
  try {
    const char* text = reinterpret_cast<const char*>(data + 8);
    header = json::parse(text, text + header_size);
  } catch (const json::exception& e) {
    fail("{}: header is not valid JSON: {}", file_name, e.what());
  }
  if (!header.is_object()) fail("{}: header is {}, expected a JSON object", file_name, json_kind(header));

  const uint8_t* data_section = data + 8 + header_size;
  const uint64_t data_size = size - 8 - header_size;
  SafetensorsContents contents;
  contents.metadata = json::object();
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {  // free-form string map written by the exporter; not needed here
      if (entry.is_object()) contents.metadata = entry;
      continue;
    }
    contents.tensors.push_back(parse_entry(name, entry, data_section, data_size, file_name));
  }
  return contents;
}

void load_safetensors_file(const std::string& path, WeightStore& store) {
  auto file = std::make_shared<MappedFile>(path);
  SafetensorsContents contents = parse_safetensors(file->data(), file->size(), path);
  store.keep_alive(std::move(file));
  for (TensorView& tensor : contents.tensors) store.add(std::move(tensor));
}

void load_safetensors_dir(const std::string& dir, WeightStore& store) {
  const fs::path dir_path(dir);
  const fs::path index_path = dir_path / "model.safetensors.index.json";
  if (fs::exists(index_path)) return load_from_index(dir_path, index_path, store);
  const fs::path single = dir_path / "model.safetensors";
  if (fs::exists(single)) return load_safetensors_file(single.string(), store);

  std::vector<std::string> files;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir_path, error)) {
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors") files.push_back(entry.path().string());
  }
  if (error) fail("{}: cannot list directory: {}", dir, error.message());
  if (files.empty()) fail("{}: no safetensors weights (model.safetensors.index.json, model.safetensors or *.safetensors)", dir);
  std::sort(files.begin(), files.end());  // deterministic order, so duplicate-name errors are stable
  for (const std::string& file : files) load_safetensors_file(file, store);
}

}  // namespace tachyon
