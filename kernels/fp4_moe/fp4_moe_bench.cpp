#include "fp4_moe/fp4_moe_bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include <cuda_bf16.h>

#include "bandwidth/stream_read.h"
#include "bench/graph_timing.h"
#include "cuda/device_buffer.h"
#include "cuda/stream.h"
#include "fp4_moe/fp4_moe.h"
#include "fp4_moe/fp4_tiles.h"
#include "gemv/gemv_bf16.h"
#include "model_runtime/model_runtime.h"
#include "moe/moe_routing.h"

namespace tachyon::kernels {

namespace {

using cuda::DeviceBuffer;


double g_read_gbps = 0;

// One markdown row; `bytes` are what the launch must read (weights touched + scales), printed as MB.
void row(const std::string& kernel, const std::string& shape, int tokens, const std::string& variant, double us, double bytes) {
  const double gbps = bytes / (us * 1e3);
  std::printf("| %s | %s | %d | %s | %.2f | %.2f | %.0f | %.1f%% |\n", kernel.c_str(), shape.c_str(), tokens,
              variant.c_str(), bytes / 1e6, us, gbps, g_read_gbps > 0 ? 100.0 * gbps / g_read_gbps : 0.0);
  std::fflush(stdout);
}

// Host-made uniform values in [lo, hi) (activations: small).
void fill_random(DeviceBuffer<float>& buffer, uint32_t seed, float lo, float hi) {
  uint64_t state = 0x9E3779B97F4A7C15ull * (seed + 1);
  std::vector<float> host(buffer.size());
  for (float& v : host) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    v = lo + (hi - lo) * static_cast<float>(state >> 40) * (1.0f / 16777216.0f);
  }
  buffer.copy_from_host(host);
}

void bench_stream_read() {
  const size_t bytes = size_t{2} << 30;
  DeviceBuffer<uint8_t> buffer(bytes);
  buffer.fill_bytes(0x5a);
  DeviceBuffer<uint32_t> checksum(1);
  const double us = graph_time_us([&](int, cudaStream_t s) { stream_read(buffer.data(), bytes, checksum.data(), s); }, 10);
  g_read_gbps = bytes / (us * 1e3);
  const auto& info = cuda::current_device_info();
  std::printf("device: %s, %d SMs, L2 %zu MB\n", info.name.c_str(), info.multiprocessors, info.l2_bytes >> 20);
  row("stream_read", "2 GiB", 0, "16B loads", us, static_cast<double>(bytes));
}

struct Shape {
  const char* name;
  int hidden, width, n_experts, top_k;
};

// Copies of a whole expert set so that the bytes one token touches, rotated over the copies, exceed 4x L2: every
// timed launch reads its weights from HBM, as a decode step does (each layer's experts are read once per step).
int copies_for(double bytes_touched_at_one_token) {
  const double l2 = static_cast<double>(cuda::current_device_info().l2_bytes);
  return static_cast<int>(std::max(2.0, std::ceil(4.0 * l2 / bytes_touched_at_one_token)));
}

// FP4 expert weights of one format: gate, up [E][I, H] and down [E][H, I] in the tile layout, `copies` times,
// random codes and scales made on the device.
struct Fp4Experts {
  Fp4Kind kind;
  int hidden, width, n_experts, copies;
  int64_t gate_bytes, down_bytes;
  DeviceBuffer<uint8_t> gate, up, down;
  DeviceBuffer<float> scales;  // NVFP4 global scales: gate [E], up [E], down [E]

  Fp4Experts(Fp4Kind k, const Shape& s)
      : kind(k), hidden(s.hidden), width(s.width), n_experts(s.n_experts),
        gate_bytes(fp4_tile_matrix_bytes(k, s.width, s.hidden)), down_bytes(fp4_tile_matrix_bytes(k, s.hidden, s.width)) {
    copies = copies_for(static_cast<double>(s.top_k) * (2 * gate_bytes + down_bytes));
    gate = DeviceBuffer<uint8_t>(static_cast<size_t>(gate_bytes) * n_experts * copies);
    up = DeviceBuffer<uint8_t>(gate.size());
    down = DeviceBuffer<uint8_t>(static_cast<size_t>(down_bytes) * n_experts * copies);
    auto fill = [&](DeviceBuffer<uint8_t>& b, int rows, int cols, int64_t bytes, uint64_t seed) {
      Fp4StackLayout layout;
      layout.kind = kind;
      layout.n_matrices = static_cast<int64_t>(n_experts) * copies;
      layout.rows = rows;
      layout.cols = cols;
      layout.stride = bytes;
      layout.row_period = layout.row_valid = rows;
      layout.col_period = layout.col_valid = cols;
      fill_random_fp4_tiles(b.data(), layout, 0.02f, seed, nullptr);
    };
    fill(gate, width, hidden, gate_bytes, 3);
    fill(up, width, hidden, gate_bytes, 4);
    fill(down, hidden, width, down_bytes, 5);
    scales = DeviceBuffer<float>(std::vector<float>(3 * static_cast<size_t>(n_experts), fp4_random_global_scale(0.02f)));
    TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  }

  // Matrices of copy `copy` (0 gate, 1 up, 2 down).
  Fp4ExpertMatrices matrices(int which, int copy) const {
    Fp4ExpertMatrices m;
    m.kind = kind;
    m.rows = which == 2 ? hidden : width;
    m.cols = which == 2 ? width : hidden;
    m.expert_stride = which == 2 ? down_bytes : gate_bytes;
    const DeviceBuffer<uint8_t>& b = which == 0 ? gate : which == 1 ? up : down;
    m.tiles = b.data() + static_cast<size_t>(copy % copies) * m.expert_stride * n_experts;
    m.global_scales = kind == Fp4Kind::Nvfp4 ? scales.data() + static_cast<size_t>(which) * n_experts : nullptr;
    return m;
  }
  // Bytes of one expert (three matrices, scales included; NVFP4 adds its three global scales).
  double expert_bytes() const { return 2.0 * gate_bytes + down_bytes + (kind == Fp4Kind::Nvfp4 ? 12.0 : 0.0); }
};

// Each kernel alone over its configurations (version 2; version 1 and the defaults too), then both kernels with the
// fastest of each, printed as "best tuning" lines that scripts/gpu/fp4.sh feeds to the decode bench
// (TACHYON_FP4_MOE).
template <typename Experts, typename Routing, typename Buffer>
void sweep_variants(const Experts& f, const Routing& routing, const Buffer& x, const Buffer& weights, Buffer& h,
                    Buffer& out, const std::string& shape_text, int n, const std::string& variant, int active,
                    int launches) {
  auto gate_up_us = [&](const Fp4MoeTuning& t) {
    return graph_time_us([&](int i, cudaStream_t s) {
      fp4_expert_gate_up(f.matrices(0, i), f.matrices(1, i), routing, x.data(), h.data(), s, 0, t);
    }, launches);
  };
  auto down_us = [&](const Fp4MoeTuning& t) {
    return graph_time_us([&](int i, cudaStream_t s) {
      fp4_expert_down_combine(f.matrices(2, i), routing, h.data(), weights.data(), out.data(), false, s, false, t);
    }, launches);
  };
  const double gate_up_bytes = 2.0 * active * f.gate_bytes, down_bytes = static_cast<double>(active) * f.down_bytes;
  std::vector<Fp4MoeTuning> gate_up_variants, down_variants;
  Fp4MoeTuning t;
  t.version = 1;
  gate_up_variants.push_back(t);
  down_variants.push_back(t);
  t.version = 2;
  gate_up_variants.push_back(t);  // defaults
  down_variants.push_back(t);
  for (int stages : {4, 8})
    for (int k_split : {1, 2, 4, 8}) {
      Fp4MoeTuning v = t;
      v.k_split = k_split;
      v.stages = stages;
      gate_up_variants.push_back(v);
    }
  for (int warps : {8, 16})
    for (int stages : {6, 12})
      for (int k_split : {1, 2, 3, 4}) {
        Fp4MoeTuning v = t;
        v.down_warps = warps;
        v.down_stages = stages;
        v.down_k_split = k_split;
        down_variants.push_back(v);
      }
  // Packed h (gate/up writes fp16 hi/lo words, down only permutes): 4 gate/up and 6 down stages.
  for (int k_split : {1, 2, 4, 8}) {
    Fp4MoeTuning v = t;
    v.k_split = k_split;
    v.packed_h = 1;
    gate_up_variants.push_back(v);
  }
  for (int warps : {8, 16})
    for (int k_split : {1, 2, 3, 4}) {
      Fp4MoeTuning v = t;
      v.down_warps = warps;
      v.down_k_split = k_split;
      v.packed_h = 1;
      down_variants.push_back(v);
    }
  // The fastest gate/up and down of version 2, separately for float h and packed h (they must agree).
  Fp4MoeTuning best[2] = {t, t};
  best[1].packed_h = 1;
  double best_gate_up[2] = {1e30, 1e30}, best_down[2] = {1e30, 1e30};
  for (const Fp4MoeTuning& v : gate_up_variants) {
    const double us = gate_up_us(v);
    row("fp4_expert_gate_up", shape_text, n, variant + " " + to_string(v), us, gate_up_bytes);
    const int k = v.packed_h ? 1 : 0;
    if (v.version == 2 && us < best_gate_up[k]) {
      best_gate_up[k] = us;
      best[k].k_split = v.k_split;
      best[k].stages = v.stages;
    }
  }
  for (const Fp4MoeTuning& v : down_variants) {
    const double us = down_us(v);
    row("fp4_expert_down_combine", shape_text, n, variant + " " + to_string(v), us, down_bytes);
    const int k = v.packed_h ? 1 : 0;
    if (v.version == 2 && us < best_down[k]) {
      best_down[k] = us;
      best[k].down_warps = v.down_warps;
      best[k].down_stages = v.down_stages;
      best[k].down_k_split = v.down_k_split;
    }
  }
  double best_us = 1e30;
  Fp4MoeTuning winner = t;
  for (const Fp4MoeTuning& b : best) {
    const double us = graph_time_us([&](int i, cudaStream_t s) {
      fp4_moe_experts(f.matrices(0, i), f.matrices(1, i), f.matrices(2, i), routing, x.data(), weights.data(), h.data(),
                      out.data(), false, s, b);
    }, launches);
    row("fp4 experts best (gate_up + down_combine)", shape_text, n, variant + " " + to_string(b), us,
        gate_up_bytes + down_bytes);
    if (us < best_us) {
      best_us = us;
      winner = b;
    }
  }
  std::printf("best tuning tokens=%d %s: %s\n", n, variant.c_str(), to_string(winner).c_str());
  std::fflush(stdout);
}

void bench_shape(const Shape& shape, bool sweep) {
  const int H = shape.hidden, I = shape.width, E = shape.n_experts, K = shape.top_k;
  const std::string label = std::string(shape.name) + " " + std::to_string(H) + "/" + std::to_string(I) + " " +
                            std::to_string(E) + "e top" + std::to_string(K);
  DeviceBuffer<__nv_bfloat16> router(static_cast<size_t>(E) * H);
  PaddedMatrixLayout router_layout;
  router_layout.rows = router_layout.row_period = router_layout.row_valid = E;
  router_layout.cols = router_layout.col_period = router_layout.col_valid = H;
  fill_random_bf16(router.data(), router_layout, 0.02f, 1, nullptr);

  // Weights once per shape: both FP4 formats and BF16 (expert_gated_gemv_bf16 + expert_gemv_bf16 + moe_combine).
  Fp4Experts nvfp4(Fp4Kind::Nvfp4, shape), mxfp4(Fp4Kind::Mxfp4, shape);
  const size_t expert_elems = static_cast<size_t>(I) * H;
  const int bf16_copies = copies_for(3.0 * K * expert_elems * 2);
  DeviceBuffer<__nv_bfloat16> bf16_gate(expert_elems * E * bf16_copies), bf16_up(bf16_gate.size()),
      bf16_down(bf16_gate.size());
  PaddedMatrixLayout expert_layout;
  expert_layout.outer = static_cast<int64_t>(E) * bf16_copies;
  expert_layout.rows = expert_layout.row_period = expert_layout.row_valid = I;
  expert_layout.cols = expert_layout.col_period = expert_layout.col_valid = H;
  fill_random_bf16(bf16_gate.data(), expert_layout, 0.02f, 7, nullptr);
  fill_random_bf16(bf16_up.data(), expert_layout, 0.02f, 8, nullptr);
  std::swap(expert_layout.rows, expert_layout.cols);
  expert_layout.row_period = expert_layout.row_valid = H;
  expert_layout.col_period = expert_layout.col_valid = I;
  fill_random_bf16(bf16_down.data(), expert_layout, 0.02f, 9, nullptr);
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  auto bf = [&](const DeviceBuffer<__nv_bfloat16>& b, int i) {
    return b.data() + static_cast<size_t>(i % bf16_copies) * expert_elems * E;
  };

  for (int n : {1, 2, 4, 8, 16}) {
    DeviceBuffer<float> x(static_cast<size_t>(n) * H), logits(static_cast<size_t>(n) * E), weights(static_cast<size_t>(n) * K),
        h(static_cast<size_t>(n) * K * I), y(static_cast<size_t>(n) * K * H), out(static_cast<size_t>(n) * H);
    fill_random(x, 2 + n, -1, 1);
    DeviceBuffer<int> ids(static_cast<size_t>(n) * K), storage(expert_routing_ints(E, n * K));
    const ExpertRoutingBuffers buffers = expert_routing_buffers(storage.data(), E, n * K);
    RouterConfig config;
    config.n_experts = E;
    config.top_k = K;
    gemv_bf16(router.data(), nullptr, x.data(), logits.data(), n, E, H, nullptr);
    const ExpertRouting routing = moe_route_and_group(logits.data(), n, config, ids.data(), weights.data(), buffers, nullptr);
    int active = 0;
    TACHYON_CUDA_CHECK(cudaMemcpy(&active, buffers.active_expert_count, sizeof(int), cudaMemcpyDeviceToHost));
    const std::string shape_text = label + ", " + std::to_string(active) + " experts";

    for (const Fp4Experts* f : {&nvfp4, &mxfp4}) {
      const std::string variant = f->kind == Fp4Kind::Nvfp4 ? "nvfp4" : "mxfp4";
      const double touched = active * f->expert_bytes();  // the union of experts the n tokens route to
      const int launches = std::max(20, std::min(200, 2 * f->copies));
      const double us_experts = graph_time_us([&](int i, cudaStream_t s) {
        fp4_moe_experts(f->matrices(0, i), f->matrices(1, i), f->matrices(2, i), routing, x.data(), weights.data(),
                        h.data(), out.data(), false, s);
      }, launches);
      row("fp4 experts (gate_up + down_combine)", shape_text, n, variant, us_experts, touched);
      const double us_layer = graph_time_us([&](int i, cudaStream_t s) {
        gemv_bf16(router.data(), nullptr, x.data(), logits.data(), n, E, H, s);
        const ExpertRouting r = moe_route_and_group(logits.data(), n, config, ids.data(), weights.data(), buffers, s);
        fp4_moe_experts(f->matrices(0, i), f->matrices(1, i), f->matrices(2, i), r, x.data(), weights.data(), h.data(),
                        out.data(), false, s);
      }, launches);
      row("fp4 MoE layer (router, route+group, 2 expert kernels)", shape_text, n, variant, us_layer,
          touched + 2.0 * E * H);
      // Version 1 beside the default, on the same routing.
      Fp4MoeTuning v1;
      v1.version = 1;
      const double us_v1 = graph_time_us([&](int i, cudaStream_t s) {
        fp4_moe_experts(f->matrices(0, i), f->matrices(1, i), f->matrices(2, i), routing, x.data(), weights.data(),
                        h.data(), out.data(), false, s, v1);
      }, launches);
      row("fp4 experts (gate_up + down_combine)", shape_text, n, variant + " v1", us_v1, touched);
      if (sweep && (n == 1 || n == 16)) sweep_variants(*f, routing, x, weights, h, out, shape_text, n, variant, active, launches);
    }

    // The BF16 expert path on the same routing, and the whole BF16 MoE layer as GpuModel runs it.
    const double bf16_touched = 3.0 * active * expert_elems * 2;
    const int launches = std::max(20, std::min(200, 2 * bf16_copies));
    const double us_bf16 = graph_time_us([&](int i, cudaStream_t s) {
      expert_gated_gemv_bf16(bf(bf16_gate, i), bf(bf16_up, i), static_cast<int64_t>(expert_elems), routing, x.data(),
                             h.data(), I, H, s);
      expert_gemv_bf16(bf(bf16_down, i), static_cast<int64_t>(expert_elems), routing, h.data(), y.data(), H, I, s);
      moe_combine(y.data(), weights.data(), routing, n, H, out.data(), false, s);
    }, launches);
    row("bf16 experts (gated gemv + gemv + combine)", shape_text, n, "bf16", us_bf16, bf16_touched);
    const double us_bf16_layer = graph_time_us([&](int i, cudaStream_t s) {
      gemv_bf16(router.data(), nullptr, x.data(), logits.data(), n, E, H, s);
      const ExpertRouting r = moe_route_and_group(logits.data(), n, config, ids.data(), weights.data(), buffers, s);
      expert_gated_gemv_bf16(bf(bf16_gate, i), bf(bf16_up, i), static_cast<int64_t>(expert_elems), r, x.data(), h.data(),
                             I, H, s);
      expert_gemv_bf16(bf(bf16_down, i), static_cast<int64_t>(expert_elems), r, h.data(), y.data(), H, I, s);
      moe_combine(y.data(), weights.data(), r, n, H, out.data(), false, s);
    }, launches);
    row("bf16 MoE layer (router, route+group, 3 expert kernels)", shape_text, n, "bf16", us_bf16_layer,
        bf16_touched + 2.0 * E * H);
  }
}

// TACHYON_FP4_BENCH_PROFILE=1: one launch of each FP4 expert kernel (default version, then version 1) at 1 and 16
// tokens, NVFP4, Qwen3-30B-A3B shapes, no graphs: for a profiler (`ncu -k regex:fp4_(gate_up|down)`).
void profile_once() {
  const Shape shape{"qwen3", 2048, 768, 128, 8};
  const int H = shape.hidden, E = shape.n_experts, K = shape.top_k;
  Fp4Experts nvfp4(Fp4Kind::Nvfp4, shape);
  DeviceBuffer<__nv_bfloat16> router(static_cast<size_t>(E) * H);
  PaddedMatrixLayout router_layout;
  router_layout.rows = router_layout.row_period = router_layout.row_valid = E;
  router_layout.cols = router_layout.col_period = router_layout.col_valid = H;
  fill_random_bf16(router.data(), router_layout, 0.02f, 1, nullptr);
  for (int n : {1, 16}) {
    DeviceBuffer<float> x(static_cast<size_t>(n) * H), logits(static_cast<size_t>(n) * E),
        weights(static_cast<size_t>(n) * K), h(static_cast<size_t>(n) * K * shape.width), out(static_cast<size_t>(n) * H);
    fill_random(x, 2 + n, -1, 1);
    DeviceBuffer<int> ids(static_cast<size_t>(n) * K), storage(expert_routing_ints(E, n * K));
    const ExpertRoutingBuffers buffers = expert_routing_buffers(storage.data(), E, n * K);
    RouterConfig config;
    config.n_experts = E;
    config.top_k = K;
    gemv_bf16(router.data(), nullptr, x.data(), logits.data(), n, E, H, nullptr);
    const ExpertRouting routing = moe_route_and_group(logits.data(), n, config, ids.data(), weights.data(), buffers, nullptr);
    Fp4MoeTuning v1;
    v1.version = 1;
    for (const Fp4MoeTuning& t : {Fp4MoeTuning{}, v1}) {
      fp4_moe_experts(nvfp4.matrices(0, 1), nvfp4.matrices(1, 1), nvfp4.matrices(2, 1), routing, x.data(),
                      weights.data(), h.data(), out.data(), false, nullptr, t);
      TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
      std::printf("profiled: %d tokens, nvfp4, %s\n", n, to_string(t).c_str());
    }
  }
}

}  // namespace

int run_fp4_moe_bench(const Fp4MoeBenchOptions& options) {
  if (!cuda::cuda_device_available()) {
    std::fprintf(stderr, "fp4 MoE bench: no CUDA device\n");
    return 1;
  }
  if (const char* profile = std::getenv("TACHYON_FP4_BENCH_PROFILE"); profile && *profile && *profile != '0') {
    profile_once();
    return 0;
  }
  std::printf("| kernel | shape | tokens | variant | MB read | us | GB/s | %% of stream read |\n|---|---|---|---|---|---|---|---|\n");
  bench_stream_read();
  const Shape shapes[] = {{"qwen3", 2048, 768, 128, 8}, {"gpt-oss", 2880, 2880, 32, 4}, {"smollm2", 576, 192, 8, 6}};
  for (const Shape& s : shapes)
    if (options.shapes == "all" || options.shapes == s.name) bench_shape(s, options.sweep);
  return 0;
}

}  // namespace tachyon::kernels
