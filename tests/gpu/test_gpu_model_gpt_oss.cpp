// gpt-oss random weights on the GPU (what `tachyon bench --random-weights gpt-oss-20b` runs, on a small shape that
// needs padding: hidden 96 -> 128 with FP4 experts, head_dim 32 -> 64): experts made as random gpt-oss MXFP4
// blocks / scales in host memory and loaded through the checkpoint's conversion (gpt_oss_experts.h). For each expert
// format (as stored = MXFP4, bf16 = dequantized, NVFP4 = requantized): deterministic per seed, finite, the 16-token
// fused pass agrees with the GEMM prefill (whose experts are bf16, dequantized per layer for FP4), graph == stream,
// top-k distinct experts. The fixtures' end-to-end checks against the CPU and transformers are in
// test_gpu_model_tiny.cpp (gpt_oss, gpt_oss_mxfp4).
#include <cmath>
#include <cstring>
#include <set>

#include "gpu/decode_loop.h"
#include "gpu/fp4_experts.h"
#include "gpu/gpu_model.h"
#include "gpu_test_util.h"
#include "test_gpu_model_util.h"

namespace tachyon::gpu {
namespace {

using namespace gpu_model_test;

nlohmann::json small_gpt_oss_config() {
  return nlohmann::json::parse(R"({
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_act": "silu", "attention_bias": true,
    "head_dim": 32, "hidden_size": 96, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "layer_types": ["sliding_attention", "full_attention"], "sliding_window": 8,
    "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 4096, "rms_norm_eps": 1e-05,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                     "rope_type": "yarn", "truncate": false},
    "rope_theta": 150000, "swiglu_limit": 7.0, "tie_word_embeddings": false, "vocab_size": 1000,
    "quantization_config": {"quant_method": "mxfp4"}})");
}

std::vector<int32_t> decode_tokens(GpuModel& model, const std::vector<int32_t>& prompt, int steps, bool use_graph) {
  model.truncate(0);
  DecodeLoop loop(model, DecodeSampling{});
  loop.start(prompt);
  loop.enqueue(steps, use_graph);
  return loop.tokens();
}

TEST(GpuRandomWeightsGptOss, DeterministicFiniteGraphEqualsStreamAndPassAgreesWithPrefill) {
  SKIP_WITHOUT_GPU();
  for (std::optional<ExpertFormat> format :
       {std::optional<ExpertFormat>{}, std::optional<ExpertFormat>{ExpertFormat::Bf16},
        std::optional<ExpertFormat>{ExpertFormat::Nvfp4}}) {
    const std::string what =
        std::string("random gpt-oss ") + (format ? std::string(expert_format_name(*format)) : "as stored");
    GpuModelOptions options;
    options.kv_positions = 256;
    options.experts = format;
    options.record_router_margins = true;
    auto a = GpuModel::random(small_gpt_oss_config(), "small gpt-oss", 7, options);
    auto b = GpuModel::random(small_gpt_oss_config(), "small gpt-oss", 7, options);
    EXPECT_EQ(a->config().expert_format, format.value_or(ExpertFormat::Mxfp4)) << what;
    EXPECT_EQ(a->config().head_dim_padded, 64);
    std::vector<int32_t> prompt(40);  // past the window of 8 on layer 0
    for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 37 + 11) % 1000);
    const std::vector<float> la = a->prefill_to_host(prompt, true), lb = b->prefill_to_host(prompt, true);
    ASSERT_EQ(la.size(), lb.size());
    EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)), 0) << what << ": same seed, different logits";
    double spread = 0;
    for (float v : la) {
      ASSERT_TRUE(std::isfinite(v)) << what;
      spread = std::max(spread, static_cast<double>(std::fabs(v)));
    }
    EXPECT_GT(spread, 0.0) << what << ": all-zero logits";
    // The first 16 tokens through the gemv / fused expert kernels against the GEMM prefill.
    auto c = GpuModel::random(small_gpt_oss_config(), "small gpt-oss", 7, options);
    const int vocab = c->config().vocab;
    const std::vector<float> pass = c->forward_to_host(std::span<const int32_t>(prompt).first(16));
    const std::vector<float> prefill_rows(la.begin(), la.begin() + 16 * vocab);
    const double error = expect_rows_within(pass, prefill_rows, vocab, 5e-2, a->prefill_router_margins(), 0.05f, 4,
                                            what + " 16-token pass vs prefill");
    std::printf("[ %s ] 16-token pass vs GEMM prefill: %.3g\n", what.c_str(), error);
    const std::vector<int32_t> graph = decode_tokens(*a, prompt, 24, true);
    const std::vector<int32_t> stream = decode_tokens(*a, prompt, 24, false);
    EXPECT_EQ(graph, stream) << what << ": graph and stream launches decode differently";
    const auto routing = a->last_routing(1);
    ASSERT_EQ(routing[0].size(), 2u);
    EXPECT_EQ(std::set<int>(routing[0].begin(), routing[0].end()).size(), 2u);
  }
}

}  // namespace
}  // namespace tachyon::gpu
