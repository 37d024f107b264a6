// kernels/fp4_moe against the CPU reference (src/fp4/fp4_kernel_layout.h): FP4 expert weights quantized on the CPU
// (both formats, gate and up with different NVFP4 global scales), packed into the kernel tile layout, random
// inputs, routing by the GPU router (uneven tokens per expert, and a skewed case where every token shares one
// expert), 1..16 tokens, every k_split of the gate/up kernel, outputs poisoned with NaN before each launch. Plus
// exact decoding of every e2m1 code and both block-scale kinds, and the device helpers of fp4_tiles.h (random
// tiles respect padding; dequantization to bf16 equals the CPU's dequantization rounded to bf16), and the gpt-oss
// epilogue (biases, clamped SwiGLU).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "fp4/fp4_blocks.h"
#include "fp4/fp4_kernel_layout.h"
#include "fp4_moe/fp4_moe.h"
#include "fp4_moe/fp4_tiles.h"
#include "gpu_test_util.h"
#include "models/layers.h"
#include "moe/moe_routing.h"

namespace tachyon {
namespace {

using namespace gpu_test;
using fp4::Fp4Format;

kernels::Fp4Kind kind_of(Fp4Format f) { return f == Fp4Format::Nvfp4 ? kernels::Fp4Kind::Nvfp4 : kernels::Fp4Kind::Mxfp4; }

// E quantized matrices [rows, cols] with per-row magnitudes spread over two orders, packed for the kernel.
struct DeviceExperts {
  std::vector<fp4::Fp4Matrix> host;
  std::vector<fp4::Fp4MatrixView> views;
  cuda::DeviceBuffer<uint8_t> tiles;
  cuda::DeviceBuffer<float> global_scales;
  kernels::Fp4ExpertMatrices matrices;

  DeviceExperts(Fp4Format format, int experts, int rows, int cols, float magnitude) {
    const int64_t stride = fp4::fp4_kernel_matrix_bytes(format, rows, cols);
    std::vector<uint8_t> packed(stride * experts);
    std::vector<float> scales;
    for (int e = 0; e < experts; ++e) {
      std::vector<float> w = random_normal(static_cast<size_t>(rows) * cols, magnitude);
      const std::vector<float> row_scale = random_floats(rows, 0.1f, 3.0f);
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) w[static_cast<size_t>(r) * cols + c] *= row_scale[r];
      host.push_back(fp4::quantize(format, w.data(), rows, cols, fp4::Mxfp4ScaleRule::BestOfTwo, 0.0f, "test"));
      scales.push_back(host.back().global_scale);
    }
    for (int e = 0; e < experts; ++e) {
      views.push_back(host[e].view());
      fp4::pack_kernel_tiles(views.back(), packed.data() + e * stride);
    }
    tiles = cuda::DeviceBuffer<uint8_t>(packed);
    if (format == Fp4Format::Nvfp4) global_scales = cuda::DeviceBuffer<float>(scales);
    matrices = {kind_of(format), rows, cols, tiles.data(), stride, format == Fp4Format::Nvfp4 ? global_scales.data() : nullptr};
  }
};

struct Routed {
  std::vector<int> ids;
  std::vector<float> weights;
  cuda::DeviceBuffer<float> weights_dev;
  cuda::DeviceBuffer<int> ids_dev, storage;
  kernels::ExpertRouting routing;
};

// GPU softmax top-k routing of random logits (+ bias toward expert 0 when skewed), grouped by expert.
Routed route(int n_tokens, int n_experts, int top_k, bool skewed) {
  Routed r;
  std::vector<float> logits = random_normal(static_cast<size_t>(n_tokens) * n_experts, 2.0f);
  if (skewed)
    for (int t = 0; t < n_tokens; ++t) logits[static_cast<size_t>(t) * n_experts] += 20.0f;
  cuda::DeviceBuffer<float> logits_dev(logits);
  r.weights_dev = cuda::DeviceBuffer<float>(static_cast<size_t>(n_tokens) * top_k);
  r.ids_dev = cuda::DeviceBuffer<int>(static_cast<size_t>(n_tokens) * top_k);
  kernels::RouterConfig config;
  config.n_experts = n_experts;
  config.top_k = top_k;
  kernels::moe_router_topk(logits_dev.data(), n_tokens, config, r.ids_dev.data(), r.weights_dev.data(), nullptr);
  r.storage = cuda::DeviceBuffer<int>(kernels::expert_routing_ints(n_experts, n_tokens * top_k));
  r.storage.fill_bytes(0xff);
  r.routing = kernels::moe_group_by_expert(r.ids_dev.data(), n_tokens, top_k, n_experts,
                                           kernels::expert_routing_buffers(r.storage.data(), n_experts, n_tokens * top_k), nullptr);
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  r.ids = r.ids_dev.to_host();
  r.weights = r.weights_dev.to_host();
  return r;
}

std::vector<float> dequantized(const fp4::Fp4MatrixView& m) {
  std::vector<float> w(static_cast<size_t>(m.rows) * m.cols);
  m.to_float(w.data());
  return w;
}

// The combined output's bound, added per routed entry a (token a / top_k) and scaled by its routing weight: the down
// product and the errors of h it carries, 1e-4 of the sum of |terms|, plus 1e-6 of |down bias| when there is one.
void add_down_combine_bound(const Routed& r, const DeviceExperts& down, const std::vector<std::vector<float>>& h_of_assignment,
                            const float* down_bias, int top_k, int hidden, int width, std::vector<float>& bound) {
  for (size_t a = 0; a < h_of_assignment.size(); ++a) {
    const int t = static_cast<int>(a) / top_k, e = r.ids[a];
    const std::vector<float> d_w = dequantized(down.views[e]);
    for (int i = 0; i < hidden; ++i) {
      double abs_dot = 0;
      for (int k = 0; k < width; ++k) abs_dot += std::fabs(d_w[static_cast<size_t>(i) * width + k] * h_of_assignment[a][k]);
      const double bias = down_bias ? std::fabs(down_bias[static_cast<size_t>(e) * hidden + i]) : 0.0;
      bound[static_cast<size_t>(t) * hidden + i] += static_cast<float>(r.weights[a] * (1e-4 * abs_dot + 1e-6 * bias));
    }
  }
}

// The configurations the bench sweeps (kernels/fp4_moe/fp4_moe_bench.cpp), any of which the runner may be told to use.
std::vector<kernels::Fp4MoeTuning> gate_up_tunings() {
  std::vector<kernels::Fp4MoeTuning> list;
  for (int k_split : {1, 2, 4}) list.push_back(kernels::parse_fp4_moe_tuning("v1 ks" + std::to_string(k_split)));
  for (int stages : {4, 8})
    for (int k_split : {1, 2, 4, 8})
      list.push_back(kernels::parse_fp4_moe_tuning("v2 ks" + std::to_string(k_split) + " s" + std::to_string(stages)));
  for (int k_split : {1, 2, 4, 8}) list.push_back(kernels::parse_fp4_moe_tuning("v2 ks" + std::to_string(k_split) + " hp1"));
  return list;
}
bool packs_h(const kernels::Fp4MoeTuning& t) { return t.version != 1 && t.packed_h != 0; }

// h as float from what gate/up wrote: packed words (fp16 hi of h / 16 | fp16 lo << 16) or floats.
float half_to_float(uint32_t bits) {
  const uint32_t sign = bits >> 15, exponent = (bits >> 10) & 31, mantissa = bits & 1023;
  const float magnitude = exponent == 0    ? std::ldexp(static_cast<float>(mantissa), -24)
                          : exponent == 31 ? (mantissa ? NAN : INFINITY)
                                           : std::ldexp(static_cast<float>(1024 + mantissa), static_cast<int>(exponent) - 25);
  return sign ? -magnitude : magnitude;
}
std::vector<float> h_as_float(const std::vector<float>& h, bool packed) {
  if (!packed) return h;
  std::vector<float> out(h.size());
  for (size_t i = 0; i < h.size(); ++i) {
    uint32_t word;
    std::memcpy(&word, &h[i], sizeof(word));
    out[i] = 16.0f * (half_to_float(word & 0xffff) + half_to_float(word >> 16));
  }
  return out;
}
// The bound of h read back from packed words: the float bound plus the packing's rounding (derivation at its use in
// GateUpAndDownCombineMatchCpuReference).
std::vector<float> packed_h_bound(const std::vector<float>& bound, const std::vector<float>& want) {
  std::vector<float> packed(bound.size());
  for (size_t i = 0; i < bound.size(); ++i)
    packed[i] = static_cast<float>(bound[i] + std::ldexp(1.0, -21) * (1.0 + std::fabs(want[i]) + bound[i]));
  return packed;
}
// The process default packs h (Fp4MoeTuning::packed_h) unless TACHYON_FP4_MOE says otherwise.
bool default_packs_h() { return packs_h(kernels::default_fp4_moe_tuning()); }

std::vector<kernels::Fp4MoeTuning> down_tunings() {
  std::vector<kernels::Fp4MoeTuning> list{kernels::parse_fp4_moe_tuning("v1"), kernels::parse_fp4_moe_tuning("v2")};
  for (int warps : {8, 16})
    for (int stages : {6, 12})
      for (int k_split : {1, 2, 3, 4})
        list.push_back(kernels::parse_fp4_moe_tuning("v2 dw" + std::to_string(warps) + " ds" + std::to_string(stages) +
                                                     " dk" + std::to_string(k_split)));
  for (const char* packed : {"v2 hp1", "v2 dw8 hp1", "v2 dw16 dk2 hp1", "v2 dw8 dk3 hp1", "v2 dw16 dk4 hp1"})
    list.push_back(kernels::parse_fp4_moe_tuning(packed));
  return list;
}

TEST(GpuFp4Moe, TuningTextRoundTrips) {
  const kernels::Fp4MoeTuning t = kernels::parse_fp4_moe_tuning("v2 ks8 s4 dw16 ds12 dk3");
  EXPECT_EQ(t.version, 2);
  EXPECT_EQ(t.k_split, 8);
  EXPECT_EQ(t.stages, 4);
  EXPECT_EQ(t.down_warps, 16);
  EXPECT_EQ(t.down_stages, 12);
  EXPECT_EQ(t.down_k_split, 3);
  EXPECT_EQ(kernels::to_string(t), "v2 ks8 s4 dw16 ds12 dk3");
  EXPECT_THROW(kernels::parse_fp4_moe_tuning("v2 bogus"), std::exception);
}

TEST(GpuFp4Moe, GateUpAndDownCombineMatchCpuReference) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  struct Case {
    int hidden, width, n_experts, top_k;
    bool skewed;
  };
  // Qwen3-30B-A3B experts; SmolLM2 split into 8 experts; every token on expert 0 (16 entries for one expert).
  for (const Case& c : {Case{2048, 768, 128, 8, false}, Case{576, 192, 8, 2, false}, Case{576, 192, 8, 3, true}}) {
    for (Fp4Format format : {Fp4Format::Nvfp4, Fp4Format::Mxfp4}) {
      DeviceExperts gate(format, c.n_experts, c.width, c.hidden, 0.02f), up(format, c.n_experts, c.width, c.hidden, 0.03f),
          down(format, c.n_experts, c.hidden, c.width, 0.02f);
      fp4::Fp4ExpertSet set{gate.views, up.views, down.views};
      for (int n_tokens : {1, 2, 5, 9, 16}) {
        const std::string what = std::string(fp4::format_name(format)) + " hidden=" + std::to_string(c.hidden) +
                                 " experts=" + std::to_string(c.n_experts) + " top-" + std::to_string(c.top_k) +
                                 (c.skewed ? " skewed" : "") + " tokens=" + std::to_string(n_tokens);
        const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens) * c.hidden, -2.0f, 2.0f);
        Routed r = route(n_tokens, c.n_experts, c.top_k, c.skewed);
        const int entries = n_tokens * c.top_k;
        cuda::DeviceBuffer<float> x_dev(x);
        auto h_dev = poisoned(static_cast<size_t>(entries) * c.width);
        auto out_dev = poisoned(static_cast<size_t>(n_tokens) * c.hidden);
        kernels::fp4_moe_experts(gate.matrices, up.matrices, down.matrices, r.routing, x_dev.data(), r.weights_dev.data(),
                                 h_dev.data(), out_dev.data(), false, nullptr);
        TACHYON_CUDA_CHECK(cudaDeviceSynchronize());

        // h of every entry against the CPU, and the output against fp4_moe_reference.
        const kernels::ExpertRoutingBuffers buffers = kernels::expert_routing_buffers(r.storage.data(), c.n_experts, entries);
        std::vector<int> entry_assignment(entries);
        TACHYON_CUDA_CHECK(cudaMemcpy(entry_assignment.data(), buffers.sorted_assignments, entries * sizeof(int),
                                      cudaMemcpyDeviceToHost));
        const std::vector<float> h_got = h_as_float(h_dev.to_host(), default_packs_h());
        std::vector<float> h_want(h_got.size()), h_bound(h_got.size());
        std::vector<std::vector<float>> h_of_assignment(entries);
        for (int entry = 0; entry < entries; ++entry) {
          const int a = entry_assignment[entry], t = a / c.top_k, e = r.ids[a];
          const std::vector<float> g_w = dequantized(gate.views[e]), u_w = dequantized(up.views[e]);
          for (int i = 0; i < c.width; ++i) {
            const float* xr = x.data() + static_cast<size_t>(t) * c.hidden;
            const float g = dot(g_w.data() + static_cast<size_t>(i) * c.hidden, xr, c.hidden);
            const float u = dot(u_w.data() + static_cast<size_t>(i) * c.hidden, xr, c.hidden);
            double g_abs = 0, u_abs = 0;
            for (int k = 0; k < c.hidden; ++k) {
              g_abs += std::fabs(g_w[static_cast<size_t>(i) * c.hidden + k] * xr[k]);
              u_abs += std::fabs(u_w[static_cast<size_t>(i) * c.hidden + k] * xr[k]);
            }
            h_want[static_cast<size_t>(entry) * c.width + i] = silu(g) * u;
            // d(silu(g) u) <= |u| dg + |silu(g)| du (|silu'| <= 1.1); dot errors <= 1e-5 of the sum of |terms|.
            h_bound[static_cast<size_t>(entry) * c.width + i] =
                static_cast<float>(1e-5 * (1.1 * std::fabs(u) * g_abs + std::fabs(silu(g)) * u_abs) + 1e-7);
          }
          h_of_assignment[a].assign(h_want.begin() + static_cast<size_t>(entry) * c.width,
                                    h_want.begin() + static_cast<size_t>(entry + 1) * c.width);
        }
        // Packed h (hp1, the default) is not float: gate/up stores its float result v as hi = fp16(v / 16),
        // lo = fp16(v / 16 - hi)
        // (the subtraction is exact), the same split the float-h down kernel applies to v when it reads it, so the
        // down kernel's MMAs get the same hi / lo either way and only this h check sees the rounding. Bound:
        // r = v / 16 - hi has |r| <= 2^-11 |v / 16| (or <= 2^-25 when hi is subnormal); rounding r to fp16 errs by
        // <= 2^-25 in the subnormal range, else <= 2^-11 |r|; so |16 (hi + lo) - v| <= max(2^-21, 2^-22 |v|).
        // Decoding here (16 * (hi + lo), one float add) is exact while |hi + lo| < 1 (multiples of 2^-24 below 2^0);
        // beyond, |v| >= ~16 and the add's 2^-24 |16 (hi + lo)| stays below 2^-22 |v|. In all: <= 2^-21 (1 + |v|), and
        // with |v| <= |want| + bound (the float check): bound + 2^-21 (1 + |want| + bound). The floor 2^-21 = 4.8e-7
        // is what the two hp1 failures of 2026-11-26 10:04 (H100) exceeded: h 2.19e-6 read back as 1.91e-6 (error
        // 2.8e-7, float bound 2.7e-7) and h 2.46e-7 read back as 0 (float bound 1.9e-7); every other hp1 element was
        // inside the float bound, and every hp1 down configuration passed.
        const std::vector<float> h_bound_packed = packed_h_bound(h_bound, h_want);
        expect_within(h_got, h_want, default_packs_h() ? h_bound_packed : h_bound, "gate/up " + what);
        // Every configuration of the gate/up kernel the bench can select (both versions, every k_split and ring
        // depth), not only the defaults.
        for (const kernels::Fp4MoeTuning& tuning : gate_up_tunings()) {
          auto h_split = poisoned(h_got.size());
          kernels::fp4_expert_gate_up(gate.matrices, up.matrices, r.routing, x_dev.data(), h_split.data(), nullptr, 0,
                                      tuning);
          TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
          expect_within(h_as_float(h_split.to_host(), packs_h(tuning)), h_want,
                        packs_h(tuning) ? h_bound_packed : h_bound,
                        "gate/up " + kernels::to_string(tuning) + " " + what);
        }
        // h in both forms, for the down kernels that read them.
        auto h_packed_dev = poisoned(h_got.size()), h_float_dev = poisoned(h_got.size());
        kernels::fp4_expert_gate_up(gate.matrices, up.matrices, r.routing, x_dev.data(), h_packed_dev.data(), nullptr, 0,
                                    kernels::parse_fp4_moe_tuning("v2 hp1"));
        kernels::fp4_expert_gate_up(gate.matrices, up.matrices, r.routing, x_dev.data(), h_float_dev.data(), nullptr, 0,
                                    kernels::parse_fp4_moe_tuning("v2"));
        TACHYON_CUDA_CHECK(cudaDeviceSynchronize());

        std::vector<float> want(static_cast<size_t>(n_tokens) * c.hidden), bound(want.size(), 1e-6f);
        fp4::fp4_moe_reference(set, r.ids.data(), r.weights.data(), n_tokens, c.top_k, x.data(), want.data());
        add_down_combine_bound(r, down, h_of_assignment, nullptr, c.top_k, c.hidden, c.width, bound);
        expect_within(out_dev.to_host(), want, bound, "out " + what);
        if (c.skewed) {
          int active = 0;
          TACHYON_CUDA_CHECK(cudaMemcpy(&active, r.routing.active_expert_count, sizeof(int), cudaMemcpyDeviceToHost));
          EXPECT_LE(active, std::min(c.n_experts, 1 + n_tokens * (c.top_k - 1))) << what;
        }

        // accumulate = true adds onto what out holds; the standalone down launch (not after gate/up) agrees.
        std::vector<float> base = random_floats(want.size());
        cuda::DeviceBuffer<float> acc_dev(base);
        kernels::fp4_expert_down_combine(down.matrices, r.routing,
                                         default_packs_h() ? h_packed_dev.data() : h_float_dev.data(),
                                         r.weights_dev.data(), acc_dev.data(),
                                         true, nullptr, /*after_gate_up=*/false);
        TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<float> want_acc(want.size()), bound_acc(want.size());
        for (size_t i = 0; i < want.size(); ++i) {
          want_acc[i] = base[i] + want[i];
          bound_acc[i] = bound[i] + 1e-6f * std::fabs(base[i]);
        }
        expect_within(acc_dev.to_host(), want_acc, bound_acc, "accumulate " + what);
        // Every configuration of the down kernel (both versions, warps, ring depth, k parts), accumulating.
        for (const kernels::Fp4MoeTuning& tuning : down_tunings()) {
          cuda::DeviceBuffer<float> acc_variant(base);
          kernels::fp4_expert_down_combine(down.matrices, r.routing,
                                           packs_h(tuning) ? h_packed_dev.data() : h_float_dev.data(),
                                           r.weights_dev.data(), acc_variant.data(), true, nullptr, false, tuning);
          TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
          expect_within(acc_variant.to_host(), want_acc, bound_acc, "down " + kernels::to_string(tuning) + " " + what);
        }
      }
    }
  }
}

// gpt-oss epilogue (ExpertEpilogue, version 2): gate/up biases, the clamped SwiGLU, down biases weighted into the
// combine; biases large enough that the clamp (limit 7) acts on both sides. Against fp4_moe_reference with its
// epilogue. h bound: the clamp is 1-Lipschitz, d/dg [g sigmoid(a g)] <= 1.1 and |g sigmoid(a g)| <= |g|, so
// |dh| <= 1.1 |u + 1| dg + |g| du with dg, du the dot errors (1e-5 of the sum of |terms|), plus 1e-6 |h| (expf).
TEST(GpuFp4Moe, GptOssEpilogueMatchesCpuReference) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  struct Case {
    int hidden, width, n_experts, top_k;
    bool skewed;
  };
  const float limit = 7.0f, alpha = 1.702f;
  for (const Case& c : {Case{640, 320, 32, 4, false}, Case{576, 192, 8, 3, true}}) {
    for (Fp4Format format : {Fp4Format::Mxfp4, Fp4Format::Nvfp4}) {
      DeviceExperts gate(format, c.n_experts, c.width, c.hidden, 0.02f), up(format, c.n_experts, c.width, c.hidden, 0.03f),
          down(format, c.n_experts, c.hidden, c.width, 0.02f);
      fp4::Fp4ExpertSet set{gate.views, up.views, down.views};
      // Biases: CPU [E][I] gate and up, [E][H] down; device [E][2][I] (gate, then up), as the runner stores them.
      const std::vector<float> gate_bias = random_floats(static_cast<size_t>(c.n_experts) * c.width, -10.0f, 10.0f);
      const std::vector<float> up_bias = random_floats(gate_bias.size(), -10.0f, 10.0f);
      const std::vector<float> down_bias = random_floats(static_cast<size_t>(c.n_experts) * c.hidden, -1.0f, 1.0f);
      std::vector<float> gate_up_bias(2 * gate_bias.size());
      for (int e = 0; e < c.n_experts; ++e)
        for (int i = 0; i < c.width; ++i) {
          gate_up_bias[(static_cast<size_t>(e) * 2 + 0) * c.width + i] = gate_bias[static_cast<size_t>(e) * c.width + i];
          gate_up_bias[(static_cast<size_t>(e) * 2 + 1) * c.width + i] = up_bias[static_cast<size_t>(e) * c.width + i];
        }
      cuda::DeviceBuffer<float> gate_up_bias_dev(gate_up_bias), down_bias_dev(down_bias);
      const kernels::ExpertEpilogue epilogue =
          gpt_oss_epilogue(gate_up_bias_dev.data(), down_bias_dev.data(), c.width, c.hidden, limit, alpha);
      const fp4::Fp4MoeReferenceEpilogue reference_epilogue{gate_bias.data(), up_bias.data(), down_bias.data(), limit,
                                                            alpha};
      for (int n_tokens : {1, 5, 16}) {
        const std::string what = std::string(fp4::format_name(format)) + " gpt-oss epilogue hidden=" +
                                 std::to_string(c.hidden) + " experts=" + std::to_string(c.n_experts) + " top-" +
                                 std::to_string(c.top_k) + (c.skewed ? " skewed" : "") + " tokens=" + std::to_string(n_tokens);
        const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens) * c.hidden, -2.0f, 2.0f);
        Routed r = route(n_tokens, c.n_experts, c.top_k, c.skewed);
        const int entries = n_tokens * c.top_k;
        cuda::DeviceBuffer<float> x_dev(x);
        const kernels::ExpertRoutingBuffers buffers = kernels::expert_routing_buffers(r.storage.data(), c.n_experts, entries);
        std::vector<int> entry_assignment(entries);
        TACHYON_CUDA_CHECK(cudaMemcpy(entry_assignment.data(), buffers.sorted_assignments, entries * sizeof(int),
                                      cudaMemcpyDeviceToHost));
        // CPU h per entry and its bound; clamped elements counted (the test must exercise the clamp).
        std::vector<float> h_want(static_cast<size_t>(entries) * c.width), h_bound(h_want.size());
        std::vector<std::vector<float>> h_of_assignment(entries);
        int clamped_gate = 0, clamped_up = 0;
        for (int entry = 0; entry < entries; ++entry) {
          const int a = entry_assignment[entry], t = a / c.top_k, e = r.ids[a];
          const std::vector<float> g_w = dequantized(gate.views[e]), u_w = dequantized(up.views[e]);
          const float* xr = x.data() + static_cast<size_t>(t) * c.hidden;
          for (int i = 0; i < c.width; ++i) {
            const size_t row = static_cast<size_t>(i) * c.hidden;
            double g_abs = 0, u_abs = 0;
            for (int k = 0; k < c.hidden; ++k) {
              g_abs += std::fabs(g_w[row + k] * xr[k]);
              u_abs += std::fabs(u_w[row + k] * xr[k]);
            }
            const float g_raw = dot(g_w.data() + row, xr, c.hidden) + gate_bias[static_cast<size_t>(e) * c.width + i];
            const float u_raw = dot(u_w.data() + row, xr, c.hidden) + up_bias[static_cast<size_t>(e) * c.width + i];
            clamped_gate += g_raw > limit;
            clamped_up += std::fabs(u_raw) > limit;
            const float g = std::min(g_raw, limit), u = std::clamp(u_raw, -limit, limit);
            const float h = (u + 1.0f) * g * sigmoid(alpha * g);
            h_want[static_cast<size_t>(entry) * c.width + i] = h;
            h_bound[static_cast<size_t>(entry) * c.width + i] = static_cast<float>(
                1e-5 * (1.1 * std::fabs(u + 1.0f) * (g_abs + std::fabs(g_raw)) + std::fabs(g) * (u_abs + std::fabs(u_raw))) +
                1e-6 * std::fabs(h) + 1e-7);
          }
          h_of_assignment[a].assign(h_want.begin() + static_cast<size_t>(entry) * c.width,
                                    h_want.begin() + static_cast<size_t>(entry + 1) * c.width);
        }
        EXPECT_GT(clamped_gate, 0) << what;
        EXPECT_GT(clamped_up, 0) << what;
        std::vector<float> want(static_cast<size_t>(n_tokens) * c.hidden), bound(want.size(), 1e-6f);
        fp4::fp4_moe_reference(set, r.ids.data(), r.weights.data(), n_tokens, c.top_k, x.data(), want.data(),
                               reference_epilogue);
        add_down_combine_bound(r, down, h_of_assignment, down_bias.data(), c.top_k, c.hidden, c.width, bound);
        // The default configuration through fp4_moe_experts, then gate/up and down configurations separately.
        auto h_dev = poisoned(h_want.size());
        auto out_dev = poisoned(want.size());
        kernels::fp4_moe_experts(gate.matrices, up.matrices, down.matrices, r.routing, x_dev.data(), r.weights_dev.data(),
                                 h_dev.data(), out_dev.data(), false, nullptr, kernels::default_fp4_moe_tuning(), epilogue);
        TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> h_bound_packed = packed_h_bound(h_bound, h_want);
        expect_within(h_as_float(h_dev.to_host(), default_packs_h()), h_want,
                      default_packs_h() ? h_bound_packed : h_bound, "gate/up " + what);
        expect_within(out_dev.to_host(), want, bound, "out " + what);
        // Gate/up configurations, float and packed h; each h form then feeds the down configurations that read it.
        auto h_float_dev = poisoned(h_want.size()), h_packed_dev = poisoned(h_want.size());
        for (const char* text : {"v2 ks1", "v2 ks2", "v2 ks4", "v2 ks8", "v2 ks2 hp1", "v2 ks4 hp1"}) {
          const kernels::Fp4MoeTuning tuning = kernels::parse_fp4_moe_tuning(text);
          auto& h_variant = packs_h(tuning) ? h_packed_dev : h_float_dev;
          h_variant.fill_bytes(0xff);  // NaN
          kernels::fp4_expert_gate_up(gate.matrices, up.matrices, r.routing, x_dev.data(), h_variant.data(), nullptr, 0,
                                      tuning, epilogue.gate_up_part());
          TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
          expect_within(h_as_float(h_variant.to_host(), packs_h(tuning)), h_want,
                        packs_h(tuning) ? h_bound_packed : h_bound, std::string("gate/up ") + text + " " + what);
        }
        for (const char* text :
             {"v2 dw8 dk1", "v2 dw16 dk2", "v2 dw8 dk3", "v2 dw16 dk4", "v2 dw16 dk2 hp1", "v2 dw8 dk1 hp1"}) {
          const kernels::Fp4MoeTuning tuning = kernels::parse_fp4_moe_tuning(text);
          auto out_variant = poisoned(want.size());
          kernels::fp4_expert_down_combine(down.matrices, r.routing,
                                           packs_h(tuning) ? h_packed_dev.data() : h_float_dev.data(),
                                           r.weights_dev.data(), out_variant.data(), false, nullptr, false, tuning,
                                           epilogue.down_part());
          TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
          expect_within(out_variant.to_host(), want, bound, std::string("down ") + text + " " + what);
        }
        // Version 1 and the deeper rings have no epilogue instances: refused with a message, not ignored.
        for (const char* text : {"v1", "v2 s8", "v2 ds12"})
          EXPECT_THROW(kernels::fp4_moe_experts(gate.matrices, up.matrices, down.matrices, r.routing, x_dev.data(),
                                                r.weights_dev.data(), h_dev.data(), out_dev.data(), false, nullptr,
                                                kernels::parse_fp4_moe_tuning(text), epilogue),
                       std::exception)
              << text;
      }
    }
  }
}

TEST(GpuFp4Moe, EveryCodeAndScaleDecodesExactly) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  // One expert [64 rows, 64 cols] whose codes cycle through all 16 values; 16 tokens each feed a one-hot h through
  // the down kernel (top-1, weight 1): out[t, row] must equal the dequantized weight at (row, column of t) exactly.
  const int rows = 64, cols = 64;
  for (Fp4Format format : {Fp4Format::Mxfp4, Fp4Format::Nvfp4}) {
    fp4::Fp4Matrix m;
    m.format = format;
    m.rows = rows;
    m.cols = cols;
    m.packed.resize(rows * cols / 2);
    for (size_t i = 0; i < m.packed.size(); ++i) m.packed[i] = static_cast<uint8_t>(((2 * i) % 16) | ((((2 * i + 1) + i / 8) % 16) << 4));
    m.scales.resize(rows * cols / fp4::block_size(format));
    for (size_t i = 0; i < m.scales.size(); ++i)
      m.scales[i] = format == Fp4Format::Mxfp4 ? static_cast<uint8_t>(120 + i % 15)   // 2^-7 .. 2^7
                                               : static_cast<uint8_t>(1 + (i * 7) % 125);  // e4m3 subnormals .. 2^8
    m.global_scale = format == Fp4Format::Nvfp4 ? 0.375f : 1.0f;
    const std::vector<float> w = dequantized(m.view());
    std::vector<uint8_t> tiles = fp4::pack_kernel_tiles(m.view());
    cuda::DeviceBuffer<uint8_t> tiles_dev(tiles);
    cuda::DeviceBuffer<float> global(std::vector<float>{m.global_scale});
    const kernels::Fp4ExpertMatrices down{kind_of(format), rows, cols, tiles_dev.data(), static_cast<int64_t>(tiles.size()),
                                          format == Fp4Format::Nvfp4 ? global.data() : nullptr};
    const int n_tokens = 16;
    cuda::DeviceBuffer<int> ids(std::vector<int>(n_tokens, 0)), storage(kernels::expert_routing_ints(1, n_tokens));
    cuda::DeviceBuffer<float> weights(std::vector<float>(n_tokens, 1.0f));
    const kernels::ExpertRouting routing =
        kernels::moe_group_by_expert(ids.data(), n_tokens, 1, 1, kernels::expert_routing_buffers(storage.data(), 1, n_tokens), nullptr);
    for (int first = 0; first < cols; first += n_tokens) {
      std::vector<float> h(static_cast<size_t>(n_tokens) * cols, 0.0f);
      for (int t = 0; t < n_tokens; ++t) h[static_cast<size_t>(t) * cols + first + t] = 1.0f;
      cuda::DeviceBuffer<float> h_dev(h);
      std::vector<float> want(static_cast<size_t>(n_tokens) * rows);
      for (int t = 0; t < n_tokens; ++t)
        for (int r = 0; r < rows; ++r) want[static_cast<size_t>(t) * rows + r] = w[static_cast<size_t>(r) * cols + first + t];
      // The same one-hot h packed (1.0 / 16 = fp16 0x2c00, lo 0) for the packed-h down kernel.
      std::vector<float> h_packed(h.size());
      for (size_t i = 0; i < h.size(); ++i) {
        const uint32_t word = h[i] == 1.0f ? 0x2c00u : 0u;
        std::memcpy(&h_packed[i], &word, sizeof(word));
      }
      cuda::DeviceBuffer<float> h_packed_dev(h_packed);
      for (const char* version : {"v1", "v2", "v2 hp1"}) {
        auto out = poisoned(static_cast<size_t>(n_tokens) * rows);
        const kernels::Fp4MoeTuning tuning = kernels::parse_fp4_moe_tuning(version);
        kernels::fp4_expert_down_combine(down, routing, packs_h(tuning) ? h_packed_dev.data() : h_dev.data(), weights.data(),
                                         out.data(), false, nullptr, false, tuning);
        TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
        expect_within(out.to_host(), want, 0.0f, 0.0f,
                      std::string("exact codes ") + version + " " + std::string(fp4::format_name(format)) + " columns " +
                          std::to_string(first));
      }
    }
  }
}

TEST(GpuFp4Tiles, DequantizedToBf16EqualsCpuDequantization) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  const int experts = 3, rows = 48, cols = 192;
  for (Fp4Format format : {Fp4Format::Nvfp4, Fp4Format::Mxfp4}) {
    DeviceExperts stack(format, experts, rows, cols, 0.05f);
    const int64_t out_stride = int64_t{rows} * cols + 64;  // a gap between matrices, left untouched
    cuda::DeviceBuffer<uint16_t> out(static_cast<size_t>(experts) * out_stride);
    out.fill_bytes(0xff);
    kernels::fp4_tiles_to_bf16(stack.matrices, experts, reinterpret_cast<__nv_bfloat16*>(out.data()), out_stride, nullptr);
    TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<uint16_t> got = out.to_host();
    for (int e = 0; e < experts; ++e) {
      const std::vector<float> want = dequantized(stack.views[e]);
      size_t mismatches = 0;
      for (size_t i = 0; i < want.size(); ++i) mismatches += got[e * out_stride + i] != float_to_bf16(want[i]);
      EXPECT_EQ(mismatches, 0u) << fp4::format_name(format) << " expert " << e;
      for (int i = 0; i < 64; ++i) EXPECT_EQ(got[e * out_stride + rows * cols + i], 0xffff) << "gap written";
    }
  }
}

TEST(GpuFp4Tiles, RandomTilesAreDeterministicPaddedAndScaled) {
  SKIP_WITHOUT_GPU();
  // 2 matrices [64, 128] whose real part is [40 of each 64 rows, 100 of each 128 columns].
  for (Fp4Format format : {Fp4Format::Nvfp4, Fp4Format::Mxfp4}) {
    kernels::Fp4StackLayout layout;
    layout.kind = kind_of(format);
    layout.n_matrices = 2;
    layout.rows = 64;
    layout.cols = 128;
    layout.stride = fp4::fp4_kernel_matrix_bytes(format, 64, 128) + 16;
    layout.row_period = 64;
    layout.row_valid = 40;
    layout.col_period = 128;
    layout.col_valid = 100;
    cuda::DeviceBuffer<uint8_t> a(2 * layout.stride), b(2 * layout.stride);
    const float stddev = 0.02f;
    kernels::fill_random_fp4_tiles(a.data(), layout, stddev, 7, nullptr);
    kernels::fill_random_fp4_tiles(b.data(), layout, stddev, 7, nullptr);
    TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<uint8_t> ha = a.to_host(), hb = b.to_host();
    for (int m = 0; m < 2; ++m)
      EXPECT_TRUE(std::equal(ha.begin() + m * layout.stride, ha.begin() + m * layout.stride + layout.stride - 16,
                             hb.begin() + m * layout.stride))
          << "same seed, same tiles";
    const float global = format == Fp4Format::Nvfp4 ? kernels::fp4_random_global_scale(stddev) : 1.0f;
    double sum_squares = 0;
    int64_t real = 0;
    std::set<int> codes;
    for (int m = 0; m < 2; ++m) {
      const fp4::Fp4Matrix q = fp4::unpack_kernel_tiles(ha.data() + m * layout.stride, format, 64, 128, global);
      std::vector<float> w(64 * 128);
      q.view().to_float(w.data());
      for (int r = 0; r < 64; ++r)
        for (int c = 0; c < 128; ++c) {
          const uint8_t byte = q.packed[r * 64 + c / 2];
          const int code = (c & 1) ? byte >> 4 : byte & 0x0f;
          if (r < 40 && c < 100) {
            codes.insert(code);
            sum_squares += double(w[r * 128 + c]) * w[r * 128 + c];
            ++real;
          } else {
            EXPECT_EQ(code, 0) << "padding at row " << r << " column " << c;
          }
        }
    }
    EXPECT_EQ(codes.size(), 16u);
    const double rms = std::sqrt(sum_squares / real);
    EXPECT_GT(rms, 0.6 * stddev) << fp4::format_name(format);
    EXPECT_LT(rms, 1.4 * stddev) << fp4::format_name(format);
    std::printf("[ random %s ] rms %.4f for stddev %.4f\n", std::string(fp4::format_name(format)).c_str(), rms, stddev);
  }
}

}  // namespace
}  // namespace tachyon
