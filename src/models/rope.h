// Rotary position embedding: per-dimension inverse frequencies for each RoPE variant, computed
// in float32 exactly as transformers does (so logits match it closely), and their application
// to a head vector in either pairing convention.
#pragma once
#include <vector>

#include "models/config.h"

namespace tachyon {

class Rope {
 public:
  explicit Rope(const RopeConfig& config);
  // Rotates the first rotary_dim values of `head` (one head of one token) to `position`.
  void apply(float* head, int64_t position) const;
  int rotary_dim() const { return config_.rotary_dim; }
  const RopeConfig& config() const { return config_; }
  const std::vector<float>& inverse_frequencies() const { return inv_freq_; }
  float attention_factor() const { return attention_factor_; }

 private:
  RopeConfig config_;
  std::vector<float> inv_freq_;  // rotary_dim / 2 values
  float attention_factor_ = 1.0f;  // multiplies cos and sin (YaRN)
};

}  // namespace tachyon
