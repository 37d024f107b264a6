// MoE on the GPU against CPU references: router top-k (softmax, renormalized or not; DeepSeek-V3 sigmoid with
// correction bias, group-limited top-k and routed scaling), grouping by expert, and the whole expert SwiGLU MLP
// (expert_gated_gemv_bf16 -> expert_gemv_bf16 -> moe_combine) for 1..16 tokens at Qwen3-30B-A3B shapes, and the
// same with gpt-oss's epilogue (biases, clamped SwiGLU).
#include <algorithm>
#include <cmath>
#include <set>

#include "gpu_test_util.h"
#include "models/layers.h"
#include "moe/moe_routing.h"

namespace tachyon {
namespace {

using namespace gpu_test;

struct CpuRoute {
  std::vector<int> ids;
  std::vector<float> weights;
};

CpuRoute cpu_softmax_route(const float* logits, int n_experts, int top_k, bool renormalize) {
  std::vector<float> probs(logits, logits + n_experts);
  softmax_inplace(probs.data(), n_experts);
  CpuRoute r;
  r.ids = top_k_indices(probs.data(), n_experts, top_k);
  float sum = 0;
  for (int id : r.ids) sum += probs[id];
  for (int id : r.ids) r.weights.push_back(renormalize ? probs[id] / sum : probs[id]);
  return r;
}

// transformers' DeepseekV3TopkRouter / DeepseekV3MoE.route_tokens_to_experts, in plain C++.
CpuRoute cpu_deepseek_route(const float* logits, int n_experts, int top_k, const std::vector<float>& bias, int n_groups,
                            int top_k_groups, float scaling, bool renormalize) {
  std::vector<float> scores(n_experts), choice(n_experts);
  for (int e = 0; e < n_experts; ++e) {
    scores[e] = 1.0f / (1.0f + std::exp(-logits[e]));
    choice[e] = scores[e] + bias[e];
  }
  const int per_group = n_experts / n_groups;
  std::vector<float> group_score(n_groups);
  for (int g = 0; g < n_groups; ++g) {
    std::vector<float> members(choice.begin() + g * per_group, choice.begin() + (g + 1) * per_group);
    std::sort(members.begin(), members.end(), std::greater<float>());
    group_score[g] = members[0] + members[1];
  }
  const std::vector<int> kept = top_k_indices(group_score.data(), n_groups, top_k_groups);
  for (int e = 0; e < n_experts; ++e)
    if (std::find(kept.begin(), kept.end(), e / per_group) == kept.end()) choice[e] = 0.0f;
  CpuRoute r;
  r.ids = top_k_indices(choice.data(), n_experts, top_k);
  float sum = 0;
  for (int id : r.ids) sum += scores[id];
  for (int id : r.ids) r.weights.push_back((renormalize ? scores[id] / (sum + 1e-20f) : scores[id]) * scaling);
  return r;
}

void check_router(const kernels::RouterConfig& config, int n_tokens, const std::vector<float>& logits,
                  const std::vector<CpuRoute>& want, const std::string& what) {
  cuda::DeviceBuffer<float> logits_dev(logits);
  cuda::DeviceBuffer<int> ids_dev(static_cast<size_t>(n_tokens) * config.top_k);
  ids_dev.fill_bytes(0xff);
  auto weights_dev = poisoned(static_cast<size_t>(n_tokens) * config.top_k);
  kernels::moe_router_topk(logits_dev.data(), n_tokens, config, ids_dev.data(), weights_dev.data(), nullptr);
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<int> ids = ids_dev.to_host();
  std::vector<float> got_w = weights_dev.to_host(), want_w;
  for (int t = 0; t < n_tokens; ++t) {
    for (int j = 0; j < config.top_k; ++j)
      ASSERT_EQ(ids[t * config.top_k + j], want[t].ids[j]) << what << " token " << t << " rank " << j;
    want_w.insert(want_w.end(), want[t].weights.begin(), want[t].weights.end());
  }
  expect_within(got_w, want_w, 2e-6f, 1e-7f, what + " weights");
}

TEST(GpuMoe, SoftmaxRouterTopK) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  for (auto [n_experts, top_k] : {std::pair{128, 8}, std::pair{64, 8}, std::pair{32, 4}, std::pair{8, 2}, std::pair{512, 10}}) {
    for (bool renormalize : {true, false}) {
      const int n_tokens = 16;
      const std::vector<float> logits = random_normal(static_cast<size_t>(n_tokens) * n_experts, 2.0f);
      std::vector<CpuRoute> want;
      for (int t = 0; t < n_tokens; ++t)
        want.push_back(cpu_softmax_route(logits.data() + static_cast<size_t>(t) * n_experts, n_experts, top_k, renormalize));
      kernels::RouterConfig config;
      config.n_experts = n_experts;
      config.top_k = top_k;
      config.renormalize = renormalize;
      check_router(config, n_tokens, logits, want,
                   "softmax E=" + std::to_string(n_experts) + " k=" + std::to_string(top_k) + (renormalize ? " renorm" : ""));
    }
  }
}

TEST(GpuMoe, DeepSeekV3SigmoidGroupLimitedRouter) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  struct Case {
    int n_experts, top_k, n_groups, top_k_groups;
    bool renormalize;
  };
  for (const Case& c : {Case{256, 8, 8, 4, true}, Case{64, 6, 1, 1, true}, Case{160, 6, 8, 3, false}}) {
    const int n_tokens = 11;
    const std::vector<float> logits = random_normal(static_cast<size_t>(n_tokens) * c.n_experts, 2.0f);
    const std::vector<float> bias = random_floats(c.n_experts, -0.1f, 0.1f);
    std::vector<CpuRoute> want;
    for (int t = 0; t < n_tokens; ++t)
      want.push_back(cpu_deepseek_route(logits.data() + static_cast<size_t>(t) * c.n_experts, c.n_experts, c.top_k, bias,
                                        c.n_groups, c.top_k_groups, 2.5f, c.renormalize));
    cuda::DeviceBuffer<float> bias_dev(bias);
    kernels::RouterConfig config;
    config.n_experts = c.n_experts;
    config.top_k = c.top_k;
    config.scoring = kernels::RouterScoring::Sigmoid;
    config.renormalize = c.renormalize;
    config.correction_bias = bias_dev.data();
    config.n_groups = c.n_groups;
    config.top_k_groups = c.top_k_groups;
    config.routed_scaling = 2.5f;
    check_router(config, n_tokens, logits, want, "deepseek E=" + std::to_string(c.n_experts));
  }
}

// Softmax top-k routing and grouping by expert on the GPU (the decode path's two steps), buffers owned here.
struct GpuRouting {
  cuda::DeviceBuffer<float> logits, weights;
  cuda::DeviceBuffer<int> ids, storage;
  kernels::ExpertRouting routing;
  GpuRouting(const std::vector<float>& host_logits, int n_tokens, int n_experts, int top_k)
      : logits(host_logits), weights(static_cast<size_t>(n_tokens) * top_k), ids(weights.size()),
        storage(kernels::expert_routing_ints(n_experts, n_tokens * top_k)) {
    kernels::RouterConfig config;
    config.n_experts = n_experts;
    config.top_k = top_k;
    kernels::moe_router_topk(logits.data(), n_tokens, config, ids.data(), weights.data(), nullptr);
    storage.fill_bytes(0xff);
    routing = kernels::moe_group_by_expert(ids.data(), n_tokens, top_k, n_experts,
                                           kernels::expert_routing_buffers(storage.data(), n_experts, n_tokens * top_k),
                                           nullptr);
  }
};

TEST(GpuMoe, ExpertSwigluMlpMatchesDenseCpuPerToken) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  // Qwen3-30B-A3B: hidden 2048, 128 experts of width 768, top-8; plus a small uneven configuration.
  struct Case {
    int hidden, width, n_experts, top_k;
  };
  for (const Case& c : {Case{2048, 768, 128, 8}, Case{576, 192, 8, 2}}) {
    const size_t expert_elems = static_cast<size_t>(c.width) * c.hidden;
    const Bf16Tensor gate = to_bf16(random_floats(expert_elems * c.n_experts));
    const Bf16Tensor up = to_bf16(random_floats(expert_elems * c.n_experts));
    const Bf16Tensor down = to_bf16(random_floats(expert_elems * c.n_experts, -0.1f, 0.1f));
    cuda::DeviceBuffer<uint16_t> gate_dev(gate.bits), up_dev(up.bits), down_dev(down.bits);
    for (int n_tokens : {1, 2, 5, 16}) {
      const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens) * c.hidden);
      const std::vector<float> logits = random_normal(static_cast<size_t>(n_tokens) * c.n_experts, 2.0f);
      std::vector<float> want(static_cast<size_t>(n_tokens) * c.hidden, 0.0f), scale(want.size(), 0.0f);
      std::set<int> touched;
      for (int t = 0; t < n_tokens; ++t) {
        const CpuRoute route = cpu_softmax_route(logits.data() + static_cast<size_t>(t) * c.n_experts, c.n_experts, c.top_k, true);
        for (int j = 0; j < c.top_k; ++j) {
          const int e = route.ids[j];
          touched.insert(e);
          std::vector<float> g(c.width), u(c.width), h(c.width), y(c.hidden);
          linear_f32(gate.values.data() + e * expert_elems, c.width, c.hidden, nullptr, x.data() + static_cast<size_t>(t) * c.hidden, 1, g.data());
          linear_f32(up.values.data() + e * expert_elems, c.width, c.hidden, nullptr, x.data() + static_cast<size_t>(t) * c.hidden, 1, u.data());
          swiglu(g.data(), u.data(), c.width, h.data());
          linear_f32(down.values.data() + e * expert_elems, c.hidden, c.width, nullptr, h.data(), 1, y.data());
          double h_scale = 0;
          for (int i = 0; i < c.width; ++i) h_scale += std::fabs(h[i]);
          for (int i = 0; i < c.hidden; ++i) {
            want[static_cast<size_t>(t) * c.hidden + i] += route.weights[j] * y[i];
            scale[static_cast<size_t>(t) * c.hidden + i] += route.weights[j] * static_cast<float>(h_scale / c.width);
          }
        }
      }
      // Router on the GPU, then the expert pipeline.
      cuda::DeviceBuffer<float> x_dev(x);
      const GpuRouting gpu_routing(logits, n_tokens, c.n_experts, c.top_k);
      const kernels::ExpertRouting& routing = gpu_routing.routing;
      const cuda::DeviceBuffer<float>& weights_dev = gpu_routing.weights;
      const int assignments = n_tokens * c.top_k;
      auto h_dev = poisoned(static_cast<size_t>(assignments) * c.width);
      auto y_dev = poisoned(static_cast<size_t>(assignments) * c.hidden);
      auto out_dev = poisoned(want.size());
      kernels::expert_gated_gemv_bf16(as_bf16(gate_dev), as_bf16(up_dev), static_cast<int64_t>(expert_elems), routing,
                                      x_dev.data(), h_dev.data(), c.width, c.hidden, nullptr);
      kernels::expert_gemv_bf16(as_bf16(down_dev), static_cast<int64_t>(expert_elems), routing, h_dev.data(), y_dev.data(),
                                c.hidden, c.width, nullptr);
      kernels::moe_combine(y_dev.data(), weights_dev.data(), routing, n_tokens, c.hidden, out_dev.data(), false, nullptr);
      TACHYON_CUDA_CHECK(cudaDeviceSynchronize());

      int active = 0;
      TACHYON_CUDA_CHECK(cudaMemcpy(&active, routing.active_expert_count, sizeof(int), cudaMemcpyDeviceToHost));
      EXPECT_EQ(active, static_cast<int>(touched.size())) << "distinct experts, tokens=" << n_tokens;
      // Bound: the down projection's error (1e-4 of its scale) plus the gate/up errors carried through it.
      std::vector<float> bound(want.size());
      for (size_t i = 0; i < bound.size(); ++i) bound[i] = 2e-4f * scale[i] * std::sqrt(static_cast<float>(c.width)) * 0.1f + 1e-5f;
      const std::vector<float> combined = out_dev.to_host();
      expect_within(combined, want, bound,
                    "expert MLP hidden=" + std::to_string(c.hidden) + " tokens=" + std::to_string(n_tokens));
      // accumulate = true adds the same combine onto what `out` holds (the residual, in the model).
      const std::vector<float> residual = random_floats(want.size(), -4.0f, 4.0f);
      cuda::DeviceBuffer<float> acc_dev(residual);
      kernels::moe_combine(y_dev.data(), weights_dev.data(), routing, n_tokens, c.hidden, acc_dev.data(), true, nullptr);
      // Bound: the kernel adds the top_k terms onto the residual one by one, each partial sum rounded at its own
      // magnitude (measured worst on an H100: 1.1e-5 at |residual| ~ 3); a lost residual or weight errs by ~0.1..4.
      std::vector<float> want_acc(residual.size()), acc_bound(residual.size());
      for (size_t i = 0; i < want_acc.size(); ++i) {
        want_acc[i] = residual[i] + combined[i];
        acc_bound[i] = 1e-6f * c.top_k * (std::fabs(residual[i]) + std::fabs(combined[i])) + 2e-5f;
      }
      expect_within(acc_dev.to_host(), want_acc, acc_bound,
                    "moe_combine accumulate hidden=" + std::to_string(c.hidden) + " tokens=" + std::to_string(n_tokens));
    }
  }
}

// gpt-oss experts on the bf16 path: expert_gated_gemv_bf16 with gate/up biases and the clamped SwiGLU, then
// expert_gemv_bf16 with the down bias, then moe_combine; weights large enough that the clamp (7) acts on gate and
// up. Bound from the gemv bound (|dy| <= 1e-4 max|x| ||w_row|| + 1e-5, test_gemv.cpp) carried through the clamped
// SwiGLU (|dh| <= 1.1 |u + 1| dg + |g| du) and the down product, per output element.
TEST(GpuMoe, GptOssExpertEpilogueMatchesCpu) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  struct Case {
    int hidden, width, n_experts, top_k;
  };
  const float limit = 7.0f, alpha = 1.702f;
  for (const Case& c : {Case{576, 192, 8, 2}, Case{640, 320, 32, 4}}) {
    const size_t expert_elems = static_cast<size_t>(c.width) * c.hidden;
    const Bf16Tensor gate = to_bf16(random_floats(expert_elems * c.n_experts, -0.5f, 0.5f));
    const Bf16Tensor up = to_bf16(random_floats(expert_elems * c.n_experts, -0.5f, 0.5f));
    const Bf16Tensor down = to_bf16(random_floats(expert_elems * c.n_experts, -0.1f, 0.1f));
    // Biases as the runner stores them: [E][2][width] (gate, then up) and [E][hidden].
    const std::vector<float> gate_up_bias = random_floats(static_cast<size_t>(c.n_experts) * 2 * c.width, -3.0f, 3.0f);
    const std::vector<float> down_bias = random_floats(static_cast<size_t>(c.n_experts) * c.hidden, -1.0f, 1.0f);
    cuda::DeviceBuffer<uint16_t> gate_dev(gate.bits), up_dev(up.bits), down_dev(down.bits);
    cuda::DeviceBuffer<float> gate_up_bias_dev(gate_up_bias), down_bias_dev(down_bias);
    const kernels::ExpertEpilogue epilogue =
        gpt_oss_epilogue(gate_up_bias_dev.data(), down_bias_dev.data(), c.width, c.hidden, limit, alpha);
    auto row_norm = [](const float* w, int n) {
      double s = 0;
      for (int i = 0; i < n; ++i) s += static_cast<double>(w[i]) * w[i];
      return std::sqrt(s);
    };
    for (int n_tokens : {1, 5, 16}) {
      const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens) * c.hidden);
      const std::vector<float> logits = random_normal(static_cast<size_t>(n_tokens) * c.n_experts, 2.0f);
      std::vector<float> want(static_cast<size_t>(n_tokens) * c.hidden, 0.0f), bound(want.size(), 1e-5f);
      int clamped_gate = 0, clamped_up = 0;
      for (int t = 0; t < n_tokens; ++t) {
        const float* xt = x.data() + static_cast<size_t>(t) * c.hidden;
        float x_max = 0;
        for (int k = 0; k < c.hidden; ++k) x_max = std::max(x_max, std::fabs(xt[k]));
        const CpuRoute route = cpu_softmax_route(logits.data() + static_cast<size_t>(t) * c.n_experts, c.n_experts, c.top_k, true);
        for (int j = 0; j < c.top_k; ++j) {
          const int e = route.ids[j];
          const float* gw = gate.values.data() + e * expert_elems;
          const float* uw = up.values.data() + e * expert_elems;
          const float* dw = down.values.data() + e * expert_elems;
          std::vector<float> g(c.width), u(c.width), h(c.width), dh(c.width), y(c.hidden);
          linear_f32(gw, c.width, c.hidden, gate_up_bias.data() + static_cast<size_t>(e) * 2 * c.width, xt, 1, g.data());
          linear_f32(uw, c.width, c.hidden, gate_up_bias.data() + (static_cast<size_t>(e) * 2 + 1) * c.width, xt, 1, u.data());
          float h_max = 0;
          for (int i = 0; i < c.width; ++i) {
            clamped_gate += g[i] > limit;
            clamped_up += std::fabs(u[i]) > limit;
            const float gc = std::min(g[i], limit), uc = std::clamp(u[i], -limit, limit);
            h[i] = (uc + 1.0f) * gc * sigmoid(alpha * gc);
            const double dg = 1e-4 * x_max * row_norm(gw + static_cast<size_t>(i) * c.hidden, c.hidden) + 1e-5;
            const double du = 1e-4 * x_max * row_norm(uw + static_cast<size_t>(i) * c.hidden, c.hidden) + 1e-5;
            dh[i] = static_cast<float>(1.1 * std::fabs(uc + 1.0f) * dg + std::fabs(gc) * du + 1e-6 * std::fabs(h[i]));
            h_max = std::max(h_max, std::fabs(h[i]));
          }
          linear_f32(dw, c.hidden, c.width, down_bias.data() + static_cast<size_t>(e) * c.hidden, h.data(), 1, y.data());
          for (int o = 0; o < c.hidden; ++o) {
            const float* dr = dw + static_cast<size_t>(o) * c.width;
            double carried = 0;
            for (int i = 0; i < c.width; ++i) carried += std::fabs(dr[i]) * dh[i];
            const size_t at = static_cast<size_t>(t) * c.hidden + o;
            want[at] += route.weights[j] * y[o];
            bound[at] += static_cast<float>(route.weights[j] * (carried + 1e-4 * h_max * row_norm(dr, c.width) + 1e-5));
          }
        }
      }
      EXPECT_GT(clamped_gate, 0);
      EXPECT_GT(clamped_up, 0);
      cuda::DeviceBuffer<float> x_dev(x);
      const GpuRouting gpu_routing(logits, n_tokens, c.n_experts, c.top_k);
      const kernels::ExpertRouting& routing = gpu_routing.routing;
      const cuda::DeviceBuffer<float>& weights_dev = gpu_routing.weights;
      const int assignments = n_tokens * c.top_k;
      auto h_dev = poisoned(static_cast<size_t>(assignments) * c.width);
      auto y_dev = poisoned(static_cast<size_t>(assignments) * c.hidden);
      auto out_dev = poisoned(want.size());
      kernels::expert_gated_gemv_bf16(as_bf16(gate_dev), as_bf16(up_dev), static_cast<int64_t>(expert_elems), routing,
                                      x_dev.data(), h_dev.data(), c.width, c.hidden, nullptr, {},
                                      epilogue.gate_up_part());
      kernels::expert_gemv_bf16(as_bf16(down_dev), static_cast<int64_t>(expert_elems), routing, h_dev.data(), y_dev.data(),
                                c.hidden, c.width, nullptr, {}, epilogue.down_part());
      kernels::moe_combine(y_dev.data(), weights_dev.data(), routing, n_tokens, c.hidden, out_dev.data(), false, nullptr);
      TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
      expect_within(out_dev.to_host(), want, bound,
                    "gpt-oss expert MLP hidden=" + std::to_string(c.hidden) + " tokens=" + std::to_string(n_tokens));
      // The mismatched halves are refused, not silently ignored.
      EXPECT_THROW(kernels::expert_gemv_bf16(as_bf16(down_dev), static_cast<int64_t>(expert_elems), routing, h_dev.data(),
                                             y_dev.data(), c.hidden, c.width, nullptr, {}, epilogue),
                   std::exception);
    }
  }
}

TEST(GpuMoe, GroupingIsSortedStableAndInvertible) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  const int n_tokens = 16, top_k = 8, n_experts = 20;  // few experts: many tokens per expert
  std::vector<int> ids;
  for (int t = 0; t < n_tokens; ++t) {
    std::vector<int> all(n_experts);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng());
    ids.insert(ids.end(), all.begin(), all.begin() + top_k);
  }
  cuda::DeviceBuffer<int> ids_dev(ids), storage(kernels::expert_routing_ints(n_experts, n_tokens * top_k));
  storage.fill_bytes(0xff);
  const auto buffers = kernels::expert_routing_buffers(storage.data(), n_experts, n_tokens * top_k);
  kernels::moe_group_by_expert(ids_dev.data(), n_tokens, top_k, n_experts, buffers, nullptr);
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<int> all = storage.to_host();
  const int active = all[0];
  const int* experts = all.data() + 1;
  const int* offsets = experts + n_experts;
  const int* sorted = offsets + n_experts + 1;
  const int* entry_of = sorted + n_tokens * top_k;
  std::set<int> distinct(ids.begin(), ids.end());
  ASSERT_EQ(active, static_cast<int>(distinct.size()));
  ASSERT_EQ(offsets[0], 0);
  ASSERT_EQ(offsets[active], n_tokens * top_k);
  for (int s = 0; s < active; ++s) {
    if (s > 0) {
      ASSERT_LT(experts[s - 1], experts[s]);
    }
    for (int e = offsets[s]; e < offsets[s + 1]; ++e) {
      ASSERT_EQ(ids[sorted[e]], experts[s]);
      ASSERT_EQ(entry_of[sorted[e]], e);
      if (e > offsets[s]) {
        ASSERT_LT(sorted[e - 1], sorted[e]);
      }
    }
  }
}

TEST(GpuMoe, RouteAndGroupInOneLaunchMatchesTwoLaunches) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  for (int n_tokens : {1, 5, 16}) {
    for (bool deepseek : {false, true}) {
      const int n_experts = deepseek ? 256 : 128, top_k = 8, assignments = n_tokens * top_k;
      const std::vector<float> logits = random_normal(static_cast<size_t>(n_tokens) * n_experts, 2.0f);
      const std::vector<float> bias = random_floats(n_experts, -0.1f, 0.1f);
      cuda::DeviceBuffer<float> logits_dev(logits), bias_dev(bias);
      kernels::RouterConfig config;
      config.n_experts = n_experts;
      config.top_k = top_k;
      if (deepseek) {
        config.scoring = kernels::RouterScoring::Sigmoid;
        config.correction_bias = bias_dev.data();
        config.n_groups = 8;
        config.top_k_groups = 4;
        config.routed_scaling = 2.5f;
      }
      std::vector<std::vector<int>> ints;
      std::vector<std::vector<float>> weights;
      for (bool fused : {false, true}) {
        cuda::DeviceBuffer<int> ids(assignments), storage(kernels::expert_routing_ints(n_experts, assignments));
        ids.fill_bytes(0xff);
        storage.fill_bytes(0xff);
        auto w = poisoned(assignments);
        const auto buffers = kernels::expert_routing_buffers(storage.data(), n_experts, assignments);
        if (fused) {
          kernels::moe_route_and_group(logits_dev.data(), n_tokens, config, ids.data(), w.data(), buffers, nullptr);
        } else {
          kernels::moe_router_topk(logits_dev.data(), n_tokens, config, ids.data(), w.data(), nullptr);
          kernels::moe_group_by_expert(ids.data(), n_tokens, top_k, n_experts, buffers, nullptr);
        }
        TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<int> all = ids.to_host();
        const std::vector<int> routing = storage.to_host();
        // Compare the meaningful part only: slots past the active count are never read.
        const int active = routing[0];
        all.push_back(active);
        all.insert(all.end(), routing.begin() + 1, routing.begin() + 1 + active);                       // experts
        all.insert(all.end(), routing.begin() + 1 + n_experts, routing.begin() + 2 + n_experts + active);  // offsets
        all.insert(all.end(), routing.end() - 2 * assignments, routing.end());  // sorted + inverse
        ints.push_back(all);
        weights.push_back(w.to_host());
      }
      EXPECT_EQ(ints[0], ints[1]) << "tokens " << n_tokens << (deepseek ? " deepseek" : " softmax");
      EXPECT_EQ(weights[0], weights[1]) << "tokens " << n_tokens << (deepseek ? " deepseek" : " softmax");
    }
  }
}

}  // namespace
}  // namespace tachyon
