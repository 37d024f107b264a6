#include "runtime/cpu_model_runner.h"

#include "core/error.h"
#include "core/parallel.h"
#include "runtime/batched_forward.h"

namespace tachyon {

CpuModelRunner::CpuModelRunner(std::unique_ptr<Model> model, int max_sequences)
    : model_(std::move(model)), max_sequences_(max_sequences) {
  if (!model_) fail("CpuModelRunner: no model");
  if (max_sequences_ < 1) fail("CpuModelRunner: max_sequences must be >= 1, got {}", max_sequences_);
}

std::string CpuModelRunner::description() const {
  return fmt::format("cpu ({} threads): {}, {} layers, hidden {}, vocab {}, context {}", cpu_thread_count(),
                     model_->architecture(), model_->num_layers(), model_->hidden_size(), model_->vocab_size(),
                     model_->max_context());
}

void CpuModelRunner::add_sequence(uint64_t sequence, int64_t max_positions) {
  if (caches_.count(sequence)) fail("CpuModelRunner: sequence {} already has a KV cache", sequence);
  if (static_cast<int>(caches_.size()) >= max_sequences_)
    fail("CpuModelRunner: all {} KV caches are in use", max_sequences_);
  if (max_positions < 1 || max_positions > model_->max_context())
    fail("CpuModelRunner: {} positions do not fit the context length of {}", max_positions, model_->max_context());
  caches_.emplace(sequence, model_->new_cache(max_positions));
}

void CpuModelRunner::remove_sequence(uint64_t sequence) { caches_.erase(sequence); }

KvCache& CpuModelRunner::cache(uint64_t sequence) {
  auto it = caches_.find(sequence);
  if (it == caches_.end()) fail("CpuModelRunner: sequence {} has no KV cache", sequence);
  return it->second;
}

std::vector<float> CpuModelRunner::run(std::span<const RunItem> items) {
  std::vector<ForwardItem> batch;
  batch.reserve(items.size());
  for (const RunItem& item : items) batch.push_back({item.tokens, &cache(item.sequence)});
  return forward_batch(*model_, batch);
}

}  // namespace tachyon
