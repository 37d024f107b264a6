// GpuModel::prefill: a prompt in chunks of prefill_chunk tokens. Products are cuBLASLt GEMMs on bf16
// activations (float32 accumulation and output); norms, RoPE and the KV append are the decode kernels run over
// all rows; attention is decode_attention, which takes at most 16 query tokens per sequence, so a chunk of m
// rows is presented to it as ceil(m / 16) "virtual sequences" of 16 rows whose block-table rows all list this
// sequence's pages (sequence s sees keys < start + 16 (s + 1), causal inside its rows). The KV pages are written
// once by the append; the virtual sequences only read them.
//
// MoE layers: router GEMM + top-k on the device, then the choices come to the host (one sync per layer and
// chunk: prefill is not graph-captured) to group the rows by expert; each chosen expert runs two GEMMs on its
// contiguous rows, and moe_combine scatters back with the routing weights.
#ifdef TACHYON_HAS_CUDA
#include <algorithm>
#include <cmath>
#include <functional>

#include "activation/swiglu.h"
#include "core/error.h"
#include "embedding/embedding.h"
#include "gemv/gemv_bf16.h"
#include "gpu/fp8_weights.h"
#include "gpu/fp4_experts.h"
#include "gpu/gpt_oss_experts.h"
#include "gpu/gpu_model_buffers.h"
#include "model_runtime/model_runtime.h"
#include "moe/moe_routing.h"
#include "norm/rms_norm.h"

namespace tachyon::gpu {

namespace {

// Expert row blocks start on multiples of 4 rows: with widths that are multiples of 32, every GEMM operand then
// starts 256-byte aligned, the alignment cuBLASLt's heuristic assumes by default.
constexpr int kExpertRowAlignment = 4;

// Offsets of the per-chunk integer inputs inside PrefillBuffers::ints.
struct PrefillIntLayout {
  int tokens, positions, token_sequence, query_start, seq_lens, block_table, total;
  PrefillIntLayout(int chunk, int max_pages) {
    const int sequences = chunk / 16;
    tokens = 0;
    positions = chunk;
    token_sequence = 2 * chunk;
    query_start = 3 * chunk;
    seq_lens = query_start + sequences + 1;
    block_table = seq_lens + sequences;
    total = block_table + sequences * max_pages;
  }
};

}  // namespace

void GpuModel::allocate_prefill() {
  const GpuModelConfig& c = config_;
  auto p = std::make_unique<PrefillBuffers>();
  const int C = options_.prefill_chunk;
  p->chunk = C;
  const size_t rows = C;
  p->x = cuda::DeviceBuffer<float>(rows * c.hidden_padded);
  p->normed = cuda::DeviceBuffer<float>(rows * c.hidden_padded);
  p->delta = cuda::DeviceBuffer<float>(rows * c.hidden_padded);
  p->qkv = cuda::DeviceBuffer<float>(rows * c.qkv_width());
  p->attn = cuda::DeviceBuffer<float>(rows * c.q_width());
  int widest = std::max(c.hidden_padded, c.q_width());
  if (c.has_dense_layers()) {
    p->gate_up = cuda::DeviceBuffer<float>(rows * 2 * c.intermediate_padded);
    p->mlp_h = cuda::DeviceBuffer<float>(rows * c.intermediate_padded);
    widest = std::max(widest, c.intermediate_padded);
  }
  p->activations = cuda::DeviceBuffer<bf16>(rows * widest);
  if (c.experts > 0) {
    const size_t assignments = rows * c.top_k;
    p->moe_rows = static_cast<int>(assignments) + kExpertRowAlignment * c.experts;
    const size_t moe_rows = p->moe_rows;
    p->router_logits = cuda::DeviceBuffer<float>(rows * c.experts);
    p->topk_weights = cuda::DeviceBuffer<float>(assignments);
    p->topk_ids = cuda::DeviceBuffer<int>(assignments);
    p->row_source = cuda::DeviceBuffer<int>(moe_rows);
    p->assignment_entry = cuda::DeviceBuffer<int>(assignments);
    p->expert_gate_up = cuda::DeviceBuffer<float>(moe_rows * 2 * c.moe_intermediate_padded);
    p->expert_h = cuda::DeviceBuffer<float>(moe_rows * c.moe_intermediate_padded);
    p->expert_out = cuda::DeviceBuffer<float>(moe_rows * c.hidden_padded);
    p->expert_activations = cuda::DeviceBuffer<bf16>(moe_rows * std::max(c.hidden_padded, c.moe_intermediate_padded));
  }
  const PrefillIntLayout layout(C, allocator_->max_pages_per_sequence());
  p->ints = cuda::DeviceBuffer<int>(layout.total);
  p->ints_host.assign(layout.total, 0);
  prefill_ = std::move(p);
}

const float* GpuModel::prefill(std::span<const int32_t> tokens, bool all_rows, float* features_out) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) fail("prefill: no tokens");
  if (features_out && feature_width() == 0) fail("prefill: features requested from a model without feature_layers");
  if (n <= kMaxPassTokens) {  // one gemv pass reads the weights once: faster than GEMMs at this size
    const float* logits = forward(tokens);
    if (features_out)
      TACHYON_CUDA_CHECK(cudaMemcpyAsync(features_out, pass_features_.data(),
                                         static_cast<size_t>(n) * feature_width() * sizeof(float),
                                         cudaMemcpyDeviceToDevice, stream_.get()));
    return all_rows ? logits : logits + (n - 1) * config_.vocab;
  }
  for (int32_t id : tokens)
    if (id < 0 || id >= config_.vocab) fail("token id {} is outside the vocabulary [0, {})", id, config_.vocab);
  reserve(length_ + n);
  if (!prefill_) allocate_prefill();
  if (all_rows && prefill_logits_.size() < static_cast<size_t>(n) * config_.vocab) {
    stream_.synchronize();  // the old buffer may still be read by queued work
    prefill_logits_ = cuda::DeviceBuffer<float>(static_cast<size_t>(n) * config_.vocab);
  }
  prefill_router_margins_.assign(config_.layers, {});
  const int C = prefill_->chunk;
  for (int64_t begin = 0; begin < n; begin += C) {
    const int m = static_cast<int>(std::min<int64_t>(C, n - begin));
    prefill_chunk(tokens.subspan(begin, m), length_, all_rows,
                  all_rows ? prefill_logits_.data() + begin * config_.vocab : nullptr,
                  features_out ? features_out + begin * feature_width() : nullptr, begin + m == n);
    advance(m);
  }
  return all_rows ? prefill_logits_.data() : pass_logits_.data();
}

void GpuModel::prefill_chunk(std::span<const int32_t> tokens, int64_t start, bool all_rows, float* logits_rows,
                             float* feature_rows, bool last_chunk) {
  const GpuModelConfig& c = config_;
  const GpuWeights& w = weights_;
  PrefillBuffers& p = *prefill_;
  cudaStream_t stream = stream_.get();
  const int m = static_cast<int>(tokens.size()), sequences = (m + 15) / 16;
  const int max_pages = allocator_->max_pages_per_sequence();
  const PrefillIntLayout layout(p.chunk, max_pages);

  std::vector<int>& h = p.ints_host;
  for (int t = 0; t < m; ++t) {
    h[layout.tokens + t] = tokens[t];
    h[layout.positions + t] = static_cast<int>(start + t);
    h[layout.token_sequence + t] = t / 16;
  }
  for (int s = 0; s <= sequences; ++s) h[layout.query_start + s] = std::min(16 * s, m);
  for (int s = 0; s < sequences; ++s) {
    h[layout.seq_lens + s] = static_cast<int>(start + std::min(16 * (s + 1), m));
    std::copy(block_table_host_.begin(), block_table_host_.end(), h.begin() + layout.block_table + s * max_pages);
  }
  TACHYON_CUDA_CHECK(
      cudaMemcpyAsync(p.ints.data(), h.data(), layout.total * sizeof(int), cudaMemcpyHostToDevice, stream));
  const int* ints = p.ints.data();

  kernels::AttentionBatch batch;
  batch.n_sequences = sequences;
  batch.n_tokens = m;
  batch.query_start = ints + layout.query_start;
  batch.seq_lens = ints + layout.seq_lens;
  batch.positions = ints + layout.positions;
  batch.token_sequence = ints + layout.token_sequence;
  batch.max_seq_len = static_cast<int>(start + m);
  batch.max_query_tokens = std::min(16, m);
  // (every layer's split is the same: the sliding window and sinks do not change the workspace)
  const size_t workspace = kernels::decode_attention_workspace_bytes(
      attention_params_for(0, p.qkv.data(), p.attn.data()), layer_cache(0, ints + layout.block_table), batch);
  if (p.attention_workspace.bytes() < workspace) {
    stream_.synchronize();
    p.attention_workspace = cuda::DeviceBuffer<uint8_t>(workspace);
  }

  auto linear = [&](const bf16* weight, const float* bias, const float* x, int rows, int out, int in, float* y) {
    kernels::convert_f32_to_bf16(x, p.activations.data(), int64_t{rows} * in, stream);
    p.gemm.linear_bf16(weight, p.activations.data(), bias, y, rows, out, in, stream);
  };

  kernels::embedding_gather_bf16(w.embed, ints + layout.tokens, p.x.data(), m, c.vocab, c.hidden_padded, 1.0f, stream);
  for (int layer = 0; layer < c.layers; ++layer) {
    const GpuLayerWeights& L = w.layers[layer];
    kernels::add_rms_norm(p.x.data(), layer == 0 ? nullptr : p.delta.data(), L.input_norm, p.normed.data(), m,
                          c.hidden_padded, c.hidden_norm_eps(), stream);
    if (feature_rows && layer > 0) copy_features(layer - 1, p.x.data(), m, feature_rows, stream);  // layer - 1's output
    linear(L.qkv, L.qkv_bias, p.normed.data(), m, c.qkv_width(), c.hidden_padded, p.qkv.data());
    const kernels::PagedKvCache cache = layer_cache(layer, ints + layout.block_table);
    kernels::qk_norm_rope_kv_append(prologue_for(layer, p.qkv.data()), cache, batch, stream);
    kernels::decode_attention(attention_params_for(layer, p.qkv.data(), p.attn.data()), cache, batch,
                              p.attention_workspace.data(), p.attention_workspace.bytes(), stream);
    linear(L.o, L.o_bias, p.attn.data(), m, c.hidden_padded, c.q_width(), p.delta.data());
    kernels::add_rms_norm(p.x.data(), p.delta.data(), L.post_attention_norm, p.normed.data(), m, c.hidden_padded,
                          c.hidden_norm_eps(), stream);
    if (c.is_sparse(layer)) {
      prefill_moe(layer, m);
    } else {
      const int Ip = c.intermediate_padded;
      linear(L.gate_up, nullptr, p.normed.data(), m, 2 * Ip, c.hidden_padded, p.gate_up.data());
      kernels::swiglu(p.gate_up.data(), 2 * Ip, p.gate_up.data() + Ip, 2 * Ip, p.mlp_h.data(), m, Ip, stream);
      linear(L.down, nullptr, p.mlp_h.data(), m, c.hidden_padded, Ip, p.delta.data());
    }
  }
  kernels::add_rms_norm(p.x.data(), p.delta.data(), w.final_norm, p.normed.data(), m, c.hidden_padded,
                        c.hidden_norm_eps(), stream);
  if (feature_rows) copy_features(c.layers - 1, p.normed.data(), m, feature_rows, stream);  // normed, as HF reports it
  if (all_rows) {
    if (w.lm_head_fp8.codes) {  // every row's logits from the FP8 lm_head: the gemv, 16 rows at a time
      for (int r = 0; r < m; r += kMaxPassTokens)
        kernels::gemv_fp8(w.lm_head_fp8, nullptr, p.normed.data() + int64_t{r} * c.hidden_padded,
                          logits_rows + int64_t{r} * c.vocab, std::min(kMaxPassTokens, m - r), c.vocab, c.hidden_padded,
                          stream);
    } else {
      linear(w.lm_head, nullptr, p.normed.data(), m, c.vocab, c.hidden_padded, logits_rows);
    }
  } else if (last_chunk) {
    dense_gemv(w.lm_head_fp8, w.lm_head, nullptr, p.normed.data() + int64_t{m - 1} * c.hidden_padded,
               pass_logits_.data(), 1, c.vocab, c.hidden_padded, stream);
  }
}

void GpuModel::prefill_moe(int layer, int m) {
  const GpuModelConfig& c = config_;
  const GpuLayerWeights& L = weights_.layers[layer];
  PrefillBuffers& p = *prefill_;
  cudaStream_t stream = stream_.get();
  const int k = c.top_k, Ip = c.moe_intermediate_padded, H = c.hidden_padded, assignments = m * k;

  // The router as one bf16 GEMM. (Computing it with the float32-accurate gemv in 16-row slices, as decode does,
  // made the Qwen3-30B-A3B prefill 25-35% slower on an H200 and did not change which tokens flip experts at
  // near-ties: those come from the hidden state's own rounding; docs/gpu-runtime.md.)
  kernels::convert_f32_to_bf16(p.normed.data(), p.activations.data(), int64_t{m} * H, stream);
  p.gemm.linear_bf16(L.router, p.activations.data(), L.router_bias, p.router_logits.data(), m, c.experts, H, stream);
  kernels::RouterConfig router;
  router.n_experts = c.experts;
  router.top_k = k;
  router.scoring = kernels::RouterScoring::Softmax;
  router.renormalize = c.norm_topk_prob;
  kernels::moe_router_topk(p.router_logits.data(), m, router, p.topk_ids.data(), p.topk_weights.data(), stream);

  // Group the (token, choice) assignments by expert on the host, each expert's rows starting aligned.
  p.topk_ids_host.resize(assignments);
  TACHYON_CUDA_CHECK(cudaMemcpyAsync(p.topk_ids_host.data(), p.topk_ids.data(), assignments * sizeof(int),
                                     cudaMemcpyDeviceToHost, stream));
  stream_.synchronize();
  if (options_.record_router_margins) record_router_margins(layer, m);
  std::vector<int> count(c.experts, 0), offset(c.experts, 0);
  for (int id : p.topk_ids_host) ++count[id];
  int rows = 0;
  for (int e = 0; e < c.experts; ++e) {
    offset[e] = rows;
    if (count[e] > 0) rows += (count[e] + kExpertRowAlignment - 1) / kExpertRowAlignment * kExpertRowAlignment;
  }
  p.row_source_host.assign(rows, 0);  // gap rows copy token 0: computed by nobody, read by nobody
  p.assignment_entry_host.resize(assignments);
  std::vector<int> cursor = offset;
  for (int a = 0; a < assignments; ++a) {
    const int row = cursor[p.topk_ids_host[a]]++;
    p.row_source_host[row] = a;
    p.assignment_entry_host[a] = row;
  }
  TACHYON_CUDA_CHECK(cudaMemcpyAsync(p.row_source.data(), p.row_source_host.data(), rows * sizeof(int),
                                     cudaMemcpyHostToDevice, stream));
  TACHYON_CUDA_CHECK(cudaMemcpyAsync(p.assignment_entry.data(), p.assignment_entry_host.data(),
                                     assignments * sizeof(int), cudaMemcpyHostToDevice, stream));

  kernels::gather_rows_to_bf16(p.normed.data(), H, p.row_source.data(), k, rows, H, p.expert_activations.data(),
                               stream);
  // FP4 experts: the whole layer dequantized to bf16 first (cuBLASLt takes no FP4 operand on Hopper).
  Bf16ExpertPointers experts{L.expert_gate_up, L.expert_down};
  if (c.expert_format != ExpertFormat::Bf16) {
    if (fp4_prefill_experts_.size() == 0)
      fp4_prefill_experts_ = cuda::DeviceBuffer<bf16>(static_cast<size_t>(fp4_prefill_scratch_elements(c)));
    experts = dequantize_layer_experts(L, c, fp4_prefill_experts_.data(), stream);
  }
  // gpt-oss: expert biases in the GEMMs ([2][Ip] gate, up per expert = the gate_up output's columns) and the
  // clamped SwiGLU.
  const bool biases = L.expert_gate_up_bias != nullptr;
  for (int e = 0; e < c.experts; ++e) {
    if (count[e] == 0) continue;
    p.gemm.linear_bf16(experts.gate_up + e * expert_gate_up_stride(c),
                       p.expert_activations.data() + int64_t{offset[e]} * H,
                       biases ? L.expert_gate_up_bias + int64_t{e} * 2 * Ip : nullptr,
                       p.expert_gate_up.data() + int64_t{offset[e]} * 2 * Ip, count[e], 2 * Ip, H, stream);
  }
  if (c.swiglu_limit > 0)
    kernels::clamped_swiglu(p.expert_gate_up.data(), 2 * Ip, p.expert_gate_up.data() + Ip, 2 * Ip, p.expert_h.data(),
                            rows, Ip, c.swiglu_alpha, c.swiglu_limit, stream);
  else
    kernels::swiglu(p.expert_gate_up.data(), 2 * Ip, p.expert_gate_up.data() + Ip, 2 * Ip, p.expert_h.data(), rows,
                    Ip, stream);
  kernels::convert_f32_to_bf16(p.expert_h.data(), p.expert_activations.data(), int64_t{rows} * Ip, stream);
  for (int e = 0; e < c.experts; ++e) {
    if (count[e] == 0) continue;
    p.gemm.linear_bf16(experts.down + e * expert_down_stride(c), p.expert_activations.data() + int64_t{offset[e]} * Ip,
                       L.expert_down_bias ? L.expert_down_bias + int64_t{e} * H : nullptr,
                       p.expert_out.data() + int64_t{offset[e]} * H, count[e], H, Ip, stream);
  }
  kernels::ExpertRouting routing;
  routing.assignment_entry = p.assignment_entry.data();
  routing.top_k = k;
  routing.n_tokens = m;
  kernels::moe_combine(p.expert_out.data(), p.topk_weights.data(), routing, m, H, p.delta.data(), false, stream);
}

void GpuModel::record_router_margins(int layer, int m) {
  const int E = config_.experts, k = config_.top_k;
  std::vector<float> logits(static_cast<size_t>(m) * E);
  TACHYON_CUDA_CHECK(cudaMemcpyAsync(logits.data(), prefill_->router_logits.data(), logits.size() * sizeof(float),
                                     cudaMemcpyDeviceToHost, stream_.get()));
  stream_.synchronize();
  for (int t = 0; t < m; ++t) {
    std::vector<float> probs(logits.begin() + static_cast<size_t>(t) * E,
                             logits.begin() + static_cast<size_t>(t + 1) * E);
    const float top = *std::max_element(probs.begin(), probs.end());
    float sum = 0;
    for (float& v : probs) sum += (v = std::exp(v - top));
    std::sort(probs.begin(), probs.end(), std::greater<float>());
    prefill_router_margins_[layer].push_back(k < E ? (probs[k - 1] - probs[k]) / sum : 1.0f);
  }
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
