// The GPU model runner on every tiny fixture the GPU supports (tests/fixtures/tiny/{llama, qwen2, qwen3,
// qwen3_moe, qwen3_moe_unnormalized, gpt_oss, gpt_oss_mxfp4}: RoPE llama3 / yarn, biases, q/k norm, tied embeddings,
// head_dim 8..32 padded to 64, MoE with and without renormalization, dense layers inside MoE models; gpt-oss:
// attention sinks, a sliding window of 8 on layer 0, router and expert biases, interleaved gate/up, the clamped
// SwiGLU, experts bf16 (gpt_oss: float32 checkpoint) or MXFP4 as stored (gpt_oss_mxfp4: the GPU keeps the codes,
// so the CPU on the "rounded" checkpoint, which leaves U8 blocks alone, runs exactly the GPU's expert weights; its
// 2-D expert biases are rounded to bf16 there while the GPU keeps them float32, a ~2^-9 relative difference).
//
// Metric, per position: max_i |gpu_i - ref_i| / max_i |ref_i| over the vocabulary.
// Bounds (the measured values are printed). These models are small and sensitive: rounding the weights to
// bf16 alone moves the CPU's logits by 0.009 .. 0.030 of max |logit| from transformers' (GpuModelReference).
//   vs the CPU reference on the same bf16-rounded weights: 5e-2 (what the GPU adds: bf16 KV cache, bf16
//   attention probabilities, bf16 GEMM activations in prefill; roundings of the same size as the weights');
//   vs transformers' float32 logits (the fixture): 8e-2.
// MoE fixtures: a row over the bound is accepted only at a router near-tie (GPU router margin below 0.05, at most
// 4 rows; see expect_rows_within in test_gpu_model_util.h), and such rows are printed.
// Greedy: the graph decode loop's 32 tokens equal the CPU's on the rounded weights; a divergence is accepted
// only at a near-tie: a CPU top-2 gap below 4x the largest logit difference measured on the prompt.
#include <map>

#include <fmt/format.h>

#include "gpu/decode_loop.h"
#include "gpu/gpu_model.h"
#include "gpu_test_util.h"
#include "loader/json_file.h"
#include "test_gpu_model_util.h"
#include "../support/paths.h"

namespace tachyon::gpu {
namespace {

using namespace gpu_model_test;

constexpr double kTransformersBound = 8e-2;  // kCpuBound, kFlipMargin, kMaxFlips: test_gpu_model_util.h

struct TinyFixture : TinyReference {
  Checkpoint checkpoint;
  std::unique_ptr<RoundedCheckpoint> rounded;
  std::unique_ptr<Model> cpu;  // on the rounded weights
  std::vector<float> reference_logits;  // transformers, [prompt, vocab]
};

TinyFixture& fixture(const std::string& name) {
  static std::map<std::string, std::unique_ptr<TinyFixture>> cache;
  auto& slot = cache[name];
  if (!slot) {
    slot = std::make_unique<TinyFixture>();
    const std::string dir = test::fixture_path("tiny/" + name);
    slot->checkpoint = open_checkpoint(dir);
    slot->rounded = round_matrices_to_bf16(slot->checkpoint);
    slot->cpu = create_model(slot->rounded->checkpoint);
    read_tiny_reference(dir, *slot);
    slot->reference_logits.resize(slot->prompt.size() * slot->vocab);
    std::ifstream file(slot->logits_file, std::ios::binary);
    file.read(reinterpret_cast<char*>(slot->reference_logits.data()),
              static_cast<std::streamsize>(slot->reference_logits.size() * sizeof(float)));
    if (!file) throw std::runtime_error(name + ": logits file too short");
  }
  return *slot;
}

std::unique_ptr<GpuModel> gpu_model(const TinyFixture& f, GpuModelOptions options = {}) {
  if (options.kv_positions == 0) options.kv_positions = 256;
  options.record_router_margins = true;
  return GpuModel::load(f.checkpoint, options);
}

class GpuTinyModel : public testing::TestWithParam<std::string> {};

TEST_P(GpuTinyModel, PrefillLogitsMatchCpuAndTransformers) {
  SKIP_WITHOUT_GPU();
  TinyFixture& f = fixture(GetParam());
  auto model = gpu_model(f);
  ASSERT_EQ(model->config().vocab, f.vocab);
  // 32 tokens: the GEMM prefill path (one chunk of two 16-row virtual sequences).
  const std::vector<float> gpu = model->prefill_to_host(f.prompt, /*all_rows=*/true);
  KvCache cache = f.cpu->new_cache();
  const std::vector<float> cpu = f.cpu->forward(f.prompt, cache, /*all_rows=*/true);
  const auto& margins = model->prefill_router_margins();
  const double vs_cpu =
      expect_rows_within(gpu, cpu, f.vocab, kCpuBound, margins, kFlipMargin, kMaxFlips, GetParam() + " prefill vs CPU");
  const double vs_transformers = expect_rows_within(gpu, f.reference_logits, f.vocab, kTransformersBound, margins,
                                                    kFlipMargin, kMaxFlips, GetParam() + " prefill vs transformers");
  std::printf("[ %s ] prefill logits: vs CPU (bf16 weights) %.3g, vs transformers %.3g\n", GetParam().c_str(), vs_cpu,
              vs_transformers);
}

// The prompt followed by transformers' greedy continuation: 64 tokens.
std::vector<int32_t> long_prompt(const TinyFixture& f) {
  std::vector<int32_t> tokens = f.prompt;
  tokens.insert(tokens.end(), f.reference_greedy.begin(), f.reference_greedy.end());
  return tokens;
}

// Per-row errors, printed when a comparison fails: the first row that goes wrong shows where a bug starts.
std::string row_errors(const std::vector<float>& ours, const std::vector<float>& ref, int vocab) {
  std::string text;
  for (size_t row = 0; row * vocab < ours.size(); ++row) {
    const std::vector<float> a(ours.begin() + row * vocab, ours.begin() + (row + 1) * vocab);
    const std::vector<float> b(ref.begin() + row * vocab, ref.begin() + (row + 1) * vocab);
    text += fmt::format("{}:{:.2g} ", row, max_relative_error(a, b, vocab));
  }
  return text;
}

TEST_P(GpuTinyModel, LongPromptInSeveralChunksMatchesCpu) {
  SKIP_WITHOUT_GPU();
  TinyFixture& f = fixture(GetParam());
  GpuModelOptions options;
  options.prefill_chunk = 48;  // 64 tokens: a chunk of 3 virtual sequences, then one of 16 rows at start 48
  options.page_size = 16;      // and several KV pages
  auto model = gpu_model(f, options);
  const std::vector<int32_t> tokens = long_prompt(f);
  const std::vector<float> gpu = model->prefill_to_host(tokens, /*all_rows=*/true);
  KvCache cache = f.cpu->new_cache();
  const std::vector<float> cpu = f.cpu->forward(tokens, cache, /*all_rows=*/true);
  const auto& margins = model->prefill_router_margins();
  const double error = expect_rows_within(gpu, cpu, f.vocab, kCpuBound, margins, kFlipMargin, kMaxFlips,
                                          GetParam() + " chunks of 48 vs CPU");
  // The same tokens in one chunk: the GPU against itself (chunking changes only the GEMM shapes).
  auto single = gpu_model(f);
  const std::vector<float> one_chunk = single->prefill_to_host(tokens, /*all_rows=*/true);
  const double chunking = expect_rows_within(gpu, one_chunk, f.vocab, kCpuBound, margins, kFlipMargin, kMaxFlips,
                                             GetParam() + " chunks of 48 vs one chunk");
  std::printf("[ %s ] %zu-token prefill in chunks of 48: vs CPU %.3g, vs one chunk %.3g\n", GetParam().c_str(),
              tokens.size(), error, chunking);
}

TEST_P(GpuTinyModel, TokenByTokenMatchesCpu) {
  SKIP_WITHOUT_GPU();
  TinyFixture& f = fixture(GetParam());
  auto model = gpu_model(f);
  KvCache cache = f.cpu->new_cache();
  // 16 tokens in one gemv pass (the verify path), then single-token steps.
  const auto [gpu_rows, cpu_rows] = pass_then_steps(*model, *f.cpu, cache, f.prompt, f.prompt.size() / 2);
  const double worst = max_relative_error(gpu_rows, cpu_rows, f.vocab);
  std::printf("[ %s ] 16-token pass + single steps: vs CPU %.3g\n", GetParam().c_str(), worst);
  EXPECT_LE(worst, kCpuBound) << "per row: " << row_errors(gpu_rows, cpu_rows, f.vocab);
}

TEST_P(GpuTinyModel, GreedyGraphDecodeMatchesCpu) {
  SKIP_WITHOUT_GPU();
  TinyFixture& f = fixture(GetParam());
  auto model = gpu_model(f);
  const int n = static_cast<int>(f.reference_greedy.size());
  auto probe = gpu_model(f);
  const std::vector<int32_t> gpu =
      expect_graph_greedy_matches_cpu(*model, *probe, *f.cpu, f.prompt, n, GetParam() + " greedy vs CPU");
  size_t same = 0;
  while (same < gpu.size() && gpu[same] == f.reference_greedy[same]) ++same;
  std::printf("[ %s ] greedy: first %zu of %d tokens equal transformers' (float32 weights)\n", GetParam().c_str(), same,
              n);
}

// The persistent one-token passes (GpuModelOptions::persistent_decode) on the fixtures: padded heads (8..32 of 64),
// q / k norms, biases, llama3 RoPE, routed experts with and without renormalized weights. Single steps after a
// 16-token pass against the CPU, and greedy through the graph decode loop. The dense fixtures take the resident
// kernel by default, the Qwen3-MoE ones the streamed kernel; gpt-oss declines both (the kernel-per-op path runs it).
void expect_persistent_matches_cpu(TinyFixture& f, const std::string& name, bool force_streamed) {
  GpuModelOptions options;
  options.persistent_decode = true;
  options.force_streamed_persistent = force_streamed;
  auto model = gpu_model(f, options);
  const bool dense = name == "llama" || name == "qwen2" || name == "qwen3";
  const bool moe = name == "qwen3_moe" || name == "qwen3_moe_unnormalized";
  const std::string expected = force_streamed ? (dense || moe ? "streamed" : "")
                                              : (dense ? "resident" : moe ? "streamed" : "");
  ASSERT_EQ(model->persistent_kernel_name(), expected) << model->persistent_decode_unsupported();
  if (expected.empty()) GTEST_SKIP() << "declined as expected: " << model->persistent_decode_unsupported();
  KvCache cache = f.cpu->new_cache();
  const auto [gpu_rows, cpu_rows] = pass_then_steps(*model, *f.cpu, cache, f.prompt, f.prompt.size() / 2);
  const double worst = max_relative_error(gpu_rows, cpu_rows, f.vocab);
  std::printf("[ %s ] %s persistent single steps after a 16-token pass: vs CPU %.3g\n", name.c_str(), expected.c_str(),
              worst);
  EXPECT_LE(worst, kCpuBound) << "per row: " << row_errors(gpu_rows, cpu_rows, f.vocab);
  model->truncate(0);
  auto probe = gpu_model(f);
  expect_graph_greedy_matches_cpu(*model, *probe, *f.cpu, f.prompt, static_cast<int>(f.reference_greedy.size()),
                                  name + " " + expected + " persistent greedy vs CPU");
}

TEST_P(GpuTinyModel, PersistentDecodeMatchesCpu) {
  SKIP_WITHOUT_GPU();
  expect_persistent_matches_cpu(fixture(GetParam()), GetParam(), false);
}

TEST_P(GpuTinyModel, StreamedPersistentDecodeMatchesCpu) {
  SKIP_WITHOUT_GPU();
  expect_persistent_matches_cpu(fixture(GetParam()), GetParam(), true);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuTinyModel,
                         testing::Values("llama", "qwen2", "qwen3", "qwen3_moe", "qwen3_moe_unnormalized", "gpt_oss",
                                         "gpt_oss_mxfp4"));

}  // namespace
}  // namespace tachyon::gpu
