// GpuModel: construction, the KV cache bookkeeping, and the 1..16-token pass (decode / verify) through the gemv
// kernels. Prefill is in gpu_model_prefill.cpp.
#ifdef TACHYON_HAS_CUDA
#include "gpu/gpu_model.h"

#include <algorithm>
#include <cstdio>

#include "activation/swiglu.h"
#include "attention/decode_attention.h"
#include "core/error.h"
#include "embedding/embedding.h"
#include "fp4_moe/fp4_moe.h"
#include "gemv/gemv_bf16.h"
#include "gpu/fp8_weights.h"
#include "gpu/fp4_experts.h"
#include "gpu/gpt_oss_experts.h"
#include "gpu/gpu_model_buffers.h"
#include "moe/moe_routing.h"
#include "models/rope.h"
#include "norm/rms_norm.h"

namespace tachyon::gpu {

namespace {

// The attention kernel's scratch for the largest split it can choose for these shapes at any KV length up
// to `capacity`: allocated once, so a captured graph never sees its workspace move.
size_t max_attention_workspace(const GpuModelConfig& c, int n_sequences, int n_tokens, int max_query_tokens,
                               int64_t capacity) {
  kernels::AttentionParams params;
  params.n_heads = c.heads;
  kernels::PagedKvCache cache;
  cache.n_kv_heads = c.kv_heads;
  cache.head_dim = c.head_dim_padded;
  kernels::AttentionBatch batch;
  batch.n_sequences = n_sequences;
  batch.n_tokens = n_tokens;
  batch.max_query_tokens = max_query_tokens;
  size_t bytes = 0;
  for (int64_t length = 64; length < capacity + 64; length += 64) {
    batch.max_seq_len = static_cast<int>(std::min(length, capacity));
    bytes = std::max(bytes, kernels::decode_attention_workspace_bytes(params, cache, batch));
  }
  return bytes;
}

}  // namespace

SingleSequencePassInputs::SingleSequencePassInputs(int capacity)
    : capacity_(capacity), host_(3 * capacity + 3, 0), device_(host_.size()) {}

PassInputs SingleSequencePassInputs::upload(std::span<const int32_t> tokens, int n, int64_t start,
                                            cudaStream_t stream) {
  if (n < 1 || n > capacity_ || (!tokens.empty() && static_cast<int>(tokens.size()) != n))
    fail("SingleSequencePassInputs: {} rows ({} token ids) for a pass of at most {}", n, tokens.size(), capacity_);
  const int T = capacity_;
  for (int t = 0; t < n; ++t) {
    host_[t] = tokens.empty() ? 0 : tokens[t];
    host_[T + t] = static_cast<int>(start + t);
    host_[2 * T + 3 + t] = 0;
  }
  host_[2 * T] = static_cast<int>(start + n);  // seq_len
  host_[2 * T + 1] = 0;                        // query_start
  host_[2 * T + 2] = n;
  TACHYON_CUDA_CHECK(
      cudaMemcpyAsync(device_.data(), host_.data(), host_.size() * sizeof(int), cudaMemcpyHostToDevice, stream));
  PassInputs in;
  in.tokens = device_.data();
  in.positions = device_.data() + T;
  in.seq_lens = device_.data() + 2 * T;
  in.query_start = device_.data() + 2 * T + 1;
  in.token_sequence = device_.data() + 2 * T + 3;
  return in;
}

GpuModel::GpuModel(GpuModelConfig config, const GpuModelOptions& options)
    : config_(std::move(config)), options_(options) {
  if (options_.page_size <= 0) fail("GpuModel: page_size must be positive, got {}", options_.page_size);
  if (options_.prefill_chunk < 16 || options_.prefill_chunk % 16 != 0)
    fail("GpuModel: prefill_chunk must be a positive multiple of 16, got {}", options_.prefill_chunk);
  const int64_t requested =
      options_.kv_positions > 0 ? options_.kv_positions : std::min<int64_t>(config_.max_context, 4096);
  const int64_t pages = (requested + options_.page_size - 1) / options_.page_size;
  capacity_ = pages * options_.page_size;
  if (capacity_ > (int64_t{1} << 30)) fail("GpuModel: KV capacity of {} positions is too large", capacity_);
  // Feature layers: what DecoderModel::set_feature_layers records (the last layer's after the final norm, as HF's
  // hidden_states[-1]), in ascending order only (the slots of a feature row).
  feature_slot_.assign(config_.layers, -1);
  const std::vector<int>& features = options_.feature_layers;
  for (size_t f = 0; f < features.size(); ++f) {
    const int layer = features[f];
    if (layer < 0 || layer >= config_.layers)
      fail("GpuModel: feature layer {} is outside [0, {}) (0-based decoder layers)", layer, config_.layers);
    if (f > 0 && layer <= features[f - 1])
      fail("GpuModel: feature layers must be ascending without repeats; {} follows {}", layer, features[f - 1]);
    feature_slot_[layer] = static_cast<int>(f);
  }
}

GpuModel::~GpuModel() = default;

std::unique_ptr<GpuModel> GpuModel::load(const Checkpoint& checkpoint, const GpuModelOptions& options) {
  GpuModelConfig config = read_gpu_model_config(checkpoint.config, checkpoint.path + " config");
  if (config.family == GpuFamily::GptOss && checkpoint.weights.has("model.layers.0.mlp.experts.gate_up_proj_blocks"))
    config.gpt_oss_mxfp4 = true;  // as GptOssModel::uses_mxfp4: the tensors tell when the config does not
  set_expert_format(config, options.experts.value_or(config.gpt_oss_mxfp4 ? ExpertFormat::Mxfp4 : ExpertFormat::Bf16),
                    checkpoint.path);
  set_fp8_weights(config, options.fp8, checkpoint.path);
  std::unique_ptr<GpuModel> model(new GpuModel(std::move(config), options));
  model->weights_ = upload_checkpoint_weights(checkpoint, model->config_, options.progress);
  model->allocate_runtime();
  return model;
}

std::unique_ptr<GpuModel> GpuModel::random(const nlohmann::json& config_json, const std::string& source, uint64_t seed,
                                           const GpuModelOptions& options) {
  GpuModelConfig config = read_gpu_model_config(config_json, source);
  // gpt-oss random experts are made as MXFP4 blocks / scales (gpt_oss_experts.h): kept so unless asked otherwise.
  set_expert_format(
      config, options.experts.value_or(config.family == GpuFamily::GptOss ? ExpertFormat::Mxfp4 : ExpertFormat::Bf16),
      source);
  set_fp8_weights(config, options.fp8, source);
  std::unique_ptr<GpuModel> model(new GpuModel(std::move(config), options));
  model->weights_ = random_device_weights(model->config_, seed);
  model->allocate_runtime();
  return model;
}

void GpuModel::allocate_runtime() {
  const GpuModelConfig& c = config_;
  const int T = kMaxPassTokens;
  const int pages = static_cast<int>(capacity_ / options_.page_size);
  if (options_.max_sequences < 1) fail("GpuModel: max_sequences must be >= 1, got {}", options_.max_sequences);
  allocator_ = std::make_unique<KvBlockAllocator>(pages, options_.page_size, options_.max_sequences, pages);
  sequence_ = allocator_->add_sequence();
  sequence_lengths_.assign(options_.max_sequences, 0);
  kv_storage_ = cuda::DeviceBuffer<bf16>(size_t{2} * c.layers * capacity_ * c.kv_width());
  block_table_ = cuda::DeviceBuffer<int>(pages);
  block_table_.fill_bytes(0xff);  // -1: no page

  // RoPE inverse frequencies as the CPU computes them (float32, transformers' formulas).
  const Rope rope(c.rope);
  rope_inv_freq_ = cuda::DeviceBuffer<float>(rope.inverse_frequencies());
  rope_attention_factor_ = rope.attention_factor();

  x_ = cuda::DeviceBuffer<float>(2 * size_t{T} * c.hidden_padded);  // the residual and its next value (enqueue_pass)
  normed_ = cuda::DeviceBuffer<float>(size_t{T} * c.hidden_padded);
  delta_ = cuda::DeviceBuffer<float>(size_t{T} * c.hidden_padded);
  qkv_ = cuda::DeviceBuffer<float>(size_t{T} * c.qkv_width());
  attn_ = cuda::DeviceBuffer<float>(size_t{T} * c.q_width());
  pass_logits_ = cuda::DeviceBuffer<float>(size_t{T} * c.vocab);
  if (feature_width() > 0) pass_features_ = cuda::DeviceBuffer<float>(size_t{T} * feature_width());
  if (c.has_dense_layers()) mlp_h_ = cuda::DeviceBuffer<float>(size_t{T} * c.intermediate_padded);
  if (c.experts > 0) {
    const int assignments = T * c.top_k;
    router_logits_ = cuda::DeviceBuffer<float>(size_t{T} * c.experts);
    topk_weights_ = cuda::DeviceBuffer<float>(assignments);
    topk_ids_ = cuda::DeviceBuffer<int>(static_cast<size_t>(c.layers) * assignments);
    routing_ints_ = cuda::DeviceBuffer<int>(kernels::expert_routing_ints(c.experts, assignments));
    expert_h_ = cuda::DeviceBuffer<float>(static_cast<size_t>(assignments) * c.moe_intermediate_padded);
    expert_out_ = cuda::DeviceBuffer<float>(static_cast<size_t>(assignments) * c.hidden_padded);
  }
  size_t workspace = 0;
  for (int n = 1; n <= T; ++n) workspace = std::max(workspace, max_attention_workspace(c, 1, n, n, capacity_));
  attention_workspace_ = cuda::DeviceBuffer<uint8_t>(std::max<size_t>(workspace, 16));
  if (options_.persistent_decode) allocate_persistent_decode();
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());  // weights filled on the legacy stream must be visible to stream_
}

kernels::PagedKvCache GpuModel::layer_cache(int layer, const int* block_table) const {
  const size_t layer_elements = static_cast<size_t>(capacity_) * config_.kv_width();
  kernels::PagedKvCache cache;
  cache.k_pages = const_cast<bf16*>(kv_storage_.data()) + (size_t{2} * layer) * layer_elements;
  cache.v_pages = cache.k_pages + layer_elements;
  cache.block_table = block_table;
  cache.max_pages_per_seq = allocator_->max_pages_per_sequence();
  cache.page_size = options_.page_size;
  cache.n_kv_heads = config_.kv_heads;
  cache.head_dim = config_.head_dim_padded;
  return cache;
}

void GpuModel::truncate(int64_t length) {
  if (length < 0 || length > length_) fail("GpuModel::truncate: length {} outside [0, {}]", length, length_);
  allocator_->truncate(sequence_, length);
  length_ = length;
}

void GpuModel::reserve(int64_t length) {
  if (!allocator_->reserve(sequence_, length))
    fail("KV cache full: {} positions needed, the cache holds {} (raise the KV capacity, e.g. --kv-positions)", length,
         capacity_);
  sync_block_table();
}

void GpuModel::sync_block_table() {
  if (allocator_->version(sequence_) == uploaded_table_version_) return;
  block_table_host_ = allocator_->block_table_row(sequence_);
  // Pageable source: the copy is staged before the call returns, so the host vector may change afterwards.
  TACHYON_CUDA_CHECK(cudaMemcpyAsync(block_table_.data(), block_table_host_.data(),
                                     block_table_host_.size() * sizeof(int), cudaMemcpyHostToDevice, stream_.get()));
  uploaded_table_version_ = allocator_->version(sequence_);
}

void GpuModel::advance(int64_t positions) {
  if (length_ + positions > allocator_->reserved_positions(sequence_))
    fail("GpuModel::advance: {} positions past the reserved KV pages", length_ + positions);
  length_ += positions;
}

const float* GpuModel::forward(std::span<const int32_t> tokens) {
  const int n = static_cast<int>(tokens.size());
  if (n < 1 || n > kMaxPassTokens) fail("GpuModel::forward: {} tokens; a pass takes 1..{}", n, kMaxPassTokens);
  for (int32_t id : tokens)
    if (id < 0 || id >= config_.vocab) fail("token id {} is outside the vocabulary [0, {})", id, config_.vocab);
  reserve(length_ + n);
  PassInputs in = forward_inputs_.upload(tokens, n, length_, stream_.get());
  in.features = feature_width() > 0 ? pass_features_.data() : nullptr;
  enqueue_pass(in, n, static_cast<int>(length_ + n), pass_logits_.data(), stream_.get());
  advance(n);
  return pass_logits_.data();
}

std::vector<float> GpuModel::forward_to_host(std::span<const int32_t> tokens) {
  const float* logits = forward(tokens);
  std::vector<float> host(tokens.size() * config_.vocab);
  TACHYON_CUDA_CHECK(
      cudaMemcpyAsync(host.data(), logits, host.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_.get()));
  stream_.synchronize();
  return host;
}

std::vector<float> GpuModel::prefill_to_host(std::span<const int32_t> tokens, bool all_rows) {
  const float* logits = prefill(tokens, all_rows);
  std::vector<float> host((all_rows ? tokens.size() : 1) * config_.vocab);
  TACHYON_CUDA_CHECK(
      cudaMemcpyAsync(host.data(), logits, host.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_.get()));
  stream_.synchronize();
  return host;
}

void GpuModel::enqueue_pass(const PassInputs& in, int n, int max_seq_len, float* logits, cudaStream_t stream) {
  const GpuModelConfig& c = config_;
  const GpuWeights& w = weights_;
  if (persistent_decode_active() && n == 1 && in.n_sequences == 1 && !in.block_table && !in.features) {
    if (persistent_.layers) {
      kernels::PersistentDecodeParams p = persistent_;
      p.token = in.tokens;
      p.position = in.positions;
      p.seq_len = in.seq_lens;
      kernels::persistent_decode(p, stream);  // embedding .. final norm into normed_
    } else {
      kernels::StreamDecodeParams p = persistent_stream_;
      p.token = in.tokens;
      p.position = in.positions;
      p.seq_len = in.seq_lens;
      kernels::persistent_stream_decode(p, stream);
    }
    dense_gemv(w.lm_head_fp8, w.lm_head, nullptr, normed_.data(), logits, n, c.vocab, c.hidden_padded, stream);
    return;
  }
  // Each pre-norm is fused into the projection that reads it (kernels::ResidualNorm: one launch fewer where it
  // pays), which must write the new residual beside the old one, since other blocks are still reading it: the
  // residual alternates between the two halves of x_.
  float* residual = x_.data();
  float* next_residual = x_.data() + x_.size() / 2;
  auto pre_norm = [&](const float* delta, const float* weight) {
    const kernels::ResidualNorm norm{residual, delta, weight, c.hidden_norm_eps(), next_residual, normed_.data()};
    std::swap(residual, next_residual);
    return norm;
  };
  kernels::embedding_gather_bf16(w.embed, in.tokens, residual, n, c.vocab, c.hidden_padded, 1.0f, stream);
  for (int layer = 0; layer < c.layers; ++layer) {
    const GpuLayerWeights& L = w.layers[layer];
    // The previous layer's MLP output joins the residual here (layer 0: a plain norm of the embeddings).
    attention_pass(layer, pre_norm(layer == 0 ? nullptr : delta_.data(), L.input_norm), in, n, max_seq_len, stream);
    // residual now holds the output of layer - 1 (its MLP delta was added by the QKV projection's norm).
    if (in.features && layer > 0) copy_features(layer - 1, residual, n, in.features, stream);
    // all-reduce point (tensor parallel): delta holds this rank's share of o_proj.
    feed_forward_pass(layer, pre_norm(delta_.data(), L.post_attention_norm), n, stream);
    // all-reduce point (tensor parallel): delta holds this rank's share of the MLP / experts.
  }
  // Not fused: every block of the vocabulary-wide lm_head would recompute it (kernels::ResidualNorm).
  kernels::add_rms_norm(residual, delta_.data(), w.final_norm, normed_.data(), n, c.hidden_padded, c.hidden_norm_eps(),
                        stream);
  if (in.features) copy_features(c.layers - 1, normed_.data(), n, in.features, stream);  // normed, as HF reports it
  dense_gemv(w.lm_head_fp8, w.lm_head, nullptr, normed_.data(), logits, n, c.vocab, c.hidden_padded, stream);
}

void GpuModel::copy_features(int finished, const float* x, int n, float* features, cudaStream_t stream) const {
  const int slot = feature_slot_[finished];
  if (slot < 0) return;
  const size_t row_bytes = static_cast<size_t>(config_.hidden_padded) * sizeof(float);
  TACHYON_CUDA_CHECK(cudaMemcpy2DAsync(features + static_cast<size_t>(slot) * config_.hidden_padded,
                                       static_cast<size_t>(feature_width()) * sizeof(float), x, row_bytes, row_bytes, n,
                                       cudaMemcpyDeviceToDevice, stream));
}

kernels::AttentionPrologue GpuModel::prologue_for(int layer, float* qkv) const {
  const GpuModelConfig& c = config_;
  const GpuLayerWeights& L = weights_.layers[layer];
  kernels::AttentionPrologue prologue;
  prologue.q = qkv;
  prologue.q_stride = c.qkv_width();
  prologue.n_heads = c.heads;
  prologue.k = qkv + c.q_width();
  prologue.k_stride = c.qkv_width();
  prologue.v = qkv + c.q_width() + c.kv_width();
  prologue.v_stride = c.qkv_width();
  prologue.q_norm_weight = L.q_norm;
  prologue.k_norm_weight = L.k_norm;
  // The padded head's mean square is head_dim / head_dim_padded times the real one's (gpu_weights.h).
  prologue.norm_eps = c.rms_eps * static_cast<float>(c.head_dim) / static_cast<float>(c.head_dim_padded);
  prologue.rope.inv_freq = rope_inv_freq_.data();
  prologue.rope.rotary_dim = c.rope.rotary_dim;
  prologue.rope.attention_factor = rope_attention_factor_;
  prologue.rope.interleaved = c.rope.interleaved;
  return prologue;
}

kernels::AttentionParams GpuModel::attention_params_for(int layer, float* qkv, float* out) const {
  kernels::AttentionParams params;
  params.sliding_window = config_.sliding_window(layer);
  params.sinks = weights_.layers[layer].sinks;
  params.q = qkv;
  params.q_stride = config_.qkv_width();
  params.out = out;
  params.out_stride = config_.q_width();
  params.n_heads = config_.heads;
  params.scale = config_.attention_scale;
  return params;
}

void GpuModel::attention_pass(int layer, const kernels::ResidualNorm& norm, const PassInputs& in, int n,
                              int max_seq_len, cudaStream_t stream) {
  const GpuModelConfig& c = config_;
  const GpuLayerWeights& L = weights_.layers[layer];
  dense_gemv(norm, L.qkv_fp8, L.qkv, L.qkv_bias, qkv_.data(), n, c.qkv_width(), c.hidden_padded, stream);

  const kernels::AttentionBatch batch = attention_batch(in, n, max_seq_len);
  kernels::PagedKvCache cache = layer_cache(layer, in.block_table ? in.block_table : block_table_.data());
  if (in.block_table) cache.max_pages_per_seq = in.block_table_stride;

  kernels::qk_norm_rope_kv_append(prologue_for(layer, qkv_.data()), cache, batch, stream);
  kernels::AttentionParams params = attention_params_for(layer, qkv_.data(), attn_.data());
  // Every cached row below this pass's was written by an earlier pass (the speculative round's included: one target
  // pass per round), so the first tile may stream before the prologue kernel above finishes.
  params.cache_settled = true;
  if (in.attention_workspace)
    kernels::decode_attention(params, cache, batch, in.attention_workspace, in.attention_workspace_bytes, stream);
  else
    kernels::decode_attention(params, cache, batch, attention_workspace_.data(), attention_workspace_.bytes(), stream);
  dense_gemv(L.o_fp8, L.o, L.o_bias, attn_.data(), delta_.data(), n, c.hidden_padded, c.q_width(), stream);
}

void GpuModel::feed_forward_pass(int layer, const kernels::ResidualNorm& norm, int n, cudaStream_t stream) {
  const GpuModelConfig& c = config_;
  const GpuLayerWeights& L = weights_.layers[layer];
  const float* normed = norm.normed;  // written by the first product below, read by the expert kernels after it
  if (!c.is_sparse(layer)) {
    const int64_t Ip = c.intermediate_padded;
    dense_gated_gemv(norm, L.gate_fp8, L.up_fp8, L.gate_up, L.gate_up + Ip * c.hidden_padded, mlp_h_.data(), n,
                     static_cast<int>(Ip), c.hidden_padded, stream);
    dense_gemv(L.down_fp8, L.down, nullptr, mlp_h_.data(), delta_.data(), n, c.hidden_padded, static_cast<int>(Ip),
               stream);
    return;
  }
  const int Ip = c.moe_intermediate_padded;
  const int assignments = kMaxPassTokens * c.top_k;
  int* topk_ids = topk_ids_.data() + static_cast<size_t>(layer) * assignments;
  kernels::gemv_bf16(norm, L.router, L.router_bias, router_logits_.data(), n, c.experts, c.hidden_padded, stream);
  kernels::RouterConfig router;
  router.n_experts = c.experts;
  router.top_k = c.top_k;
  router.scoring = kernels::RouterScoring::Softmax;
  router.renormalize = c.norm_topk_prob;
  const kernels::ExpertRoutingBuffers buffers =
      kernels::expert_routing_buffers(routing_ints_.data(), c.experts, assignments);
  // Top-k and grouping by expert in one launch (one graph node fewer per MoE layer).
  const kernels::ExpertRouting routing =
      kernels::moe_route_and_group(router_logits_.data(), n, router, topk_ids, topk_weights_.data(), buffers, stream);
  // Each expert that any of the n tokens chose is read once for all of them. gpt-oss: biases and the clamped
  // SwiGLU in the kernels' epilogues (empty for the other families).
  const kernels::ExpertEpilogue epilogue = expert_epilogue(c, L);
  if (c.expert_format != ExpertFormat::Bf16) {  // FP4: gate/up + SiLU, then down + the weighted combine
    kernels::fp4_moe_experts(L.fp4_gate, L.fp4_up, L.fp4_down, routing, normed, topk_weights_.data(), expert_h_.data(),
                             delta_.data(), false, stream, kernels::default_fp4_moe_tuning(), epilogue);
    return;
  }
  kernels::expert_gated_gemv_bf16(L.expert_gate_up, L.expert_gate_up + int64_t{Ip} * c.hidden_padded,
                                  expert_gate_up_stride(c), routing, normed, expert_h_.data(), Ip, c.hidden_padded,
                                  stream, {}, epilogue.gate_up_part());
  kernels::expert_gemv_bf16(L.expert_down, expert_down_stride(c), routing, expert_h_.data(), expert_out_.data(),
                            c.hidden_padded, Ip, stream, {}, epilogue.down_part());
  kernels::moe_combine(expert_out_.data(), topk_weights_.data(), routing, n, c.hidden_padded, delta_.data(), false,
                       stream);
}

std::vector<std::vector<int>> GpuModel::last_routing(int n_tokens) const {
  const GpuModelConfig& c = config_;
  std::vector<std::vector<int>> routing(c.layers);
  if (c.experts == 0) return routing;
  const int assignments = kMaxPassTokens * c.top_k;
  std::vector<int> all(static_cast<size_t>(c.layers) * assignments);
  TACHYON_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  TACHYON_CUDA_CHECK(cudaMemcpy(all.data(), topk_ids_.data(), all.size() * sizeof(int), cudaMemcpyDeviceToHost));
  for (int layer = 0; layer < c.layers; ++layer)
    if (c.is_sparse(layer))
      routing[layer].assign(all.begin() + static_cast<size_t>(layer) * assignments,
                            all.begin() + static_cast<size_t>(layer) * assignments + n_tokens * c.top_k);
  return routing;
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
