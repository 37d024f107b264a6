// Tokenizer pieces checked one by one: Split behaviours (expected values printed by
// `tokenizers`' pre_tokenize_str), NFC, IncrementalDecoder edge cases, ill-formed UTF-8 and
// the errors for unsupported tokenizer.json components.
#include <gtest/gtest.h>

#include "core/error.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer_test_util.h"

namespace tachyon {
namespace {

using test::fixture_tokenizer;
using Words = std::vector<std::string>;

Words split_words(const PreTokenizer& pre, std::string_view text) {
  Words words;
  pre.split(text, words);
  return words;
}

struct SplitCase {
  SplitBehavior behavior;
  bool invert;
  bool regex;  // pattern \s+|! as a regex, or the String " "
  Words expected;
};

TEST(PreTokenizer, SplitBehavioursMatchTokenizers) {
  using B = SplitBehavior;
  const std::vector<SplitCase> cases = {
      {B::kRemoved, false, true, {"Hello,", "world", "123abc", "x"}},
      {B::kRemoved, false, false, {"Hello,", "world!!", "123abc", "x"}},
      {B::kRemoved, true, true, {"  ", "!", "!", " ", "  "}},
      {B::kIsolated, false, true, {"Hello,", "  ", "world", "!", "!", " ", "123abc", "  ", "x"}},
      {B::kIsolated, true, false, {"Hello,", " ", " ", "world!!", " ", "123abc", " ", " ", "x"}},
      {B::kMergedWithPrevious, false, true, {"Hello,  ", "world!", "!", " ", "123abc  ", "x"}},
      {B::kMergedWithPrevious, false, false, {"Hello, ", " ", "world!! ", "123abc ", " ", "x"}},
      {B::kMergedWithPrevious, true, true, {"Hello,", "  world", "!", "!", " 123abc", "  x"}},
      {B::kMergedWithNext, false, true, {"Hello,", "  world", "!", "!", " 123abc", "  x"}},
      {B::kMergedWithNext, true, false, {"Hello, ", " ", "world!! ", "123abc ", " ", "x"}},
      {B::kContiguous, false, true, {"Hello,", "  ", "world", "!! ", "123abc", "  ", "x"}},
      {B::kContiguous, true, false, {"Hello,", "  ", "world!!", " ", "123abc", "  ", "x"}},
  };
  for (const SplitCase& c : cases) {
    PreTokenizer pre;
    pre.add_split(c.regex ? R"(\s+|!)" : Regex::escape(" "), c.behavior, c.invert, "test");
    EXPECT_EQ(split_words(pre, "Hello,  world!! 123abc  x"), c.expected)
        << "behavior " << static_cast<int>(c.behavior) << " invert " << c.invert << " regex " << c.regex;
  }
}

TEST(PreTokenizer, EmptyMatchesAndDigits) {
  PreTokenizer isolated, merged;
  isolated.add_split("x*", SplitBehavior::kIsolated, false, "test");
  merged.add_split("x*", SplitBehavior::kMergedWithNext, false, "test");
  EXPECT_EQ(split_words(isolated, "abxxc"), (Words{"a", "b", "xx", "c"}));
  EXPECT_EQ(split_words(merged, "abxxc"), (Words{"a", "b", "xxc"}));

  PreTokenizer contiguous, individual;
  contiguous.add_digits(false);
  individual.add_digits(true);
  EXPECT_EQ(split_words(contiguous, "a12b345 6"), (Words{"a", "12", "b", "345", " ", "6"}));
  EXPECT_EQ(split_words(individual, "a12b345 6"), (Words{"a", "1", "2", "b", "3", "4", "5", " ", "6"}));
}

TEST(PreTokenizer, ByteLevelPrefixSpaceAndMapping) {
  PreTokenizer pre;
  pre.add_byte_level(/*add_prefix_space=*/true, /*use_regex=*/true);
  EXPECT_EQ(split_words(pre, "Hello world"), (Words{"ĠHello", "Ġworld"}));
  // U+180E is not White_Space (Oniguruma agrees; PCRE2's own \s would say it is).
  PreTokenizer plain;
  plain.add_byte_level(false, true);
  EXPECT_EQ(split_words(plain, "a\u180e!").size(), 2u);
}

TEST(Unicode, Nfc) {
  EXPECT_EQ(unicode::nfc("e\u0301"), "\u00e9");
  EXPECT_EQ(unicode::nfc("\u212b"), "\u00c5");                    // singleton decomposition
  EXPECT_EQ(unicode::nfc("a\u0301\u0316"), "\u00e1\u0316");        // reordered, then composed
  EXPECT_EQ(unicode::nfc("\u1100\u1161\u11a8"), "\uac01");         // Hangul L V T
  EXPECT_EQ(unicode::nfc("\u0915\u093c"), "\u0915\u093c");         // composition exclusion
  EXPECT_EQ(unicode::nfc("\u0958"), "\u0915\u093c");
  EXPECT_EQ(unicode::nfc("s\u0323\u0307"), "\u1e69");
  EXPECT_EQ(unicode::nfd("\u1e69"), "s\u0323\u0307");
  EXPECT_EQ(unicode::nfc("\u0301x"), "\u0301x");                   // leading mark stays
  EXPECT_EQ(unicode::nfc("e\xff\u0301"), "e\xff\u0301");           // ill-formed byte blocks
}

TEST(Unicode, Utf8Steps) {
  using unicode::Utf8Status;
  EXPECT_EQ(unicode::next_utf8("\xe6\x97", 0).status, Utf8Status::kTruncated);
  EXPECT_EQ(unicode::next_utf8("\xe6\x97x", 0).length, 2u);  // one maximal subpart
  EXPECT_EQ(unicode::next_utf8("\xed\xa0\x80", 0).length, 1u);  // surrogates are ill-formed
  EXPECT_EQ(unicode::next_utf8("\xf4\x90\x80\x80", 0).status, Utf8Status::kInvalid);
  EXPECT_EQ(unicode::to_valid_utf8("a\xc0\xafz"), "a\ufffd\ufffdz");
}

// Ids whose bytes are the given raw bytes, one byte-level token per byte.
std::vector<int32_t> byte_ids(const Tokenizer& tokenizer, std::string_view bytes) {
  std::vector<int32_t> ids;
  for (unsigned char b : bytes) {
    auto id = tokenizer.token_id(byte_to_unicode(b));
    if (!id) throw std::runtime_error("no byte token for " + std::to_string(b));
    ids.push_back(*id);
  }
  return ids;
}

TEST(IncrementalDecoder, HoldsBackSplitCharacters) {
  const Tokenizer& tokenizer = fixture_tokenizer("smollm2");
  std::string text = "a日本語😀é";
  auto ids = byte_ids(tokenizer, text);
  IncrementalDecoder decoder(tokenizer);
  std::string streamed;
  std::vector<std::string> pieces;
  for (int32_t id : ids) {
    pieces.push_back(decoder.push(id));
    EXPECT_TRUE(unicode::is_valid_utf8(pieces.back()));
    streamed += pieces.back();
  }
  streamed += decoder.flush();
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(streamed, tokenizer.decode(ids));
  EXPECT_EQ(pieces[1], "");  // first byte of 日 waits
  EXPECT_EQ(pieces[3], "日");
}

TEST(IncrementalDecoder, ReplacesBytesThatCanNeverBeACharacter) {
  const Tokenizer& tokenizer = fixture_tokenizer("llama3_mini");  // has all 256 byte tokens
  IncrementalDecoder decoder(tokenizer);
  std::string out;
  for (int32_t id : byte_ids(tokenizer, "\xff" "a\xe6\x97" "b\xe6")) out += decoder.push(id);
  EXPECT_EQ(out, "\ufffda\ufffdb");
  EXPECT_EQ(decoder.flush(), "\ufffd");  // the truncated tail
  EXPECT_EQ(decoder.flush(), "");
  IncrementalDecoder skipping(tokenizer, /*skip_special=*/true);
  EXPECT_EQ(skipping.push(1), "");  // <|im_start|>
  EXPECT_EQ(skipping.push(-5), "");  // unknown ids are ignored
}

// Byte-level BPE can spell any bytes, so ill-formed UTF-8 is kept: each bad byte goes through
// pre-tokenization as a piece no regex matches, and decode() gives the input back. Except that
// a vocabulary may lack some byte tokens (SmolLM2 has none for 0x04, 0xC0, 0xFF, ...): such
// bytes are dropped, as `tokenizers` drops characters a BPE without unk_token doesn't know.
TEST(Tokenizer, IllFormedUtf8RoundTrips) {
  const std::vector<std::string> inputs = {"\xff", "abc\xfe\xff def", "\xc3", "\xe6\x97 x", "\xed\xa0\x80",
                                           "a\xf4\x90\x80\x80z", std::string("\0\x80\0", 3), "é\x80<|im_end|>\xc3"};
  for (const char* name : {"smollm2", "llama3_mini", "qwen2_mini"}) {
    const Tokenizer& tokenizer = fixture_tokenizer(name);
    for (const std::string& text : inputs) {
      std::string known_bytes;
      for (unsigned char b : text) {
        if (tokenizer.token_id(byte_to_unicode(b))) known_bytes.push_back(static_cast<char>(b));
      }
      EXPECT_EQ(tokenizer.decode(tokenizer.encode(text)), known_bytes) << name << " " << nlohmann::json(text).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
    }
  }
}

TEST(Tokenizer, DecodeSkipsUnknownIds) {
  const Tokenizer& tokenizer = fixture_tokenizer("smollm2");
  std::vector<int32_t> ids = {-1, 19556, 1 << 30};
  EXPECT_EQ(tokenizer.decode(ids), "Hello");
  EXPECT_EQ(tokenizer.token_bytes(-1), "");
  EXPECT_THROW(tokenizer.token_text(49152), Error);
}

TEST(Tokenizer, EmptyAndDefault) {
  EXPECT_TRUE(fixture_tokenizer("smollm2").encode("").empty());
  Tokenizer empty;
  EXPECT_TRUE(empty.encode("abc").empty());
  EXPECT_EQ(empty.vocab_size(), 0);
}

nlohmann::json minimal_tokenizer_json() {
  return nlohmann::json::parse(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "decoder": {"type": "ByteLevel"}, "added_tokens": []})");
}

void expect_error_mentions(const nlohmann::json& tokenizer_json, const std::string& needle) {
  try {
    Tokenizer::from_hf_json(tokenizer_json, nlohmann::json::object(), "dir/tokenizer.json");
    ADD_FAILURE() << "no error; expected one mentioning " << needle;
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find(needle), std::string::npos) << message;
    EXPECT_NE(message.find("dir/tokenizer.json"), std::string::npos) << message;
  }
}

TEST(TokenizerErrors, UnsupportedComponentsNameTypeAndFile) {
  auto j = minimal_tokenizer_json();
  EXPECT_EQ(Tokenizer::from_hf_json(j, {}, "x").encode("ab"), (std::vector<int32_t>{2}));
  auto with = [&](const char* key, const char* value) {
    auto copy = j;
    copy[key] = nlohmann::json::parse(value);
    return copy;
  };
  expect_error_mentions(with("normalizer", R"({"type": "Lowercase"})"), "Lowercase");
  expect_error_mentions(with("normalizer", R"({"type": "Sequence", "normalizers": [{"type": "NFKC"}]})"), "NFKC");
  expect_error_mentions(with("pre_tokenizer", R"({"type": "Metaspace"})"), "Metaspace");
  expect_error_mentions(with("decoder", R"({"type": "WordPiece"})"), "WordPiece");
  expect_error_mentions(with("post_processor", R"({"type": "BertProcessing"})"), "BertProcessing");
  expect_error_mentions(with("model", R"({"type": "Unigram", "vocab": []})"), "Unigram");
  expect_error_mentions(with("pre_tokenizer", R"({"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated"})"), "(");
  expect_error_mentions(with("model", R"({"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]})"), "'b'");
  expect_error_mentions(with("model", "7"), "tokenizer.json");
}

TEST(TokenizerErrors, GgufNamesThePreTokenizer) {
  nlohmann::json meta = {{"tokenizer.ggml.model", "gpt2"},
                         {"tokenizer.ggml.tokens", {"a", "b", "ab"}},
                         {"tokenizer.ggml.merges", {"a b"}},
                         {"tokenizer.ggml.pre", "klingon-bpe"}};
  try {
    Tokenizer::from_gguf_metadata(meta, "m.gguf");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("klingon-bpe"), std::string::npos) << e.what();
  }
  meta["tokenizer.ggml.pre"] = "llama-bpe";
  EXPECT_EQ(Tokenizer::from_gguf_metadata(meta, "m.gguf").encode("ab"), (std::vector<int32_t>{2}));
  meta["tokenizer.ggml.model"] = "llama";
  EXPECT_THROW(Tokenizer::from_gguf_metadata(meta, "m.gguf"), Error);
}

}  // namespace
}  // namespace tachyon
