// The persistent one-token pass (kernels/persistent, GpuModelOptions::persistent_decode) against the kernel-per-op
// pass on the same random weights (same config and seed): the same prompt is prefilled by both (the GEMM path,
// identical), then each decode step feeds both the same token and their logits are compared. The two paths differ
// in arithmetic only (CUDA-core FMAs in float32 vs the gemv's tensor-core products on split activations, float vs
// bf16 attention probabilities), so the bound is loose against bugs of O(1) and printed as measured.
// Shapes: SmolLM2-135M at contexts that take 1, several and the most key splits (and the cap on them); a Qwen3 shape
// with q / k norms and 66 KV heads (2 splits at most: each warp loops over several 32-key chunks); head_dim 128
// with 4 query heads per KV head. The streamed kernel (kernels/persistent/persistent_stream.h) on the SmolLM2 and
// head_dim-128 shapes (forced: the resident kernel takes them by default), on Qwen3-MoE configs (routed and dense
// layers, renormalized top-k or not; the routing compared per layer as sets), with FP4 experts (NVFP4, MXFP4: against
// the per-op FP4 kernels), with FP8 attention weights, and on two layers of Qwen3-30B-A3B's shape with bf16 / NVFP4 /
// MXFP4 experts (and NVFP4 + FP8 attention). The real-weight checks are in test_gpu_model_tiny.cpp (fixtures vs the
// CPU, both kernels) and test_gpu_model_smollm2.cpp (greedy vs the CPU).
#include <algorithm>
#include <cstring>
#include <random>

#include "gpu/decode_loop.h"
#include "gpu/fp4_experts.h"
#include "gpu/gpu_model.h"
#include "gpu_test_util.h"
#include "test_gpu_model_util.h"

namespace tachyon::gpu {
namespace {

using namespace gpu_model_test;

constexpr double kPathBound = 1e-2;  // max |persistent - per-op| / max |per-op| per logit row

nlohmann::json small_config(const std::string& architecture, int hidden, int heads, int kv_heads, int head_dim,
                            int intermediate, int layers, int vocab) {
  return nlohmann::json{{"architectures", {architecture}},
                        {"hidden_act", "silu"},
                        {"hidden_size", hidden},
                        {"intermediate_size", intermediate},
                        {"num_hidden_layers", layers},
                        {"num_attention_heads", heads},
                        {"num_key_value_heads", kv_heads},
                        {"head_dim", head_dim},
                        {"vocab_size", vocab},
                        {"max_position_embeddings", 8192},
                        {"rms_norm_eps", 1e-6},
                        {"rope_theta", 1000000.0},
                        {"tie_word_embeddings", false},
                        {"initializer_range", 0.02}};
}

struct Pair {
  std::unique_ptr<GpuModel> persistent, per_op;
  nlohmann::json config;  // (for a router-margin probe: the same weights)
  GpuModelOptions options;
};

Pair models(const nlohmann::json& config, int64_t kv_positions, bool force_streamed = false,
            std::optional<ExpertFormat> experts = std::nullopt, Fp8Weights fp8 = {}) {
  GpuModelOptions options;
  options.kv_positions = kv_positions;
  options.progress = false;
  options.experts = experts;
  options.fp8 = fp8;
  Pair pair;
  pair.config = config;
  pair.options = options;
  pair.per_op = GpuModel::random(config, "test config", 11, options);
  options.persistent_decode = true;
  options.force_streamed_persistent = force_streamed;
  pair.persistent = GpuModel::random(config, "test config", 11, options);
  return pair;
}

// A Qwen3-MoE config: routed layers except `dense_layers` (mlp_only_layers).
nlohmann::json moe_config(int hidden, int heads, int kv_heads, int experts, int top_k, int moe_width,
                          int intermediate, int layers, int vocab, bool renormalize, std::vector<int> dense_layers) {
  nlohmann::json c = small_config("Qwen3MoeForCausalLM", hidden, heads, kv_heads, 128, intermediate, layers, vocab);
  c["num_experts"] = experts;
  c["num_experts_per_tok"] = top_k;
  c["moe_intermediate_size"] = moe_width;
  c["norm_topk_prob"] = renormalize;
  c["decoder_sparse_step"] = 1;
  c["mlp_only_layers"] = dense_layers;
  return c;
}

// The per-op router's margin at `layer` for the last token of `sequence` ((p_k - p_k+1) / sum, from a prefill of the
// whole sequence by a third model on the same weights).
float router_margin(const Pair& pair, const std::vector<int32_t>& sequence, size_t layer) {
  GpuModelOptions options = pair.options;
  options.record_router_margins = true;
  options.kv_positions = static_cast<int64_t>(sequence.size()) + 16;
  std::unique_ptr<GpuModel> probe = GpuModel::random(pair.config, "test config", 11, options);
  probe->prefill_to_host(sequence);
  return probe->prefill_router_margins()[layer].back();
}

// Prefills `context` random tokens into both, then `steps` single-token passes; returns the worst row error. A step
// whose routing differs at a layer where the per-op router's top-k margin is below kFlipMargin (two near-equal
// experts: the paths' arithmetic may pick either) ends the comparison there (the states have diverged).
double compare_steps(Pair& pair, int context, int steps, const std::string& what) {
  const int vocab = pair.per_op->config().vocab;
  std::mt19937 random(context);
  std::vector<int32_t> prompt(context);
  for (int32_t& id : prompt) id = static_cast<int32_t>(random() % vocab);
  pair.persistent->truncate(0);
  pair.per_op->truncate(0);
  std::vector<float> reference = pair.per_op->prefill_to_host(prompt);
  pair.persistent->prefill_to_host(prompt);
  double worst = 0;
  int argmax_changes = 0;
  std::vector<int32_t> sequence = prompt;
  for (int step = 0; step < steps; ++step) {
    const int32_t token = argmax(reference.data(), vocab);
    const std::vector<int32_t> one{token};
    sequence.push_back(token);
    const std::vector<float> ours = pair.persistent->forward_to_host(one);
    reference = pair.per_op->forward_to_host(one);
    if (pair.per_op->config().experts > 0) {
      // The same experts (as sets: two chosen experts of nearly equal probability may swap places, which only
      // reorders the weighted sum).
      auto chosen = pair.persistent->last_routing(1), expected = pair.per_op->last_routing(1);
      int differing = 0, near_ties = 0;
      for (size_t layer = 0; layer < chosen.size(); ++layer) {
        std::sort(chosen[layer].begin(), chosen[layer].end());
        std::sort(expected[layer].begin(), expected[layer].end());
        if (chosen[layer] != expected[layer]) {
          std::string ids;
          for (size_t j = 0; j < chosen[layer].size(); ++j)
            ids += " " + std::to_string(chosen[layer][j]) + "/" + std::to_string(expected[layer][j]);
          const float margin = router_margin(pair, sequence, layer);
          std::printf("[ %s ] step %d layer %zu: experts (persistent / per-op)%s, per-op top-k margin %.3g\n",
                      what.c_str(), step, layer, ids.c_str(), margin);
          if (margin < kFlipMargin)
            ++near_ties;
          else
            ++differing;
        }
      }
      EXPECT_EQ(differing, 0) << what << ", step " << step << ": layers routed differently (not near ties)";
      if (near_ties > 0) break;
    }
    const double error = max_relative_error(ours, reference, vocab);
    EXPECT_LE(error, kPathBound) << what << ", step " << step << " at KV length " << context + step + 1;
    worst = std::max(worst, error);
    // A different argmax only where the two are within the measured error of each other.
    if (argmax(ours.data(), vocab) != argmax(reference.data(), vocab)) {
      ++argmax_changes;
      EXPECT_LT(top2_gap(reference.data(), vocab), 4 * max_abs_difference(ours, reference) + 1e-3) << what;
    }
  }
  std::printf("[ %s ] context %d, %d steps: persistent vs per-op max relative error %.3g, %d argmax changes\n",
              what.c_str(), context, steps, worst, argmax_changes);
  return worst;
}

TEST(PersistentDecode, SmolLM2ShapeMatchesPerOpPathAtEverySplitCount) {
  SKIP_WITHOUT_GPU();
  Pair pair = models(*builtin_model_config("smollm2-135m"), 8192);
  ASSERT_TRUE(pair.persistent->persistent_decode_active()) << pair.persistent->persistent_decode_unsupported();
  ASSERT_FALSE(pair.per_op->persistent_decode_active());
  // 1 token (the first step prefills 1 token: the persistent pass itself), one split, a page boundary (64), several
  // splits, and past 44 x 128 keys, where the split count is capped and splits grow.
  for (int context : {1, 63, 200, 1000, 5000, 8100}) compare_steps(pair, context, 6, "SmolLM2 shape");
}

TEST(PersistentDecode, ManyKvHeadsWithQkNormsLoopOverKeyChunks) {
  SKIP_WITHOUT_GPU();
  // 66 KV heads leave 2 splits per head on 132 SMs: at 2000 keys each unit's warps take two 32-key chunks apiece.
  Pair pair = models(small_config("Qwen3ForCausalLM", 256, 66, 66, 64, 512, 2, 512), 4096);
  ASSERT_TRUE(pair.persistent->persistent_decode_active()) << pair.persistent->persistent_decode_unsupported();
  for (int context : {5, 2000, 4000}) compare_steps(pair, context, 4, "Qwen3 66 heads");
}

TEST(PersistentDecode, HeadDim128WithFourQueryHeadsPerKvHead) {
  SKIP_WITHOUT_GPU();
  Pair pair = models(small_config("LlamaForCausalLM", 512, 8, 2, 128, 1024, 3, 1000), 2048);
  ASSERT_TRUE(pair.persistent->persistent_decode_active()) << pair.persistent->persistent_decode_unsupported();
  for (int context : {3, 600}) compare_steps(pair, context, 4, "head_dim 128");
}

// The streamed kernel (weights read from HBM as used) on the same dense shapes, forced where the resident one fits.
TEST(PersistentDecode, StreamedSmolLM2ShapeMatchesPerOpPath) {
  SKIP_WITHOUT_GPU();
  Pair pair = models(*builtin_model_config("smollm2-135m"), 8192, true);
  ASSERT_EQ(pair.persistent->persistent_kernel_name(), "streamed") << pair.persistent->persistent_decode_unsupported();
  // One split, a page boundary, several splits, and past 32 x 128 keys (the streamed kernel's split cap: a unit then
  // stages its keys in several pieces).
  for (int context : {1, 63, 200, 1000, 5000, 8100}) compare_steps(pair, context, 4, "SmolLM2 shape, streamed");
}

TEST(PersistentDecode, StreamedHeadDim128WithFourQueryHeadsPerKvHead) {
  SKIP_WITHOUT_GPU();
  Pair pair = models(small_config("LlamaForCausalLM", 512, 8, 2, 128, 1024, 3, 1000), 2048, true);
  ASSERT_EQ(pair.persistent->persistent_kernel_name(), "streamed") << pair.persistent->persistent_decode_unsupported();
  for (int context : {3, 600}) compare_steps(pair, context, 4, "head_dim 128, streamed");
}

// Mixture-of-experts layers take the streamed kernel by default: routed layers (renormalized or not) beside a dense
// one, widths over one 1024-column part (hidden 1536) and under it (expert width 320), uneven rows per block.
TEST(PersistentDecode, MoeLayersTakeTheStreamedKernel) {
  SKIP_WITHOUT_GPU();
  for (bool renormalize : {true, false}) {
    Pair pair = models(moe_config(1536, 12, 4, 24, 6, 320, 2048, 3, 1000, renormalize, {1}), 4096);
    ASSERT_EQ(pair.persistent->persistent_kernel_name(), "streamed")
        << pair.persistent->persistent_decode_unsupported();
    for (int context : {2, 300, 3000})
      compare_steps(pair, context, 4, renormalize ? "MoE, renormalized" : "MoE, not renormalized");
  }
}

// FP4 experts (NVFP4, MXFP4) in the streamed kernel (forced: by default they keep the per-op step, measured faster)
// against the per-op FP4 kernels on the same random codes: strips
// of gate / up tiles in runs of 3 with a shorter last run (hidden 1280 = 20 tiles), expert width 192 (3 tiles), a
// dense layer beside the routed ones, fewer 16-row strips of the residual (80) than blocks.
TEST(PersistentDecode, Fp4ExpertsInTheStreamedKernel) {
  SKIP_WITHOUT_GPU();
  for (ExpertFormat format : {ExpertFormat::Nvfp4, ExpertFormat::Mxfp4}) {
    const std::string what = "MoE " + std::string(expert_format_name(format));
    const nlohmann::json config = moe_config(1280, 10, 2, 24, 6, 192, 1024, 3, 1000, true, {1});
    GpuModelOptions options;
    options.progress = false;
    options.persistent_decode = true;
    options.experts = format;
    EXPECT_EQ(GpuModel::random(config, "test config", 11, options)->persistent_kernel_name(), "")
        << "FP4 experts keep the per-op step unless forced";
    Pair pair = models(config, 4096, true, format);
    ASSERT_EQ(pair.persistent->persistent_kernel_name(), "streamed")
        << pair.persistent->persistent_decode_unsupported();
    for (int context : {2, 700}) compare_steps(pair, context, 4, what);
  }
}

// FP8 attention weights (`--fp8 attention`: q / k / v and o as block-scaled E4M3) in the streamed kernel, which
// takes such models by default (the resident one declines them; FP4 experts with FP8 attention only when forced),
// against the per-op FP8 gemv on the same codes:
// SmolLM2's shape (hidden 576: a last 128-column scale block of 64), a MoE with NVFP4 experts (hidden 1280 = 10
// scale blocks, q width 1280), head_dim 128 with 4 query heads per KV head.
TEST(PersistentDecode, Fp8AttentionInTheStreamedKernel) {
  SKIP_WITHOUT_GPU();
  Fp8Weights fp8;
  fp8.attention = true;
  struct Case {
    std::string what;
    nlohmann::json config;
    std::optional<ExpertFormat> experts;
  };
  const std::vector<Case> cases{
      {"SmolLM2 shape, FP8 attention", *builtin_model_config("smollm2-135m"), std::nullopt},
      {"MoE NVFP4, FP8 attention", moe_config(1280, 10, 2, 24, 6, 192, 1024, 3, 1000, true, {1}), ExpertFormat::Nvfp4},
      {"head_dim 128, FP8 attention", small_config("LlamaForCausalLM", 512, 8, 2, 128, 1024, 3, 1000), std::nullopt}};
  for (const Case& c : cases) {
    // (1152 positions: SmolLM2's 9 heads x 9 key splits leave the workspace's per-split (max, sum) an odd number of
    // float pairs, which once misaligned the merged heads' float4 stores.)
    Pair pair = models(c.config, 1152, c.experts.has_value(), c.experts, fp8);
    ASSERT_EQ(pair.persistent->persistent_kernel_name(), "streamed")
        << c.what << ": " << pair.persistent->persistent_decode_unsupported();
    for (int context : {2, 700}) compare_steps(pair, context, 4, c.what);
  }
}

// Qwen3-30B-A3B's own layer shape (hidden 2048, 128 experts of width 768, top-8, 32 / 4 heads), two layers, with
// bf16, NVFP4 and MXFP4 experts.
TEST(PersistentDecode, Qwen3MoeLayerShapeMatchesPerOpPath) {
  SKIP_WITHOUT_GPU();
  nlohmann::json config = *builtin_model_config("qwen3-30b-a3b");
  config["num_hidden_layers"] = 2;
  config["vocab_size"] = 4096;
  for (ExpertFormat format : {ExpertFormat::Bf16, ExpertFormat::Nvfp4, ExpertFormat::Mxfp4}) {
    const std::string what = "Qwen3-30B-A3B layers, " + std::string(expert_format_name(format)) + " experts";
    Pair pair = models(config, 2048, format != ExpertFormat::Bf16, format);  // (FP4 experts: forced)
    ASSERT_EQ(pair.persistent->persistent_kernel_name(), "streamed")
        << pair.persistent->persistent_decode_unsupported();
    for (int context : {5, 1000}) compare_steps(pair, context, 4, what);
  }
  Fp8Weights fp8;  // the fastest per-op configuration's weights: NVFP4 experts, FP8 attention
  fp8.attention = true;
  Pair pair = models(config, 2048, true, ExpertFormat::Nvfp4, fp8);
  ASSERT_EQ(pair.persistent->persistent_kernel_name(), "streamed") << pair.persistent->persistent_decode_unsupported();
  for (int context : {5, 1000}) compare_steps(pair, context, 4, "Qwen3-30B-A3B layers, NVFP4 experts, FP8 attention");
}

// Graph replays (the barrier counter keeps growing across launches, never reset) give the same bits as stream
// launches, and a rollback + decode again repeats them.
TEST(PersistentDecode, GraphEqualsStreamAndRepeats) {
  SKIP_WITHOUT_GPU();
  for (bool streamed : {false, true}) {
    Pair pair = models(*builtin_model_config("smollm2-135m"), 1024, streamed);
    GpuModel& model = *pair.persistent;
    const std::vector<int32_t> prompt{1, 17, 400, 9000, 33, 2};
    auto run = [&](bool use_graph) {
      model.truncate(0);
      DecodeLoop loop(model, DecodeSampling{});
      loop.start(prompt);
      loop.enqueue(40, use_graph);
      loop.enqueue(40, use_graph);
      std::vector<int32_t> tokens = loop.tokens();
      std::vector<float> logits(model.config().vocab);
      TACHYON_CUDA_CHECK(
          cudaMemcpy(logits.data(), model.pass_logits(), logits.size() * sizeof(float), cudaMemcpyDeviceToHost));
      return std::make_pair(tokens, logits);
    };
    const auto graph = run(true), stream = run(false), again = run(true);
    EXPECT_EQ(graph.first, stream.first);
    EXPECT_EQ(graph.first, again.first);
    EXPECT_EQ(std::memcmp(graph.second.data(), stream.second.data(), graph.second.size() * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(graph.second.data(), again.second.data(), graph.second.size() * sizeof(float)), 0);
  }
}

}  // namespace
}  // namespace tachyon::gpu
