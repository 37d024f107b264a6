// Several sequences in one GpuModel (serving): sequence bookkeeping and forward_batch, the 1..16-token pass
// whose rows belong to different sequences. The pass is enqueue_pass itself; only its inputs differ from the
// single-sequence forward(): per-row sequence indices, per-sequence query ranges and KV lengths, and the
// block-table rows of just the sequences in the batch (row i = the i-th item's page list), so the attention
// kernel sees an ordinary multi-sequence AttentionBatch (kernels/attention/kv_cache.h).
#ifdef TACHYON_HAS_CUDA
#include <algorithm>

#include "core/error.h"
#include "gpu/gpu_model.h"

namespace tachyon::gpu {

int GpuModel::add_sequence() {
  const int sequence = allocator_->add_sequence();
  sequence_lengths_[sequence] = 0;
  return sequence;
}

void GpuModel::remove_sequence(int sequence) {
  if (sequence == sequence_) fail("GpuModel::remove_sequence: sequence {} is the selected one", sequence);
  allocator_->remove_sequence(sequence);
  sequence_lengths_[sequence] = 0;
}

void GpuModel::select_sequence(int sequence) {
  if (sequence == sequence_) return;
  allocator_->pages(sequence);  // throws unless live
  sequence_lengths_[sequence_] = length_;
  sequence_ = sequence;
  length_ = sequence_lengths_[sequence];
  uploaded_table_version_ = ~uint64_t{0};  // versions count per sequence: the device row must be rewritten
  reserve(length_);
}

int64_t GpuModel::sequence_length(int sequence) const {
  allocator_->pages(sequence);  // throws unless live
  return sequence == sequence_ ? length_ : sequence_lengths_[sequence];
}

const float* GpuModel::forward_batch(std::span<const SequenceTokens> items) {
  constexpr int T = kMaxPassTokens;
  const int k = static_cast<int>(items.size());
  int rows = 0, max_query = 0;
  for (int i = 0; i < k; ++i) {
    const int n = static_cast<int>(items[i].tokens.size());
    if (n < 1) fail("GpuModel::forward_batch: item {} has no tokens", i);
    rows += n;
    max_query = std::max(max_query, n);
    for (int j = 0; j < i; ++j)
      if (items[j].sequence == items[i].sequence)
        fail("GpuModel::forward_batch: items {} and {} are both sequence {}", j, i, items[i].sequence);
    for (int32_t id : items[i].tokens)
      if (id < 0 || id >= config_.vocab) fail("token id {} is outside the vocabulary [0, {})", id, config_.vocab);
  }
  if (k < 1 || rows > T) fail("GpuModel::forward_batch: {} tokens; a pass takes 1..{}", rows, T);

  // Reserve every sequence's pages first: a failure leaves all lengths as they were.
  std::vector<int64_t> starts(k);
  for (int i = 0; i < k; ++i) {
    starts[i] = sequence_length(items[i].sequence);
    const int64_t needed = starts[i] + static_cast<int64_t>(items[i].tokens.size());
    if (!allocator_->reserve(items[i].sequence, needed))
      fail("KV cache full: sequence {} needs {} positions, {} pages of {} are free (raise --kv-positions)",
           items[i].sequence, needed, allocator_->free_pages(), allocator_->total_pages());
  }
  int width = 1;
  for (int i = 0; i < k; ++i) width = std::max(width, static_cast<int>(allocator_->pages(items[i].sequence).size()));

  // [tokens T | positions T | token_sequence T | query_start T + 1 | seq_lens T | block table k x width]
  const int tokens_at = 0, positions_at = T, sequence_at = 2 * T, query_at = 3 * T, lens_at = 4 * T + 1,
            table_at = 5 * T + 1;
  std::vector<int>& h = batch_ints_host_;
  h.assign(table_at + static_cast<size_t>(k) * width, -1);
  int row = 0, max_seq_len = 0;
  for (int i = 0; i < k; ++i) {
    const int n = static_cast<int>(items[i].tokens.size());
    h[query_at + i] = row;
    for (int t = 0; t < n; ++t, ++row) {
      h[tokens_at + row] = items[i].tokens[t];
      h[positions_at + row] = static_cast<int>(starts[i] + t);
      h[sequence_at + row] = i;
    }
    h[lens_at + i] = static_cast<int>(starts[i] + n);
    max_seq_len = std::max(max_seq_len, h[lens_at + i]);
    const std::vector<int>& pages = allocator_->pages(items[i].sequence);
    std::copy(pages.begin(), pages.end(), h.begin() + table_at + static_cast<size_t>(i) * width);
  }
  h[query_at + k] = row;
  for (int r = row; r < T; ++r) h[sequence_at + r] = 0;  // unused rows: never read (n_tokens = rows)

  if (batch_ints_.size() < h.size()) {
    stream_.synchronize();  // queued passes may still read the old buffer
    batch_ints_ = cuda::DeviceBuffer<int>(std::max(h.size(), size_t{5 * T + 1 + 16 * 64}));
  }
  TACHYON_CUDA_CHECK(
      cudaMemcpyAsync(batch_ints_.data(), h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice, stream_.get()));

  PassInputs in;
  const int* ints = batch_ints_.data();
  in.tokens = ints + tokens_at;
  in.positions = ints + positions_at;
  in.token_sequence = ints + sequence_at;
  in.query_start = ints + query_at;
  in.seq_lens = ints + lens_at;
  in.n_sequences = k;
  in.max_query_tokens = max_query;
  in.block_table = ints + table_at;
  in.block_table_stride = width;

  // The split over the keys (hence the workspace) depends on the batch's shape: size it for this one.
  kernels::AttentionParams params = attention_params_for(0, qkv_.data(), attn_.data());
  kernels::PagedKvCache cache = layer_cache(0, in.block_table);
  cache.max_pages_per_seq = width;
  kernels::AttentionBatch batch;
  batch.n_sequences = k;
  batch.n_tokens = rows;
  batch.max_seq_len = max_seq_len;
  batch.max_query_tokens = max_query;
  const size_t workspace = kernels::decode_attention_workspace_bytes(params, cache, batch);
  if (batch_attention_workspace_.bytes() < std::max<size_t>(workspace, 16)) {
    stream_.synchronize();
    batch_attention_workspace_ = cuda::DeviceBuffer<uint8_t>(std::max<size_t>(workspace, 16) * 2);
  }
  in.attention_workspace = batch_attention_workspace_.data();
  in.attention_workspace_bytes = batch_attention_workspace_.bytes();

  enqueue_pass(in, rows, max_seq_len, pass_logits_.data(), stream_.get());
  for (int i = 0; i < k; ++i) {
    const int64_t end = starts[i] + static_cast<int64_t>(items[i].tokens.size());
    if (items[i].sequence == sequence_) {
      length_ = end;  // (its device row is refreshed by the next reserve(): the allocator's version changed)
    } else {
      sequence_lengths_[items[i].sequence] = end;
    }
  }
  return pass_logits_.data();
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
