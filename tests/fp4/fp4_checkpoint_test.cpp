// Reading FP4 checkpoints: files written by Python (safetensors + torch float8 dtypes, as ModelOpt and
// compressed-tensors write them) presented to the models as float32 weights; files written by
// `tachyon quantize` read back to exactly the weights the in-memory quantization gives; malformed
// tensors rejected with errors that name them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include "core/error.h"
#include "fp4/fp4_checkpoint.h"
#include "fp4/fp8_blocks.h"
#include "fp4/quantize_checkpoint.h"
#include "fp4/safetensors_writer.h"
#include "fp4_test_util.h"
#include "loader/safetensors.h"

namespace tachyon::fp4 {
namespace {

using test::floats_from_bits;
using test::to_bits;

std::shared_ptr<Checkpoint> load_dir_without_config(const std::string& dir) {
  auto checkpoint = std::make_shared<Checkpoint>();
  checkpoint->path = dir;
  checkpoint->format = "safetensors";
  checkpoint->config = nlohmann::json::object();
  load_safetensors_file(dir + "/model.safetensors", checkpoint->weights);
  return checkpoint;
}

// Writes `tensors` (every byte 0x11) as dir/model.safetensors and returns what present_fp4_as_float says of the
// file: its error, or "(no error)".
std::string present_error(const test::ScratchDir& dir, const std::vector<PlannedTensor>& tensors) {
  write_safetensors(dir.path("model.safetensors"), tensors,
                    [&](size_t i, std::vector<uint8_t>& bytes) { bytes.assign(tensors[i].nbytes(), 0x11); });
  try {
    present_fp4_as_float(load_dir_without_config(dir.path()));
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<float> tensor_values(const Checkpoint& c, const std::string& name) { return c.weights.get(name).to_float(); }

// Every tensor of `want` is in `got` with the same shape and the same float bits (a written file read back against
// the in-memory quantization).
void expect_same_tensors(const Checkpoint& want, const Checkpoint& got) {
  for (const auto& [name, tensor] : want.weights.all()) {
    SCOPED_TRACE(name);
    const TensorView& back = got.weights.get(name);
    ASSERT_EQ(back.shape, tensor.shape);
    const std::vector<float> want_values = tensor.to_float(), got_values = back.to_float();
    for (size_t i = 0; i < want_values.size(); ++i) ASSERT_EQ(to_bits(got_values[i]), to_bits(want_values[i])) << i;
  }
}

TEST(Fp4Checkpoint, ModelOptFileFromPython) {
  const auto expected = test::read_json(test::fp4_fixture("checkpoints_expected.json"));
  auto base = load_dir_without_config(test::fp4_fixture("modelopt_tiny"));
  const std::vector<Fp4Linear> linears = find_fp4_linears(base->weights);
  ASSERT_EQ(linears.size(), 1u);
  EXPECT_EQ(linears[0].base, "model.layers.0.mlp.up_proj");
  EXPECT_EQ(linears[0].layout, Fp4Layout::ModelOpt);
  EXPECT_EQ(linears[0].matrix.format, Fp4Format::Nvfp4);
  auto presented = present_fp4_as_float(base);
  const Checkpoint& c = presented->checkpoint();
  const TensorView& up = c.weights.get("model.layers.0.mlp.up_proj.weight", {8, 64});
  EXPECT_EQ(up.dtype, DType::F32);
  const std::vector<float> values = up.to_float(), want = floats_from_bits(expected["nvfp4_bits"]);
  for (size_t i = 0; i < values.size(); ++i) ASSERT_EQ(to_bits(values[i]), to_bits(want[i])) << i;
  EXPECT_FALSE(c.weights.has("model.layers.0.mlp.up_proj.weight_scale"));
  EXPECT_FALSE(c.weights.has("model.layers.0.mlp.up_proj.input_scale"));
  const std::vector<float> other = tensor_values(c, "model.layers.0.self_attn.o_proj.weight");
  const std::vector<float> other_want = floats_from_bits(expected["other_bits"]);
  for (size_t i = 0; i < other.size(); ++i) ASSERT_EQ(to_bits(other[i]), to_bits(other_want[i]));
}

TEST(Fp4Checkpoint, CompressedTensorsFileFromPython) {
  const auto expected = test::read_json(test::fp4_fixture("checkpoints_expected.json"));
  auto presented = present_fp4_as_float(load_dir_without_config(test::fp4_fixture("compressed_tensors_tiny")));
  const Checkpoint& c = presented->checkpoint();
  // NVFP4: the stored global scale is the inverse; 1 / (1 / s) may differ from s by one ulp.
  const std::vector<float> up = tensor_values(c, "model.layers.0.mlp.up_proj.weight");
  const std::vector<float> up_want = floats_from_bits(expected["nvfp4_bits"]);
  ASSERT_EQ(up.size(), up_want.size());
  for (size_t i = 0; i < up.size(); ++i) ASSERT_NEAR(up[i], up_want[i], 2.5e-7 * std::fabs(up_want[i])) << i;
  // MXFP4: exact.
  const std::vector<float> down = tensor_values(c, "model.layers.0.mlp.down_proj.weight");
  const std::vector<float> down_want = floats_from_bits(expected["mxfp4_bits"]);
  ASSERT_EQ(down.size(), down_want.size());
  for (size_t i = 0; i < down.size(); ++i) ASSERT_EQ(to_bits(down[i]), to_bits(down_want[i])) << i;
}

// A tiny Mixtral-shaped checkpoint in memory: 2 layers, 4 experts, hidden 64, expert width 32, plus a
// dense-named MLP in layer 1 so that both roles are exercised.
std::unique_ptr<DerivedCheckpoint> tiny_moe_checkpoint() {
  auto empty = std::make_shared<Checkpoint>();
  empty->path = "memory";
  empty->format = "safetensors";
  empty->config = {{"architectures", {"MixtralForCausalLM"}}, {"model_type", "mixtral"}, {"hidden_size", 64}};
  auto c = std::make_unique<DerivedCheckpoint>(empty);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  auto fill = [&](const std::string& name, std::vector<int64_t> shape, float scale) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    float* p = c->add_float(name, shape);
    for (int64_t i = 0; i < n; ++i) p[i] = scale * normal(rng);
  };
  for (int layer = 0; layer < 2; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer);
    fill(prefix + ".input_layernorm.weight", {64}, 1.0f);
    fill(prefix + ".self_attn.q_proj.weight", {64, 64}, 0.1f);
    fill(prefix + ".block_sparse_moe.gate.weight", {4, 64}, 0.1f);
    for (int e = 0; e < 4; ++e) {
      const std::string expert = prefix + ".block_sparse_moe.experts." + std::to_string(e);
      fill(expert + ".w1.weight", {32, 64}, 0.05f);
      fill(expert + ".w3.weight", {32, 64}, 0.08f);
      fill(expert + ".w2.weight", {64, 32}, 0.05f);
    }
  }
  fill("model.layers.1.mlp.gate_proj.weight", {32, 64}, 0.05f);
  fill("model.layers.1.mlp.up_proj.weight", {32, 64}, 0.05f);
  fill("model.layers.1.mlp.down_proj.weight", {64, 32}, 0.05f);
  fill("model.embed_tokens.weight", {16, 64}, 1.0f);
  return c;
}

TEST(Fp4Quantize, WeightRoles) {
  EXPECT_EQ(weight_role("model.layers.0.mlp.experts.3.gate_proj.weight"), WeightRole::RoutedExpert);
  EXPECT_EQ(weight_role("model.layers.0.block_sparse_moe.experts.7.w2.weight"), WeightRole::RoutedExpert);
  EXPECT_EQ(weight_role("model.layers.0.mlp.shared_experts.down_proj.weight"), WeightRole::DenseMlp);
  EXPECT_EQ(weight_role("model.layers.0.mlp.shared_expert.up_proj.weight"), WeightRole::DenseMlp);
  EXPECT_EQ(weight_role("model.layers.0.mlp.up_proj.weight"), WeightRole::DenseMlp);
  EXPECT_EQ(weight_role("model.layers.0.mlp.gate.weight"), WeightRole::Other);  // the router
  EXPECT_EQ(weight_role("model.layers.0.block_sparse_moe.gate.weight"), WeightRole::Other);
  EXPECT_EQ(weight_role("model.layers.3.self_attn.q_proj.weight"), WeightRole::Attention);
  EXPECT_EQ(weight_role("model.layers.3.self_attn.o_proj.weight"), WeightRole::Attention);
  EXPECT_EQ(weight_role("model.layers.3.self_attn.q_norm.weight"), WeightRole::Other);
  EXPECT_EQ(weight_role("model.embed_tokens.weight"), WeightRole::Other);
  EXPECT_EQ(weight_role("model.layers.0.mlp.shared_expert_gate.weight"), WeightRole::Other);
  EXPECT_EQ(weight_role("model.layers.0.mlp.experts.gate_up_proj"), WeightRole::Other);
  EXPECT_EQ(wildcard_pattern("model.layers.12.mlp.experts.3.up_proj"), "model.layers.*.mlp.experts.*.up_proj");
}

struct Case {
  std::optional<Fp4Format> experts, mlp;
  Fp4Layout layout;
};

class Fp4WriteReadBack : public ::testing::TestWithParam<int> {};

TEST_P(Fp4WriteReadBack, FileGivesTheInMemoryWeights) {
  const Case cases[] = {{Fp4Format::Nvfp4, std::nullopt, Fp4Layout::ModelOpt},
                        {Fp4Format::Nvfp4, Fp4Format::Nvfp4, Fp4Layout::CompressedTensors},
                        {Fp4Format::Mxfp4, std::nullopt, Fp4Layout::CompressedTensors},
                        {Fp4Format::Mxfp4, Fp4Format::Nvfp4, Fp4Layout::ModelOpt}};  // -> compressed-tensors
  const Case& tc = cases[GetParam()];
  auto source = tiny_moe_checkpoint();
  QuantizeOptions options;
  options.experts = tc.experts;
  options.mlp = tc.mlp;
  options.nvfp4_layout = tc.layout;
  options.mxfp4_rule = Mxfp4ScaleRule::BestOfTwo;
  test::ScratchDir dir;
  WriteOptions write;
  write.other_dtype = DType::F32;
  const std::vector<TensorRecord> written =
      write_quantized_checkpoint(source->checkpoint(), dir.path("out"), options, write);
  std::vector<TensorRecord> in_memory_records;
  // The in-memory path shares nothing with the file but the quantizer.
  auto shared_source = std::shared_ptr<const Checkpoint>(source->base_ptr(), &source->checkpoint());
  auto in_memory = quantize_in_memory(shared_source, options, &in_memory_records);
  const size_t expected_count = 24 + (tc.mlp ? 3 : 0);
  ASSERT_EQ(written.size(), expected_count);
  ASSERT_EQ(in_memory_records.size(), expected_count);

  auto read_back = open_fp4_checkpoint(dir.path("out"));
  const Checkpoint& c = read_back->checkpoint();
  ASSERT_FALSE(c.config.contains("quantization_config")) << "presented config drops the FP4 quantization_config";
  const auto config = test::read_json(dir.path("out/config.json"));
  const std::string method = config["quantization_config"]["quant_method"];
  EXPECT_EQ(method, options.layout() == Fp4Layout::ModelOpt ? "modelopt" : "compressed-tensors");
  EXPECT_EQ(std::filesystem::exists(dir.path("out/hf_quant_config.json")), options.layout() == Fp4Layout::ModelOpt);
  ASSERT_NO_FATAL_FAILURE(expect_same_tensors(in_memory->checkpoint(), c));
  const std::vector<Fp4Linear> linears = find_fp4_linears(read_back->base().weights);
  ASSERT_EQ(linears.size(), expected_count);
  for (const Fp4Linear& l : linears) EXPECT_EQ(l.layout, options.layout());
  // Gate and up of one expert share their NVFP4 global scale.
  if (tc.experts == Fp4Format::Nvfp4) {
    float w1 = 0, w3 = 0;
    for (const Fp4Linear& l : linears) {
      if (l.base == "model.layers.0.block_sparse_moe.experts.2.w1") w1 = l.matrix.global_scale;
      if (l.base == "model.layers.0.block_sparse_moe.experts.2.w3") w3 = l.matrix.global_scale;
    }
    EXPECT_GT(w1, 0.0f);
    EXPECT_EQ(w1, w3);
  }
  for (const TensorRecord& r : written) {
    EXPECT_GT(r.error.relative_l2, 0.03) << r.name;
    EXPECT_LT(r.error.relative_l2, 0.2) << r.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, Fp4WriteReadBack, ::testing::Values(0, 1, 2, 3));

// FP8 (--attention fp8 --mlp fp8): "X.weight" F8_E4M3 + "X.weight_scale_inv" F32, read back to exactly the
// in-memory quantization's weights, the DeepSeek-V3 / Qwen3-FP8 quantization_config, and the refusals.
TEST(Fp8Checkpoint, FileGivesTheInMemoryWeights) {
  auto source = tiny_moe_checkpoint();
  QuantizeOptions options;
  options.attention_fp8 = true;
  options.mlp_fp8 = true;
  test::ScratchDir dir;
  WriteOptions write;
  write.other_dtype = DType::F32;
  const std::vector<TensorRecord> written = write_quantized_checkpoint(source->checkpoint(), dir.path("out"), options, write);
  ASSERT_EQ(written.size(), 5u);  // q_proj of two layers, the dense MLP's three
  for (const TensorRecord& r : written) {
    EXPECT_TRUE(r.fp8) << r.name;
    EXPECT_GT(r.error.relative_l2, 0.005) << r.name;  // e4m3: ~2^-5 relative per weight
    EXPECT_LT(r.error.relative_l2, 0.06) << r.name;
  }
  auto shared_source = std::shared_ptr<const Checkpoint>(source->base_ptr(), &source->checkpoint());
  auto in_memory = quantize_in_memory(shared_source, options, nullptr);
  auto read_back = open_fp4_checkpoint(dir.path("out"));
  const Checkpoint& c = read_back->checkpoint();
  EXPECT_FALSE(c.config.contains("quantization_config"));
  EXPECT_FALSE(c.weights.has("model.layers.0.self_attn.q_proj.weight_scale_inv"));
  ASSERT_NO_FATAL_FAILURE(expect_same_tensors(in_memory->checkpoint(), c));
  const std::vector<Fp8Linear> linears = find_fp8_linears(read_back->base().weights);
  ASSERT_EQ(linears.size(), 5u);
  EXPECT_EQ(linears[0].weight->dtype, DType::F8_E4M3);
  EXPECT_EQ(linears[0].scale->shape, (std::vector<int64_t>{1, 1}));
  const auto config = test::read_json(dir.path("out/config.json"));
  const auto& q = config["quantization_config"];
  EXPECT_EQ(q["quant_method"], "fp8");
  EXPECT_EQ(q["weight_block_size"], nlohmann::json({128, 128}));
  const std::vector<std::string> not_converted = q["modules_to_not_convert"];
  EXPECT_NE(std::find(not_converted.begin(), not_converted.end(), "lm_head"), not_converted.end());
  EXPECT_NE(std::find(not_converted.begin(), not_converted.end(), "model.layers.0.block_sparse_moe.experts.0.w1"),
            not_converted.end());
  // One method per file.
  options.experts = Fp4Format::Nvfp4;
  EXPECT_THROW(write_quantized_checkpoint(source->checkpoint(), dir.path("mixed"), options, write), Error);
}

// --quantize lm_head=fp8 on a tied head: an FP8 copy of the embedding becomes lm_head.weight (untied), the embedding
// stays as it is; writing it is refused (in memory only).
TEST(Fp8Checkpoint, TiedLmHeadBecomesAnFp8CopyOfTheEmbedding) {
  auto source = tiny_moe_checkpoint();
  source->checkpoint().config["tie_word_embeddings"] = true;
  QuantizeOptions options;
  options.lm_head_fp8 = true;
  std::vector<TensorRecord> records;
  auto shared_source = std::shared_ptr<const Checkpoint>(source->base_ptr(), &source->checkpoint());
  auto quantized = quantize_in_memory(shared_source, options, &records);
  const Checkpoint& c = quantized->checkpoint();
  EXPECT_EQ(c.config["tie_word_embeddings"], false);
  const std::vector<float> embed = c.weights.get("model.embed_tokens.weight").to_float();
  const std::vector<float> head = c.weights.get("lm_head.weight").to_float();
  const std::vector<float> source_embed = source->checkpoint().weights.get("model.embed_tokens.weight").to_float();
  EXPECT_EQ(embed, source_embed);
  std::vector<float> want(source_embed.size());
  quantize_fp8_block(source_embed.data(), 16, 64, "t").to_float(want.data());
  EXPECT_EQ(head, want);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].role, WeightRole::LmHead);
  EXPECT_TRUE(records[0].fp8);
  test::ScratchDir dir;
  EXPECT_THROW(write_quantized_checkpoint(source->checkpoint(), dir.path("out"), options, WriteOptions{}), Error);
}

TEST(Fp8Checkpoint, CodesWithoutScalesOrWrongScalesAreErrors) {
  test::ScratchDir dir;
  std::string error = present_error(dir, {{"a.weight", DType::F8_E4M3, {4, 300}}});
  EXPECT_NE(error.find("a.weight_scale_inv is missing"), std::string::npos) << error;
  error = present_error(dir, {{"a.weight", DType::F8_E4M3, {4, 300}}, {"a.weight_scale_inv", DType::F32, {1, 2}}});
  EXPECT_NE(error.find("a.weight_scale_inv has shape [1, 2]"), std::string::npos) << error;
  error = present_error(dir, {{"a.weight", DType::F8_E4M3, {4, 300}}, {"a.weight_scale_inv", DType::F32, {1, 3}}});
  EXPECT_EQ(error, "(no error)");
}

TEST(Fp4Checkpoint, MalformedTensorsAreErrorsNamingThem) {
  test::ScratchDir dir;
  std::string error = present_error(dir, {{"a.weight", DType::U8, {4, 16}},
                              {"a.weight_scale", DType::F8_E4M3, {4, 3}},
                              {"a.weight_scale_2", DType::F32, {}}});
  EXPECT_NE(error.find("a.weight_scale"), std::string::npos) << error;
  error = present_error(dir, {{"a.weight", DType::U8, {4, 16}}, {"a.weight_scale", DType::F8_E4M3, {4, 2}}});
  EXPECT_NE(error.find("weight_scale_2"), std::string::npos) << error;
  error = present_error(dir, {{"a.weight_packed", DType::U8, {4, 16}}, {"a.weight_scale", DType::BF16, {4, 2}}});
  EXPECT_NE(error.find("a.weight_scale"), std::string::npos) << error;
  error = present_error(dir, {{"a.weight_packed", DType::U8, {4, 16}}});
  EXPECT_NE(error.find("a.weight_packed"), std::string::npos) << error;
  // A U8 weight without block scales is not FP4 and passes through.
  error = present_error(dir, {{"a.weight", DType::U8, {4, 16}}});
  EXPECT_EQ(error, "(no error)");
}

}  // namespace
}  // namespace tachyon::fp4
