// libFuzzer target for the tokenizer. The first input byte picks what the rest is:
//   0: text encoded with the SmolLM2 tokenizer (tests/fixtures, loaded once); decode must give
//      the text back, less the bytes that vocabulary has no token for.
//   1: int32 ids decoded, whole and through IncrementalDecoder; the streamed pieces must be valid
//      UTF-8 and add up to the lossy-UTF-8 form of decode().
//   2: "<json>\0<text>": the JSON loaded as a tokenizer.json (and as GGUF metadata); if that
//      works, the text is encoded and decoded.
// Loading may throw tachyon::Error; nothing else may escape, crash or trip a sanitizer.
// Build (see scripts/fuzz.sh): clang++ -std=c++20 -fsanitize=fuzzer,address,undefined ...
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace {

using tachyon::IncrementalDecoder;
using tachyon::Tokenizer;

std::string fixture_dir() {
  if (const char* env = std::getenv("TACHYON_SOURCE_DIR")) return std::string(env) + "/tests/fixtures/tokenizers";
  // fuzz/fuzz_tokenizer.cpp -> the repository root
  return std::filesystem::path(__FILE__).parent_path().parent_path().string() + "/tests/fixtures/tokenizers";
}

const Tokenizer& smollm2() {
  static const Tokenizer tokenizer = [] {
    std::string dir = fixture_dir() + "/smollm2";
    std::ifstream json_file(dir + "/tokenizer.json"), config_file(dir + "/tokenizer_config.json");
    if (!json_file || !config_file) {
      std::fprintf(stderr, "fuzz_tokenizer: cannot read %s (set TACHYON_SOURCE_DIR)\n", dir.c_str());
      std::abort();
    }
    return Tokenizer::from_hf_json(nlohmann::json::parse(json_file), nlohmann::json::parse(config_file), dir);
  }();
  return tokenizer;
}

void check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz_tokenizer: check failed: %s\n", what);
    std::abort();
  }
}

void fuzz_encode(const Tokenizer& tokenizer, std::string_view text, bool parse_special) {
  std::vector<int32_t> ids = tokenizer.encode(text, parse_special);
  std::string known_bytes;
  for (unsigned char b : text) {
    if (tokenizer.token_id(tachyon::byte_to_unicode(b))) known_bytes.push_back(static_cast<char>(b));
  }
  check(tokenizer.decode(ids) == known_bytes, "decode(encode(text)) == text");
}

void fuzz_decode(const Tokenizer& tokenizer, const uint8_t* data, size_t size) {
  bool skip_special = size > 0 && (data[0] & 1);
  std::vector<int32_t> ids;
  for (size_t i = 1; i + 4 <= size; i += 4) {
    int32_t id;
    std::memcpy(&id, data + i, 4);
    // Mostly real ids (so that characters get split across byte tokens), some wild ones.
    ids.push_back((data[0] & 2) ? id : static_cast<int32_t>(static_cast<uint32_t>(id) % 50000));
  }
  std::string whole = tokenizer.decode(ids, skip_special);
  IncrementalDecoder decoder(tokenizer, skip_special);
  std::string streamed;
  for (int32_t id : ids) {
    std::string piece = decoder.push(id);
    check(tachyon::unicode::is_valid_utf8(piece), "IncrementalDecoder piece is valid UTF-8");
    streamed += piece;
  }
  streamed += decoder.flush();
  check(streamed == tachyon::unicode::to_valid_utf8(whole), "streamed == lossy decode()");
}

void fuzz_load(std::string_view input) {
  size_t split = input.find('\0');
  std::string_view json_text = input.substr(0, split);
  std::string_view text = split == std::string_view::npos ? std::string_view() : input.substr(split + 1);
  nlohmann::json spec = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded()) return;
  nlohmann::json config = spec.is_object() && spec.contains("config") ? spec["config"] : nlohmann::json();
  for (int as_gguf = 0; as_gguf < 2; ++as_gguf) {
    try {
      Tokenizer tokenizer = as_gguf ? Tokenizer::from_gguf_metadata(spec, "fuzz.gguf")
                                    : Tokenizer::from_hf_json(spec, config, "fuzz.json");
      std::vector<int32_t> ids = tokenizer.encode(text);
      tokenizer.decode(ids, true);
      IncrementalDecoder decoder(tokenizer);
      for (int32_t id : ids) decoder.push(id);
      decoder.flush();
    } catch (const tachyon::Error&) {
      // Rejecting a malformed or unsupported tokenizer is the expected outcome.
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      fuzz_encode(smollm2(), rest, data[0] & 4);
      break;
    case 1:
      fuzz_decode(smollm2(), data + 1, size - 1);
      break;
    default:
      fuzz_load(rest);
      break;
  }
  return 0;
}
