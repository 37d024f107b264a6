#include "models/rope.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace tachyon {

namespace {
double yarn_mscale(double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }
}  // namespace

Rope::Rope(const RopeConfig& config) : config_(config) {
  const int dim = config.rotary_dim;
  if (dim <= 0 || dim % 2 != 0) fail("RoPE: rotary dimension {} must be positive and even", dim);
  const int half = dim / 2;
  inv_freq_.resize(half);
  // torch: base ** (arange(0, dim, 2).float() / dim), in float32
  std::vector<float> pos_freq(half);
  for (int i = 0; i < half; ++i) {
    float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    pos_freq[i] = static_cast<float>(std::pow(static_cast<double>(static_cast<float>(config.theta)), static_cast<double>(exponent)));
    inv_freq_[i] = 1.0f / pos_freq[i];
  }
  switch (config.type) {
    case RopeType::Default: break;
    case RopeType::Linear:
      for (float& f : inv_freq_) f = f / static_cast<float>(config.factor);
      break;
    case RopeType::Llama3: {
      const double old_len = static_cast<double>(config.original_max_position);
      const double low_wavelen = old_len / config.low_freq_factor, high_wavelen = old_len / config.high_freq_factor;
      const float factor = static_cast<float>(config.factor);
      for (float& f : inv_freq_) {
        float wavelen = 2.0f * static_cast<float>(M_PI) / f;
        float scaled = wavelen > low_wavelen ? f / factor : f;
        if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
          float smooth = static_cast<float>((old_len / wavelen - config.low_freq_factor) /
                                            (config.high_freq_factor - config.low_freq_factor));
          scaled = (1 - smooth) * scaled / factor + smooth * scaled;
        }
        f = scaled;
      }
      break;
    }
    case RopeType::Yarn: {
      const double factor = config.factor, base = config.theta;
      const double max_pos = static_cast<double>(config.original_max_position);
      auto correction_dim = [&](double rotations) {
        return (dim * std::log(max_pos / (rotations * 2 * M_PI))) / (2 * std::log(base));
      };
      double low = correction_dim(config.beta_fast), high = correction_dim(config.beta_slow);
      if (config.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, static_cast<double>(dim - 1));
      if (low == high) high += 0.001;
      for (int i = 0; i < half; ++i) {
        float ramp = static_cast<float>((static_cast<float>(i) - low) / (high - low));
        ramp = std::clamp(ramp, 0.0f, 1.0f);
        float extrapolation_factor = 1.0f - ramp;
        float extrapolation = 1.0f / pos_freq[i];
        float interpolation = 1.0f / (static_cast<float>(factor) * pos_freq[i]);
        inv_freq_[i] = interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor;
      }
      if (config.attention_factor > 0) attention_factor_ = static_cast<float>(config.attention_factor);
      else if (config.mscale != 0 && config.mscale_all_dim != 0)
        attention_factor_ = static_cast<float>(yarn_mscale(factor, config.mscale) / yarn_mscale(factor, config.mscale_all_dim));
      else attention_factor_ = static_cast<float>(yarn_mscale(factor, 1.0));
      break;
    }
  }
}

void Rope::apply(float* head, int64_t position) const {
  const int half = config_.rotary_dim / 2;
  for (int i = 0; i < half; ++i) {
    // torch multiplies position and inv_freq in float32, then takes cos/sin of that float32 angle
    float angle = static_cast<float>(position) * inv_freq_[i];
    float c = static_cast<float>(std::cos(static_cast<double>(angle))) * attention_factor_;
    float s = static_cast<float>(std::sin(static_cast<double>(angle))) * attention_factor_;
    float* a = config_.interleaved ? head + 2 * i : head + i;
    float* b = config_.interleaved ? head + 2 * i + 1 : head + i + half;
    float x = *a, y = *b;
    *a = x * c - y * s;
    *b = y * c + x * s;
  }
}

}  // namespace tachyon
