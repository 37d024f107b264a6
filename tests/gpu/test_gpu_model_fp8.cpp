// The GPU model runner with FP8 dense weights (`--fp8`, src/gpu/fp8_weights.h) on tiny fixtures, against the CPU
// backend on exactly the GPU's weights: the chosen matrices quantized by the CPU quantizer (fp4/fp8_blocks.h) in the
// GPU's padded layout (head_dim padded to 64, hidden to a multiple of 64; tiles over that layout, as the loader
// quantizes), dequantized and cropped; everything else rounded to bf16 as in test_gpu_model_tiny.cpp. The GPU's
// decode and verify products read the FP8 codes; its prefill GEMMs read the bf16 rounding of the same values.
// Bounds, router near-tie rule and greedy tie rule as test_gpu_model_tiny.cpp.
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include "fp4/fp4_checkpoint.h"
#include "fp4/fp8_blocks.h"
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


// values [rows, cols] <- the FP8 round trip of the matrix as the GPU stores it: row r at (r / rg) * rgp + r % rg,
// columns alike, zeros elsewhere.
void fp8_round_trip_padded(float* values, int64_t rows, int64_t cols, int64_t rg, int64_t rgp, int64_t cg, int64_t cgp) {
  const int64_t prows = rows / rg * rgp, pcols = cols / cg * cgp;
  std::vector<float> padded(static_cast<size_t>(prows * pcols), 0.0f);
  auto at = [&](int64_t r, int64_t c) { return (r / rg * rgp + r % rg) * pcols + c / cg * cgp + c % cg; };
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) padded[at(r, c)] = values[r * cols + c];
  const fp4::Fp8BlockMatrix q = fp4::quantize_fp8_block(padded.data(), prows, pcols, "reference");
  q.to_float(padded.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) values[r * cols + c] = padded[at(r, c)];
}

std::unique_ptr<RoundedCheckpoint> fp8_reference(const Checkpoint& source, const GpuModelConfig& g) {
  auto out = round_matrices_to_bf16(source);
  const int64_t H = g.hidden, Hp = g.hidden_padded, hd = g.head_dim, hdp = g.head_dim_padded;
  const int64_t I = g.intermediate, Ip = g.intermediate_padded;
  int quantized = 0;
  for (const auto& [name, tensor] : out->checkpoint.weights.all()) {
    if (tensor.shape.size() != 2 || tensor.dtype != DType::F32) continue;
    float* v = const_cast<float*>(reinterpret_cast<const float*>(tensor.data));
    const int64_t rows = tensor.shape[0], cols = tensor.shape[1];
    const bool dense_mlp = name.find(".experts.") == std::string::npos;
    if (g.fp8.attention && (name.ends_with("self_attn.q_proj.weight") || name.ends_with("self_attn.k_proj.weight") ||
                            name.ends_with("self_attn.v_proj.weight")))
      fp8_round_trip_padded(v, rows, cols, hd, hdp, H, Hp);
    else if (g.fp8.attention && name.ends_with("self_attn.o_proj.weight"))
      fp8_round_trip_padded(v, rows, cols, H, Hp, hd, hdp);
    else if (g.fp8.mlp && dense_mlp && (name.ends_with("mlp.gate_proj.weight") || name.ends_with("mlp.up_proj.weight")))
      fp8_round_trip_padded(v, rows, cols, I, Ip, H, Hp);
    else if (g.fp8.mlp && dense_mlp && name.ends_with("mlp.down_proj.weight"))
      fp8_round_trip_padded(v, rows, cols, H, Hp, I, Ip);
    else if (g.fp8.lm_head && name == "lm_head.weight")
      fp8_round_trip_padded(v, rows, cols, rows, rows, H, Hp);
    else
      continue;
    ++quantized;
  }
  EXPECT_GT(quantized, 0) << "no FP8 matrix found in " << source.path;
  return out;
}

struct Fp8Fixture : TinyReference {
  Checkpoint checkpoint;
  Fp8Weights fp8;
  std::unique_ptr<RoundedCheckpoint> reference;
  std::unique_ptr<Model> cpu;
};

// Fixture -> the weight groups it can take as FP8 (tied embeddings keep a bf16 lm_head in this test: the CPU
// reference cannot quantize the lm_head without the embedding; MoE fixtures have no dense MLP).
const std::map<std::string, std::string>& fixture_groups() {
  static const std::map<std::string, std::string> groups = {{"llama", "attention,mlp,lm_head"},
                                                            {"qwen2", "attention,mlp,lm_head"},
                                                            {"qwen3", "attention,mlp"},
                                                            {"qwen3_moe", "attention,lm_head"},
                                                            {"gpt_oss", "attention,lm_head"}};
  return groups;
}

std::unique_ptr<GpuModel> gpu_model(const Fp8Fixture& f) {
  GpuModelOptions options;
  options.kv_positions = 256;
  options.record_router_margins = true;
  options.fp8 = f.fp8;
  return GpuModel::load(f.checkpoint, options);
}

Fp8Fixture& fixture(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Fp8Fixture>> cache;
  auto& slot = cache[name];
  if (!slot) {
    slot = std::make_unique<Fp8Fixture>();
    const std::string dir = test::fixture_path("tiny/" + name);
    slot->checkpoint = open_checkpoint(dir);
    slot->fp8 = parse_fp8_weights(fixture_groups().at(name), name);
    GpuModelConfig config = read_gpu_model_config(slot->checkpoint.config, name);
    set_fp8_weights(config, slot->fp8, name);
    slot->reference = fp8_reference(slot->checkpoint, config);
    slot->cpu = create_model(slot->reference->checkpoint);
    read_tiny_reference(dir, *slot);
  }
  return *slot;
}

class GpuFp8TinyModel : public testing::TestWithParam<std::string> {};

TEST_P(GpuFp8TinyModel, HoldsFp8CopiesOfTheChosenMatrices) {
  SKIP_WITHOUT_GPU();
  Fp8Fixture& f = fixture(GetParam());
  auto model = gpu_model(f);
  const GpuModelConfig& c = model->config();
  EXPECT_EQ(c.hidden_padded % 64, 0);
  EXPECT_EQ(model->weights().lm_head_fp8.codes != nullptr, f.fp8.lm_head);
  for (int layer = 0; layer < c.layers; ++layer) {
    const GpuLayerWeights& L = model->weights().layers[layer];
    EXPECT_EQ(L.qkv_fp8.codes != nullptr, f.fp8.attention);
    EXPECT_EQ(L.o_fp8.codes != nullptr, f.fp8.attention);
    EXPECT_EQ(L.gate_fp8.codes != nullptr, f.fp8.mlp && !c.is_sparse(layer));
  }
}

TEST_P(GpuFp8TinyModel, PrefillLogitsMatchCpu) {
  SKIP_WITHOUT_GPU();
  Fp8Fixture& f = fixture(GetParam());
  auto model = gpu_model(f);
  const std::vector<float> gpu = model->prefill_to_host(f.prompt, /*all_rows=*/true);
  KvCache cache = f.cpu->new_cache();
  const std::vector<float> cpu = f.cpu->forward(f.prompt, cache, /*all_rows=*/true);
  const double error = expect_rows_within(gpu, cpu, f.vocab, kCpuBound, model->prefill_router_margins(), kFlipMargin,
                                          kMaxFlips, GetParam() + " FP8 prefill vs CPU");
  std::printf("[ %s ] FP8 prefill logits (GEMMs on the bf16-rounded FP8 values): vs CPU %.3g\n", GetParam().c_str(),
              error);
}

TEST_P(GpuFp8TinyModel, PassAndStepsThroughTheFp8GemvMatchCpu) {
  SKIP_WITHOUT_GPU();
  Fp8Fixture& f = fixture(GetParam());
  auto model = gpu_model(f);
  KvCache cache = f.cpu->new_cache();
  const auto [gpu_rows, cpu_rows] = pass_then_steps(*model, *f.cpu, cache, f.prompt, f.prompt.size() / 2);
  auto probe = gpu_model(f);
  probe->prefill_to_host(f.prompt, /*all_rows=*/true);
  const double error = expect_rows_within(gpu_rows, cpu_rows, f.vocab, kCpuBound, probe->prefill_router_margins(),
                                          kFlipMargin, kMaxFlips, GetParam() + " FP8 pass + steps vs CPU");
  std::printf("[ %s ] 16-token pass + single steps (FP8 gemv): vs CPU %.3g\n", GetParam().c_str(), error);
}

TEST_P(GpuFp8TinyModel, GreedyGraphDecodeMatchesCpu) {
  SKIP_WITHOUT_GPU();
  Fp8Fixture& f = fixture(GetParam());
  auto model = gpu_model(f);
  auto probe = gpu_model(f);
  expect_graph_greedy_matches_cpu(*model, *probe, *f.cpu, f.prompt, static_cast<int>(f.reference_greedy.size()),
                                  GetParam() + " FP8 greedy vs CPU");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuFp8TinyModel,
                         testing::Values("llama", "qwen2", "qwen3", "qwen3_moe", "gpt_oss"),
                         [](const testing::TestParamInfo<std::string>& info) { return info.param; });

// An FP8 checkpoint on disk (`tachyon quantize --attention fp8 --mlp fp8` of a small llama whose shapes need no
// padding: hidden 128, head_dim 64) loaded with --fp8: the GPU's requantization of the dequantized weights meets the
// file's own tiles, so it keeps the file's codes (checked byte for byte; the scales move by bf16's rounding, <= 2^-9),
// and the model matches the CPU reading the same file. (Where the GPU pads heads or widths its tiles differ from the
// file's and the weights are quantized a second time: docs/fp4.md "FP8".)
TEST(GpuFp8Checkpoint, AnFp8FileKeepsItsCodesOnTheGpuAndMatchesCpuOnIt) {
  SKIP_WITHOUT_GPU();
  auto empty = std::make_shared<Checkpoint>();
  empty->path = "memory";
  empty->format = "safetensors";
  empty->config = nlohmann::json::parse(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
      "num_key_value_heads": 1, "head_dim": 64, "vocab_size": 256, "max_position_embeddings": 512,
      "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false})");
  fp4::DerivedCheckpoint source(empty);
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  auto fill = [&](const std::string& name, std::vector<int64_t> shape, float stddev, float mean = 0.0f) {
    float* p = source.add_float(name, shape);
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    for (int64_t i = 0; i < n; ++i) p[i] = mean + stddev * normal(rng);
  };
  fill("model.embed_tokens.weight", {256, 128}, 1.0f);
  fill("lm_head.weight", {256, 128}, 0.08f);
  fill("model.norm.weight", {128}, 0.1f, 1.0f);
  for (int layer = 0; layer < 2; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    fill(prefix + "input_layernorm.weight", {128}, 0.1f, 1.0f);
    fill(prefix + "post_attention_layernorm.weight", {128}, 0.1f, 1.0f);
    fill(prefix + "self_attn.q_proj.weight", {128, 128}, 0.08f);
    fill(prefix + "self_attn.k_proj.weight", {64, 128}, 0.08f);
    fill(prefix + "self_attn.v_proj.weight", {64, 128}, 0.08f);
    fill(prefix + "self_attn.o_proj.weight", {128, 128}, 0.08f);
    fill(prefix + "mlp.gate_proj.weight", {256, 128}, 0.08f);
    fill(prefix + "mlp.up_proj.weight", {256, 128}, 0.08f);
    fill(prefix + "mlp.down_proj.weight", {128, 256}, 0.06f);
  }
  std::string scratch = (std::filesystem::temp_directory_path() / "tachyon-gpu-fp8-XXXXXX").string();
  ASSERT_NE(::mkdtemp(scratch.data()), nullptr);
  struct Remove {
    std::string dir;
    ~Remove() { std::filesystem::remove_all(dir); }
  } remove{scratch};
  fp4::QuantizeOptions quantize;
  quantize.attention_fp8 = quantize.mlp_fp8 = true;
  fp4::write_quantized_checkpoint(source.checkpoint(), scratch + "/fp8", quantize, fp4::WriteOptions{});
  const Checkpoint file = open_checkpoint(scratch + "/fp8");
  const std::vector<fp4::Fp8Linear> linears = fp4::find_fp8_linears(file.weights);
  ASSERT_EQ(linears.size(), 14u);  // 2 layers x (q, k, v, o, gate, up, down)

  GpuModelOptions options;
  options.kv_positions = 256;
  options.fp8 = parse_fp8_weights("attention,mlp", "test");
  auto model = GpuModel::load(file, options);
  // The q rows of layer 0's fused qkv codes on the GPU are the file's q_proj codes.
  std::vector<uint8_t> q_codes(128 * 128);
  TACHYON_CUDA_CHECK(cudaMemcpy(q_codes.data(), model->weights().layers[0].qkv_fp8.codes, q_codes.size(),
                                cudaMemcpyDeviceToHost));
  const TensorView& q_file = file.weights.get("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(std::memcmp(q_codes.data(), q_file.data, q_codes.size()), 0) << "the GPU requantized q_proj to other codes";

  // CPU reference: the file, other matrices rounded to bf16 as the GPU stores them, the FP8 ones exact.
  const auto presented = fp4::present_fp4_as_float(std::make_shared<const Checkpoint>(file));
  const auto reference = round_matrices_to_bf16(presented->checkpoint());
  for (const fp4::Fp8Linear& linear : linears)
    linear.to_float(const_cast<float*>(reinterpret_cast<const float*>(reference->checkpoint.weights.get(linear.weight->name).data)));
  const std::unique_ptr<Model> cpu = create_model(reference->checkpoint);
  std::vector<int32_t> prompt(40);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 37 + 11) % 256);
  KvCache cache = cpu->new_cache();
  const auto [gpu_rows, cpu_rows] = pass_then_steps(*model, *cpu, cache, prompt, 16);
  const double error = expect_rows_within(gpu_rows, cpu_rows, 256, kCpuBound, {}, kFlipMargin, 0, "FP8 file: GPU vs CPU");
  std::printf("[ llama-128 FP8 checkpoint ] 16-token pass + steps vs CPU on the file: %.3g\n", error);
}

}  // namespace
}  // namespace tachyon::gpu
