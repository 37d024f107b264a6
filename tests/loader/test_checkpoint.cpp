#include <gtest/gtest.h>

#include "loader/checkpoint.h"
#include "loader_test_util.h"

namespace tachyon {
namespace {

using test::Bytes;
using test::error_of;
using nlohmann::json;

void write_hf_dir(const test::TempDir& dir) {
  test::write_file(dir.file("config.json"), std::string(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 4})"));
  test::SafetensorsWriter writer;
  writer.add("model.norm.weight", "F32", {4}, test::f32_data(4, 1.0f));
  test::write_file(dir.file("model.safetensors"), writer.build());
}

TEST(LoaderCheckpoint, HfDirectory) {
  test::TempDir dir;
  write_hf_dir(dir);
  Checkpoint minimal = open_checkpoint(dir.path().string());
  EXPECT_EQ(minimal.format, "safetensors");
  EXPECT_EQ(minimal.path, dir.path().string());
  EXPECT_EQ(minimal.config["hidden_size"], 4);
  EXPECT_EQ(minimal.generation_config, json::object());
  EXPECT_TRUE(minimal.tokenizer_json.is_null());
  EXPECT_EQ(minimal.tokenizer_config, json::object());
  EXPECT_EQ(minimal.gguf_metadata, json::object());
  EXPECT_EQ(minimal.weights.get("model.norm.weight", {4}).to_float()[3], 1.0f);
  EXPECT_EQ(error_of([&] { minimal.weights.get("lm_head.weight"); }), dir.path().string() + ": missing tensor lm_head.weight");

  test::write_file(dir.file("generation_config.json"), std::string(R"({"eos_token_id": [1, 2]})"));
  test::write_file(dir.file("tokenizer.json"), std::string(R"({"model": {"type": "BPE"}})"));
  test::write_file(dir.file("tokenizer_config.json"), std::string(R"({"chat_template": "x"})"));
  Checkpoint full = open_checkpoint(dir.path().string());
  EXPECT_EQ(full.generation_config["eos_token_id"], json({1, 2}));
  EXPECT_EQ(full.tokenizer_json["model"]["type"], "BPE");
  EXPECT_EQ(full.tokenizer_config["chat_template"], "x");
}

TEST(LoaderCheckpoint, HfDirectoryErrorsNameTheFile) {
  test::TempDir dir;
  write_hf_dir(dir);
  for (const char* name : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"}) {
    test::write_file(dir.file(name), std::string("{\"broken\": "));
    std::string message = error_of([&] { open_checkpoint(dir.path().string()); });
    EXPECT_EQ(message.rfind(dir.file(name) + ": invalid JSON", 0), 0u) << message;
    write_hf_dir(dir);
    std::filesystem::remove(dir.file(name));
    if (std::string(name) == "config.json") test::write_file(dir.file(name), std::string("{}"));
  }
  test::write_file(dir.file("config.json"), std::string("[1]"));
  EXPECT_NE(error_of([&] { open_checkpoint(dir.path().string()); }).find("config.json: expected a JSON object"),
            std::string::npos);
  std::filesystem::remove(dir.file("config.json"));
  EXPECT_EQ(error_of([&] { open_checkpoint(dir.path().string()); }),
            dir.file("config.json") + ": missing (a model directory needs config.json)");
}

TEST(LoaderCheckpoint, GgufFileByExtensionOrMagic) {
  test::TempDir dir;
  Bytes file = test::tiny_model_gguf("llama").build();
  test::write_file(dir.file("tiny.gguf"), file);
  Checkpoint by_extension = open_checkpoint(dir.file("tiny.gguf"));
  EXPECT_EQ(by_extension.format, "gguf");
  EXPECT_EQ(by_extension.path, dir.file("tiny.gguf"));
  EXPECT_EQ(by_extension.weights.get("model.embed_tokens.weight").file, dir.file("tiny.gguf"));
  EXPECT_EQ(by_extension.weights.all().size(), 11u);
  std::vector<float> row(32);
  by_extension.weights.get("model.embed_tokens.weight").row_to_float(7, row.data());  // reads the mapping

  test::write_file(dir.file("tiny.bin"), file);
  EXPECT_EQ(open_checkpoint(dir.file("tiny.bin")).format, "gguf");
}

TEST(LoaderCheckpoint, OtherPathsAreClearErrors) {
  test::TempDir dir;
  EXPECT_EQ(error_of([&] { open_checkpoint(dir.file("nope")); }), dir.file("nope") + ": no such file or directory");
  test::write_file(dir.file("weights.bin"), std::string("hello world"));
  EXPECT_EQ(error_of([&] { open_checkpoint(dir.file("weights.bin")); }),
            dir.file("weights.bin") + ": not a model directory (config.json + safetensors) or a GGUF file");
  test::write_file(dir.file("empty.gguf"), std::string());
  EXPECT_EQ(error_of([&] { open_checkpoint(dir.file("empty.gguf")); }).rfind(dir.file("empty.gguf") + ": ", 0), 0u);
}

TEST(LoaderCheckpoint, TruncatedGgufOnDiskNamesTheFile) {
  test::TempDir dir;
  const Bytes file = test::tiny_model_gguf("qwen3moe").build();
  const std::string path = dir.file("cut.gguf");
  // The first 64 prefixes, then every 301st, through the real file path (the buffer test in
  // test_gguf.cpp covers every length).
  for (size_t length = 0; length < file.size(); length += length < 64 ? 1 : 301) {
    test::write_file(path, Bytes(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(length)));
    std::string message = error_of([&] { open_checkpoint(path); });
    ASSERT_EQ(message.rfind(path + ": ", 0), 0u) << "length " << length << ": " << message;
  }
}

}  // namespace
}  // namespace tachyon
