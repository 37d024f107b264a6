// Reading config.json fields with errors that name the file and the field, and the
// configuration pieces that several architectures share (RoPE variants).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tachyon {

class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& config, std::string source) : config_(config), source_(std::move(source)) {}

  bool has(const std::string& field) const;  // present and not null
  int64_t get_int(const std::string& field) const;
  int64_t get_int(const std::string& field, int64_t fallback) const;
  double get_float(const std::string& field) const;
  double get_float(const std::string& field, double fallback) const;
  bool get_bool(const std::string& field, bool fallback) const;
  std::string get_string(const std::string& field, const std::string& fallback) const;
  const nlohmann::json& raw() const { return config_; }
  const std::string& source() const { return source_; }
  // Throws "<source>: field <field>: <why>".
  [[noreturn]] void fail_field(const std::string& field, const std::string& why) const;
  // Checks lo <= value <= hi (absurd dimensions are rejected before anything is allocated).
  int64_t get_dim(const std::string& field, int64_t lo, int64_t hi) const;
  int64_t get_dim(const std::string& field, int64_t lo, int64_t hi, int64_t fallback) const;

 private:
  const nlohmann::json& config_;
  std::string source_;
};

enum class RopeType { Default, Linear, Llama3, Yarn };

struct RopeConfig {
  RopeType type = RopeType::Default;
  double theta = 10000.0;
  int rotary_dim = 0;  // dimensions rotated per head (== head_dim unless partial)
  double factor = 1.0;
  // llama3
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position = 0;
  // yarn
  double beta_fast = 32.0, beta_slow = 1.0, mscale = 0.0, mscale_all_dim = 0.0;  // mscale*: 0 = absent
  bool truncate = true;
  double attention_factor = 0.0;  // 0 = derive from factor/mscale
  bool interleaved = false;       // rotate adjacent pairs (GPT-J / ggml) instead of halves (NeoX / HF)
};

// Parses rope_parameters (transformers 5) or rope_theta + rope_scaling (older configs) for a head of
// rotary_dim rotated dims, with transformers' defaults. default_theta is the architecture's
// rope_theta when the config has none (10000 for most, 150000 for gpt-oss).
// Unsupported rope types give an error naming the field and the type.
RopeConfig read_rope_config(const ConfigReader& reader, int rotary_dim, double default_theta = 10000.0);

// The sliding window of each of num_layers layers from `layer_types` (gpt-oss, Qwen2, DFlash drafters):
// "sliding_attention" layers get `sliding_window`, "full_attention" ones 0; all 0 without layer_types. Any other
// type, or a list of the wrong length, is an error naming the field.
std::vector<int> read_layer_sliding_windows(const ConfigReader& reader, int num_layers);

}  // namespace tachyon
