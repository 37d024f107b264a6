// GpuDrafter: weights upload (padded like gpu_weights.cpp), the drafter's KV cache, and the two passes.
#ifdef TACHYON_HAS_CUDA
#include "gpu/gpu_drafter.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "activation/swiglu.h"
#include "core/dtype.h"
#include "core/error.h"
#include "embedding/embedding.h"
#include "gemv/gemv_bf16.h"
#include "gpu/fp8_weights.h"
#include "models/rope.h"
#include "norm/rms_norm.h"

namespace tachyon::gpu {

namespace {

constexpr int kPageSize = 64;

// Index map of one padded dimension: element i of groups of `group` goes to (i / group) * padded + i % group
// (gpu_weights.cpp's MatrixSpec; group == padded means no padding).
struct Padding {
  int64_t group = 1, padded = 1;
  int64_t operator()(int64_t i) const { return i / group * padded + i % group; }
  int64_t size(int64_t length) const { return length / group * padded; }
};

// Copies checkpoint tensors into padded device layouts. Zeros everywhere else, so padded rows/columns add nothing.
class Uploader {
 public:
  Uploader(const Checkpoint& checkpoint, const std::string& prefix, std::vector<cuda::DeviceBuffer<uint8_t>>& storage)
      : checkpoint_(checkpoint), prefix_(prefix), storage_(storage) {}

  template <typename T>
  T* allocate(int64_t count) {
    storage_.emplace_back((static_cast<size_t>(count) * sizeof(T) + 255) / 256 * 256);  // 256-byte aligned pieces
    storage_.back().fill_bytes(0);
    return reinterpret_cast<T*>(storage_.back().data());
  }

  // The [rows, cols] matrix `name` into dst, a [rows.size(rows), cols.size(cols)] row-major bf16 matrix.
  void matrix(bf16* dst, const std::string& name, int64_t rows, int64_t cols, Padding row_padding,
              Padding col_padding) const {
    const std::vector<float> values = checkpoint_.weights.get(prefix_ + name, {rows, cols}).to_float();
    const int64_t padded_rows = row_padding.size(rows), padded_cols = col_padding.size(cols);
    std::vector<uint16_t> bits(static_cast<size_t>(padded_rows * padded_cols), 0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) bits[row_padding(r) * padded_cols + col_padding(c)] = float_to_bf16(values[r * cols + c]);
    TACHYON_CUDA_CHECK(cudaMemcpy(dst, bits.data(), bits.size() * sizeof(uint16_t), cudaMemcpyHostToDevice));
  }

  // The [length] vector `name` (norm weight or bias) times `scale` into dst, a float vector of padding.size(length).
  void vector(float* dst, const std::string& name, int64_t length, Padding padding, float scale = 1.0f) const {
    const std::vector<float> values = checkpoint_.weights.get(prefix_ + name, {length}).to_float();
    std::vector<float> padded(static_cast<size_t>(padding.size(length)), 0.0f);
    for (int64_t i = 0; i < length; ++i) padded[padding(i)] = values[i] * scale;
    TACHYON_CUDA_CHECK(cudaMemcpy(dst, padded.data(), padded.size() * sizeof(float), cudaMemcpyHostToDevice));
  }

 private:
  const Checkpoint& checkpoint_;
  const std::string& prefix_;
  std::vector<cuda::DeviceBuffer<uint8_t>>& storage_;
};

}  // namespace

GpuDrafter::GpuDrafter(const Checkpoint& drafter, const GpuModel& target, int64_t max_positions) {
  const GpuModelConfig& tc = target.config();
  DrafterTargetInfo info;  // sizes only: the GPU reads the target's embedding / lm_head from target.weights()
  info.num_layers = tc.layers;
  info.hidden_size = tc.hidden;
  info.vocab_size = tc.vocab;
  config_ = read_dflash_drafter_config(drafter, info);
  const DFlashDrafterConfig& c = config_;
  if (!target.weights().embed || !target.weights().lm_head)
    fail("{}: the target GpuModel has no embedding / lm_head on the device", drafter.path);
  if (c.head_dim > 128)
    fail("{} config: field head_dim: {} is over 128, the GPU attention kernel's largest head", drafter.path, c.head_dim);
  if (max_positions < 1 || max_positions > (int64_t{1} << 30))
    fail("GpuDrafter: max_positions must be in [1, 2^30], got {}", max_positions);

  // Padded sizes, as GpuModelConfig pads the target (gpu_config.h).
  const int64_t H = c.hidden_size, hd = c.head_dim, I = c.intermediate_size;
  hidden_padded_ = tc.hidden_padded;
  head_dim_padded_ = hd <= 64 ? 64 : 128;
  intermediate_padded_ = round_up(c.intermediate_size, 32);
  vocab_ = tc.vocab;
  const int64_t Hp = hidden_padded_, hdp = head_dim_padded_, Ip = intermediate_padded_;
  // RMSNorms over a padded width divide by the padded count: weights x sqrt(real / padded), eps x real / padded.
  hidden_eps_ = c.rms_eps * static_cast<float>(H) / static_cast<float>(Hp);
  head_eps_ = c.rms_eps * static_cast<float>(hd) / static_cast<float>(hdp);
  const float hidden_scale = std::sqrt(static_cast<float>(H) / static_cast<float>(Hp));
  const float head_scale = std::sqrt(static_cast<float>(hd) / static_cast<float>(hdp));
  embed_ = target.weights().embed;
  lm_head_ = target.weights().lm_head;
  lm_head_fp8_ = target.weights().lm_head_fp8;

  Uploader up(drafter, c.prefix, storage_);
  const Padding hidden{H, Hp}, head{hd, hdp}, mlp{I, Ip};
  const int64_t K = static_cast<int64_t>(c.target_layer_ids.size());
  // fc: [H, K H] -> [Hp, K Hp]; each feature block's padded columns are zero (the caller's padding never matters).
  bf16* fc = up.allocate<bf16>(Hp * K * Hp);
  up.matrix(fc, "fc.weight", H, K * H, hidden, hidden);
  fc_ = fc;
  float* hidden_norm = up.allocate<float>(Hp);
  up.vector(hidden_norm, "hidden_norm.weight", H, hidden, hidden_scale);
  hidden_norm_ = hidden_norm;
  // output_multiplier folded into the final norm's weight: lm_head is linear, so the logits come out scaled
  // without a kernel of their own (the softcap, nonlinear, still needs one).
  float* final_norm = up.allocate<float>(Hp);
  up.vector(final_norm, "norm.weight", H, hidden, hidden_scale * c.output_multiplier);
  final_norm_ = final_norm;

  const int64_t q_rows = int64_t{c.num_heads} * hd, kv_rows = int64_t{c.num_kv_heads} * hd;
  for (int i = 0; i < c.num_layers; ++i) {
    auto name = [i](const char* suffix) { return fmt::format("layers.{}.{}", i, suffix); };
    Layer& L = layers_.emplace_back();
    bf16* qkv = up.allocate<bf16>(int64_t{qkv_width()} * Hp);
    up.matrix(qkv, name("self_attn.q_proj.weight"), q_rows, H, head, hidden);
    up.matrix(qkv + int64_t{q_width()} * Hp, name("self_attn.k_proj.weight"), kv_rows, H, head, hidden);
    up.matrix(qkv + int64_t{q_width() + kv_width()} * Hp, name("self_attn.v_proj.weight"), kv_rows, H, head, hidden);
    L.qkv = qkv;
    bf16* o = up.allocate<bf16>(Hp * q_width());
    up.matrix(o, name("self_attn.o_proj.weight"), H, q_rows, hidden, head);
    L.o = o;
    if (c.attention_bias) {
      float* bias = up.allocate<float>(qkv_width());
      up.vector(bias, name("self_attn.q_proj.bias"), q_rows, head);
      up.vector(bias + q_width(), name("self_attn.k_proj.bias"), kv_rows, head);
      up.vector(bias + q_width() + kv_width(), name("self_attn.v_proj.bias"), kv_rows, head);
      L.qkv_bias = bias;
      float* o_bias = up.allocate<float>(Hp);
      up.vector(o_bias, name("self_attn.o_proj.bias"), H, hidden);
      L.o_bias = o_bias;
    }
    float* q_norm = up.allocate<float>(hdp);
    up.vector(q_norm, name("self_attn.q_norm.weight"), hd, head, head_scale);
    L.q_norm = q_norm;
    float* k_norm = up.allocate<float>(hdp);
    up.vector(k_norm, name("self_attn.k_norm.weight"), hd, head, head_scale);
    L.k_norm = k_norm;
    float* input_norm = up.allocate<float>(Hp);
    up.vector(input_norm, name("input_layernorm.weight"), H, hidden, hidden_scale);
    L.input_norm = input_norm;
    float* post_norm = up.allocate<float>(Hp);
    up.vector(post_norm, name("post_attention_layernorm.weight"), H, hidden, hidden_scale);
    L.post_attention_norm = post_norm;
    bf16* gate_up = up.allocate<bf16>(2 * Ip * Hp);
    up.matrix(gate_up, name("mlp.gate_proj.weight"), I, H, mlp, hidden);
    up.matrix(gate_up + Ip * Hp, name("mlp.up_proj.weight"), I, H, mlp, hidden);
    L.gate_up = gate_up;
    bf16* down = up.allocate<bf16>(Hp * Ip);
    up.matrix(down, name("mlp.down_proj.weight"), H, I, hidden, mlp);
    L.down = down;
  }

  const Rope rope(c.rope);
  rope_inv_freq_ = cuda::DeviceBuffer<float>(rope.inverse_frequencies());
  rope_attention_factor_ = rope.attention_factor();

  // The KV cache: every page now, under an identity block table, so no pass ever allocates or maps a page.
  const int pages = static_cast<int>((max_positions + kPageSize - 1) / kPageSize);
  page_size_ = kPageSize;
  capacity_ = int64_t{pages} * kPageSize;
  kv_storage_ = cuda::DeviceBuffer<bf16>(size_t{2} * c.num_layers * capacity_ * kv_width());
  kv_storage_.fill_bytes(0);  // never read past seq_len, but zeros keep a stray read finite
  std::vector<int> identity(pages);
  std::iota(identity.begin(), identity.end(), 0);
  block_table_ = cuda::DeviceBuffer<int>(identity);

  // Attention scratch for the largest split any pass of 1..16 rows can choose at any length up to capacity
  // (allocated once: a captured graph must never see it move).
  kernels::AttentionParams params;
  params.n_heads = c.num_heads;
  kernels::PagedKvCache cache;
  cache.n_kv_heads = c.num_kv_heads;
  cache.head_dim = head_dim_padded_;
  kernels::AttentionBatch batch;
  batch.n_sequences = 1;
  size_t workspace = 0;
  for (int n = 1; n <= kMaxPassTokens; ++n) {
    batch.n_tokens = batch.max_query_tokens = n;
    for (int64_t length = 64; length < capacity_ + 64; length += 64) {
      batch.max_seq_len = static_cast<int>(std::min(length, capacity_));
      workspace = std::max(workspace, kernels::decode_attention_workspace_bytes(params, cache, batch));
    }
  }
  attention_workspace_ = cuda::DeviceBuffer<uint8_t>(std::max<size_t>(workspace, 16));

  const size_t T = kMaxPassTokens;
  x_ = cuda::DeviceBuffer<float>(T * Hp);
  normed_ = cuda::DeviceBuffer<float>(T * Hp);
  delta_ = cuda::DeviceBuffer<float>(T * Hp);
  qkv_ = cuda::DeviceBuffer<float>(T * qkv_width());
  attn_ = cuda::DeviceBuffer<float>(T * q_width());
  mlp_h_ = cuda::DeviceBuffer<float>(T * Ip);
  // The fills above ran on the legacy stream; callers' streams may be non-blocking (GpuModel's is).
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
}

GpuDrafter::~GpuDrafter() = default;

kernels::PagedKvCache GpuDrafter::layer_cache(int layer, const PassInputs& in) const {
  const size_t layer_elements = static_cast<size_t>(capacity_) * kv_width();
  kernels::PagedKvCache cache;
  cache.k_pages = const_cast<bf16*>(kv_storage_.data()) + (size_t{2} * layer) * layer_elements;
  cache.v_pages = cache.k_pages + layer_elements;
  cache.block_table = in.block_table ? in.block_table : block_table_.data();
  cache.max_pages_per_seq = in.block_table ? in.block_table_stride : static_cast<int>(capacity_ / page_size_);
  cache.page_size = page_size_;
  cache.n_kv_heads = config_.num_kv_heads;
  cache.head_dim = head_dim_padded_;
  return cache;
}

kernels::AttentionPrologue GpuDrafter::prologue(int layer, float* q, const float* k, const float* v, int stride) const {
  kernels::AttentionPrologue pro;
  pro.q = q;
  pro.q_stride = stride;
  pro.n_heads = q ? config_.num_heads : 0;  // context rows: keys and values only
  pro.k = k;
  pro.k_stride = stride;
  pro.v = v;
  pro.v_stride = stride;
  pro.q_norm_weight = layers_[layer].q_norm;
  pro.k_norm_weight = layers_[layer].k_norm;
  pro.norm_eps = head_eps_;
  pro.rope.inv_freq = rope_inv_freq_.data();
  pro.rope.rotary_dim = config_.rope.rotary_dim;
  pro.rope.attention_factor = rope_attention_factor_;
  pro.rope.interleaved = config_.rope.interleaved;
  return pro;
}

namespace {
// Returns max_seq_len clamped to the capacity: no sequence is longer, so a caller's bucketed bound past it (a
// graph bucket rounded up) is as good as the capacity, for which the attention workspace is sized.
int check_pass(const char* what, const PassInputs& in, int n, int lo, int max_seq_len, int64_t capacity) {
  if (n < lo || n > kMaxPassTokens) fail("GpuDrafter::{}: {} rows; a pass takes {}..{}", what, n, lo, kMaxPassTokens);
  if (in.n_sequences != 1) fail("GpuDrafter::{}: the drafter holds one sequence, got n_sequences {}", what, in.n_sequences);
  if (!in.positions || !in.seq_lens || !in.query_start || !in.token_sequence)
    fail("GpuDrafter::{}: positions, seq_lens, query_start and token_sequence must be set", what);
  if (max_seq_len < n) fail("GpuDrafter::{}: max_seq_len {} is below the pass's {} rows", what, max_seq_len, n);
  return static_cast<int>(std::min<int64_t>(max_seq_len, capacity));
}
}  // namespace

void GpuDrafter::enqueue_context(const float* features, const PassInputs& rows, int n, int max_seq_len,
                                 cudaStream_t stream) {
  max_seq_len = check_pass("enqueue_context", rows, n, 1, max_seq_len, capacity_);
  if (!features) fail("GpuDrafter::enqueue_context: features must be set");
  const int Hp = hidden_padded_;
  kernels::gemv_bf16(fc_, nullptr, features, x_.data(), n, Hp, feature_width(), stream);
  kernels::rms_norm(x_.data(), hidden_norm_, normed_.data(), n, Hp, hidden_eps_, stream);
  const kernels::AttentionBatch batch = attention_batch(rows, n, max_seq_len);
  const int kv = kv_width();
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    const Layer& L = layers_[layer];
    // Context rows only lend keys and values: the k and v rows of the fused matrix (contiguous), one gemv.
    kernels::gemv_bf16(L.qkv + int64_t{q_width()} * Hp, L.qkv_bias ? L.qkv_bias + q_width() : nullptr, normed_.data(),
                       qkv_.data(), n, 2 * kv, Hp, stream);
    kernels::qk_norm_rope_kv_append(prologue(layer, nullptr, qkv_.data(), qkv_.data() + kv, 2 * kv),
                                    layer_cache(layer, rows), batch, stream);
  }
}

void GpuDrafter::add_context(const float* features, int64_t n, int64_t start, cudaStream_t stream) {
  if (n < 0 || start < 0 || start + n > capacity_)
    fail("GpuDrafter::add_context: positions [{}, {}) outside the drafter's capacity {}", start, start + n, capacity_);
  const int T = kMaxPassTokens;
  for (int64_t done = 0; done < n; done += T) {
    const int rows = static_cast<int>(std::min<int64_t>(T, n - done));
    const int first = static_cast<int>(start + done);
    const PassInputs in = context_inputs_.upload({}, rows, first, stream);
    enqueue_context(features + done * feature_width(), in, rows, first + rows, stream);
  }
}

void GpuDrafter::enqueue_draft(const PassInputs& block, int n, int max_seq_len, float* logits, cudaStream_t stream) {
  max_seq_len = check_pass("enqueue_draft", block, n, 2, max_seq_len, capacity_);
  if (!block.tokens || !logits) fail("GpuDrafter::enqueue_draft: tokens and logits must be set");
  const DFlashDrafterConfig& c = config_;
  const int Hp = hidden_padded_, Ip = intermediate_padded_;
  kernels::embedding_gather_bf16(embed_, block.tokens, x_.data(), n, vocab_, Hp, c.embedding_scale, stream);
  const kernels::AttentionBatch batch = attention_batch(block, n, max_seq_len);
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const Layer& L = layers_[layer];
    kernels::add_rms_norm(x_.data(), layer == 0 ? nullptr : delta_.data(), L.input_norm, normed_.data(), n, Hp,
                          hidden_eps_, stream);
    kernels::gemv_bf16(L.qkv, L.qkv_bias, normed_.data(), qkv_.data(), n, qkv_width(), Hp, stream);
    // The block's own K/V go to [s, s + n): transient, the next context rows there overwrite them.
    const kernels::PagedKvCache cache = layer_cache(layer, block);
    kernels::qk_norm_rope_kv_append(
        prologue(layer, qkv_.data(), qkv_.data() + q_width(), qkv_.data() + q_width() + kv_width(), qkv_width()), cache,
        batch, stream);
    kernels::AttentionParams params;
    params.q = qkv_.data();
    params.q_stride = qkv_width();
    params.out = attn_.data();
    params.out_stride = q_width();
    params.n_heads = c.num_heads;
    params.scale = c.attention_scale;  // 1 / sqrt(the real head_dim)
    params.sliding_window = c.layers[layer].sliding_window;
    params.causal = c.layers[layer].causal;
    kernels::decode_attention(params, cache, batch, attention_workspace_.data(), attention_workspace_.bytes(), stream);
    kernels::gemv_bf16(L.o, L.o_bias, attn_.data(), delta_.data(), n, Hp, q_width(), stream);
    kernels::add_rms_norm(x_.data(), delta_.data(), L.post_attention_norm, normed_.data(), n, Hp, hidden_eps_, stream);
    kernels::gated_gemv_bf16(L.gate_up, L.gate_up + int64_t{Ip} * Hp, normed_.data(), mlp_h_.data(), n, Ip, Hp, stream);
    kernels::gemv_bf16(L.down, nullptr, mlp_h_.data(), delta_.data(), n, Hp, Ip, stream);
  }
  // Slot 0 (the bonus) predicts nothing: the last residual add, final norm and lm_head cover rows 1..n-1 only.
  kernels::add_rms_norm(x_.data() + Hp, delta_.data() + Hp, final_norm_, normed_.data(), n - 1, Hp, hidden_eps_, stream);
  dense_gemv(lm_head_fp8_, lm_head_, nullptr, normed_.data(), logits, n - 1, vocab_, Hp, stream);
  if (c.softcap > 0) kernels::logit_softcap(logits, int64_t{n - 1} * vocab_, c.softcap, stream);
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
