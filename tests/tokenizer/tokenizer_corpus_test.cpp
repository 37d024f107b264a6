// Every line of tests/data/tokenizer_corpus.txt through every fixture tokenizer must give the
// ids Hugging Face `tokenizers` gave (tools/fixtures/make_tokenizer_fixtures.py recorded them).
#include <chrono>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include "loader/checkpoint.h"
#include "tokenizer/unicode.h"
#include "tokenizer_test_util.h"

namespace tachyon {
namespace {

using test::corpus_lines;
using test::fixture_dir;
using test::fixture_tokenizer;

struct Expected {
  std::vector<int32_t> ids;
  std::vector<int32_t> plain;  // with parse_special = false
  std::string decoded;
};

std::vector<Expected> expected_for(const std::string& name, const std::vector<std::string>& lines) {
  std::vector<Expected> out;
  auto records = test::read_json_lines(fixture_dir() + "/" + name + ".expected.jsonl");
  EXPECT_EQ(records.size(), lines.size()) << name << ": expected ids and corpus are out of step; rerun the script";
  for (size_t i = 0; i < records.size() && i < lines.size(); ++i) {
    Expected e;
    e.ids = records[i]["ids"].get<std::vector<int32_t>>();
    e.plain = records[i].contains("plain") ? records[i]["plain"].get<std::vector<int32_t>>() : e.ids;
    e.decoded = records[i].contains("decoded") ? records[i]["decoded"].get<std::string>() : lines[i];
    out.push_back(std::move(e));
  }
  return out;
}

std::string show(const std::string& line) { return nlohmann::json(line).dump().substr(0, 120); }

class CorpusTest : public testing::TestWithParam<std::string> {};

TEST_P(CorpusTest, IdsAndDecodeMatchHuggingFace) {
  const Tokenizer& tokenizer = fixture_tokenizer(GetParam());
  auto lines = corpus_lines();
  ASSERT_GE(lines.size(), 2000u);
  auto expected = expected_for(GetParam(), lines);
  int failures = 0;
  for (size_t i = 0; i < expected.size() && failures < 10; ++i) {
    const std::string& line = lines[i];
    auto ids = tokenizer.encode(line);
    if (ids != expected[i].ids) {
      ADD_FAILURE() << "line " << i + 1 << " " << show(line) << "\n  got      " << fmt::format("{}", ids)
                    << "\n  expected " << fmt::format("{}", expected[i].ids);
      ++failures;
      continue;
    }
    EXPECT_EQ(tokenizer.encode(line, /*parse_special=*/false), expected[i].plain) << "line " << i + 1 << " " << show(line);
    // decode(encode(x)) == x; for qwen2_mini (NFC) and lstrip/rstrip tokens it is what HF decodes.
    // HF's decode ends with a lossy UTF-8 conversion; ours returns the bytes (see tokenizer.h).
    EXPECT_EQ(unicode::to_valid_utf8(tokenizer.decode(ids)), expected[i].decoded) << "line " << i + 1 << " " << show(line);
  }
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CorpusTest, testing::Values("smollm2", "llama3_mini", "qwen2_mini"));

TEST(TokenizerFixtures, SpecialTokenSettings) {
  const Tokenizer& smol = fixture_tokenizer("smollm2");
  EXPECT_EQ(smol.vocab_size(), 49152);
  EXPECT_FALSE(smol.add_bos());
  EXPECT_EQ(smol.bos_id(), 1);
  EXPECT_EQ(smol.bos_text(), "<|im_start|>");
  EXPECT_EQ(smol.eos_ids(), std::vector<int32_t>{2});
  EXPECT_EQ(smol.eos_text(), "<|im_end|>");
  EXPECT_NE(smol.chat_template().find("<|im_start|>"), std::string::npos);
  EXPECT_TRUE(smol.is_special(0));
  EXPECT_FALSE(smol.is_special(100));
  EXPECT_EQ(smol.token_id("<|im_end|>"), 2);
  EXPECT_EQ(smol.token_text(216), "Ġ");
  EXPECT_EQ(smol.token_bytes(216), " ");

  const Tokenizer& llama = fixture_tokenizer("llama3_mini");
  EXPECT_TRUE(llama.add_bos());  // TemplateProcessing "<|begin_of_text|> $A"
  EXPECT_EQ(llama.bos_id(), 0);
  EXPECT_EQ(llama.bos_text(), "<|begin_of_text|>");
  EXPECT_FALSE(llama.is_special(*llama.token_id("<tool>")));

  const Tokenizer& qwen = fixture_tokenizer("qwen2_mini");
  EXPECT_FALSE(qwen.add_bos());
  EXPECT_EQ(qwen.bos_id(), -1);
  EXPECT_TRUE(qwen.eos_ids().empty());
}

TEST(TokenizerFixtures, SkipSpecialWhenDecoding) {
  const Tokenizer& smol = fixture_tokenizer("smollm2");
  auto ids = smol.encode("<|im_start|>user\nHi<|im_end|>");
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(smol.decode(ids, /*skip_special=*/true), "user\nHi");
  EXPECT_EQ(smol.decode(ids), "<|im_start|>user\nHi<|im_end|>");
}

// The SmolLM2 tokenizer built from the GGUF's tokenizer.ggml.* keys must equal the one from
// tokenizer.json, id for id.
TEST(TokenizerFixtures, SmolLM2FromGgufMetadataMatchesTokenizerJson) {
  std::string path = fixture_dir() + "/smollm2/gguf_metadata.json";
  Tokenizer gguf = Tokenizer::from_gguf_metadata(test::read_json(path), path);
  const Tokenizer& json = fixture_tokenizer("smollm2");
  EXPECT_EQ(gguf.vocab_size(), json.vocab_size());
  EXPECT_EQ(gguf.bos_id(), json.bos_id());
  EXPECT_EQ(gguf.add_bos(), json.add_bos());
  EXPECT_EQ(gguf.eos_ids(), json.eos_ids());
  EXPECT_EQ(gguf.chat_template(), json.chat_template());
  auto lines = corpus_lines();
  auto expected = expected_for("smollm2", lines);
  int failures = 0;
  for (size_t i = 0; i < expected.size() && failures < 10; ++i) {
    if (gguf.encode(lines[i]) != expected[i].ids) {
      ADD_FAILURE() << "line " << i + 1 << " " << show(lines[i]);
      ++failures;
    }
  }
}

// The real model file, through the GGUF loader, when it is present.
TEST(TokenizerFixtures, SmolLM2FromRealCheckpoint) {
  std::string path = test::models_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  Tokenizer tokenizer = Tokenizer::from_checkpoint(open_checkpoint(path));
  auto lines = corpus_lines();
  auto expected = expected_for("smollm2", lines);
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(tokenizer.encode(lines[i]), expected[i].ids) << "line " << i + 1 << " " << show(lines[i]);
  }
  EXPECT_EQ(tokenizer.eos_ids(), std::vector<int32_t>{2});
}

// Streaming the ids of every corpus line through IncrementalDecoder yields valid UTF-8 at every
// step, and the pieces add up to decode().
TEST(TokenizerFixtures, IncrementalDecoderMatchesDecodeOnCorpus) {
  for (const char* name : {"smollm2", "llama3_mini", "qwen2_mini"}) {
    const Tokenizer& tokenizer = fixture_tokenizer(name);
    for (const std::string& line : corpus_lines()) {
      auto ids = tokenizer.encode(line);
      IncrementalDecoder decoder(tokenizer, /*skip_special=*/false);
      std::string streamed;
      for (int32_t id : ids) {
        std::string piece = decoder.push(id);
        ASSERT_TRUE(unicode::is_valid_utf8(piece)) << name << ": " << show(line);
        streamed += piece;
      }
      streamed += decoder.flush();
      ASSERT_EQ(streamed, unicode::to_valid_utf8(tokenizer.decode(ids))) << name << ": " << show(line);
    }
  }
}

TEST(TokenizerFixtures, EncodesCorpusQuickly) {
  const Tokenizer& tokenizer = fixture_tokenizer("smollm2");
  auto lines = corpus_lines();
  size_t bytes = 0, tokens = 0;
  auto start = std::chrono::steady_clock::now();
  for (const std::string& line : lines) tokens += tokenizer.encode(line).size(), bytes += line.size();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("encoded %zu lines, %zu bytes -> %zu tokens in %.3f s\n", lines.size(), bytes, tokens, seconds);
  RecordProperty("corpus_encode_seconds", fmt::format("{:.3f}", seconds));
  // Well under a second in a release build; the bound leaves room for sanitizer builds.
  EXPECT_LT(seconds, 10.0);
}

}  // namespace
}  // namespace tachyon
