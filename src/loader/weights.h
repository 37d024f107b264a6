// Tensors of a checkpoint, read in place from memory-mapped files.
// Shapes are row-major with the outermost dimension first (PyTorch order) whatever the file format:
// the GGUF loader reverses ggml's ne[] so that a [out, in] linear weight reads the same from both.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace tachyon {

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  std::string file;  // where it lives, for error messages

  int64_t numel() const;
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
  int64_t rows() const { return numel() / cols(); }
  std::string shape_string() const;  // "[576, 49152]"
  // Converts elements [first, first + count) to float32. For block types both must sit on block
  // boundaries (rows of a GGUF tensor always do).
  void to_float(int64_t first, int64_t count, float* out) const;
  std::vector<float> to_float() const;
  void row_to_float(int64_t row, float* out) const { to_float(row * cols(), cols(), out); }
};

class WeightStore {
 public:
  // Takes ownership of a mapping that tensors point into.
  void keep_alive(std::shared_ptr<MappedFile> file) { files_.push_back(std::move(file)); }
  // Throws if the name is already present.
  void add(TensorView tensor);
  void rename(const std::string& from, const std::string& to);

  const TensorView* find(const std::string& name) const;
  bool has(const std::string& name) const { return find(name) != nullptr; }
  // Throws "<source>: missing tensor <name>".
  const TensorView& get(const std::string& name) const;
  // Also checks the shape: "<file>: tensor <name> has shape [a, b], config implies [c, d]".
  const TensorView& get(const std::string& name, std::initializer_list<int64_t> expected_shape) const;
  const std::map<std::string, TensorView>& all() const { return tensors_; }
  void set_source(std::string source) { source_ = std::move(source); }
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::map<std::string, TensorView> tensors_;
  std::vector<std::shared_ptr<MappedFile>> files_;
};

}  // namespace tachyon
