// Choosing the next token from logits: greedy at temperature 0, otherwise temperature, then
// top-k, top-p and min-p filtering (the order transformers applies them), then a draw from a
// seeded generator so that a seed reproduces a run.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace tachyon {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  float min_p = 0.0f;        // 0 = off
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  int32_t sample(std::span<const float> logits);
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<int> order_;       // candidate ids, the sorted ones first (reused between calls)
  std::vector<float> weights_;   // exp((logit - max) / temperature) per candidate id
};

// Index of the largest logit; ties go to the lowest index (as torch.argmax).
int32_t argmax(std::span<const float> logits);
// Validates ranges; throws Error naming the parameter.
void validate(const SamplingParams& params);

}  // namespace tachyon
