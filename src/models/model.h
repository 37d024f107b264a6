// The model interface of the CPU reference backend, and the registry of architectures.
#pragma once
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "loader/checkpoint.h"
#include "models/layers.h"

namespace tachyon {

// Parameter counts by kind, for `tachyon inspect`.
struct ParameterCounts {
  int64_t attention = 0, dense_mlp = 0, experts = 0, router = 0, embeddings = 0, norms = 0, other = 0;
  int64_t total() const { return attention + dense_mlp + experts + router + embeddings + norms + other; }
};

class Model {
 public:
  virtual ~Model() = default;

  const std::string& architecture() const { return architecture_; }
  int vocab_size() const { return vocab_size_; }
  int num_layers() const { return num_layers_; }
  int hidden_size() const { return hidden_size_; }
  int64_t max_context() const { return max_context_; }

  virtual KvCache new_cache(int64_t max_positions = 0) const = 0;  // 0 = the model's context length
  // Runs `tokens` at positions [cache.length(), +n), appends their keys/values to the cache and
  // returns the logits of every row ([n, vocab]) or of the last row only ([vocab]).
  virtual std::vector<float> forward(std::span<const int32_t> tokens, KvCache& cache, bool all_rows = false) = 0;

 protected:
  std::string architecture_;
  int vocab_size_ = 0, num_layers_ = 0, hidden_size_ = 0;
  int64_t max_context_ = 0;
};

// Creates the model named by config.json "architectures" (or model_type). Unsupported
// architectures get an error naming them and listing the supported ones.
std::unique_ptr<Model> create_model(const Checkpoint& checkpoint);
std::vector<std::string> supported_architectures();

// Parameter counts by kind from tensor names (HF naming).
ParameterCounts count_parameters(const WeightStore& weights);

}  // namespace tachyon
