#include "loader/gguf.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include <fmt/format.h>

#include "core/error.h"

namespace tachyon {

using nlohmann::json;

namespace {

enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
constexpr uint32_t kValueTypeCount = 13;

// The smallest number of bytes one value of each type can take; an array of `count` values must
// have count * this many bytes left, which bounds every allocation by the file size.
uint64_t min_value_bytes(ValueType type) {
  switch (type) {
    case ValueType::U8: case ValueType::I8: case ValueType::BOOL: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::U64: case ValueType::I64: case ValueType::F64: case ValueType::STRING: return 8;  // a string is at least its length
    case ValueType::ARRAY: return 12;  // element type + count
  }
  return 1;
}

// Real files nest arrays one level at most; the cap keeps a crafted file from exhausting the stack.
constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxDims = 4;
constexpr uint64_t kMaxElements = uint64_t{1} << 62;
// Bytes a tensor description takes at the least: name length, n_dims, one dim, type, offset.
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;
// A key/value pair takes at least a key length, a value type and a one-byte value.
constexpr uint64_t kMinKeyValueBytes = 8 + 4 + 1;

struct GgmlType {
  uint32_t id;
  const char* name;
  bool supported;
  DType dtype;
};
// Numbering from ggml.h. Gaps are types ggml has removed.
constexpr GgmlType kGgmlTypes[] = {
    {0, "F32", true, DType::F32},     {1, "F16", true, DType::F16},       {2, "Q4_0", true, DType::Q4_0},
    {3, "Q4_1", true, DType::Q4_1},   {6, "Q5_0", false, DType::F32},     {7, "Q5_1", false, DType::F32},
    {8, "Q8_0", true, DType::Q8_0},   {9, "Q8_1", false, DType::F32},     {10, "Q2_K", false, DType::F32},
    {11, "Q3_K", false, DType::F32},  {12, "Q4_K", false, DType::F32},    {13, "Q5_K", false, DType::F32},
    {14, "Q6_K", false, DType::F32},  {15, "Q8_K", false, DType::F32},    {16, "IQ2_XXS", false, DType::F32},
    {17, "IQ2_XS", false, DType::F32}, {18, "IQ3_XXS", false, DType::F32}, {19, "IQ1_S", false, DType::F32},
    {20, "IQ4_NL", false, DType::F32}, {21, "IQ3_S", false, DType::F32},  {22, "IQ2_S", false, DType::F32},
    {23, "IQ4_XS", false, DType::F32}, {24, "I8", true, DType::I8},       {25, "I16", true, DType::I16},
    {26, "I32", true, DType::I32},    {27, "I64", true, DType::I64},      {28, "F64", true, DType::F64},
    {29, "IQ1_M", false, DType::F32}, {30, "BF16", true, DType::BF16},    {34, "TQ1_0", false, DType::F32},
    {35, "TQ2_0", false, DType::F32}, {39, "MXFP4", false, DType::F32},
};

const GgmlType* find_ggml_type(uint32_t id) {
  for (const GgmlType& type : kGgmlTypes) {
    if (type.id == id) return &type;
  }
  return nullptr;
}

// A cursor over the untrusted bytes. Every read checks that it fits; `what` describes the item
// being read so that a truncation error says where the file broke.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& file_name)
      : data_(data), size_(size), file_name_(file_name) {}

  uint64_t position() const { return position_; }
  uint64_t remaining() const { return size_ - position_; }
  const std::string& file_name() const { return file_name_; }

  void need(uint64_t bytes, const std::string& what) const {
    if (bytes > remaining())
      fail("{}: truncated: {} needs {} bytes at offset {}, the file has {} left", file_name_, what, bytes, position_,
           remaining());
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, data_ + position_, sizeof(T));  // GGUF is little-endian, like every host we target
    position_ += sizeof(T);
    return value;
  }
  std::string read_string(const std::string& what) {
    const uint64_t length = read<uint64_t>(what);
    need(length, what);  // checked before the allocation: the length is untrusted
    std::string text(reinterpret_cast<const char*>(data_ + position_), length);
    position_ += length;
    return text;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t position_ = 0;
  const std::string& file_name_;
};

json read_value(Reader& reader, uint32_t raw_type, const std::string& what, int depth);

json read_array(Reader& reader, const std::string& what, int depth) {
  if (depth >= kMaxArrayDepth)
    fail("{}: {} nests arrays more than {} deep", reader.file_name(), what, kMaxArrayDepth);
  const uint32_t element_type = reader.read<uint32_t>(what + " (array element type)");
  if (element_type >= kValueTypeCount)
    fail("{}: {} is an array of unknown value type {}", reader.file_name(), what, element_type);
  const uint64_t count = reader.read<uint64_t>(what + " (array length)");
  const uint64_t min_bytes = min_value_bytes(static_cast<ValueType>(element_type));
  if (count > reader.remaining() / min_bytes)
    fail("{}: {} claims {} array elements but only {} bytes remain", reader.file_name(), what, count,
         reader.remaining());
  json array = json::array();
  array.get_ref<json::array_t&>().reserve(count);
  for (uint64_t i = 0; i < count; ++i) array.push_back(read_value(reader, element_type, what, depth + 1));
  return array;
}

json read_value(Reader& reader, uint32_t raw_type, const std::string& what, int depth) {
  switch (static_cast<ValueType>(raw_type)) {
    case ValueType::U8: return reader.read<uint8_t>(what);
    case ValueType::I8: return reader.read<int8_t>(what);
    case ValueType::U16: return reader.read<uint16_t>(what);
    case ValueType::I16: return reader.read<int16_t>(what);
    case ValueType::U32: return reader.read<uint32_t>(what);
    case ValueType::I32: return reader.read<int32_t>(what);
    case ValueType::F32: return reader.read<float>(what);
    case ValueType::BOOL: return reader.read<uint8_t>(what) != 0;
    case ValueType::STRING: return reader.read_string(what);
    case ValueType::ARRAY: return read_array(reader, what, depth);
    case ValueType::U64: return reader.read<uint64_t>(what);
    case ValueType::I64: return reader.read<int64_t>(what);
    case ValueType::F64: return reader.read<double>(what);
  }
  fail("{}: {} has unknown value type {}", reader.file_name(), what, raw_type);
}

uint64_t read_alignment(const json& metadata, const std::string& file_name) {
  auto it = metadata.find("general.alignment");
  if (it == metadata.end()) return 32;  // the GGUF default
  if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() > 0))
    fail("{}: general.alignment must be a positive integer", file_name);
  const uint64_t alignment = it->get<uint64_t>();
  if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > (uint64_t{1} << 30))
    fail("{}: general.alignment {} is not a power of two (up to 2^30)", file_name, alignment);
  return alignment;
}

struct TensorInfo {
  TensorView view;
  uint64_t offset = 0;  // relative to the data section
};

TensorInfo read_tensor_info(Reader& reader, uint64_t index) {
  const std::string& file_name = reader.file_name();
  TensorInfo info;
  TensorView& view = info.view;
  view.file = file_name;
  view.name = reader.read_string(fmt::format("name of tensor #{}", index));
  const std::string what = "tensor " + view.name;
  const uint32_t n_dims = reader.read<uint32_t>(what + " (dimension count)");
  if (n_dims < 1 || n_dims > kMaxDims) fail("{}: tensor {} has {} dimensions, expected 1 to 4", file_name, view.name, n_dims);
  uint64_t ne[kMaxDims] = {};
  uint64_t elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    ne[d] = reader.read<uint64_t>(what + " (dimensions)");
    if (ne[d] == 0) fail("{}: tensor {} has a zero dimension", file_name, view.name);
    if (ne[d] > kMaxElements / elements)
      fail("{}: tensor {} has dimensions whose element count overflows", file_name, view.name);
    elements *= ne[d];
  }
  const uint32_t raw_type = reader.read<uint32_t>(what + " (type)");
  const GgmlType* type = find_ggml_type(raw_type);
  if (type == nullptr || !type->supported)
    fail("{}: tensor {}: ggml type {} is not supported", file_name, view.name, ggml_type_name(raw_type));
  view.dtype = type->dtype;
  const DTypeInfo& dtype = dtype_info(view.dtype);
  if (ne[0] % dtype.block_elements != 0)
    fail("{}: tensor {} has rows of {} elements, not a multiple of the {} block size {}", file_name, view.name, ne[0],
         type->name, dtype.block_elements);
  if (__builtin_mul_overflow(elements / dtype.block_elements, static_cast<uint64_t>(dtype.block_bytes), &view.nbytes))
    fail("{}: tensor {} is too large", file_name, view.name);
  info.offset = reader.read<uint64_t>(what + " (data offset)");
  // ggml's ne[0] is the innermost (contiguous) dimension; PyTorch order lists it last.
  for (uint32_t d = n_dims; d-- > 0;) view.shape.push_back(static_cast<int64_t>(ne[d]));
  return info;
}

}  // namespace

std::string ggml_type_name(uint32_t ggml_type) {
  const GgmlType* type = find_ggml_type(ggml_type);
  if (type == nullptr) return fmt::format("unknown ({})", ggml_type);
  return fmt::format("{} ({})", type->name, ggml_type);
}

GgufContents parse_gguf(const uint8_t* data, size_t size, const std::string& file_name) {
  Reader reader(data, size, file_name);
  GgufContents contents;
  reader.need(4, "the GGUF magic");
  if (std::memcmp(data, "GGUF", 4) != 0) fail("{}: not a GGUF file (bad magic)", file_name);
  reader.read<uint32_t>("the GGUF magic");
  contents.version = reader.read<uint32_t>("the GGUF version");
  if (contents.version != 2 && contents.version != 3) {
    if (contents.version == 1) fail("{}: GGUF version 1 is not supported (re-convert the model)", file_name);
    fail("{}: unsupported GGUF version {} (a big-endian file?)", file_name, contents.version);
  }
  const uint64_t tensor_count = reader.read<uint64_t>("the tensor count");
  const uint64_t kv_count = reader.read<uint64_t>("the metadata count");
  if (tensor_count > reader.remaining() / kMinTensorInfoBytes)
    fail("{}: tensor count {} is impossible for a {}-byte file", file_name, tensor_count, size);
  if (kv_count > reader.remaining() / kMinKeyValueBytes)
    fail("{}: metadata count {} is impossible for a {}-byte file", file_name, kv_count, size);

  contents.metadata = json::object();
  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string key = reader.read_string(fmt::format("metadata key #{}", i));
    const std::string what = "metadata value " + key;
    const uint32_t type = reader.read<uint32_t>(what + " (type)");
    if (type >= kValueTypeCount) fail("{}: {} has unknown value type {}", file_name, what, type);
    json value = read_value(reader, type, what, 0);
    if (contents.metadata.contains(key)) fail("{}: metadata key {} appears twice", file_name, key);
    contents.metadata.emplace(std::move(key), std::move(value));
  }
  contents.alignment = read_alignment(contents.metadata, file_name);

  std::vector<TensorInfo> infos;
  infos.reserve(tensor_count);  // bounded by the file size above
  std::unordered_set<std::string> names;
  for (uint64_t i = 0; i < tensor_count; ++i) {
    infos.push_back(read_tensor_info(reader, i));
    if (!names.insert(infos.back().view.name).second)
      fail("{}: tensor {} appears twice", file_name, infos.back().view.name);
  }

  // The data section starts at the next multiple of the alignment after the tensor descriptions.
  const uint64_t padding = (contents.alignment - reader.position() % contents.alignment) % contents.alignment;
  contents.data_offset = reader.position() + padding;
  if (tensor_count > 0 && contents.data_offset > size)
    fail("{}: truncated: the data section should start at offset {}, past the end of the file ({} bytes)", file_name,
         contents.data_offset, size);
  const uint64_t data_size = contents.data_offset <= size ? size - contents.data_offset : 0;
  for (TensorInfo& info : infos) {
    TensorView& view = info.view;
    if (info.offset % contents.alignment != 0)
      fail("{}: tensor {} has data offset {}, not a multiple of the alignment {}", file_name, view.name, info.offset,
           contents.alignment);
    if (info.offset > data_size || view.nbytes > data_size - info.offset)
      fail("{}: tensor {} needs {} bytes at offset {} of the data section, which has {} bytes", file_name,
           view.name, view.nbytes, info.offset, data_size);
    view.data = data + contents.data_offset + info.offset;
    contents.tensors.push_back(std::move(view));
  }
  return contents;
}

}  // namespace tachyon
