// Shared helpers of the tokenizer tests: where the fixtures are, and reading them.
#pragma once
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace tachyon::test {

inline std::string source_dir() {
  if (const char* env = std::getenv("TACHYON_SOURCE_DIR")) return env;
#ifdef TACHYON_SOURCE_DIR
  return TACHYON_SOURCE_DIR;
#else
  return ".";
#endif
}

inline std::string fixture_dir() { return source_dir() + "/tests/fixtures/tokenizers"; }

inline std::string models_dir() {
  if (const char* env = std::getenv("TACHYON_MODELS_DIR")) return env;
  return source_dir() + "/models";
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

inline nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_file(path)); }

// One JSON value per '\n'-separated line (a line's string may hold U+2028 and other breaks).
inline std::vector<nlohmann::json> read_json_lines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::string text = read_file(path);
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) out.push_back(nlohmann::json::parse(text.substr(start, end - start)));
    start = end + 1;
  }
  return out;
}

inline std::vector<std::string> corpus_lines() {
  std::vector<std::string> lines;
  for (const auto& value : read_json_lines(source_dir() + "/tests/data/tokenizer_corpus.txt")) {
    lines.push_back(value.get<std::string>());
  }
  return lines;
}

// The fixture tokenizer `name` (smollm2, llama3_mini, qwen2_mini) from its tokenizer.json.
inline Tokenizer load_fixture_tokenizer(const std::string& name) {
  std::string dir = fixture_dir() + "/" + name;
  nlohmann::json config = nlohmann::json::object();
  std::ifstream config_file(dir + "/tokenizer_config.json");
  if (config_file) config = nlohmann::json::parse(config_file);
  return Tokenizer::from_hf_json(read_json(dir + "/tokenizer.json"), config, dir + "/tokenizer.json");
}

// The same, loaded once per test binary (tokenizer.json parsing is the slow part of a test).
inline const Tokenizer& fixture_tokenizer(const std::string& name) {
  static std::mutex mutex;
  static std::map<std::string, Tokenizer> cache;
  std::lock_guard lock(mutex);
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, load_fixture_tokenizer(name)).first;
  return it->second;
}

}  // namespace tachyon::test
