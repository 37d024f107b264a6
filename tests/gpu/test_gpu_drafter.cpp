// GpuDrafter (src/gpu/gpu_drafter.h) against the CPU DFlashDrafter on the same bf16-rounded weights, for the
// DFlash fixtures (tests/fixtures/dflash: a random drafter for the tiny qwen3 / llama targets) and config
// variants of them that reach the other attention paths:
//   qwen3                        every layer bidirectional; head_dim 16 and hidden 48 padded to 64
//   llama_sliding                layer 0 causal + window 5, layer 1 bidirectional; input_embedding_scale 1.5,
//                                output_multiplier 0.8 (block_size 6, drafted here at 2..16 anyway)
//   llama_sliding_bidirectional  the same with is_causal = false: layer 0 bidirectional inside a window of 5
//   qwen3_causal_softcap         is_causal = true (causal, no window) and final_logit_softcapping 2
// Context: a 37-row prompt through add_context, then rounds as the GPU speculative controller runs them: draft
// a block of 2..16 at the valid length L, write the context K/V of ALL b rows at [L, L + b) while the CPU
// commits only a + 1 of them (the stale rows past the new L must stay hidden), and sometimes roll back (the next
// rows overwrite older ones). Features are fresh random values; the padded feature columns hold junk, which fc's
// zero columns must ignore. Output buffers are NaN-poisoned.
// Metric per slot: max_i |gpu_i - cpu_i| / max_i |cpu_i| over the vocabulary, bound 5e-2 as the tiny GPU model
// tests (what the GPU adds: bf16 K/V cache, bf16 attention probabilities); a different argmax is accepted only
// at a CPU top-2 gap below 2x that slot's largest logit difference.
#include <functional>
#include <map>

#include <fmt/format.h>

#include "core/error.h"
#include "gpu/gpu_drafter.h"
#include "gpu/gpu_model.h"
#include "gpu_test_util.h"
#include "models/decoder.h"
#include "models/dflash_drafter.h"
#include "spec/target.h"
#include "test_gpu_model_util.h"
#include "../support/paths.h"

namespace tachyon::gpu {
namespace {

using namespace gpu_model_test;
using gpu_test::random_normal;

constexpr double kBound = 5e-2;
constexpr int64_t kCapacity = 256;  // 4 pages of 64: rounds cross page boundaries

struct DrafterFixture {
  Checkpoint target_checkpoint, drafter_source, drafter_checkpoint;  // drafter_checkpoint: config edited
  std::unique_ptr<RoundedCheckpoint> target_rounded, drafter_rounded;
  std::unique_ptr<Model> cpu_target;
  std::unique_ptr<DFlashDrafter> cpu_drafter;
  std::unique_ptr<GpuModel> gpu_target;
  std::unique_ptr<GpuDrafter> gpu_drafter;
  int hidden = 0, hidden_padded = 0, features = 0, vocab = 0;
};

// The drafter directory and the config edit of each variant.
struct Variant {
  std::string directory, target;
  std::function<void(nlohmann::json&)> edit;
};
const std::map<std::string, Variant>& variants() {
  static const std::map<std::string, Variant> all = {
      {"qwen3", {"qwen3", "tiny/qwen3", [](nlohmann::json&) {}}},
      {"llama_sliding", {"llama_sliding", "tiny/llama", [](nlohmann::json&) {}}},
      {"llama_sliding_bidirectional", {"llama_sliding", "tiny/llama", [](nlohmann::json& c) { c["is_causal"] = false; }}},
      {"qwen3_causal_softcap", {"qwen3", "tiny/qwen3", [](nlohmann::json& c) {
                                  c["is_causal"] = true;
                                  c["final_logit_softcapping"] = 2.0;
                                }}},
  };
  return all;
}

DrafterFixture& fixture(const std::string& name) {
  static std::map<std::string, std::unique_ptr<DrafterFixture>> cache;
  auto& slot = cache[name];
  if (slot) return *slot;
  const Variant& v = variants().at(name);
  auto f = std::make_unique<DrafterFixture>();
  f->target_checkpoint = open_checkpoint(test::fixture_path(v.target));
  f->target_rounded = round_matrices_to_bf16(f->target_checkpoint);
  f->cpu_target = create_model(f->target_rounded->checkpoint);
  f->drafter_source = open_checkpoint(test::fixture_path("dflash/" + v.directory + "/drafter"));
  f->drafter_checkpoint.path = f->drafter_source.path + " (" + name + ")";
  f->drafter_checkpoint.format = f->drafter_source.format;
  f->drafter_checkpoint.config = f->drafter_source.config;
  v.edit(f->drafter_checkpoint.config);
  for (const auto& [tensor_name, tensor] : f->drafter_source.weights.all()) f->drafter_checkpoint.weights.add(tensor);
  f->drafter_rounded = round_matrices_to_bf16(f->drafter_checkpoint);
  f->cpu_drafter = std::make_unique<DFlashDrafter>(
      f->drafter_rounded->checkpoint, drafter_target_info(dynamic_cast<DecoderModel&>(*f->cpu_target)));
  GpuModelOptions options;
  options.kv_positions = kCapacity;
  f->gpu_target = GpuModel::load(f->target_checkpoint, options);
  f->gpu_drafter = std::make_unique<GpuDrafter>(f->drafter_checkpoint, *f->gpu_target, kCapacity);
  f->hidden = f->gpu_target->config().hidden;
  f->hidden_padded = f->gpu_target->config().hidden_padded;
  f->features = static_cast<int>(f->cpu_drafter->target_layer_ids().size());
  f->vocab = f->gpu_target->config().vocab;
  slot = std::move(f);
  return *slot;
}

// CPU features [rows, K * hidden] -> the GPU layout [rows, K * hidden_padded], junk in the padded columns.
std::vector<float> pad_features(const DrafterFixture& f, const std::vector<float>& cpu, int rows) {
  const int H = f.hidden, Hp = f.hidden_padded, K = f.features;
  std::vector<float> gpu = gpu_test::random_floats(static_cast<size_t>(rows) * K * Hp, 5.0f, 9.0f);
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < K; ++k)
      std::copy_n(cpu.data() + (static_cast<size_t>(r) * K + k) * H, H, gpu.data() + (static_cast<size_t>(r) * K + k) * Hp);
  return gpu;
}

// A device copy made on `stream` (the tests' streams are non-blocking: a copy on the legacy stream would not be
// ordered before their kernels).
cuda::DeviceBuffer<float> upload(const std::vector<float>& host, cudaStream_t stream) {
  cuda::DeviceBuffer<float> buffer(host.size());
  TACHYON_CUDA_CHECK(
      cudaMemcpyAsync(buffer.data(), host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice, stream));
  return buffer;
}

std::vector<int32_t> make_block(const DrafterFixture& f, int b) {
  std::vector<int32_t> block(b, f.cpu_drafter->mask_token_id());
  block[0] = static_cast<int32_t>(std::uniform_int_distribution<int>(0, f.vocab - 1)(gpu_test::rng()));
  return block;
}

// GPU logits [b - 1, vocab] against the CPU's, slot by slot; returns the worst relative error.
double compare_logits(const std::vector<float>& gpu, const std::vector<float>& cpu, int vocab, const std::string& what) {
  EXPECT_EQ(gpu.size(), cpu.size()) << what;
  double worst = 0;
  for (size_t slot = 0; (slot + 1) * vocab <= std::min(gpu.size(), cpu.size()); ++slot) {
    const std::vector<float> g(gpu.begin() + slot * vocab, gpu.begin() + (slot + 1) * vocab);
    const std::vector<float> c(cpu.begin() + slot * vocab, cpu.begin() + (slot + 1) * vocab);
    const double error = max_relative_error(g, c, vocab);
    worst = std::max(worst, error);
    EXPECT_LE(error, kBound) << what << ": slot " << slot + 1;
    const int32_t gpu_token = argmax(g.data(), vocab), cpu_token = argmax(c.data(), vocab);
    if (gpu_token != cpu_token) {
      EXPECT_LE(top2_gap(c.data(), vocab), 2 * max_abs_difference(g, c))
          << what << ": slot " << slot + 1 << " drafts " << gpu_token << " on the GPU, " << cpu_token << " on the CPU";
    }
  }
  return worst;
}

class GpuDrafterTest : public testing::TestWithParam<std::string> {};

TEST_P(GpuDrafterTest, ConfigMatchesCpuDrafter) {
  SKIP_WITHOUT_GPU();
  DrafterFixture& f = fixture(GetParam());
  const GpuDrafter& g = *f.gpu_drafter;
  EXPECT_EQ(g.block_size(), f.cpu_drafter->block_size());
  EXPECT_EQ(g.mask_token_id(), f.cpu_drafter->mask_token_id());
  EXPECT_EQ(g.target_layer_ids(), f.cpu_drafter->target_layer_ids());
  EXPECT_EQ(g.feature_width(), f.features * f.hidden_padded);
  EXPECT_EQ(g.capacity(), kCapacity);
}

TEST_P(GpuDrafterTest, ContextRoundsAndBlocksMatchCpu) {
  SKIP_WITHOUT_GPU();
  gpu_test::reseed_for_current_test();
  DrafterFixture& f = fixture(GetParam());
  GpuDrafter& g = *f.gpu_drafter;
  const DFlashDrafter& cpu = *f.cpu_drafter;
  const int cpu_width = f.features * f.hidden, vocab = f.vocab;
  cuda::Stream stream;
  KvCache cache = cpu.new_cache(kCapacity);

  // The prompt: 37 rows in chunks of 16 (16 + 16 + 5).
  const int prompt = 37;
  const std::vector<float> prompt_features = random_normal(static_cast<size_t>(prompt) * cpu_width);
  cpu.add_context(prompt_features.data(), prompt, cache);
  cuda::DeviceBuffer<float> prompt_dev = upload(pad_features(f, prompt_features, prompt), stream);
  g.add_context(prompt_dev.data(), prompt, 0, stream);

  struct Round {
    int block, accepted, rollback;
  };
  // Valid length L: 37 -> 39 -> 44 -> 43 -> 51 -> 67 (a block across the page boundary at 64) -> 65 -> 69.
  const std::vector<Round> rounds = {{2, 1, 0},  {16, 4, 0},  {5, 0, 2}, {8, 7, 0},
                                     {16, 15, 0}, {3, 2, 5}, {11, 3, 0}, {7, 6, 0}};
  SingleSequencePassInputs rows;
  cuda::DeviceBuffer<float> features_dev(static_cast<size_t>(kMaxPassTokens) * g.feature_width());
  double worst = 0;
  for (size_t r = 0; r < rounds.size(); ++r) {
    const auto [b, accepted, rollback] = rounds[r];
    const int L = static_cast<int>(cache.length());
    const std::string what = fmt::format("{} round {} (block {} at {})", GetParam(), r, b, L);
    const std::vector<int32_t> block = make_block(f, b);
    const std::vector<float> want = cpu.draft(block, cache);

    const PassInputs block_in = rows.upload(block, b, L, stream);
    cuda::DeviceBuffer<float> logits(static_cast<size_t>(b - 1) * vocab);
    logits.fill_bytes(0xff, stream);  // NaN, on the pass's stream
    // An exact bound on odd rounds, the capacity (as a captured graph would use) on even ones.
    const int max_seq_len = r % 2 ? L + b : static_cast<int>(g.capacity());
    g.enqueue_draft(block_in, b, max_seq_len, logits.data(), stream);
    stream.synchronize();
    worst = std::max(worst, compare_logits(logits.to_host(), want, vocab, what));

    // The controller writes the context of all b verified rows; only a + 1 are valid (the CPU commits those).
    const std::vector<float> fresh = random_normal(static_cast<size_t>(b) * cpu_width);
    const std::vector<float> padded = pad_features(f, fresh, b);
    TACHYON_CUDA_CHECK(cudaMemcpyAsync(features_dev.data(), padded.data(), padded.size() * sizeof(float),
                                       cudaMemcpyHostToDevice, stream));
    g.enqueue_context(features_dev.data(), rows.upload({}, b, L, stream), b, L + b, stream);
    stream.synchronize();  // `padded` is pageable: the copy above is staged already, but keep the rounds apart
    cpu.add_context(fresh.data(), accepted + 1, cache);
    if (rollback > 0) cache.truncate(cache.length() - rollback);
  }
  std::printf("[ margin   ] %s: worst slot error %.3g of max |logit| (bound %.3g)\n", GetParam().c_str(), worst,
              kBound);
}

// enqueue_context + enqueue_draft captured once as a CUDA graph with device-side positions, replayed at two
// different lengths (the second an overwrite of earlier rows), each replay matching the CPU.
TEST_P(GpuDrafterTest, GraphReplayAtTwoPositionsMatchesCpu) {
  SKIP_WITHOUT_GPU();
  gpu_test::reseed_for_current_test();
  DrafterFixture& f = fixture(GetParam());
  GpuDrafter& g = *f.gpu_drafter;
  const DFlashDrafter& cpu = *f.cpu_drafter;
  const int cpu_width = f.features * f.hidden, vocab = f.vocab;
  const int n_context = 3, b = 8;
  cuda::Stream stream;
  KvCache cache = cpu.new_cache(kCapacity);

  // 58 rows of context first, so that the first replay's block [61, 69) crosses the page boundary at 64.
  const int prefix = 58;
  const std::vector<float> prefix_features = random_normal(static_cast<size_t>(prefix) * cpu_width);
  cpu.add_context(prefix_features.data(), prefix, cache);
  cuda::DeviceBuffer<float> prefix_dev = upload(pad_features(f, prefix_features, prefix), stream);
  g.add_context(prefix_dev.data(), prefix, 0, stream);

  // Each upload rewrites the same device arrays, so the inputs captured once follow every later upload.
  SingleSequencePassInputs context_rows, block_rows;
  cuda::DeviceBuffer<float> features_dev(static_cast<size_t>(kMaxPassTokens) * g.feature_width());
  cuda::DeviceBuffer<float> logits_dev(static_cast<size_t>(b - 1) * vocab);
  const int bound = static_cast<int>(g.capacity());
  // One eager run first (any first-call kernel setup happens outside the capture), at positions the first replay
  // rewrites.
  features_dev.fill_bytes(0, stream);
  const PassInputs context_in = context_rows.upload({}, n_context, prefix, stream);
  const PassInputs block_in = block_rows.upload(make_block(f, b), b, prefix + n_context, stream);
  auto enqueue = [&] {
    g.enqueue_context(features_dev.data(), context_in, n_context, bound, stream);
    g.enqueue_draft(block_in, b, bound, logits_dev.data(), stream);
  };
  enqueue();
  stream.synchronize();

  TACHYON_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  cudaGraph_t graph = nullptr;
  try {
    enqueue();
  } catch (...) {
    cudaStreamEndCapture(stream, &graph);
    if (graph) cudaGraphDestroy(graph);
    throw;
  }
  TACHYON_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  TACHYON_CUDA_CHECK(status);

  for (const int start : {prefix, 20}) {
    const std::string what = fmt::format("{} graph replay, context at {}", GetParam(), start);
    cache.truncate(start);  // the second replay rewrites rows the first one (and the prefix) wrote
    const std::vector<float> fresh = random_normal(static_cast<size_t>(n_context) * cpu_width);
    cpu.add_context(fresh.data(), n_context, cache);
    const std::vector<int32_t> block = make_block(f, b);
    const std::vector<float> want = cpu.draft(block, cache);

    const std::vector<float> padded = pad_features(f, fresh, n_context);
    TACHYON_CUDA_CHECK(cudaMemcpyAsync(features_dev.data(), padded.data(), padded.size() * sizeof(float),
                                       cudaMemcpyHostToDevice, stream));
    context_rows.upload({}, n_context, start, stream);
    block_rows.upload(block, b, start + n_context, stream);
    logits_dev.fill_bytes(0xff, stream);  // NaN
    TACHYON_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    stream.synchronize();
    const double error = compare_logits(logits_dev.to_host(), want, vocab, what);
    std::printf("[ margin   ] %s: worst slot error %.3g (bound %.3g)\n", what.c_str(), error, kBound);
  }
  cudaGraphExecDestroy(exec);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuDrafterTest,
                         testing::Values("qwen3", "llama_sliding", "llama_sliding_bidirectional",
                                         "qwen3_causal_softcap"));

// The config checks are the CPU drafter's (read_dflash_drafter_config), plus the GPU's own limit on head_dim.
TEST(GpuDrafterConfig, RefusesWhatTheGpuCannotRun) {
  SKIP_WITHOUT_GPU();
  DrafterFixture& f = fixture("qwen3");
  auto expect_error = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& needle) {
    Checkpoint copy;
    copy.path = f.drafter_source.path;
    copy.config = f.drafter_source.config;
    edit(copy.config);
    for (const auto& [name, tensor] : f.drafter_source.weights.all()) copy.weights.add(tensor);
    try {
      GpuDrafter drafter(copy, *f.gpu_target, 64);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([](nlohmann::json& c) { c["head_dim"] = 256; }, "head_dim");
  expect_error([](nlohmann::json& c) { c["hidden_size"] = 64; }, "hidden_size");
  expect_error([](nlohmann::json& c) { c["dflash_config"]["target_layer_ids"] = {0, 2}; }, "target_layer_ids");
}

}  // namespace
}  // namespace tachyon::gpu
