#include "loader/weights.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"

namespace tachyon {

namespace {
// Prefix for error messages: the file a tensor lives in, or nothing for tensors built in memory.
std::string where(const std::string& file) { return file.empty() ? std::string() : file + ": "; }
}  // namespace

int64_t TensorView::numel() const {
  // Loaders validate shapes, but views can also be built by hand, so overflow is still checked.
  int64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0 || __builtin_mul_overflow(count, dim, &count))
      fail("{}tensor {} has an invalid shape {}", where(file), name, shape_string());
  }
  return count;
}

std::string TensorView::shape_string() const { return fmt::format("[{}]", fmt::join(shape, ", ")); }

void TensorView::to_float(int64_t first, int64_t count, float* out) const {
  const DTypeInfo& info = dtype_info(dtype);
  if (!info.is_float_convertible)
    fail("{}tensor {} has dtype {}, which cannot be converted to float", where(file), name, info.name);
  const int64_t total = numel();
  int64_t end = 0;
  if (first < 0 || count < 0 || __builtin_add_overflow(first, count, &end) || end > total)
    fail("{}tensor {}: elements [{}, {}) are outside its {} elements", where(file), name, first,
         static_cast<uint64_t>(first) + static_cast<uint64_t>(count), total);
  if (first % info.block_elements != 0 || count % info.block_elements != 0)
    fail("{}tensor {}: elements [{}, {}) do not sit on {}-element {} block boundaries", where(file), name, first,
         end, info.block_elements, info.name);
  if (count == 0) return;
  // The byte range is derived from element counts; nbytes is what the loader checked against the
  // file, so this second check keeps a hand-built or inconsistent view from reading past its data.
  const uint64_t byte_begin = dtype_bytes(dtype, static_cast<uint64_t>(first));
  const uint64_t byte_count = dtype_bytes(dtype, static_cast<uint64_t>(count));
  if (data == nullptr || byte_begin > nbytes || byte_count > nbytes - byte_begin)
    fail("{}tensor {}: elements [{}, {}) need bytes [{}, {}) but it has {} bytes", where(file), name, first, end,
         byte_begin, byte_begin + byte_count, nbytes);
  dequantize(dtype, data + byte_begin, count, out);
}

std::vector<float> TensorView::to_float() const {
  std::vector<float> values(static_cast<size_t>(numel()));
  to_float(0, static_cast<int64_t>(values.size()), values.data());
  return values;
}

void WeightStore::add(TensorView tensor) {
  auto existing = tensors_.find(tensor.name);
  if (existing != tensors_.end()) {
    if (existing->second.file == tensor.file)
      fail("{}tensor {} appears twice", where(tensor.file), tensor.name);
    fail("{}tensor {} is also in {}", where(tensor.file), tensor.name, existing->second.file);
  }
  std::string name = tensor.name;
  tensors_.emplace(std::move(name), std::move(tensor));
}

void WeightStore::rename(const std::string& from, const std::string& to) {
  auto node = tensors_.extract(from);
  if (node.empty()) fail("{}cannot rename missing tensor {}", where(source_), from);
  if (tensors_.count(to) != 0) {
    std::string file = node.mapped().file;
    tensors_.insert(std::move(node));  // leave the store as it was
    fail("{}cannot rename tensor {} to {}: that name is taken", where(file), from, to);
  }
  node.key() = to;
  node.mapped().name = to;
  tensors_.insert(std::move(node));
}

const TensorView* WeightStore::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const TensorView& WeightStore::get(const std::string& name) const {
  const TensorView* tensor = find(name);
  if (tensor == nullptr) fail("{}missing tensor {}", where(source_), name);
  return *tensor;
}

const TensorView& WeightStore::get(const std::string& name, std::initializer_list<int64_t> expected_shape) const {
  const TensorView& tensor = get(name);
  if (!std::equal(tensor.shape.begin(), tensor.shape.end(), expected_shape.begin(), expected_shape.end()))
    fail("{}tensor {} has shape {}, config implies [{}]", where(tensor.file), name, tensor.shape_string(),
         fmt::join(expected_shape, ", "));
  return tensor;
}

}  // namespace tachyon
