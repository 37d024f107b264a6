// The GPU model runner: one decoder-only model (Llama / Qwen2 / Qwen3 / Qwen3-MoE / gpt-oss) resident on one GPU, its
// paged KV cache, and the passes that run it:
//   - forward / enqueue_pass: 1..16 tokens (a decode step or a speculative verify block) through the gemv
//     kernels; enqueue_pass takes device-side inputs only, so the decode loop can capture it in a CUDA graph;
//   - prefill: a prompt of any length in chunks through cuBLASLt GEMMs (bf16 activations) and the same
//     attention kernel (a chunk's rows are presented to it as 16-token "virtual sequences" sharing one
//     block-table row, since that kernel takes at most 16 query tokens per sequence).
// The layer loop mirrors DecoderModel::forward (src/models/decoder.cpp):
//   x = embed(tokens); per layer: x += attention(norm(x)); x += mlp_or_experts(norm(x)); logits = lm_head(norm(x))
// with the residual add fused into the next RMSNorm (add_rms_norm).
//
// Tensor parallelism (later): every product here reads a contiguous slice of a weight (heads, MLP columns,
// experts), so a rank would own slices and add an all-reduce of `delta` after o_proj and after the MLP/MoE,
// just before the add_rms_norm that consumes it (the two places marked "all-reduce point" in gpu_model.cpp).
#pragma once
#ifdef TACHYON_HAS_CUDA
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "attention/decode_attention.h"
#include "attention/kv_cache.h"
#include "cuda/device_buffer.h"
#include "cuda/stream.h"
#include "gemm/cublaslt_gemm.h"
#include "gemv/gemv_bf16.h"
#include "gpu/gpu_config.h"
#include "gpu/gpu_weights.h"
#include "gpu/kv_block_allocator.h"
#include "persistent/persistent_decode.h"
#include "persistent/persistent_stream.h"
#include "loader/checkpoint.h"

namespace tachyon::gpu {

constexpr int kMaxPassTokens = 16;  // the gemv / attention kernels' limit per pass

struct GpuModelOptions {
  int64_t kv_positions = 0;  // KV cache capacity in positions; 0 = min(max_position_embeddings, 4096)
  int page_size = 64;        // positions per KV page
  int prefill_chunk = 512;   // tokens per prefill pass (a multiple of 16)
  int max_sequences = 1;     // sequences holding KV pages at once (serving); they share the kv_positions
  bool progress = true;      // loading progress on stderr for big checkpoints
  // Keep, for every prefill token and sparse layer, the router's margin p_k - p_(k+1) (softmax probabilities of
  // the k-th and (k+1)-th choice): tests use it to tell a routing flip at a near-tie from a bug. Costs a copy of
  // the router logits per layer and chunk, so off by default.
  bool record_router_margins = false;
  // Routed experts as stored on the GPU: bf16, or NVFP4 / MXFP4 run by kernels/fp4_moe (fp4_experts.h). A
  // checkpoint's bf16/float experts are quantized at load time. Unset: as the checkpoint stores them (MXFP4 for
  // gpt-oss MXFP4 checkpoints and gpt-oss random weights, which are made as MXFP4; bf16 otherwise).
  std::optional<ExpertFormat> experts;
  // Dense matrices held as block-scaled FP8 for decode and verify (fp8_weights.h); none by default.
  Fp8Weights fp8;
  // DFlash target features: 0-based decoder layers whose output (the residual stream after the layer, before
  // any final norm: HF hidden_states[l + 1]) forward() and prefill() record for every row, and enqueue_pass
  // writes where PassInputs::features points. Ascending, no repeats; the last layer's is taken after the final
  // norm, as HF's hidden_states[-1] and the CPU hook report it (docs/dflash.md, "Feature layers"). Empty = none.
  std::vector<int> feature_layers;
  // Run a one-token decode pass (plain decoding: embedding through the final norm) as one persistent kernel
  // (kernels/persistent) when the model qualifies: the resident kernel for dense Llama / Qwen2 / Qwen3 whose layer
  // slices fit a block's shared memory twice (SmolLM2-135M), else the streamed kernel (Qwen3-MoE with bf16 experts,
  // FP4 experts when forced, larger dense models, FP8 attention; no FP8 MLP, no sliding windows or sinks). Other
  // passes, and models that qualify for neither, take the kernel-per-op path. persistent_kernel_name() tells which.
  bool persistent_decode = false;
  // With persistent_decode: record its per-phase clocks (persistent_phase_times(), `tachyon bench`); off, the kernel
  // reads no clock and writes no trace.
  bool trace_persistent_decode = false;
  // With persistent_decode: use the streamed kernel even where the resident one fits (tests of the streamed kernel
  // on small dense shapes) and for FP4 experts, which otherwise keep the per-op step (measured faster at long
  // contexts; docs/gpu-runtime.md).
  bool force_streamed_persistent = false;
};

// Device int32 arrays describing one pass of 1..16 tokens (AttentionBatch's fields). One sequence (the
// selected one, the decode loop's): n_sequences 1, token_sequence zeros, the model's own block table. Several
// (forward_batch): their block-table rows, and a workspace sized for that batch.
struct PassInputs {
  const int* tokens = nullptr;          // [n]
  const int* positions = nullptr;       // [n]
  const int* seq_lens = nullptr;        // [n_sequences]: KV length including this pass
  const int* query_start = nullptr;     // [n_sequences + 1]: {0, ..., n}
  const int* token_sequence = nullptr;  // [n]: the batch index of each token's sequence
  int n_sequences = 1;
  int max_query_tokens = 0;             // most tokens of one sequence in this pass; 0 = n
  const int* block_table = nullptr;     // [n_sequences, block_table_stride]; nullptr = the selected sequence's
  int block_table_stride = 0;
  void* attention_workspace = nullptr;  // nullptr = the model's (sized for one sequence)
  size_t attention_workspace_bytes = 0;
  // When set: [n, feature_width()] float32 rows, row r = [f_l0 | f_l1 | ...] in feature_layers' order, each
  // block hidden_padded wide (padding columns zero). Written by device-to-device copies: capturable.
  float* features = nullptr;
};

// The inputs of a pass over one sequence (n_sequences 1, the caller's block table) written from the host: one int
// array [tokens | positions | seq_len | query_start 2 | token_sequence] of `capacity` rows, copied in one transfer.
class SingleSequencePassInputs {
 public:
  explicit SingleSequencePassInputs(int capacity = kMaxPassTokens);
  // Enqueues rows at positions start .. start + n - 1 (token ids from `tokens`, or none: the drafter's context rows
  // have no ids). The source is pageable, so it is staged before the call returns and the next call may rewrite it;
  // stream order keeps earlier kernels ahead of the copy into the same device array.
  PassInputs upload(std::span<const int32_t> tokens, int n, int64_t start, cudaStream_t stream);

 private:
  int capacity_;
  std::vector<int> host_;
  cuda::DeviceBuffer<int> device_;
};

// The attention kernels' view of a pass's inputs (n tokens, keys bounded by max_seq_len on the host side).
inline kernels::AttentionBatch attention_batch(const PassInputs& in, int n, int max_seq_len) {
  kernels::AttentionBatch batch;
  batch.n_sequences = in.n_sequences;
  batch.n_tokens = n;
  batch.query_start = in.query_start;
  batch.seq_lens = in.seq_lens;
  batch.positions = in.positions;
  batch.token_sequence = in.token_sequence;
  batch.max_seq_len = max_seq_len;
  batch.max_query_tokens = in.max_query_tokens > 0 ? in.max_query_tokens : n;
  return batch;
}

// One sequence's tokens in a forward_batch pass.
struct SequenceTokens {
  int sequence = 0;
  std::span<const int32_t> tokens;
};

class GpuModel {
 public:
  static std::unique_ptr<GpuModel> load(const Checkpoint& checkpoint, const GpuModelOptions& options = {});
  // Random weights on the device for a config.json (`source` names it in errors).
  static std::unique_ptr<GpuModel> random(const nlohmann::json& config, const std::string& source, uint64_t seed,
                                          const GpuModelOptions& options = {});
  ~GpuModel();
  GpuModel(const GpuModel&) = delete;
  GpuModel& operator=(const GpuModel&) = delete;

  const GpuModelConfig& config() const { return config_; }
  const GpuWeights& weights() const { return weights_; }
  cudaStream_t stream() const { return stream_.get(); }
  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }
  size_t kv_cache_bytes() const { return kv_storage_.bytes(); }

  // Drops positions >= length (speculative rollback, or starting over with 0). O(1) on the device.
  void truncate(int64_t length);
  // Makes the KV cache hold pages for positions [0, length); refreshes the device block table on the stream.
  void reserve(int64_t length);

  // Runs 1..16 tokens at positions [length, length + n) and appends them to the cache. Returns the logits
  // [n, vocab] on the device (valid until the next pass).
  const float* forward(std::span<const int32_t> tokens);
  // A prompt of any length (chunks of prefill_chunk through the GEMM path; up to 16 tokens through forward()).
  // Returns device logits of the last row [vocab], or of every row [n, vocab] when all_rows. features_out
  // (device memory, needs feature_layers): the features of every row, [n, feature_width()].
  const float* prefill(std::span<const int32_t> tokens, bool all_rows = false, float* features_out = nullptr);
  // Host copies (synchronizing the stream).
  std::vector<float> forward_to_host(std::span<const int32_t> tokens);
  std::vector<float> prefill_to_host(std::span<const int32_t> tokens, bool all_rows = false);

  // Enqueues one pass whose inputs live on the device: no host work, no allocation, capturable in a graph.
  // max_seq_len bounds seq_lens while the pass runs (sizes the attention's split over the keys). Does not
  // change length(): the caller accounts for the positions with advance().
  void enqueue_pass(const PassInputs& inputs, int n_tokens, int max_seq_len, float* logits, cudaStream_t stream);
  void advance(int64_t positions);
  float* pass_logits() { return pass_logits_.data(); }  // [16, vocab]
  // Features: feature_layers.size() blocks of hidden_padded floats per row (0 without feature layers).
  const std::vector<int>& feature_layers() const { return options_.feature_layers; }
  int feature_width() const { return static_cast<int>(options_.feature_layers.size()) * config_.hidden_padded; }
  // forward()'s features [16, feature_width()] (rows of its last pass; valid until the next pass); nullptr
  // without feature layers.
  const float* pass_features() const { return pass_features_.size() ? pass_features_.data() : nullptr; }

  // Several sequences (serving, gpu_model_batch.cpp). Sequence 0 exists from the start; the single-sequence
  // API above (length, truncate, reserve, forward, prefill, enqueue_pass, the decode loop) acts on the
  // selected sequence, 0 unless select_sequence chose another. All share the KV pages of kv_positions.
  int add_sequence();  // throws when max_sequences are live
  void remove_sequence(int sequence);  // frees its pages; the selected sequence cannot be removed
  void select_sequence(int sequence);
  int selected_sequence() const { return sequence_; }
  int64_t sequence_length(int sequence) const;
  // One pass of 1..16 tokens spread over distinct sequences (decode rows of up to 16 sequences, or short prompt
  // chunks), each appended at its own positions. Returns device logits [total tokens, vocab] in item order
  // (valid until the next pass). Throws, changing nothing, when a sequence's pages cannot be reserved.
  const float* forward_batch(std::span<const SequenceTokens> items);

  // Experts each token chose in every sparse layer during the last forward/enqueue_pass of n_tokens tokens
  // ([layer][token * top_k + j]; empty for dense layers). Synchronizes.
  std::vector<std::vector<int>> last_routing(int n_tokens) const;
  // Whether one-token passes run as the persistent kernel (options.persistent_decode and the model qualifies).
  bool persistent_decode_active() const {
    return persistent_.layers != nullptr || persistent_stream_.layers != nullptr;
  }
  // Which persistent kernel runs one-token passes: "resident" (a small dense model's layers copied into shared
  // memory a layer ahead), "streamed" (weights read from HBM as used: MoE and larger models) or "" (none).
  std::string persistent_kernel_name() const {
    return persistent_.layers ? "resident" : persistent_stream_.layers ? "streamed" : "";
  }
  // Why the model does not qualify for the persistent kernel ("" when it does).
  std::string persistent_decode_unsupported() const;
  // Where the last persistent pass spent its time (block 0's clock), means over the layers, in microseconds:
  // per phase (q/k/v, attention, o_proj, gate/up, down) the work before block 0 reached the barrier and the wait
  // there (for the slowest block plus the barrier's own latency); empty when the kernel has not run. Synchronizes.
  struct PersistentPhaseTimes {
    double work_us[kernels::kPersistentPhases] = {}, barrier_us[kernels::kPersistentPhases] = {};
    double final_norm_us = 0, total_us = 0;
    // Block 0 inside phases, from the phase's start: P1's weights landed and norm done; P2's q / k ready and keys
    // done (its attention unit); P3's split combine done.
    double detail_stamps_us[kernels::kPersistentDetailStamps] = {};
    // All blocks, per phase: the slowest block's work per layer (from its own release of the previous barrier to its
    // arrival), which block that is, and the median block's.
    double slowest_block_us[kernels::kPersistentPhases] = {}, median_block_us[kernels::kPersistentPhases] = {};
    int slowest_block[kernels::kPersistentPhases] = {};
  };
  std::optional<PersistentPhaseTimes> persistent_phase_times() const;  // the resident kernel's
  // The streamed kernel's, per phase (kernels::kStreamPhaseNames) and layer: every block's work (from its release of
  // the previous barrier to its arrival) as the median and the slowest block, and block 0's wait at the barrier.
  struct StreamPhaseTimes {
    double median_block_us[kernels::kStreamPhases] = {}, slowest_block_us[kernels::kStreamPhases] = {};
    double block0_wait_us[kernels::kStreamPhases] = {};
    int slowest_block[kernels::kStreamPhases] = {};
    double total_us = 0;  // block 0's whole pass
    // Block 0's attention unit (kernels::kStreamUnitStamps), from P2's release: q ready, keys staged, the first
    // piece's items done, the unit done.
    double unit_stamps_us[kernels::kStreamUnitStamps] = {};
  };
  std::optional<StreamPhaseTimes> streamed_phase_times() const;
  // With record_router_margins: [layer][token] margins of the last prefill (empty for dense layers).
  const std::vector<std::vector<float>>& prefill_router_margins() const { return prefill_router_margins_; }

 private:
  GpuModel(GpuModelConfig config, const GpuModelOptions& options);
  void allocate_runtime();
  kernels::PagedKvCache layer_cache(int layer, const int* block_table) const;
  void sync_block_table();
  // The attention prologue / kernel arguments of a layer for a qkv projection output [rows, qkv_width].
  kernels::AttentionPrologue prologue_for(int layer, float* qkv) const;
  // (sliding window and sinks of `layer`; the workspace size does not depend on them)
  kernels::AttentionParams attention_params_for(int layer, float* qkv, float* out) const;
  void attention_pass(int layer, const kernels::ResidualNorm& norm, const PassInputs& in, int n, int max_seq_len,
                      cudaStream_t stream);
  void feed_forward_pass(int layer, const kernels::ResidualNorm& norm, int n, cudaStream_t stream);
  // x [n, hidden_padded] holds the residual stream after decoder layer `finished`: copies it into that layer's
  // block of features [n, feature_width()] if it is a feature layer.
  void copy_features(int finished, const float* x, int n, float* features, cudaStream_t stream) const;
  // Prefill (gpu_model_prefill.cpp).
  void prefill_chunk(std::span<const int32_t> tokens, int64_t start, bool all_rows, float* logits_rows,
                     float* feature_rows, bool last_chunk);
  void prefill_moe(int layer, int m);
  void record_router_margins(int layer, int m);
  void allocate_prefill();
  // The persistent kernels (gpu_model_persistent.cpp): the resident one where it qualifies and fits, else the
  // streamed one; their shape fields (no device pointers) from the config; why each does not qualify ("" if it does).
  void allocate_persistent_decode();
  bool allocate_resident_persistent();  // false: a layer's slices do not fit a block's shared memory twice
  void allocate_streamed_persistent();
  kernels::PersistentDecodeParams persistent_decode_shape() const;
  kernels::StreamDecodeParams persistent_stream_shape() const;
  std::string resident_persistent_unsupported() const;
  std::string streamed_persistent_unsupported() const;
  template <typename Layer>
  void fill_attention_fields(Layer& out, int layer) const;
  void allocate_persistent_scratch(size_t workspace_bytes, size_t trace_words);
  std::vector<unsigned long long> read_persistent_trace() const;  // synchronizes

  GpuModelConfig config_;
  GpuModelOptions options_;
  GpuWeights weights_;
  cuda::Stream stream_;
  int64_t capacity_ = 0, length_ = 0;

  // KV cache: [layer][k, v][page][page_size][kv_heads][head_dim_padded] bf16.
  std::unique_ptr<KvBlockAllocator> allocator_;
  int sequence_ = 0;                     // the selected sequence
  std::vector<int64_t> sequence_lengths_;  // per sequence id; the selected one's is length_
  uint64_t uploaded_table_version_ = ~uint64_t{0};
  cuda::DeviceBuffer<bf16> kv_storage_;
  cuda::DeviceBuffer<int> block_table_;  // [max_pages]
  std::vector<int> block_table_host_;
  cuda::DeviceBuffer<float> rope_inv_freq_;
  float rope_attention_factor_ = 1.0f;

  // Pass (1..16 token) activations, float32 row-major.
  cuda::DeviceBuffer<float> x_, normed_, qkv_, attn_, delta_, mlp_h_, pass_logits_;
  cuda::DeviceBuffer<float> pass_features_;  // [16, feature_width()] when there are feature layers
  std::vector<int> feature_slot_;            // per decoder layer: its block in a feature row, or -1
  cuda::DeviceBuffer<float> router_logits_, topk_weights_, expert_h_, expert_out_;
  cuda::DeviceBuffer<int> topk_ids_;      // [layers][16 * top_k]: kept per layer for last_routing()
  cuda::DeviceBuffer<int> routing_ints_;  // moe_group_by_expert's tables
  cuda::DeviceBuffer<uint8_t> attention_workspace_;
  SingleSequencePassInputs forward_inputs_;  // forward()'s
  // forward_batch(): [tokens 16 | positions 16 | sequence 16 | query_start 17 | seq_lens 16 | block table rows].
  cuda::DeviceBuffer<int> batch_ints_;
  std::vector<int> batch_ints_host_;
  cuda::DeviceBuffer<uint8_t> batch_attention_workspace_;

  // Prefill (allocated on first use).
  struct PrefillBuffers;
  std::unique_ptr<PrefillBuffers> prefill_;
  cuda::DeviceBuffer<float> prefill_logits_;  // all_rows logits
  std::vector<std::vector<float>> prefill_router_margins_;
  cuda::DeviceBuffer<bf16> fp4_prefill_experts_;  // FP4 experts: one layer's experts as bf16 for the prefill GEMMs

  // The persistent one-token pass (options.persistent_decode): its parameters (layers == nullptr: not used), the
  // per-layer pointer table, scratch and grid-barrier counter.
  kernels::PersistentDecodeParams persistent_;
  cuda::DeviceBuffer<kernels::PersistentLayer> persistent_layers_;
  kernels::StreamDecodeParams persistent_stream_;  // the streamed kernel's (layers == nullptr: not used)
  cuda::DeviceBuffer<kernels::StreamLayer> persistent_stream_layers_;
  cuda::DeviceBuffer<uint8_t> persistent_workspace_;
  cuda::DeviceBuffer<unsigned long long> persistent_barrier_;
  cuda::DeviceBuffer<unsigned long long> persistent_trace_;  // kernels::PersistentDecodeParams::trace
};

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
