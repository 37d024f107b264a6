// Where tests find the source tree (fixtures) and the test model.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <string>

namespace tachyon::test {

inline std::string source_dir() {
  if (const char* env = std::getenv("TACHYON_SOURCE_DIR")) return env;
#ifdef TACHYON_SOURCE_DIR
  return TACHYON_SOURCE_DIR;
#else
  return ".";
#endif
}

inline std::string fixture_path(const std::string& relative) { return source_dir() + "/tests/fixtures/" + relative; }

// The SmolLM2 GGUF (scripts/fetch_model.sh puts it in models/); "" when absent.
inline std::string smollm2_gguf_path() {
  std::string dir = std::getenv("TACHYON_MODELS_DIR") ? std::getenv("TACHYON_MODELS_DIR") : source_dir() + "/models";
  std::string path = dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  return std::filesystem::exists(path) ? path : "";
}

}  // namespace tachyon::test
