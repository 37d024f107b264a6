// SmolLM2-135M-Instruct (Q4_1 GGUF, real weights) on the GPU against the CPU reference, on the fixture prompts
// of tests/fixtures/smollm2/reference.json (64 greedy tokens each). Skipped without the model
// ($TACHYON_MODELS_DIR or <source>/models/SmolLM2-135M-Instruct.Q4_1.gguf) or without a GPU.
//
// The GPU holds the Q4_1-dequantized weights rounded to bf16; the CPU reference runs on the same rounded
// weights (test_gpu_model_util.h). Checked per prompt:
//   - greedy tokens from the graph decode loop equal the CPU's (a divergence only at a near-tie: CPU top-2 gap
//     below 4x the largest logit difference measured on these prompts' last rows);
//   - the prompt's last-row logits: max |gpu - cpu| / max |cpu| <= 5e-2 (30 layers of bf16 KV / probabilities /
//     prefill activations); also printed against the CPU on the unrounded Q4_1 weights;
//   - graph == stream launches, bit for bit, on one prompt.
#include <cstring>

#include "fp4/quantize_checkpoint.h"
#include "gpu/decode_loop.h"
#include "gpu/fp8_weights.h"
#include "gpu/gpu_model.h"
#include "gpu_test_util.h"
#include "loader/json_file.h"
#include "test_gpu_model_util.h"
#include "../support/paths.h"

namespace tachyon::gpu {
namespace {

using namespace gpu_model_test;

struct SmolLM2 {
  Checkpoint checkpoint;
  std::unique_ptr<RoundedCheckpoint> rounded;
  std::unique_ptr<Model> cpu_rounded, cpu_original;
  std::unique_ptr<GpuModel> gpu;
  nlohmann::json reference;
};

SmolLM2* smollm2() {
  static std::unique_ptr<SmolLM2> loaded;
  static bool tried = false;
  if (!tried) {
    tried = true;
    const std::string path = test::smollm2_gguf_path();
    if (path.empty()) return nullptr;
    loaded = std::make_unique<SmolLM2>();
    loaded->checkpoint = open_checkpoint(path);
    loaded->rounded = round_matrices_to_bf16(loaded->checkpoint);
    loaded->cpu_rounded = create_model(loaded->rounded->checkpoint);
    loaded->cpu_original = create_model(loaded->checkpoint);
    GpuModelOptions options;
    options.kv_positions = 512;
    loaded->gpu = GpuModel::load(loaded->checkpoint, options);
    loaded->reference = read_json_file(test::fixture_path("smollm2/reference.json"));
  }
  return loaded.get();
}

#define SKIP_WITHOUT_SMOLLM2(var) \
  SKIP_WITHOUT_GPU();             \
  SmolLM2* var = smollm2();       \
  if (!var) GTEST_SKIP() << "SmolLM2-135M-Instruct.Q4_1.gguf not found (set TACHYON_MODELS_DIR)"

TEST(GpuSmolLM2, GreedyTokensAndLogitsMatchCpu) {
  SKIP_WITHOUT_SMOLLM2(m);
  const int vocab = m->gpu->config().vocab;
  GpuModel& gpu = *m->gpu;
  // Last-row prompt logits of every case first: their largest difference sets what counts as a near-tie.
  double worst_rounded = 0, worst_original = 0, worst_abs = 0;
  for (const auto& c : m->reference["cases"]) {
    const std::vector<int32_t> prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    gpu.truncate(0);
    const std::vector<float> gpu_logits = gpu.prefill_to_host(prompt);
    KvCache cache = m->cpu_rounded->new_cache(prompt.size() + 1);
    const std::vector<float> cpu_logits = m->cpu_rounded->forward(prompt, cache);
    KvCache cache_original = m->cpu_original->new_cache(prompt.size() + 1);
    const std::vector<float> original_logits = m->cpu_original->forward(prompt, cache_original);
    const double rounded_error = max_relative_error(gpu_logits, cpu_logits, vocab);
    EXPECT_LE(rounded_error, 5e-2) << c["text"];
    worst_rounded = std::max(worst_rounded, rounded_error);
    worst_original = std::max(worst_original, max_relative_error(gpu_logits, original_logits, vocab));
    worst_abs = std::max(worst_abs, max_abs_difference(gpu_logits, cpu_logits));
  }
  std::printf(
      "[ SmolLM2 ] last-row prompt logits: max relative error %.3g vs CPU (bf16 weights), %.3g vs CPU "
      "(Q4_1 float weights); max abs difference %.3g\n",
      worst_rounded, worst_original, worst_abs);

  int identical_cases = 0, transformers_prefix_total = 0;
  for (const auto& c : m->reference["cases"]) {
    const std::vector<int32_t> prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> reference = c["greedy_ids"].get<std::vector<int32_t>>();
    const int n = static_cast<int>(reference.size());
    const std::string what = "\"" + c["text"].get<std::string>().substr(0, 24) + "...\"";
    gpu.truncate(0);
    DecodeLoop loop(gpu, DecodeSampling{});
    loop.start(prompt);
    loop.enqueue(n - 1, /*use_graph=*/true);
    const std::vector<int32_t> tokens = loop.tokens();
    const GreedyRun cpu = cpu_greedy(*m->cpu_rounded, prompt, n);
    expect_same_greedy(tokens, cpu, static_cast<float>(4 * worst_abs + 1e-3), "SmolLM2 " + what);
    identical_cases += tokens == cpu.tokens;
    int same = 0;
    while (same < n && tokens[same] == reference[same]) ++same;
    transformers_prefix_total += same;
  }
  std::printf(
      "[ SmolLM2 ] %d of %zu prompts: 64 greedy tokens identical to the CPU on bf16 weights; "
      "%d of %zu tokens before the first difference from transformers (float weights)\n",
      identical_cases, m->reference["cases"].size(), transformers_prefix_total, 64 * m->reference["cases"].size());
}

// The persistent one-token pass (GpuModelOptions::persistent_decode) on the real weights: greedy tokens from the
// graph decode loop equal the CPU's on every fixture prompt (a divergence only at a near-tie, as above).
TEST(GpuSmolLM2, PersistentDecodeGreedyMatchesCpu) {
  SKIP_WITHOUT_SMOLLM2(m);
  GpuModelOptions options;
  options.kv_positions = 512;
  options.persistent_decode = true;
  auto persistent = GpuModel::load(m->checkpoint, options);
  ASSERT_TRUE(persistent->persistent_decode_active()) << persistent->persistent_decode_unsupported();
  for (const auto& c : m->reference["cases"]) {
    const std::vector<int32_t> prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    persistent->truncate(0);
    m->gpu->truncate(0);
    expect_graph_greedy_matches_cpu(*persistent, *m->gpu, *m->cpu_rounded, prompt,
                                    static_cast<int>(c["greedy_ids"].size()),
                                    "SmolLM2 persistent \"" + c["text"].get<std::string>().substr(0, 24) + "...\"");
  }
}

TEST(GpuSmolLM2, GraphEqualsStreamBitwise) {
  SKIP_WITHOUT_SMOLLM2(m);
  const std::vector<int32_t> prompt = m->reference["cases"][0]["prompt_ids"].get<std::vector<int32_t>>();
  auto run = [&](bool use_graph) {
    m->gpu->truncate(0);
    DecodeLoop loop(*m->gpu, DecodeSampling{});
    loop.start(prompt);
    loop.enqueue(100, use_graph);
    std::vector<int32_t> tokens = loop.tokens();  // synchronizes the model's stream before the copy below
    std::vector<float> logits(m->gpu->config().vocab);
    TACHYON_CUDA_CHECK(
        cudaMemcpy(logits.data(), m->gpu->pass_logits(), logits.size() * sizeof(float), cudaMemcpyDeviceToHost));
    return std::make_pair(tokens, logits);
  };
  const auto graph = run(true), stream = run(false);
  EXPECT_EQ(graph.first, stream.first);
  EXPECT_EQ(std::memcmp(graph.second.data(), stream.second.data(), graph.second.size() * sizeof(float)), 0);
}

// FP8 attention and MLPs (`--fp8 attention,mlp`) on the real weights: the GPU quantizes its bf16 weights with the
// tiles of each checkpoint tensor (SmolLM2 needs no padding, so they are the checkpoint's tiles) and runs the FP8
// gemv in decode; the CPU runs `tachyon eval`'s in-memory quantization of the same bf16-rounded weights (the same
// codes and scales: tests/gpu/test_gemv_fp8.cpp checks the quantizers agree bit for bit). Greedy tokens and the
// prompts' last-row logits as above.
TEST(GpuSmolLM2, Fp8AttentionAndMlpMatchCpuOnTheSameQuantization) {
  SKIP_WITHOUT_SMOLLM2(m);
  fp4::QuantizeOptions quantize;
  quantize.attention_fp8 = quantize.mlp_fp8 = true;
  const std::shared_ptr<const Checkpoint> rounded(std::shared_ptr<const Checkpoint>(), &m->rounded->checkpoint);
  const auto quantized = fp4::quantize_in_memory(rounded, quantize, nullptr);
  const std::unique_ptr<Model> cpu = create_model(quantized->checkpoint());
  GpuModelOptions options;
  options.kv_positions = 512;
  options.fp8 = parse_fp8_weights("attention,mlp", "test");
  auto gpu = GpuModel::load(m->checkpoint, options);
  const int vocab = gpu->config().vocab;
  double worst = 0, worst_abs = 0;
  for (const auto& c : m->reference["cases"]) {
    const std::vector<int32_t> prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    gpu->truncate(0);
    const std::vector<float> gpu_logits = gpu->prefill_to_host(prompt);
    KvCache cache = cpu->new_cache(prompt.size() + 1);
    const std::vector<float> cpu_logits = cpu->forward(prompt, cache);
    worst = std::max(worst, max_relative_error(gpu_logits, cpu_logits, vocab));
    worst_abs = std::max(worst_abs, max_abs_difference(gpu_logits, cpu_logits));
  }
  EXPECT_LE(worst, 5e-2);
  int identical = 0;
  for (const auto& c : m->reference["cases"]) {
    const std::vector<int32_t> prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const int n = static_cast<int>(c["greedy_ids"].size());
    gpu->truncate(0);
    DecodeLoop loop(*gpu, DecodeSampling{});
    loop.start(prompt);
    loop.enqueue(n - 1, /*use_graph=*/true);
    const std::vector<int32_t> tokens = loop.tokens();
    const GreedyRun reference = cpu_greedy(*cpu, prompt, n);
    expect_same_greedy(tokens, reference, static_cast<float>(4 * worst_abs + 1e-3),
                       "SmolLM2 FP8 \"" + c["text"].get<std::string>().substr(0, 24) + "...\"");
    identical += tokens == reference.tokens;
  }
  std::printf("[ SmolLM2 FP8 ] last-row prompt logits vs CPU (same FP8 weights) %.3g; %d of %zu prompts: greedy "
              "tokens identical\n", worst, identical, m->reference["cases"].size());
}

}  // namespace
}  // namespace tachyon::gpu
