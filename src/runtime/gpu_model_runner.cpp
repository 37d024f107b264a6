#ifdef TACHYON_HAS_CUDA
#include "runtime/gpu_model_runner.h"

#include <cuda_runtime_api.h>

#include "core/error.h"
#include "cuda/cuda_check.h"

namespace tachyon {

GpuModelRunner::GpuModelRunner(std::unique_ptr<gpu::GpuModel> model, int max_sequences, std::string label,
                               int vocab_limit)
    : model_(std::move(model)), max_sequences_(max_sequences), label_(std::move(label)) {
  if (!model_) fail("GpuModelRunner: no model");
  if (max_sequences_ < 1) fail("GpuModelRunner: max_sequences must be >= 1, got {}", max_sequences_);
  vocab_ = vocab_limit > 0 ? std::min(vocab_limit, model_->config().vocab) : model_->config().vocab;
  model_->select_sequence(0);
}

std::string GpuModelRunner::description() const {
  const gpu::GpuModelConfig& c = model_->config();
  return fmt::format("cuda: {} ({}), {} layers, hidden {}, vocab {}{}, KV {} positions ({:.1f} GiB) for up to {} sequences",
                     label_, c.architecture, c.layers, c.hidden, c.vocab,
                     vocab_ < c.vocab ? fmt::format(" (first {} sampled)", vocab_) : "", model_->capacity(),
                     static_cast<double>(model_->kv_cache_bytes()) / (1 << 30), max_sequences_);
}

int64_t GpuModelRunner::max_context() const { return std::min<int64_t>(model_->config().max_context, model_->capacity()); }

int GpuModelRunner::slot(uint64_t sequence) const {
  auto it = slots_.find(sequence);
  if (it == slots_.end()) fail("GpuModelRunner: sequence {} has no KV cache", sequence);
  return it->second;
}

void GpuModelRunner::add_sequence(uint64_t sequence, int64_t max_positions) {
  if (slots_.count(sequence)) fail("GpuModelRunner: sequence {} already has a KV cache", sequence);
  if (static_cast<int>(slots_.size()) >= max_sequences_) fail("GpuModelRunner: all {} sequences are in use", max_sequences_);
  if (max_positions < 1 || max_positions > max_context())
    fail("GpuModelRunner: {} positions do not fit the context length of {}", max_positions, max_context());
  // Pages are taken as the sequence grows (a chat request's max_tokens defaults to the whole context): a
  // pool that runs dry fails the step that needed more (docs/server.md).
  slots_.emplace(sequence, model_->add_sequence());
}

void GpuModelRunner::remove_sequence(uint64_t sequence) {
  auto it = slots_.find(sequence);
  if (it == slots_.end()) return;
  if (model_->selected_sequence() == it->second) model_->select_sequence(0);
  model_->remove_sequence(it->second);
  slots_.erase(it);
}

std::vector<float> GpuModelRunner::run(std::span<const RunItem> items) {
  const int vocab = model_->config().vocab;
  std::vector<float> logits(items.size() * static_cast<size_t>(vocab_));
  cudaStream_t stream = model_->stream();
  // Each item's last row into its place in `logits` (pageable memory: the copy is done when the call returns,
  // and the next pass may overwrite the device logits).
  auto copy_row = [&](size_t item, const float* row) {
    TACHYON_CUDA_CHECK(cudaMemcpyAsync(logits.data() + item * vocab_, row, vocab_ * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream));
  };

  // Short items (decode rows, small prompt chunks) packed into passes of up to 16 rows.
  std::vector<gpu::SequenceTokens> pass;
  std::vector<size_t> pass_items;
  int pass_rows = 0;
  auto flush = [&] {
    if (pass.empty()) return;
    const float* out = model_->forward_batch(pass);
    int row = 0;
    for (size_t i = 0; i < pass.size(); ++i) {
      row += static_cast<int>(pass[i].tokens.size());
      copy_row(pass_items[i], out + static_cast<size_t>(row - 1) * vocab);
    }
    pass.clear();
    pass_items.clear();
    pass_rows = 0;
  };
  for (size_t i = 0; i < items.size(); ++i) {
    const int n = static_cast<int>(items[i].tokens.size());
    if (n < 1) fail("GpuModelRunner: item {} has no tokens", i);
    if (n > gpu::kMaxPassTokens) continue;
    if (pass_rows + n > gpu::kMaxPassTokens) flush();
    pass.push_back({slot(items[i].sequence), items[i].tokens});
    pass_items.push_back(i);
    pass_rows += n;
  }
  flush();
  // Long prompt chunks: the GEMM prefill of their sequence.
  for (size_t i = 0; i < items.size(); ++i) {
    if (static_cast<int>(items[i].tokens.size()) <= gpu::kMaxPassTokens) continue;
    model_->select_sequence(slot(items[i].sequence));
    copy_row(i, model_->prefill(items[i].tokens));
  }
  TACHYON_CUDA_CHECK(cudaStreamSynchronize(stream));
  return logits;
}

}  // namespace tachyon
#endif  // TACHYON_HAS_CUDA
