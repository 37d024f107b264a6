// GpuModel's persistent one-token passes (GpuModelOptions::persistent_decode): which kernel a model qualifies for,
// their parameters and scratch, and the phase times their traces give `tachyon bench`. Two kernels:
// - resident (kernels/persistent/persistent_decode.h): a small dense model whose layer slices fit a block's shared
//   memory twice (SmolLM2-135M), copied a layer ahead;
// - streamed (kernels/persistent/persistent_stream.h): everything else it supports (Qwen3-MoE with bf16 or FP4
//   experts, larger dense models, FP8 attention weights), weights read straight from HBM.
#ifdef TACHYON_HAS_CUDA
#include <algorithm>
#include <cstdio>

#include "cuda/cuda_check.h"
#include "cuda/stream.h"
#include "gpu/gpu_model.h"

namespace tachyon::gpu {

kernels::PersistentDecodeParams GpuModel::persistent_decode_shape() const {
  const GpuModelConfig& c = config_;
  kernels::PersistentDecodeParams p;
  p.n_layers = c.layers;
  p.hidden = c.hidden_padded;
  p.intermediate = c.intermediate_padded;
  p.heads = c.heads;
  p.kv_heads = c.kv_heads;
  p.head_dim = c.head_dim_padded;  // padded heads: zero rows of q / k / v, zero columns of o (gpu_weights.h)
  p.hidden_norm_eps = c.hidden_norm_eps();
  // The padded head's mean square is head_dim / head_dim_padded times the real one's (as prologue_for).
  p.head_norm_eps = c.rms_eps * static_cast<float>(c.head_dim) / static_cast<float>(c.head_dim_padded);
  p.attention_scale = c.attention_scale;
  p.rotary_dim = c.rope.rotary_dim;
  p.rope_interleaved = c.rope.interleaved;
  p.page_size = options_.page_size;
  return p;
}

std::string GpuModel::resident_persistent_unsupported() const {
  const GpuModelConfig& c = config_;
  if (c.family != GpuFamily::Llama && c.family != GpuFamily::Qwen2 && c.family != GpuFamily::Qwen3)
    return "only dense Llama / Qwen2 / Qwen3 models (this is " + c.family_name() + ")";
  if (c.experts > 0) return "mixture-of-experts layers";
  if (c.attention_sinks) return "attention sinks";
  for (int layer = 0; layer < c.layers; ++layer)
    if (c.sliding_window(layer) > 0) return "sliding-window layers";
  if (c.fp8.attention || c.fp8.mlp) return "FP8 attention or MLP weights";
  return kernels::persistent_decode_unsupported(persistent_decode_shape());  // the kernel's own shape limits
}

kernels::StreamDecodeParams GpuModel::persistent_stream_shape() const {
  const GpuModelConfig& c = config_;
  const kernels::PersistentDecodeParams r = persistent_decode_shape();
  kernels::StreamDecodeParams p;
  p.n_layers = c.layers;
  p.hidden = c.hidden_padded;
  p.intermediate = c.has_dense_layers() ? c.intermediate_padded : 0;
  p.moe_width = c.experts > 0 ? c.moe_intermediate_padded : 0;
  p.experts = c.experts;
  p.top_k = c.top_k;
  p.renormalize = c.norm_topk_prob;
  p.fp8_attention = c.fp8.attention;
  if (c.experts > 0 && c.expert_format == ExpertFormat::Nvfp4) p.expert_format = kernels::StreamExperts::Nvfp4;
  if (c.experts > 0 && c.expert_format == ExpertFormat::Mxfp4) p.expert_format = kernels::StreamExperts::Mxfp4;
  p.heads = r.heads;
  p.kv_heads = r.kv_heads;
  p.head_dim = r.head_dim;
  p.hidden_norm_eps = r.hidden_norm_eps;
  p.head_norm_eps = r.head_norm_eps;
  p.attention_scale = r.attention_scale;
  p.rotary_dim = r.rotary_dim;
  p.rope_interleaved = r.rope_interleaved;
  p.page_size = r.page_size;
  return p;
}

std::string GpuModel::streamed_persistent_unsupported() const {
  const GpuModelConfig& c = config_;
  // FP4 experts keep the per-op step unless forced (tests, `bench --streamed`). Qwen3-30B-A3B on an H100, session 14:
  // the streamed kernel is faster at short contexts only (NVFP4 1k 2823 vs 2887 us per step, 4k 3132 vs 3244; 8k
  // 3385 vs 3371, 16k 3963 vs 3645: its attention phase's key pieces; MXFP4 even at 1k, slower beyond) and slower
  // with FP8 attention (2725 vs 2568-2570 at 1k).
  if (c.experts > 0 && c.expert_format != ExpertFormat::Bf16 && !options_.force_streamed_persistent)
    return "FP4 experts unless forced (GpuModelOptions::force_streamed_persistent, bench --streamed): the per-op step "
           "is faster at long contexts";
  if (c.family != GpuFamily::Llama && c.family != GpuFamily::Qwen2 && c.family != GpuFamily::Qwen3 &&
      c.family != GpuFamily::Qwen3Moe)
    return "only Llama / Qwen2 / Qwen3 / Qwen3-MoE models (this is " + c.family_name() + ")";
  if (c.attention_sinks) return "attention sinks";
  for (int layer = 0; layer < c.layers; ++layer)
    if (c.sliding_window(layer) > 0) return "sliding-window layers";
  if (c.fp8.mlp) return "FP8 MLP weights";
  return kernels::persistent_stream_unsupported(persistent_stream_shape());
}

std::string GpuModel::persistent_decode_unsupported() const {
  const std::string resident = resident_persistent_unsupported(), streamed = streamed_persistent_unsupported();
  if (resident.empty() || streamed.empty()) return "";
  return "resident kernel: " + resident + "; streamed kernel: " + streamed;
}

// The fields both kernels' layer tables share: attention weights, norms and the layer's paged cache.
template <typename Layer>
void GpuModel::fill_attention_fields(Layer& out, int layer) const {
  const GpuLayerWeights& L = weights_.layers[layer];
  out.qkv = L.qkv;
  out.qkv_bias = L.qkv_bias;
  out.q_norm = L.q_norm;
  out.k_norm = L.k_norm;
  out.o = L.o;
  out.o_bias = L.o_bias;
  out.input_norm = L.input_norm;
  out.post_attention_norm = L.post_attention_norm;
  const kernels::PagedKvCache cache = layer_cache(layer, block_table_.data());
  out.k_pages = cache.k_pages;
  out.v_pages = cache.v_pages;
}

// Either kernel's scratch (zeroed: the streamed kernel's merge counts start at zero), grid-barrier counter (zeroed
// once: it only grows) and, when bench traces, its trace.
void GpuModel::allocate_persistent_scratch(size_t workspace_bytes, size_t trace_words) {
  persistent_workspace_ = cuda::DeviceBuffer<uint8_t>(workspace_bytes);
  persistent_workspace_.fill_bytes(0);
  persistent_barrier_ = cuda::DeviceBuffer<unsigned long long>(1);
  persistent_barrier_.fill_bytes(0);
  if (options_.trace_persistent_decode) {
    persistent_trace_ = cuda::DeviceBuffer<unsigned long long>(trace_words);
    persistent_trace_.fill_bytes(0);
  }
}

void GpuModel::allocate_persistent_decode() {
  // The resident kernel where the model qualifies and its layer slices fit; else the streamed one.
  const std::string resident = resident_persistent_unsupported();
  if (!options_.force_streamed_persistent && resident.empty() && allocate_resident_persistent()) return;
  const std::string streamed = streamed_persistent_unsupported();
  if (streamed.empty()) {
    allocate_streamed_persistent();
    return;
  }
  if (options_.progress)
    std::fprintf(stderr, "persistent decode: not used (resident kernel: %s; streamed kernel: %s)\n",
                 options_.force_streamed_persistent ? "not asked for"
                 : resident.empty()                 ? "a layer's slices do not fit a block's shared memory twice"
                                                    : resident.c_str(),
                 streamed.c_str());
}

bool GpuModel::allocate_resident_persistent() {
  const GpuModelConfig& c = config_;
  kernels::PersistentDecodeParams p = persistent_decode_shape();
  p.embed = weights_.embed;
  p.final_norm = weights_.final_norm;
  p.rope_inv_freq = rope_inv_freq_.data();
  p.rope_attention_factor = rope_attention_factor_;
  p.block_table = block_table_.data();
  p.normed_out = normed_.data();
  const int grid = kernels::persistent_decode_grid(p);
  if (grid == 0) return false;  // a layer's weight slices do not fit a block's shared memory twice
  std::vector<kernels::PersistentLayer> layers(c.layers);
  for (int layer = 0; layer < c.layers; ++layer) {
    kernels::PersistentLayer& out = layers[layer];
    fill_attention_fields(out, layer);
    out.gate_up = weights_.layers[layer].gate_up;
    out.down = weights_.layers[layer].down;
  }
  persistent_layers_ = cuda::DeviceBuffer<kernels::PersistentLayer>(layers);
  p.max_splits = kernels::persistent_decode_max_splits(p, grid, capacity_);
  allocate_persistent_scratch(kernels::persistent_decode_workspace_bytes(p, p.max_splits),
                              kernels::persistent_decode_trace_size(c.layers, grid));
  p.workspace = persistent_workspace_.data();
  p.barrier = persistent_barrier_.data();
  p.trace = persistent_trace_.data();  // null unless traced
  p.layers = persistent_layers_.data();
  persistent_ = p;
  return true;
}

void GpuModel::allocate_streamed_persistent() {  // (the caller checked streamed_persistent_unsupported)
  const GpuModelConfig& c = config_;
  kernels::StreamDecodeParams p = persistent_stream_shape();
  p.embed = weights_.embed;
  p.final_norm = weights_.final_norm;
  p.rope_inv_freq = rope_inv_freq_.data();
  p.rope_attention_factor = rope_attention_factor_;
  p.block_table = block_table_.data();
  p.normed_out = normed_.data();
  const int grid = kernels::persistent_stream_grid(p);
  if (grid == 0) {
    const cuda::DeviceInfo& device = cuda::current_device_info();
    if (options_.progress && c.kv_heads > device.multiprocessors)
      std::fprintf(stderr, "persistent decode: not used (the streamed kernel needs a block per KV head: %d KV heads, "
                   "%d SMs)\n", c.kv_heads, device.multiprocessors);
    else if (options_.progress)
      std::fprintf(stderr, "persistent decode: not used (the streamed kernel needs %zu bytes of shared memory per "
                   "block, the GPU allows %zu)\n", kernels::persistent_stream_shared_bytes(p, device.multiprocessors),
                   device.shared_memory_per_block_optin);
    return;
  }
  std::vector<kernels::StreamLayer> layers(c.layers);
  const int assignments = kMaxPassTokens * c.top_k;
  for (int layer = 0; layer < c.layers; ++layer) {
    const GpuLayerWeights& L = weights_.layers[layer];
    kernels::StreamLayer& out = layers[layer];
    fill_attention_fields(out, layer);
    out.qkv_fp8 = L.qkv_fp8;  // (empty unless --fp8 attention)
    out.o_fp8 = L.o_fp8;
    if (c.is_sparse(layer)) {
      out.router = L.router;
      const auto fp4 = [](const kernels::Fp4ExpertMatrices& m) {  // (null with bf16 experts)
        return kernels::StreamLayer::Fp4Matrix{m.tiles, m.expert_stride, m.global_scales};
      };
      out.fp4_gate = fp4(L.fp4_gate), out.fp4_up = fp4(L.fp4_up), out.fp4_down = fp4(L.fp4_down);
      out.gate_up = L.expert_gate_up;
      out.gate_up_stride = expert_gate_up_stride(c);
      out.up_offset = int64_t{c.moe_intermediate_padded} * c.hidden_padded;
      out.down = L.expert_down;
      out.down_stride = expert_down_stride(c);
      out.topk_ids = topk_ids_.data() + static_cast<size_t>(layer) * assignments;  // last_routing()
    } else {
      out.gate_up = L.gate_up;
      out.up_offset = int64_t{c.intermediate_padded} * c.hidden_padded;
      out.down = L.down;
    }
  }
  persistent_stream_layers_ = cuda::DeviceBuffer<kernels::StreamLayer>(layers);
  p.max_splits = kernels::persistent_stream_max_splits(p, grid, capacity_);
  allocate_persistent_scratch(kernels::persistent_stream_workspace_bytes(p, p.max_splits),
                              kernels::persistent_stream_trace_size(grid));
  p.workspace = persistent_workspace_.data();
  p.barrier = persistent_barrier_.data();
  p.trace = persistent_trace_.data();  // null unless traced
  p.layers = persistent_stream_layers_.data();
  persistent_stream_ = p;
}

namespace {

// Per phase of a [grid][phases] table of every block's work summed over `layers` layers (ns): the slowest block's
// work per layer (us), which block that is, and the median block's.
template <int kPhases>
void slowest_and_median(const unsigned long long* per_block, size_t grid, int layers, double (&slowest_us)[kPhases],
                        int (&slowest_block)[kPhases], double (&median_us)[kPhases]) {
  for (int phase = 0; phase < kPhases; ++phase) {
    std::vector<std::pair<double, int>> work(grid);
    for (size_t b = 0; b < grid; ++b) work[b] = {per_block[b * kPhases + phase] / 1e3 / layers, static_cast<int>(b)};
    std::sort(work.begin(), work.end());
    slowest_us[phase] = work.back().first;
    slowest_block[phase] = work.back().second;
    median_us[phase] = work[grid / 2].first;
  }
}

}  // namespace

std::vector<unsigned long long> GpuModel::read_persistent_trace() const {
  TACHYON_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  std::vector<unsigned long long> t(persistent_trace_.size());
  TACHYON_CUDA_CHECK(cudaMemcpy(t.data(), persistent_trace_.data(), t.size() * sizeof(t[0]), cudaMemcpyDeviceToHost));
  return t;
}

std::optional<GpuModel::StreamPhaseTimes> GpuModel::streamed_phase_times() const {
  if (persistent_stream_.layers == nullptr || persistent_trace_.size() == 0) return std::nullopt;
  const std::vector<unsigned long long> t = read_persistent_trace();
  const int phases = kernels::kStreamPhases, layers = config_.layers;
  const size_t grid = (t.size() - phases - 1 - kernels::kStreamUnitStamps) / phases;
  const size_t block0 = grid * phases;  // block 0's waits, total, unit stamps
  if (t[block0 + phases] == 0) return std::nullopt;
  StreamPhaseTimes times;
  slowest_and_median(t.data(), grid, layers, times.slowest_block_us, times.slowest_block, times.median_block_us);
  for (int phase = 0; phase < phases; ++phase) times.block0_wait_us[phase] = t[block0 + phase] / 1e3 / layers;
  times.total_us = t[block0 + phases] / 1e3;
  for (int k = 0; k < kernels::kStreamUnitStamps; ++k)
    times.unit_stamps_us[k] = static_cast<double>(static_cast<long long>(t[block0 + phases + 1 + k])) / 1e3 / layers;
  return times;
}

std::optional<GpuModel::PersistentPhaseTimes> GpuModel::persistent_phase_times() const {
  // (The resident kernel's trace layout: with the streamed kernel, streamed_phase_times reads the trace.)
  if (persistent_.layers == nullptr || persistent_trace_.size() == 0) return std::nullopt;
  const std::vector<unsigned long long> t = read_persistent_trace();
  if (t[1 + 2 * size_t(config_.layers * kernels::kPersistentPhases)] == 0) return std::nullopt;
  PersistentPhaseTimes times;
  const int phases = kernels::kPersistentPhases, layers = config_.layers;
  for (int layer = 0; layer < layers; ++layer)
    for (int phase = 0; phase < phases; ++phase) {
      const size_t arrival = 1 + 2 * size_t(layer * phases + phase);
      times.work_us[phase] += (t[arrival] - t[arrival - 1]) / 1e3 / layers;  // from the previous release (or start)
      times.barrier_us[phase] += (t[arrival + 1] - t[arrival]) / 1e3 / layers;
    }
  // Every block's work per phase and layer: the slowest block and the median.
  const size_t clocks = kernels::persistent_decode_block_clocks_at(layers);
  slowest_and_median(t.data() + clocks, (t.size() - clocks) / phases, layers, times.slowest_block_us,
                     times.slowest_block, times.median_block_us);
  const size_t end = 1 + 2 * size_t(layers * phases);
  times.final_norm_us = (t[end] - t[end - 1]) / 1e3;
  times.total_us = (t[end] - t[0]) / 1e3;
  // Detail stamps, each from the release that starts its phase (PersistentDecodeParams::trace): barrier k's release
  // is t[2 + 2k], and a layer has `phases` barriers.
  for (int layer = 0; layer < layers; ++layer) {
    const size_t first_barrier = size_t(layer) * phases;
    const size_t p1_start = layer == 0 ? 0 : 2 * first_barrier, p2_start = 2 + 2 * first_barrier;
    const size_t starts[kernels::kPersistentDetailStamps] = {p1_start, p1_start, p2_start, p2_start, p2_start + 2};
    for (int k = 0; k < kernels::kPersistentDetailStamps; ++k) {
      const unsigned long long at = t[end + 1 + size_t(layer) * kernels::kPersistentDetailStamps + k];
      times.detail_stamps_us[k] += (double(at) - double(t[starts[k]])) / 1e3 / layers;
    }
  }
  return times;
}


}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
