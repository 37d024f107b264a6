// The ModelRunner of the CPU reference path: a models/ Model and one KvCache per sequence. A step's
// items (decode tokens and prompt chunks alike) run together through forward_batch, one pass over
// the weights per step.
#pragma once
#include <memory>
#include <unordered_map>

#include "models/model.h"
#include "runtime/model_runner.h"

namespace tachyon {

class CpuModelRunner final : public ModelRunner {
 public:
  // max_sequences bounds the KV caches alive at once (each grows with its sequence, up to its
  // max_positions).
  CpuModelRunner(std::unique_ptr<Model> model, int max_sequences);

  std::string description() const override;
  int vocab_size() const override { return model_->vocab_size(); }
  int64_t max_context() const override { return model_->max_context(); }
  int max_sequences() const override { return max_sequences_; }
  void add_sequence(uint64_t sequence, int64_t max_positions) override;
  void remove_sequence(uint64_t sequence) override;
  std::vector<float> run(std::span<const RunItem> items) override;

  Model& model() { return *model_; }

 private:
  KvCache& cache(uint64_t sequence);

  std::unique_ptr<Model> model_;
  int max_sequences_;
  std::unordered_map<uint64_t, KvCache> caches_;
};

}  // namespace tachyon
