// The target model as speculative decoding sees it: a sequence with a KV cache that can run a prompt or a
// block of rows, return the logits and the DFlash features (hidden states of chosen layers) of every row,
// and roll its cache back. The CPU version wraps a DecoderModel; a GPU version (src/gpu's GpuModel, whose
// forward() already takes 1..16 rows and whose truncate() is O(1)) implements the same interface, later
// keeping logits and features on the device (see docs/dflash.md, "GPU path").
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "models/decoder.h"
#include "models/dflash_drafter.h"

namespace tachyon {

struct TargetPass {
  std::vector<float> logits;    // [rows, vocab]: every row of a verify pass, the last row of a prefill
  std::vector<float> features;  // [rows, feature_width]: every row
};

class SpecTarget {
 public:
  virtual ~SpecTarget() = default;
  virtual int vocab_size() const = 0;
  virtual int64_t max_context() const = 0;
  virtual int64_t length() const = 0;  // positions held in the KV cache
  // Runs the prompt at positions [length(), + n): logits of the last row, features of every row.
  virtual TargetPass prefill(std::span<const int32_t> tokens) = 0;
  // Runs a block (causal inside it) at positions [length(), + n): logits and features of every row.
  virtual TargetPass verify(std::span<const int32_t> tokens) = 0;
  // Keeps positions [0, length) (drops the rejected rows of a verify pass).
  virtual void truncate(int64_t length) = 0;
};

class CpuSpecTarget : public SpecTarget {
 public:
  // Records the features of `feature_layers` on every pass; the KV cache holds at most max_positions
  // (0 = the model's context length).
  CpuSpecTarget(DecoderModel& model, std::vector<int> feature_layers, int64_t max_positions = 0);
  ~CpuSpecTarget() override;
  CpuSpecTarget(const CpuSpecTarget&) = delete;
  CpuSpecTarget& operator=(const CpuSpecTarget&) = delete;

  int vocab_size() const override { return model_.vocab_size(); }
  int64_t max_context() const override { return cache_.max_positions(); }
  int64_t length() const override { return cache_.length(); }
  TargetPass prefill(std::span<const int32_t> tokens) override;
  TargetPass verify(std::span<const int32_t> tokens) override;
  void truncate(int64_t length) override { cache_.truncate(length); }

 private:
  DecoderModel& model_;
  KvCache cache_;
};

// What a DFlash drafter reads from a CPU target (sizes, embedding, lm_head).
DrafterTargetInfo drafter_target_info(const DecoderModel& model);

}  // namespace tachyon
