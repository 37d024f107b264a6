// A model on disk, whatever its format: a Hugging Face directory (config.json + safetensors +
// tokenizer files) or a single GGUF file. Everything downstream sees the Hugging Face view:
// the GGUF loader translates its metadata into an HF-style config.json and its tensor names into
// HF names (model.layers.N.self_attn.q_proj.weight, ...), so model code knows one naming only.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "loader/weights.h"

namespace tachyon {

struct Checkpoint {
  std::string path;    // the directory or the .gguf file
  std::string format;  // "safetensors" or "gguf"
  nlohmann::json config;             // HF config.json (synthesized for GGUF)
  nlohmann::json generation_config;  // generation_config.json, or {} when absent
  nlohmann::json tokenizer_json;     // tokenizer.json, or null when absent
  nlohmann::json tokenizer_config;   // tokenizer_config.json, or {} (chat_template, special tokens)
  nlohmann::json gguf_metadata;      // every GGUF key -> value (arrays as JSON arrays); {} for HF dirs
  WeightStore weights;
};

// Opens a directory (HF) or a .gguf file. Throws Error naming the file and field at fault.
Checkpoint open_checkpoint(const std::string& path);

}  // namespace tachyon
