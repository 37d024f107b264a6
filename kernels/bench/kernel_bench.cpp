// tachyon_kernel_bench: achieved bandwidth of the decode kernels against the measured streaming-read ceiling,
// with cuBLASLt as the gemv baseline. Usage: tachyon_kernel_bench [all|bandwidth|gemv|gemv-sweep|attention|moe|misc]
// (gemv-sweep: every k_split of the dense and expert gemvs, to tune the launch heuristic)
// Every number is the median over graph replays of many launches (launch gaps shrink to graph-node cost); inputs
// rotate over copies larger than L2 so that the weights really come from HBM. Prints one markdown row per case:
//   | kernel | shape | tokens | variant | us | GB/s | % of stream read |
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "attention/decode_attention.h"
#include "bandwidth/stream_read.h"
#include "bench/graph_timing.h"
#include "cuda/device_buffer.h"
#include "cuda/stream.h"
#include "gemm/cublaslt_gemm.h"
#include "gemv/gemv_bf16.h"
#include "moe/moe_routing.h"
#include "norm/rms_norm.h"
#include "sampling/sampling.h"

namespace tachyon {
namespace {

using kernels::graph_time_us;

using cuda::DeviceBuffer;

double g_stream_read_gbps = 0;


void row(const std::string& kernel, const std::string& shape, int tokens, const std::string& variant, double us,
         double bytes) {
  const double gbps = bytes / (us * 1e3);
  std::printf("| %s | %s | %d | %s | %.2f | %.0f | %.1f%% |\n", kernel.c_str(), shape.c_str(), tokens, variant.c_str(), us,
              gbps, g_stream_read_gbps > 0 ? 100.0 * gbps / g_stream_read_gbps : 0.0);
  std::fflush(stdout);
}

// Benchmark data only needs to be non-zero and varied: a fast 64-bit LCG keeps multi-GB fills quick.
template <typename T>
void fill_random(DeviceBuffer<T>& buffer, float lo, float hi, uint32_t seed) {
  uint64_t state = 0x9E3779B97F4A7C15ull * (seed + 1);
  std::vector<T> host(buffer.size());
  for (T& v : host) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const float f = lo + (hi - lo) * static_cast<float>(state >> 40) * (1.0f / 16777216.0f);
    if constexpr (std::is_same_v<T, uint16_t>) {
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      v = static_cast<uint16_t>(bits >> 16);  // truncation is fine for benchmark data
    } else {
      v = static_cast<T>(f);
    }
  }
  buffer.copy_from_host(host);
}

// A pool of weight bytes: `copies` matrices of `elements` bf16 each, together at least 4x L2.
struct WeightPool {
  DeviceBuffer<uint16_t> data;
  size_t elements = 0;
  int copies = 0;
  WeightPool(size_t elems, uint32_t seed) : elements(elems) {
    const size_t min_bytes = 4 * cuda::current_device_info().l2_bytes;
    copies = static_cast<int>(std::max<size_t>(2, (min_bytes + elems * 2 - 1) / (elems * 2)));
    data = DeviceBuffer<uint16_t>(elements * copies);
    fill_random(data, -1, 1, seed);
  }
  const __nv_bfloat16* copy(int i) const {
    return reinterpret_cast<const __nv_bfloat16*>(data.data()) + static_cast<size_t>(i % copies) * elements;
  }
};

void bench_bandwidth() {
  const size_t bytes = size_t{2} << 30;
  DeviceBuffer<uint8_t> buffer(bytes);
  buffer.fill_bytes(0x5a);
  DeviceBuffer<uint32_t> checksum(1);
  const double us = graph_time_us([&](int, cudaStream_t s) { kernels::stream_read(buffer.data(), bytes, checksum.data(), s); }, 10);
  g_stream_read_gbps = bytes / (us * 1e3);
  const auto& info = cuda::current_device_info();
  std::printf("device: %s, %d SMs, L2 %zu MB\n", info.name.c_str(), info.multiprocessors, info.l2_bytes >> 20);
  row("stream_read", "2 GiB", 0, "16B loads", us, static_cast<double>(bytes));
}

void bench_gemv_shape(int out, int in, const std::vector<int>& token_counts, const std::vector<int>& k_splits,
                      bool baseline) {
  WeightPool weights(static_cast<size_t>(out) * in, 1);
  DeviceBuffer<float> x(16 * static_cast<size_t>(in)), y(16 * static_cast<size_t>(out));
  DeviceBuffer<uint16_t> x_bf16(16 * static_cast<size_t>(in));
  fill_random(x, -1, 1, 2);
  fill_random(x_bf16, -1, 1, 3);
  kernels::CublasLtGemm cublas;
  DeviceBuffer<float> fp8_scales(static_cast<size_t>(kernels::Fp8Matrix::scale_count(out, in)));
  fill_random(fp8_scales, 0.001f, 0.002f, 4);
  const std::string shape = std::to_string(out) + "x" + std::to_string(in);
  const int launches = std::max(20, std::min(200, weights.copies));
  // The launch heuristic, each k_split, and (sweeps) one 16-row tile per warp without / with a cluster of two blocks.
  std::vector<std::pair<std::string, kernels::GemvTuning>> variants;
  for (int k_split : k_splits)
    variants.push_back({k_split == 0 ? "tachyon" : "k_split=" + std::to_string(k_split), kernels::GemvTuning{k_split}});
  if (k_splits.size() > 1) {
    variants.push_back({"16-row blocks", kernels::GemvTuning{4, 1, 1}});
    variants.push_back({"16-row clusters of 2", kernels::GemvTuning{4, 1, 2}});
  }
  for (int n : token_counts) {
    const double bytes = 2.0 * out * in + 4.0 * n * (in + out);
    for (const auto& [name, tuning] : variants) {
      const double us = graph_time_us([&](int i, cudaStream_t s) {
        kernels::gemv_bf16(weights.copy(i), nullptr, x.data(), y.data(), n, out, in, s, tuning);
      }, launches);
      row("gemv_bf16", shape, n, name, us, bytes);
    }
    // The same matrix as block-scaled FP8 (the pool's bytes taken as e4m3 codes: timing only), half the bytes.
    const double fp8_bytes = 1.0 * out * in + 4.0 * fp8_scales.size() + 4.0 * n * (in + out);
    for (const auto& [name, tuning] : variants) {
      const double us = graph_time_us([&](int i, cudaStream_t s) {
        const kernels::Fp8Matrix w{reinterpret_cast<const uint8_t*>(weights.copy(i)), fp8_scales.data()};
        kernels::gemv_fp8(w, nullptr, x.data(), y.data(), n, out, in, s, tuning);
      }, launches);
      row("gemv_fp8", shape, n, name, us, fp8_bytes);
    }
    if (baseline) {
      const double us = graph_time_us([&](int i, cudaStream_t s) {
        cublas.linear_bf16(weights.copy(i), reinterpret_cast<const __nv_bfloat16*>(x_bf16.data()), nullptr, y.data(), n,
                           out, in, s);
      }, launches);
      row("gemv_bf16", shape, n, "cuBLASLt (bf16 x)", us, 2.0 * out * in + 2.0 * n * in + 4.0 * n * out);
    }
  }
}

void bench_gemv(bool sweep) {
  const std::vector<int> tokens = {1, 2, 4, 8, 16};
  const std::vector<int> splits = sweep ? std::vector<int>{0, 1, 2, 4} : std::vector<int>{0};
  bench_gemv_shape(6144, 4096, tokens, splits, true);
  bench_gemv_shape(151936, 2048, tokens, splits, true);   // Qwen3 lm_head
  bench_gemv_shape(4096, 2048, tokens, splits, true);     // Qwen3-30B-A3B q_proj
  bench_gemv_shape(5120, 2048, {1, 16}, splits, false);   // Qwen3-30B-A3B fused qkv
  bench_gemv_shape(2048, 4096, {1, 16}, splits, false);   // Qwen3-30B-A3B o_proj
  bench_gemv_shape(49152, 576, {1, 16}, splits, true);    // SmolLM2 lm_head
  bench_gemv_shape(1536, 576, {1, 16}, splits, true);     // SmolLM2 MLP
  bench_gemv_shape(576, 1536, {1, 16}, splits, false);   // SmolLM2 down
  bench_gemv_shape(576, 576, {1, 16}, splits, false);    // SmolLM2 o_proj
  bench_gemv_shape(960, 576, {1, 16}, splits, false);    // SmolLM2 fused QKV
  bench_gemv_shape(8192, 8192, {1, 16}, splits, true);
}

void bench_attention() {
  // Qwen3-30B-A3B attention: 32 query heads, 4 KV heads of 128; rotate over "layers" so KV comes from HBM.
  const int n_heads = 32, n_kv = 4, head_dim = 128, page = 64;
  for (int len : {1024, 4096, 32768}) {
    const int pages = (len + 16 + page - 1) / page;
    const size_t layer_elems = static_cast<size_t>(pages) * page * n_kv * head_dim;
    const int layers = static_cast<int>(std::max<size_t>(2, 4 * cuda::current_device_info().l2_bytes / (layer_elems * 4) + 1));
    DeviceBuffer<uint16_t> k(layer_elems * layers), v(layer_elems * layers);
    fill_random(k, -1, 1, 4);
    fill_random(v, -1, 1, 5);
    std::vector<int> table(pages);
    for (int i = 0; i < pages; ++i) table[i] = i;
    DeviceBuffer<int> table_dev(table);
    std::vector<float> inv_freq_host(head_dim / 2);
    for (int i = 0; i < head_dim / 2; ++i) inv_freq_host[i] = std::pow(1e6f, -2.0f * i / head_dim);
    DeviceBuffer<float> inv_freq(inv_freq_host), norm_weight(head_dim);
    fill_random(norm_weight, 0.5f, 1.5f, 12);
    for (int n : {1, 4, 16}) {
      std::vector<int> query_start = {0, n}, seq_lens = {len}, positions, token_sequence;
      for (int i = 0; i < n; ++i) positions.push_back(len - n + i), token_sequence.push_back(0);
      DeviceBuffer<int> qs(query_start), sl(seq_lens), pos(positions), ts(token_sequence);
      // q, k, v as the fused QKV projection lays them out (the prologue variant reads k and v from it).
      const int q_width = n_heads * head_dim, qkv_width = q_width + 2 * n_kv * head_dim;
      DeviceBuffer<float> qkv(static_cast<size_t>(n) * qkv_width), out(static_cast<size_t>(n) * q_width);
      fill_random(qkv, -1, 1, 6);
      kernels::AttentionBatch batch{1, n, qs.data(), sl.data(), pos.data(), ts.data(), len, n};
      kernels::AttentionParams params;
      params.q = qkv.data();
      params.q_stride = qkv_width;
      params.out = out.data();
      params.out_stride = n_heads * head_dim;
      params.n_heads = n_heads;
      params.scale = 0.088f;
      kernels::PagedKvCache cache{nullptr, nullptr, table_dev.data(), pages, page, n_kv, head_dim};
      const size_t workspace_bytes = kernels::decode_attention_workspace_bytes(params, cache, batch);
      DeviceBuffer<uint8_t> workspace(std::max<size_t>(workspace_bytes, 16));
      // With Qwen3's prologue before it (per-head q/k RMSNorm, RoPE, the K/V append): what that launch adds.
      kernels::AttentionPrologue prologue;
      prologue.q = qkv.data();
      prologue.q_stride = qkv_width;
      prologue.n_heads = n_heads;
      prologue.k = qkv.data() + q_width;
      prologue.k_stride = qkv_width;
      prologue.v = qkv.data() + q_width + n_kv * head_dim;
      prologue.v_stride = qkv_width;
      prologue.q_norm_weight = norm_weight.data();
      prologue.k_norm_weight = norm_weight.data();
      prologue.rope = kernels::RopeTable{inv_freq.data(), head_dim, 1.0f, false};
      const std::string shape = "32/4x128 len " + std::to_string(len);
      const double bytes = 2.0 * 2 * len * n_kv * head_dim;
      // Variants: attention alone; after the prologue launch (as a decode pass runs them); the same over a settled
      // cache (its first tile streamed before the prologue finishes: AttentionParams::cache_settled).
      const char* names[] = {"paged 64", "+ qk_norm_rope_kv_append", "+ qk_norm_rope_kv_append, settled cache"};
      for (int variant = 0; variant < 3; ++variant) {
        kernels::AttentionParams run = params;
        run.cache_settled = variant == 2;
        const double us = graph_time_us([&](int i, cudaStream_t s) {
          kernels::PagedKvCache layer = cache;
          layer.k_pages = reinterpret_cast<__nv_bfloat16*>(k.data()) + (i % layers) * layer_elems;
          layer.v_pages = reinterpret_cast<__nv_bfloat16*>(v.data()) + (i % layers) * layer_elems;
          if (variant > 0) kernels::qk_norm_rope_kv_append(prologue, layer, batch, s);
          kernels::decode_attention(run, layer, batch, workspace.data(), workspace_bytes, s);
        }, 40);
        row("decode_attention", shape, n, names[variant], us, bytes);
      }
    }
  }
}

void bench_moe(bool sweep) {
  // One Qwen3-30B-A3B MoE layer: router gemv, top-8 of 128, grouping, expert gate/up and down, combine.
  const int hidden = 2048, width = 768, n_experts = 128, top_k = 8, layers = 2;
  const size_t expert_elems = static_cast<size_t>(width) * hidden;
  DeviceBuffer<uint16_t> gate(expert_elems * n_experts * layers), up(gate.size()), down(gate.size()),
      router(static_cast<size_t>(n_experts) * hidden * layers);
  fill_random(gate, -1, 1, 7);
  fill_random(up, -1, 1, 8);
  fill_random(down, -0.1f, 0.1f, 9);
  fill_random(router, -1, 1, 10);
  auto bf = [](DeviceBuffer<uint16_t>& b, size_t offset) { return reinterpret_cast<const __nv_bfloat16*>(b.data()) + offset; };
  for (int n : {1, 2, 4, 8, 16}) {
    DeviceBuffer<float> x(static_cast<size_t>(n) * hidden), logits(static_cast<size_t>(n) * n_experts),
        weights(static_cast<size_t>(n) * top_k), h(static_cast<size_t>(n) * top_k * width),
        y(static_cast<size_t>(n) * top_k * hidden), out(static_cast<size_t>(n) * hidden);
    fill_random(x, -1, 1, 11);
    DeviceBuffer<int> ids(static_cast<size_t>(n) * top_k), storage(kernels::expert_routing_ints(n_experts, n * top_k));
    const auto buffers = kernels::expert_routing_buffers(storage.data(), n_experts, n * top_k);
    kernels::RouterConfig config;
    config.n_experts = n_experts;
    config.top_k = top_k;
    // Distinct experts per pass (for the byte count), from one routed pass on the real router.
    kernels::gemv_bf16(bf(router, 0), nullptr, x.data(), logits.data(), n, n_experts, hidden, nullptr);
    kernels::moe_router_topk(logits.data(), n, config, ids.data(), weights.data(), nullptr);
    kernels::ExpertRouting routing = kernels::moe_group_by_expert(ids.data(), n, top_k, n_experts, buffers, nullptr);
    int active = 0;
    TACHYON_CUDA_CHECK(cudaMemcpy(&active, buffers.active_expert_count, sizeof(int), cudaMemcpyDeviceToHost));
    auto layer = [&](int i, cudaStream_t s) {
      const size_t l = i % layers;
      kernels::gemv_bf16(bf(router, l * n_experts * hidden), nullptr, x.data(), logits.data(), n, n_experts, hidden, s);
      routing = kernels::moe_route_and_group(logits.data(), n, config, ids.data(), weights.data(), buffers, s);
      kernels::expert_gated_gemv_bf16(bf(gate, l * expert_elems * n_experts), bf(up, l * expert_elems * n_experts),
                                      static_cast<int64_t>(expert_elems), routing, x.data(), h.data(), width, hidden, s);
      kernels::expert_gemv_bf16(bf(down, l * expert_elems * n_experts), static_cast<int64_t>(expert_elems), routing,
                                h.data(), y.data(), hidden, width, s);
      kernels::moe_combine(y.data(), weights.data(), routing, n, hidden, out.data(), false, s);
    };
    const double bytes = 3.0 * active * expert_elems * 2 + 2.0 * n_experts * hidden;
    const double us = graph_time_us(layer, 20);
    row("moe_layer (5 kernels)", "qwen3 2048/768 128e top8, " + std::to_string(active) + " experts", n, "tachyon", us, bytes);
    const double us_experts = graph_time_us([&](int i, cudaStream_t s) {
      const size_t l = i % layers;
      kernels::expert_gated_gemv_bf16(bf(gate, l * expert_elems * n_experts), bf(up, l * expert_elems * n_experts),
                                      static_cast<int64_t>(expert_elems), routing, x.data(), h.data(), width, hidden, s);
      kernels::expert_gemv_bf16(bf(down, l * expert_elems * n_experts), static_cast<int64_t>(expert_elems), routing,
                                h.data(), y.data(), hidden, width, s);
    }, 20);
    row("expert gate_up + down", "qwen3 " + std::to_string(active) + " experts", n, "tachyon", us_experts,
        3.0 * active * expert_elems * 2);
    if (!sweep) continue;
    for (int k_split : {0, 1, 2, 4}) {
      const std::string variant = k_split == 0 ? "tachyon" : "k_split=" + std::to_string(k_split);
      row("expert_gated_gemv_bf16", "768x2048 x " + std::to_string(active) + " experts", n, variant,
          graph_time_us([&](int i, cudaStream_t s) {
            const size_t l = i % layers;
            kernels::expert_gated_gemv_bf16(bf(gate, l * expert_elems * n_experts), bf(up, l * expert_elems * n_experts),
                                            static_cast<int64_t>(expert_elems), routing, x.data(), h.data(), width,
                                            hidden, s, kernels::GemvTuning{k_split});
          }, 20), 2.0 * active * expert_elems * 2);
      row("expert_gemv_bf16", "2048x768 x " + std::to_string(active) + " experts", n, variant,
          graph_time_us([&](int i, cudaStream_t s) {
            const size_t l = i % layers;
            kernels::expert_gemv_bf16(bf(down, l * expert_elems * n_experts), static_cast<int64_t>(expert_elems),
                                      routing, h.data(), y.data(), hidden, width, s, kernels::GemvTuning{k_split});
          }, 20), 1.0 * active * expert_elems * 2);
    }
    for (int k_split : {0, 1, 2, 4})
      row("gemv_bf16 (router)", "128x2048", n, k_split == 0 ? "tachyon" : "k_split=" + std::to_string(k_split),
          graph_time_us([&](int i, cudaStream_t s) {
            kernels::gemv_bf16(bf(router, (i % layers) * n_experts * hidden), nullptr, x.data(), logits.data(), n,
                               n_experts, hidden, s, kernels::GemvTuning{k_split});
          }, 20), 2.0 * n_experts * hidden);
  }
}

void bench_misc() {
  const int vocab = 151936;
  for (int n : {1, 16}) {
    DeviceBuffer<float> logits(static_cast<size_t>(n) * vocab);
    fill_random(logits, -8, 8, 12);
    DeviceBuffer<int> out(n);
    const double bytes = 4.0 * n * vocab;
    row("argmax_rows", "vocab 151936", n, "tachyon", graph_time_us([&](int, cudaStream_t s) {
          kernels::argmax_rows(logits.data(), n, vocab, out.data(), s);
        }, 20), bytes);
    row("sample_rows", "vocab 151936 T=0.7 k=50 p=0.9", n, "tachyon", graph_time_us([&](int, cudaStream_t s) {
          kernels::sample_rows(logits.data(), n, vocab, kernels::SamplingParams{0.7f, 50, 0.9f, 1}, nullptr, out.data(), s);
        }, 20), bytes);
    row("sample_rows", "vocab 151936 T=1 p=0.95", n, "tachyon", graph_time_us([&](int, cudaStream_t s) {
          kernels::sample_rows(logits.data(), n, vocab, kernels::SamplingParams{1.0f, 0, 0.95f, 1}, nullptr, out.data(), s);
        }, 20), bytes);
    DeviceBuffer<float> residual(static_cast<size_t>(n) * 4096), delta(residual.size()), w(4096), y(residual.size());
    fill_random(residual, -1, 1, 13);
    fill_random(delta, -1, 1, 14);
    fill_random(w, -1, 1, 15);
    row("add_rms_norm", "4096", n, "tachyon", graph_time_us([&](int, cudaStream_t s) {
          kernels::add_rms_norm(residual.data(), delta.data(), w.data(), y.data(), n, 4096, 1e-6f, s);
        }, 50), 16.0 * n * 4096);
  }
}

}  // namespace
}  // namespace tachyon

int main(int argc, char** argv) {
  using namespace tachyon;
  const std::string what = argc > 1 ? argv[1] : "all";
  try {
    if (!cuda::cuda_device_available()) {
      std::fprintf(stderr, "tachyon_kernel_bench: no CUDA device\n");
      return 1;
    }
    std::printf("| kernel | shape | tokens | variant | us | GB/s | %% of stream read |\n|---|---|---|---|---|---|---|\n");
    bench_bandwidth();
    if (what == "all" || what == "gemv") bench_gemv(false);
    if (what == "gemv-sweep") bench_gemv(true);
    if (what == "all" || what == "attention") bench_attention();
    if (what == "all" || what == "moe") bench_moe(false);
    if (what == "gemv-sweep") bench_moe(true);
    if (what == "all" || what == "misc") bench_misc();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tachyon_kernel_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
