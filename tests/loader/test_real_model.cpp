// The real SmolLM2-135M-Instruct Q4_1 GGUF (git-ignored; skipped when absent): structure, the
// synthesized HF config, and dequantized values compared with the `gguf` Python package's
// (tests/fixtures/smollm2_gguf_spot_values.json, made by tools/fixtures/make_gguf_spot_values.py).
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "loader/checkpoint.h"
#include "loader_test_util.h"

namespace tachyon {
namespace {

using nlohmann::json;

const char* kModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

class LoaderRealModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = test::models_dir() + "/" + kModelFile;
    if (std::filesystem::exists(path)) checkpoint_ = new Checkpoint(open_checkpoint(path));
  }
  static void TearDownTestSuite() {
    delete checkpoint_;
    checkpoint_ = nullptr;
  }
  void SetUp() override {
    if (checkpoint_ == nullptr) GTEST_SKIP() << kModelFile << " not found in " << test::models_dir();
  }
  static Checkpoint* checkpoint_;
};
Checkpoint* LoaderRealModel::checkpoint_ = nullptr;

TEST_F(LoaderRealModel, Structure) {
  const WeightStore& w = checkpoint_->weights;
  EXPECT_EQ(checkpoint_->format, "gguf");
  EXPECT_EQ(w.all().size(), 272u);
  const TensorView& embedding = w.get("model.embed_tokens.weight", {49152, 576});
  EXPECT_EQ(embedding.dtype, DType::Q8_0);
  EXPECT_EQ(embedding.nbytes, 49152u * 576 / 32 * 34);
  EXPECT_FALSE(w.has("lm_head.weight"));
  EXPECT_EQ(w.get("model.norm.weight", {576}).dtype, DType::F32);
  for (int layer = 0; layer < 30; ++layer) {
    const std::string p = fmt::format("model.layers.{}.", layer);
    EXPECT_EQ(w.get(p + "input_layernorm.weight", {576}).dtype, DType::F32);
    EXPECT_EQ(w.get(p + "post_attention_layernorm.weight", {576}).dtype, DType::F32);
    EXPECT_EQ(w.get(p + "self_attn.q_proj.weight", {576, 576}).dtype, DType::Q4_1);
    EXPECT_EQ(w.get(p + "self_attn.k_proj.weight", {192, 576}).dtype, DType::Q4_1);
    EXPECT_EQ(w.get(p + "self_attn.v_proj.weight", {192, 576}).dtype, DType::Q4_1);
    EXPECT_EQ(w.get(p + "self_attn.o_proj.weight", {576, 576}).dtype, DType::Q4_1);
    EXPECT_EQ(w.get(p + "mlp.gate_proj.weight", {1536, 576}).dtype, DType::Q4_1);
    EXPECT_EQ(w.get(p + "mlp.up_proj.weight", {1536, 576}).dtype, DType::Q4_1);
    EXPECT_EQ(w.get(p + "mlp.down_proj.weight", {576, 1536}).dtype, DType::Q4_1);
  }
  EXPECT_FALSE(w.has("model.layers.30.input_layernorm.weight"));
}

TEST_F(LoaderRealModel, Config) {
  const json& c = checkpoint_->config;
  EXPECT_EQ(c["architectures"], json({"LlamaForCausalLM"}));
  EXPECT_EQ(c["model_type"], "llama");
  EXPECT_EQ(c["hidden_size"], 576);
  EXPECT_EQ(c["intermediate_size"], 1536);
  EXPECT_EQ(c["num_hidden_layers"], 30);
  EXPECT_EQ(c["num_attention_heads"], 9);
  EXPECT_EQ(c["num_key_value_heads"], 3);
  EXPECT_EQ(c["head_dim"], 64);
  EXPECT_FLOAT_EQ(c["rms_norm_eps"].get<float>(), 1e-5f);
  EXPECT_EQ(c["rope_theta"], 100000.0);
  EXPECT_TRUE(c["rope_scaling"].is_null());
  EXPECT_EQ(c["max_position_embeddings"], 8192);
  EXPECT_EQ(c["vocab_size"], 49152);
  EXPECT_EQ(c["tie_word_embeddings"], true);
  EXPECT_EQ(c["attention_bias"], false);
  EXPECT_EQ(c["bos_token_id"], 1);
  EXPECT_EQ(c["eos_token_id"], 2);
  EXPECT_EQ(c["tachyon_rope_interleaved"], true);
  const json& md = checkpoint_->gguf_metadata;
  EXPECT_EQ(md["general.architecture"], "llama");
  EXPECT_EQ(md["tokenizer.ggml.tokens"].size(), 49152u);
  EXPECT_EQ(md["tokenizer.ggml.merges"].size(), 48900u);
  EXPECT_EQ(md["tokenizer.ggml.token_type"].size(), 49152u);
  EXPECT_EQ(md["tokenizer.ggml.model"], "gpt2");
  const std::string chat_template = checkpoint_->tokenizer_config.value("chat_template", "");
  EXPECT_EQ(chat_template.rfind("{% for message in messages %}", 0), 0u) << chat_template;
  EXPECT_NE(chat_template.find("<|im_start|>"), std::string::npos);
}

TEST_F(LoaderRealModel, DequantizedValuesMatchPythonGguf) {
  const std::string fixture_path = test::source_dir() + "/tests/fixtures/smollm2_gguf_spot_values.json";
  std::ifstream in(fixture_path);
  ASSERT_TRUE(in) << "missing " << fixture_path;
  const json fixture = json::parse(in);
  EXPECT_EQ(fixture["tensor_count"], 272);
  ASSERT_GE(fixture["spots"].size(), 10u);
  for (const json& spot : fixture["spots"]) {
    const std::string name = spot["hf_name"];
    const TensorView& tensor = checkpoint_->weights.get(name);
    EXPECT_EQ(tensor.shape, spot["shape"].get<std::vector<int64_t>>()) << name;
    EXPECT_EQ(dtype_name(tensor.dtype), spot["type"].get<std::string>()) << name;
    // Convert the whole row (rows are block-aligned), then compare the recorded stretch.
    std::vector<float> row(static_cast<size_t>(tensor.cols()));
    tensor.row_to_float(spot["row"].get<int64_t>(), row.data());
    const auto expected = spot["values"].get<std::vector<double>>();
    const size_t first = spot["first"].get<size_t>();
    for (size_t i = 0; i < expected.size(); ++i)
      EXPECT_EQ(row.at(first + i), static_cast<float>(expected[i])) << name << " row " << spot["row"] << " col " << first + i;
  }
}

}  // namespace
}  // namespace tachyon
