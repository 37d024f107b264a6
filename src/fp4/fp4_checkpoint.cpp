#include "fp4/fp4_checkpoint.h"

#include <cstring>
#include <set>

#include "core/error.h"
#include "fp4/fp8_blocks.h"

namespace tachyon::fp4 {

DerivedCheckpoint::DerivedCheckpoint(std::shared_ptr<const Checkpoint> base) : base_(std::move(base)) {
  checkpoint_.path = base_->path;
  checkpoint_.format = base_->format;
  checkpoint_.config = base_->config;
  checkpoint_.generation_config = base_->generation_config;
  checkpoint_.tokenizer_json = base_->tokenizer_json;
  checkpoint_.tokenizer_config = base_->tokenizer_config;
  checkpoint_.gguf_metadata = base_->gguf_metadata;
  checkpoint_.weights.set_source(base_->weights.source());
}

void DerivedCheckpoint::add_view(const TensorView& tensor) { checkpoint_.weights.add(tensor); }

uint8_t* DerivedCheckpoint::add_bytes(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
  TensorView view;
  view.name = name;
  view.dtype = dtype;
  view.shape = shape;
  view.nbytes = dtype_bytes(dtype, static_cast<uint64_t>(view.numel()));
  view.file = "";  // built in memory: errors name the tensor only
  // At least one byte so that even an empty tensor has a distinct, valid pointer.
  buffers_.push_back(std::make_unique<uint8_t[]>(view.nbytes > 0 ? view.nbytes : 1));
  view.data = buffers_.back().get();
  checkpoint_.weights.add(view);
  return buffers_.back().get();
}

float* DerivedCheckpoint::add_float(const std::string& name, const std::vector<int64_t>& shape) {
  uint8_t* bytes = add_bytes(name, DType::F32, shape);
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  std::memset(bytes, 0, static_cast<size_t>(count) * sizeof(float));
  return reinterpret_cast<float*>(bytes);
}

std::unique_ptr<DerivedCheckpoint> present_fp4_as_float(std::shared_ptr<const Checkpoint> base) {
  auto derived = std::make_unique<DerivedCheckpoint>(base);
  const std::vector<Fp4Linear> linears = find_fp4_linears(base->weights);
  const std::vector<Fp8Linear> fp8_linears = find_fp8_linears(base->weights);
  std::set<std::string> replaced;
  for (const Fp4Linear& linear : linears) replaced.insert(linear.stored_names.begin(), linear.stored_names.end());
  for (const Fp8Linear& linear : fp8_linears) replaced.insert({linear.weight->name, linear.scale->name});
  for (const auto& [name, tensor] : base->weights.all())
    if (!replaced.count(name)) derived->add_view(tensor);
  for (const Fp4Linear& linear : linears) {
    float* values = derived->add_float(linear.base + ".weight", {linear.matrix.rows, linear.matrix.cols});
    linear.matrix.to_float(values);
  }
  for (const Fp8Linear& linear : fp8_linears)
    linear.to_float(derived->add_float(linear.base + ".weight", {linear.rows(), linear.cols()}));
  nlohmann::json& config = derived->checkpoint().config;
  if ((!linears.empty() || !fp8_linears.empty()) && config.contains("quantization_config") &&
      config["quantization_config"].is_object()) {
    const nlohmann::json& method = config["quantization_config"]["quant_method"];
    if (method == "modelopt" || method == "compressed-tensors" || method == "fp8") config.erase("quantization_config");
  }
  return derived;
}

std::unique_ptr<DerivedCheckpoint> present_fp4_as_float(const Checkpoint& base) {
  return present_fp4_as_float(std::make_shared<const Checkpoint>(base));
}

std::shared_ptr<const Checkpoint> shared_checkpoint(std::unique_ptr<DerivedCheckpoint> derived) {
  std::shared_ptr<DerivedCheckpoint> owner(std::move(derived));
  return std::shared_ptr<const Checkpoint>(owner, &owner->checkpoint());
}

std::unique_ptr<DerivedCheckpoint> open_fp4_checkpoint(const std::string& path) {
  return present_fp4_as_float(std::make_shared<const Checkpoint>(open_checkpoint(path)));
}

}  // namespace tachyon::fp4
