// Files written by the reference Python libraries (`gguf`, `safetensors`), committed as fuzz seeds
// by tools/fixtures/make_fuzz_seeds.py: they must load, and the GGUF values must equal the `gguf`
// package's own dequantization (tests/fixtures/python_gguf_values.json), which covers Q4_0 and BF16
// that the real model lacks.
#include <fstream>

#include <gtest/gtest.h>

#include "loader/checkpoint.h"
#include "loader/gguf.h"
#include "loader/safetensors.h"
#include "loader_test_util.h"

namespace tachyon {
namespace {

using nlohmann::json;

std::string seed(const std::string& relative) { return test::source_dir() + "/fuzz/corpus/" + relative; }

TEST(LoaderPythonWritten, GgufValuesMatchPythonDequantization) {
  const std::string values_path = test::source_dir() + "/tests/fixtures/python_gguf_values.json";
  std::ifstream in(values_path);
  ASSERT_TRUE(in) << values_path;
  const json expected = json::parse(in);
  const std::string path = test::source_dir() + "/" + expected["file"].get<std::string>();
  auto file = std::make_shared<MappedFile>(path);
  GgufContents contents = parse_gguf(file->data(), file->size(), path);
  EXPECT_EQ(contents.metadata["test.nested"], json({{1, 2}, {3}}));
  ASSERT_EQ(contents.tensors.size(), expected["tensors"].size());
  for (const TensorView& tensor : contents.tensors) {
    const json& entry = expected["tensors"].at(tensor.name);
    EXPECT_EQ(dtype_name(tensor.dtype), entry["type"].get<std::string>()) << tensor.name;
    const auto values = entry["first"].get<std::vector<double>>();
    std::vector<float> actual(values.size());
    tensor.to_float(0, static_cast<int64_t>(values.size()), actual.data());
    for (size_t i = 0; i < values.size(); ++i)
      EXPECT_EQ(actual[i], static_cast<float>(values[i])) << tensor.name << " element " << i;
  }
}

TEST(LoaderPythonWritten, EveryArchitectureLoads) {
  for (const char* arch : {"llama", "qwen2", "qwen3", "qwen3moe"}) {
    Checkpoint checkpoint = open_checkpoint(seed(fmt::format("gguf/lib_{}.gguf", arch)));
    EXPECT_EQ(checkpoint.config["hidden_size"], 32) << arch;
    EXPECT_EQ(checkpoint.config["vocab_size"], 8) << arch;
    checkpoint.weights.get("model.layers.0.self_attn.q_proj.weight", {32, 32});
    checkpoint.weights.get("model.layers.0.self_attn.o_proj.weight", {32, 32});
  }
  for (const char* arch : {"llama", "qwen2"}) {  // the small all-F32 seeds
    Checkpoint checkpoint = open_checkpoint(seed(fmt::format("gguf/min_{}.gguf", arch)));
    EXPECT_EQ(checkpoint.config["hidden_size"], 4) << arch;
    EXPECT_EQ(checkpoint.config["tie_word_embeddings"], false) << arch;
    checkpoint.weights.get("model.layers.0.mlp.down_proj.weight", {4, 8});
  }
  Checkpoint moe = open_checkpoint(seed("gguf/lib_qwen3moe.gguf"));
  moe.weights.get("model.layers.0.mlp.experts.3.gate_proj.weight", {32, 32});
  moe.weights.get("model.layers.0.mlp.experts.3.down_proj.weight", {32, 32});
}

TEST(LoaderPythonWritten, SafetensorsLibraryFile) {
  WeightStore store;
  load_safetensors_file(seed("safetensors/lib_mixed.safetensors"), store);
  EXPECT_EQ(store.get("model.embed_tokens.weight", {4, 8}).dtype, DType::F32);
  EXPECT_EQ(store.get("model.norm.weight", {8}).to_float(), std::vector<float>(8, 1.0f));
  EXPECT_EQ(store.get("ids", {5}).to_float(), (std::vector<float>{0, 1, 2, 3, 4}));
  EXPECT_EQ(store.get("mask", {3}).to_float(), (std::vector<float>{1, 0, 1}));
  EXPECT_EQ(store.get("scalar", {}).to_float(), (std::vector<float>{2.5f}));
  EXPECT_EQ(store.get("empty", {0, 3}).numel(), 0);
}

TEST(LoaderPythonWritten, BrokenSeedsAreErrorsNamingTheFile) {
  for (const char* dir : {"gguf", "safetensors"}) {
    for (const auto& entry : std::filesystem::directory_iterator(seed(dir))) {
      const std::string path = entry.path().string();
      if (entry.path().filename().string().rfind("bad_", 0) != 0) continue;
      std::string message = test::error_of([&] {
        if (std::string(dir) == "gguf") {
          open_checkpoint(path);
        } else {
          WeightStore store;
          load_safetensors_file(path, store);
        }
      });
      EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
    }
  }
}

}  // namespace
}  // namespace tachyon
