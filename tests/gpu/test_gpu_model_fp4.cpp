// The GPU model runner with FP4 routed experts (src/gpu/fp4_experts.h): the tiny Qwen3-MoE fixtures loaded with
// their experts quantized to NVFP4 / MXFP4 at load time, against the CPU backend on exactly the GPU's weights
// (experts: the same quantization, dequantized; every other matrix rounded to bf16, as test_gpu_model_tiny.cpp).
// Paths: prefill (32 tokens, GEMMs on the layer's experts dequantized to bf16), a 16-token pass + single steps and
// the graph decode loop (the fused FP4 kernels). Bounds and the router near-tie rule as in test_gpu_model_tiny.cpp:
// the hidden widths of these fixtures (32..48, experts 16) are padded to 64 here, which the FP4 tiles need.
// Plus random FP4 weights on a padded shape: deterministic, finite, graph == stream, and the FP4 decode pass agrees
// with the dequantized-bf16 prefill on the same tokens. The streamed persistent kernel's FP4 phases: single steps and
// greedy decoding of the fixtures against the CPU (its comparison with the per-op FP4 path on random weights is in
// test_persistent_decode.cpp).
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <deque>
#include <map>
#include <set>

#include <fmt/format.h>

#include "core/error.h"
#include "fp4/fp4_blocks.h"
#include "fp4/fp4_checkpoint.h"
#include "fp4/fp4_kernel_layout.h"
#include "fp4/fp4_layouts.h"
#include "fp4/quantize_checkpoint.h"
#include "gpu/decode_loop.h"
#include "gpu/fp4_experts.h"
#include "gpu/gpu_model.h"
#include "gpu_test_util.h"
#include "loader/json_file.h"
#include "test_gpu_model_util.h"
#include "../support/paths.h"

namespace tachyon::gpu {
namespace {

using namespace gpu_model_test;


// The CPU's copy of the GPU's weights: routed experts quantized exactly as the loader does (padded to the GPU's
// widths, quantized, dequantized, cropped) or, with requantize = false, taken as they are (a checkpoint's FP4
// experts presented as float32 by open_fp4_checkpoint); other matrices rounded to bf16, vectors unchanged.
std::unique_ptr<RoundedCheckpoint> fp4_reference(const Checkpoint& source, const GpuModelConfig& gpu,
                                                 bool requantize = true) {
  auto out = std::make_unique<RoundedCheckpoint>();
  Checkpoint& c = out->checkpoint;
  c.path = source.path + " (fp4 experts, bf16 rest)";
  c.format = source.format;
  c.config = source.config;
  c.generation_config = source.generation_config;
  c.weights.set_source(source.weights.source());
  int experts_quantized = 0;
  for (const auto& [name, tensor] : source.weights.all()) {
    if (!dtype_info(tensor.dtype).is_float_convertible) {
      c.weights.add(tensor);
      continue;
    }
    std::vector<float>& values = out->storage.emplace_back(tensor.to_float());
    const bool expert = name.find(".mlp.experts.") != std::string::npos && tensor.shape.size() == 2;
    if (expert && !requantize) {
      ++experts_quantized;
    } else if (expert) {
      const int64_t rows = tensor.shape[0], cols = tensor.shape[1];
      const bool down = name.find("down_proj") != std::string::npos;
      const int64_t padded_rows = down ? gpu.hidden_padded : gpu.moe_intermediate_padded;
      const int64_t padded_cols = down ? gpu.moe_intermediate_padded : gpu.hidden_padded;
      const fp4::Fp4Matrix q =
          quantize_expert_matrix(gpu.expert_format, values, rows, cols, padded_rows, padded_cols, name);
      std::vector<float> padded(static_cast<size_t>(padded_rows * padded_cols));
      q.view().to_float(padded.data());
      for (int64_t r = 0; r < rows; ++r)
        std::copy(padded.begin() + r * padded_cols, padded.begin() + r * padded_cols + cols, values.begin() + r * cols);
      ++experts_quantized;
    } else if (tensor.shape.size() >= 2) {
      for (float& v : values) v = bf16_to_float(float_to_bf16(v));
    }
    TensorView view = tensor;
    view.dtype = DType::F32;
    view.data = reinterpret_cast<const uint8_t*>(values.data());
    view.nbytes = values.size() * sizeof(float);
    c.weights.add(view);
  }
  EXPECT_GT(experts_quantized, 0) << "no expert tensors named *.mlp.experts.* in " << source.path;
  return out;
}

struct Fp4Fixture : TinyReference {
  Checkpoint checkpoint;
  std::unique_ptr<RoundedCheckpoint> reference;
  std::unique_ptr<Model> cpu;
};

std::unique_ptr<GpuModel> gpu_model(const Checkpoint& checkpoint, ExpertFormat format, bool persistent = false) {
  GpuModelOptions options;
  options.kv_positions = 256;
  options.record_router_margins = true;
  options.experts = format;
  options.persistent_decode = persistent;
  options.force_streamed_persistent = persistent;  // (FP4 experts take the streamed kernel only when forced)
  return GpuModel::load(checkpoint, options);
}

Fp4Fixture& fixture(const std::string& name, ExpertFormat format) {
  static std::map<std::string, std::unique_ptr<Fp4Fixture>> cache;
  auto& slot = cache[name + std::string(expert_format_name(format))];
  if (!slot) {
    slot = std::make_unique<Fp4Fixture>();
    const std::string dir = test::fixture_path("tiny/" + name);
    slot->checkpoint = open_checkpoint(dir);
    GpuModelConfig config = read_gpu_model_config(slot->checkpoint.config, name);
    set_expert_format(config, format, name);
    slot->reference = fp4_reference(slot->checkpoint, config);
    slot->cpu = create_model(slot->reference->checkpoint);
    read_tiny_reference(dir, *slot);
  }
  return *slot;
}

using Fp4Case = std::tuple<std::string, ExpertFormat>;
class GpuFp4TinyModel : public testing::TestWithParam<Fp4Case> {
 protected:
  std::string what() const {
    return std::get<0>(GetParam()) + " " + std::string(expert_format_name(std::get<1>(GetParam())));
  }
  // A 16-token pass (the verify path) then single-token steps of `model` against the CPU, the router near-ties of
  // these positions from `probe`'s prefill of the same tokens (a model of the same weights; it records margins).
  double expect_pass_and_steps_match_cpu(GpuModel& model, GpuModel& probe, Fp4Fixture& f,
                                         const std::string& label) const {
    KvCache cache = f.cpu->new_cache();
    const auto [gpu_rows, cpu_rows] = pass_then_steps(model, *f.cpu, cache, f.prompt, f.prompt.size() / 2);
    probe.prefill_to_host(f.prompt, /*all_rows=*/true);
    return expect_rows_within(gpu_rows, cpu_rows, f.vocab, kCpuBound, probe.prefill_router_margins(), kFlipMargin,
                              kMaxFlips, what() + " " + label);
  }
};

TEST_P(GpuFp4TinyModel, ConfigIsPaddedForTheTiles) {
  SKIP_WITHOUT_GPU();
  Fp4Fixture& f = fixture(std::get<0>(GetParam()), std::get<1>(GetParam()));
  auto model = gpu_model(f.checkpoint, std::get<1>(GetParam()));
  const GpuModelConfig& c = model->config();
  EXPECT_EQ(c.expert_format, std::get<1>(GetParam()));
  EXPECT_EQ(c.hidden_padded % 64, 0);
  EXPECT_EQ(c.moe_intermediate_padded % 64, 0);
  for (int layer = 0; layer < c.layers; ++layer) {
    if (!c.is_sparse(layer)) continue;
    const GpuLayerWeights& L = model->weights().layers[layer];
    EXPECT_EQ(L.expert_gate_up, nullptr);
    EXPECT_NE(L.fp4_gate.tiles, nullptr);
    EXPECT_EQ(L.fp4_down.rows, c.hidden_padded);
  }
}

TEST_P(GpuFp4TinyModel, PrefillLogitsMatchCpu) {
  SKIP_WITHOUT_GPU();
  Fp4Fixture& f = fixture(std::get<0>(GetParam()), std::get<1>(GetParam()));
  auto model = gpu_model(f.checkpoint, std::get<1>(GetParam()));
  const std::vector<float> gpu = model->prefill_to_host(f.prompt, /*all_rows=*/true);
  KvCache cache = f.cpu->new_cache();
  const std::vector<float> cpu = f.cpu->forward(f.prompt, cache, /*all_rows=*/true);
  const double error = expect_rows_within(gpu, cpu, f.vocab, kCpuBound, model->prefill_router_margins(), kFlipMargin,
                                          kMaxFlips, what() + " prefill vs CPU");
  std::printf("[ %s ] prefill logits (experts dequantized to bf16): vs CPU %.3g\n", what().c_str(), error);
}

TEST_P(GpuFp4TinyModel, PassAndStepsThroughFp4KernelsMatchCpu) {
  SKIP_WITHOUT_GPU();
  Fp4Fixture& f = fixture(std::get<0>(GetParam()), std::get<1>(GetParam()));
  auto model = gpu_model(f.checkpoint, std::get<1>(GetParam()));
  auto probe = gpu_model(f.checkpoint, std::get<1>(GetParam()));
  // All through the fused FP4 kernels.
  const double error = expect_pass_and_steps_match_cpu(*model, *probe, f, "16-token pass + steps vs CPU");
  std::printf("[ %s ] 16-token pass + single steps (fused FP4 kernels): vs CPU %.3g\n", what().c_str(), error);
}

TEST_P(GpuFp4TinyModel, GreedyGraphDecodeMatchesCpu) {
  SKIP_WITHOUT_GPU();
  Fp4Fixture& f = fixture(std::get<0>(GetParam()), std::get<1>(GetParam()));
  auto model = gpu_model(f.checkpoint, std::get<1>(GetParam()));
  auto probe = gpu_model(f.checkpoint, std::get<1>(GetParam()));
  expect_graph_greedy_matches_cpu(*model, *probe, *f.cpu, f.prompt, static_cast<int>(f.reference_greedy.size()),
                                  what() + " greedy vs CPU");
}

// Single steps and the graph decode loop through the streamed persistent kernel (its FP4 expert phases), against the
// CPU on the same weights.
TEST_P(GpuFp4TinyModel, StreamedPersistentStepsMatchCpu) {
  SKIP_WITHOUT_GPU();
  Fp4Fixture& f = fixture(std::get<0>(GetParam()), std::get<1>(GetParam()));
  auto model = gpu_model(f.checkpoint, std::get<1>(GetParam()), /*persistent=*/true);
  ASSERT_EQ(model->persistent_kernel_name(), "streamed") << model->persistent_decode_unsupported();
  auto probe = gpu_model(f.checkpoint, std::get<1>(GetParam()));
  const double error = expect_pass_and_steps_match_cpu(*model, *probe, f, "streamed persistent steps vs CPU");
  std::printf("[ %s ] 16-token pass + streamed persistent single steps: vs CPU %.3g\n", what().c_str(), error);
  model->truncate(0);
  expect_graph_greedy_matches_cpu(*model, *probe, *f.cpu, f.prompt, static_cast<int>(f.reference_greedy.size()),
                                  what() + " streamed persistent greedy vs CPU");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuFp4TinyModel,
                         testing::Combine(testing::Values("qwen3_moe", "qwen3_moe_unnormalized"),
                                          testing::Values(ExpertFormat::Nvfp4, ExpertFormat::Mxfp4)),
                         [](const testing::TestParamInfo<Fp4Case>& info) {
                           return std::get<0>(info.param) + "_" +
                                  std::string(expert_format_name(std::get<1>(info.param)));
                         });

// A small Qwen3-MoE shape needing padding (hidden 96 -> 128, expert width 40 -> 64, head_dim 48 -> 64).
nlohmann::json padded_moe_config() {
  return nlohmann::json::parse(R"({
    "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 96, "intermediate_size": 100,
    "moe_intermediate_size": 40, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 48, "num_experts": 16, "num_experts_per_tok": 4, "norm_topk_prob": true, "mlp_only_layers": [1],
    "vocab_size": 1000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0})");
}

std::vector<int32_t> decode_tokens(GpuModel& model, const std::vector<int32_t>& prompt, int steps, bool use_graph) {
  model.truncate(0);
  DecodeLoop loop(model, DecodeSampling{});
  loop.start(prompt);
  loop.enqueue(steps, use_graph);
  return loop.tokens();
}

TEST(GpuRandomWeightsFp4, DeterministicFiniteGraphEqualsStreamAndPassAgreesWithPrefill) {
  SKIP_WITHOUT_GPU();
  for (ExpertFormat format : {ExpertFormat::Nvfp4, ExpertFormat::Mxfp4}) {
    const std::string what = std::string("random ") + std::string(expert_format_name(format));
    GpuModelOptions options;
    options.kv_positions = 256;
    options.experts = format;
    options.record_router_margins = true;
    auto a = GpuModel::random(padded_moe_config(), "padded moe", 42, options);
    auto b = GpuModel::random(padded_moe_config(), "padded moe", 42, options);
    EXPECT_EQ(a->config().hidden_padded, 128);
    EXPECT_EQ(a->config().moe_intermediate_padded, 64);
    std::vector<int32_t> prompt(40);
    for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 37 + 11) % 1000);
    const std::vector<float> la = a->prefill_to_host(prompt, true), lb = b->prefill_to_host(prompt, true);
    ASSERT_EQ(la.size(), lb.size());
    EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)), 0)
        << what << ": same seed, different logits";
    double spread = 0;
    for (float v : la) {
      ASSERT_TRUE(std::isfinite(v)) << what;
      spread = std::max(spread, static_cast<double>(std::fabs(v)));
    }
    EXPECT_GT(spread, 0.0) << what << ": all-zero logits";
    // The first 16 tokens through the fused FP4 kernels against the prefill's bf16-dequantized experts.
    auto c = GpuModel::random(padded_moe_config(), "padded moe", 42, options);
    const int vocab = c->config().vocab;
    const std::vector<float> pass = c->forward_to_host(std::span<const int32_t>(prompt).first(16));
    const std::vector<float> prefill_rows(la.begin(), la.begin() + 16 * vocab);
    const double error = expect_rows_within(pass, prefill_rows, vocab, kCpuBound, a->prefill_router_margins(),
                                            kFlipMargin, kMaxFlips, what + " FP4 pass vs dequantized prefill");
    std::printf("[ %s ] 16-token FP4 pass vs bf16-dequantized prefill: %.3g\n", what.c_str(), error);
    const std::vector<int32_t> graph = decode_tokens(*a, prompt, 24, true);
    const std::vector<int32_t> stream = decode_tokens(*a, prompt, 24, false);
    EXPECT_EQ(graph, stream) << what << ": graph and stream launches decode differently";
    const auto routing = a->last_routing(1);
    ASSERT_EQ(routing[0].size(), 4u);
    EXPECT_EQ(std::set<int>(routing[0].begin(), routing[0].end()).size(), 4u);
  }
}

TEST(GpuFp4ExpertsConfig, DenseModelsRefuseFp4Experts) {
  GpuModelConfig config;
  config.architecture = "LlamaForCausalLM";
  EXPECT_THROW(set_expert_format(config, ExpertFormat::Nvfp4, "test"), Error);
  EXPECT_NO_THROW(set_expert_format(config, ExpertFormat::Bf16, "test"));
  EXPECT_EQ(parse_expert_format("mxfp4", "test"), ExpertFormat::Mxfp4);
  EXPECT_THROW(parse_expert_format("fp8", "test"), Error);
}

// A fresh directory under the system temp dir, removed at scope exit.
struct ScratchDir {
  std::string path;
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "tachyon-gpu-fp4-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

// A checkpoint that already stores NVFP4 experts (written by `tachyon quantize`'s writer in both NVFP4 layouts):
// the GPU packs its codes, block scales and global scales as they are, and runs like the CPU on the same values.
TEST(GpuFp4Checkpoint, StoredNvfp4ExpertsLoadWithoutRequantizingAndMatchCpu) {
  SKIP_WITHOUT_GPU();
  const Checkpoint source = open_checkpoint(test::fixture_path("tiny/qwen3_moe"));
  const nlohmann::json fixture_reference = read_json_file(test::fixture_path("tiny/qwen3_moe/reference.json"));
  const std::vector<int32_t> prompt = fixture_reference["prompt_ids"].get<std::vector<int32_t>>();
  for (fp4::Fp4Layout layout : {fp4::Fp4Layout::ModelOpt, fp4::Fp4Layout::CompressedTensors}) {
    const std::string what = "stored nvfp4 (" + std::string(fp4::layout_name(layout)) + ")";
    ScratchDir dir;
    fp4::QuantizeOptions quantize;
    quantize.experts = fp4::Fp4Format::Nvfp4;
    quantize.nvfp4_layout = layout;
    fp4::WriteOptions write;
    write.other_dtype = DType::F32;
    fp4::write_quantized_checkpoint(source, dir.path + "/out", quantize, write);
    const Checkpoint stored = open_checkpoint(dir.path + "/out");
    auto model = gpu_model(stored, ExpertFormat::Nvfp4);
    const GpuModelConfig& c = model->config();

    std::map<std::string, fp4::Fp4MatrixView> linears;
    for (const fp4::Fp4Linear& l : fp4::find_fp4_linears(stored.weights)) linears[l.base] = l.matrix;
    ASSERT_FALSE(linears.empty()) << what;
    for (int layer = 0; layer < c.layers; ++layer) {
      if (!c.is_sparse(layer)) continue;
      const GpuLayerWeights& L = model->weights().layers[layer];
      for (int e : {0, c.experts - 1}) {
        const fp4::Fp4MatrixView& view = linears.at(fmt::format("model.layers.{}.mlp.experts.{}.up_proj", layer, e));
        const std::vector<uint8_t> want =
            fp4::pack_kernel_tiles(pad_fp4_matrix(view, c.moe_intermediate_padded, c.hidden_padded, "up").view());
        std::vector<uint8_t> got(want.size());
        float global = 0;
        TACHYON_CUDA_CHECK(cudaMemcpy(got.data(), L.fp4_up.tiles + e * L.fp4_up.expert_stride, got.size(),
                                      cudaMemcpyDeviceToHost));
        TACHYON_CUDA_CHECK(cudaMemcpy(&global, L.fp4_up.global_scales + e, sizeof(float), cudaMemcpyDeviceToHost));
        EXPECT_EQ(got, want) << what << ": layer " << layer << " expert " << e << " tiles differ from the stored codes";
        EXPECT_EQ(global, view.global_scale) << what;
      }
    }

    // Against the CPU on the presented checkpoint: experts exactly the stored FP4 values, the rest bf16-rounded.
    auto presented = fp4::open_fp4_checkpoint(dir.path + "/out");
    auto reference = fp4_reference(presented->checkpoint(), c, /*requantize=*/false);
    auto cpu = create_model(reference->checkpoint);
    const int vocab = c.vocab;
    const std::vector<float> gpu_prefill = model->prefill_to_host(prompt, /*all_rows=*/true);
    KvCache cache = cpu->new_cache();
    const std::vector<float> cpu_prefill = cpu->forward(prompt, cache, /*all_rows=*/true);
    const double prefill_error = expect_rows_within(gpu_prefill, cpu_prefill, vocab, kCpuBound,
                                                    model->prefill_router_margins(), kFlipMargin, kMaxFlips,
                                                    what + " prefill vs CPU");
    auto pass_model = gpu_model(stored, ExpertFormat::Nvfp4);
    const std::vector<float> gpu_pass = pass_model->forward_to_host(std::span<const int32_t>(prompt).first(16));
    const std::vector<float> cpu_pass(cpu_prefill.begin(), cpu_prefill.begin() + 16 * vocab);
    const double pass_error = expect_rows_within(gpu_pass, cpu_pass, vocab, kCpuBound, model->prefill_router_margins(),
                                                 kFlipMargin, kMaxFlips, what + " 16-token pass vs CPU");
    std::printf("[ %s ] tiles == stored codes; prefill vs CPU %.3g, 16-token FP4 pass vs CPU %.3g\n", what.c_str(),
                prefill_error, pass_error);
  }
}

}  // namespace
}  // namespace tachyon::gpu
