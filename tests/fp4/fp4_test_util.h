// Helpers shared by the FP4 tests: fixture paths, float bit patterns, a scratch directory.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/paths.h"

namespace tachyon::fp4::test {

inline std::string fp4_fixture(const std::string& relative) {
  return tachyon::test::source_dir() + "/tests/fp4/fixtures/" + relative;
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot open " + path);
  return nlohmann::json::parse(file);
}

inline float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline uint32_t to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}
inline std::vector<float> floats_from_bits(const nlohmann::json& list) {
  std::vector<float> values;
  for (const auto& b : list) values.push_back(from_bits(b.get<uint32_t>()));
  return values;
}

// A fresh directory under the system temp dir, removed at scope exit.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "tachyon-fp4-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string path(const std::string& name = "") const { return name.empty() ? path_.string() : (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace tachyon::fp4::test
