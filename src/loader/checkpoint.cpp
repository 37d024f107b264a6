#include "loader/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "loader/gguf.h"
#include "loader/json_file.h"
#include "loader/safetensors.h"

namespace tachyon {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Optional side files: absent -> `fallback`; present but unreadable or invalid -> Error naming the file.
json read_optional_json(const fs::path& path, json fallback) {
  if (!fs::exists(path)) return fallback;
  return read_json_file(path.string());
}

bool has_gguf_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

Checkpoint open_hf_directory(const std::string& path) {
  const fs::path dir(path);
  Checkpoint checkpoint;
  checkpoint.path = path;
  checkpoint.format = "safetensors";
  const fs::path config_path = dir / "config.json";
  if (!fs::exists(config_path)) fail("{}: missing (a model directory needs config.json)", config_path.string());
  checkpoint.config = read_json_file(config_path.string());
  if (!checkpoint.config.is_object())
    fail("{}: expected a JSON object, got {}", config_path.string(), json_kind(checkpoint.config));
  checkpoint.generation_config = read_optional_json(dir / "generation_config.json", json::object());
  checkpoint.tokenizer_json = read_optional_json(dir / "tokenizer.json", nullptr);
  checkpoint.tokenizer_config = read_optional_json(dir / "tokenizer_config.json", json::object());
  checkpoint.gguf_metadata = json::object();
  checkpoint.weights.set_source(path);
  load_safetensors_dir(path, checkpoint.weights);
  return checkpoint;
}

}  // namespace

Checkpoint open_checkpoint(const std::string& path) {
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (error || !fs::exists(status)) fail("{}: no such file or directory", path);
  if (fs::is_directory(status)) return open_hf_directory(path);
  if (fs::is_regular_file(status) && (fs::path(path).extension() == ".gguf" || has_gguf_magic(path))) {
    Checkpoint checkpoint;
    load_gguf_checkpoint(path, checkpoint);
    return checkpoint;
  }
  fail("{}: not a model directory (config.json + safetensors) or a GGUF file", path);
}

}  // namespace tachyon
