// Loader glue between FP4 checkpoints and the CPU models: a Checkpoint assembled from another one whose
// FP4 linear weights (ModelOpt, compressed-tensors; fp4_layouts.h) appear under their plain names
// ("X.weight") as float32 tensors, dequantized once at load time. The models need no change: they read
// "X.weight" as they would from a BF16 checkpoint. Block-scaled FP8 linears ("X.weight" F8_E4M3 with
// "X.weight_scale_inv": DeepSeek-V3, Qwen3-*-FP8, `tachyon quantize --attention fp8`; fp8_blocks.h) likewise.
// gpt-oss MXFP4 experts (blocks / scales) pass through untouched: models/gpt_oss.cpp reads them natively.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "fp4/fp4_layouts.h"
#include "loader/checkpoint.h"

namespace tachyon::fp4 {

// A Checkpoint whose tensors either point into a base checkpoint (kept alive here) or live in memory owned
// here. Models hold a reference to checkpoint(): keep a DerivedCheckpoint where it is (hold it by
// unique_ptr) once a model is built on it.
class DerivedCheckpoint {
 public:
  // Copies the base's path, format, config and tokenizer fields; starts with no tensors.
  explicit DerivedCheckpoint(std::shared_ptr<const Checkpoint> base);
  DerivedCheckpoint(const DerivedCheckpoint&) = delete;
  DerivedCheckpoint& operator=(const DerivedCheckpoint&) = delete;

  Checkpoint& checkpoint() { return checkpoint_; }
  const Checkpoint& checkpoint() const { return checkpoint_; }
  const Checkpoint& base() const { return *base_; }
  const std::shared_ptr<const Checkpoint>& base_ptr() const { return base_; }

  // Adds a tensor of the base (or anything else that outlives this object) as it is.
  void add_view(const TensorView& tensor);
  // Adds a zero-filled float32 tensor owned here and returns its data to fill.
  float* add_float(const std::string& name, const std::vector<int64_t>& shape);
  // Adds an owned tensor of any dtype (bytes uninitialized).
  uint8_t* add_bytes(const std::string& name, DType dtype, const std::vector<int64_t>& shape);

 private:
  std::shared_ptr<const Checkpoint> base_;
  Checkpoint checkpoint_;
  std::vector<std::unique_ptr<uint8_t[]>> buffers_;
};

// A shared pointer to derived->checkpoint() that keeps `derived` alive (for APIs that take a shared base).
std::shared_ptr<const Checkpoint> shared_checkpoint(std::unique_ptr<DerivedCheckpoint> derived);

// Every FP4 and FP8 linear of `base` as float32 "X.weight" (its stored tensors dropped), everything else as it is.
// quantization_config of kind modelopt / compressed-tensors / fp8 is removed from the presented config.
std::unique_ptr<DerivedCheckpoint> present_fp4_as_float(std::shared_ptr<const Checkpoint> base);
// The same over a copy of `base` (its tensors stay mapped through the copy): for the CLI's CPU models.
std::unique_ptr<DerivedCheckpoint> present_fp4_as_float(const Checkpoint& base);
// open_checkpoint(path) followed by present_fp4_as_float: what the CLI uses to read any checkpoint.
std::unique_ptr<DerivedCheckpoint> open_fp4_checkpoint(const std::string& path);

}  // namespace tachyon::fp4
