// The ModelRunner of the GPU path: a src/gpu GpuModel holding one KV sequence per request (a block-table row
// each, pages from one shared pool). A step's decode rows go through forward_batch, up to 16 rows of
// different sequences per pass (more rows: more passes); prompt chunks longer than 16 tokens go through the
// GEMM prefill one sequence at a time. Only each item's last logits row is copied to the host, where the
// engine samples it. Built only with CUDA.
#pragma once
#ifdef TACHYON_HAS_CUDA
#include <memory>
#include <unordered_map>

#include "gpu/gpu_model.h"
#include "runtime/model_runner.h"

namespace tachyon {

class GpuModelRunner final : public ModelRunner {
 public:
  // The model must have been made with GpuModelOptions::max_sequences >= max_sequences + 1 (its sequence 0
  // stays empty: the selected sequence while no prefill runs). vocab_limit < the model's vocabulary cuts
  // every logits row to its first vocab_limit entries (random weights served with a smaller tokenizer).
  GpuModelRunner(std::unique_ptr<gpu::GpuModel> model, int max_sequences, std::string label, int vocab_limit = 0);

  std::string description() const override;
  int vocab_size() const override { return vocab_; }
  int64_t max_context() const override;
  int max_sequences() const override { return max_sequences_; }
  void add_sequence(uint64_t sequence, int64_t max_positions) override;
  void remove_sequence(uint64_t sequence) override;
  std::vector<float> run(std::span<const RunItem> items) override;

  gpu::GpuModel& model() { return *model_; }

 private:
  int slot(uint64_t sequence) const;

  std::unique_ptr<gpu::GpuModel> model_;
  int max_sequences_;
  std::string label_;
  int vocab_;
  std::unordered_map<uint64_t, int> slots_;  // engine sequence id -> GpuModel sequence
};

}  // namespace tachyon
#endif  // TACHYON_HAS_CUDA
