// The quality report of `tachyon eval`: a reference model and candidate models (the same model with FP4
// weights) run over the same chunks of real text; per predicted position, the next-token distributions are
// compared. Metrics (each over all scored positions):
//   KL(P_ref || P_cand) = sum_v p_ref(v) (log p_ref(v) - log p_cand(v)), nats: mean, median, p99, max;
//   top-1 agreement: argmax of the candidate == argmax of the reference;
//   perplexity exp(mean -log p(next token)) of every model, and its top-1 accuracy on the text.
// Chunks are independent sequences (fresh KV cache) of `chunk` tokens; a chunk of n tokens scores n - 1
// positions. Every model runs the whole chunk in one forward pass (batched prefill), one chunk at a time.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/model.h"
#include "tokenizer/tokenizer.h"

namespace tachyon::fp4 {

// Tokens of the files concatenated in order (each file's text encoded on its own, no special tokens parsed),
// stopping once `max_tokens` are collected. Errors name unreadable files.
struct EvalCorpus {
  std::vector<int32_t> tokens;
  std::vector<std::string> files;  // the files actually used
};
EvalCorpus tokenize_files(const Tokenizer& tokenizer, const std::vector<std::string>& files, int64_t max_tokens);

struct ModelMetrics {
  std::string label;
  int64_t positions = 0;
  double nll_sum = 0;       // -log p(next token)
  int64_t correct = 0;      // argmax == next token
  // Against the reference (unused for the reference itself):
  double kl_sum = 0;
  int64_t top1_agree = 0;
  std::vector<float> kl;    // per position, for quantiles

  double perplexity() const;
  double kl_mean() const { return positions ? kl_sum / positions : 0; }
  double kl_quantile(double q) const;
  double top1_agreement() const { return positions ? static_cast<double>(top1_agree) / positions : 0; }
  double accuracy() const { return positions ? static_cast<double>(correct) / positions : 0; }
};

struct EvalReport {
  ModelMetrics reference;
  std::vector<ModelMetrics> candidates;
  int64_t chunk = 0, chunks = 0;
  double seconds = 0;
  std::string table() const;  // human-readable
  nlohmann::json to_json() const;
};

struct LabelledModel {
  std::string label;
  Model* model = nullptr;
};

// Scores `positions` predictions (rounded up to whole chunks of `chunk` tokens) from `tokens`.
// progress(chunk_done, chunks) after each chunk.
EvalReport compare_models(const LabelledModel& reference, const std::vector<LabelledModel>& candidates,
                          const std::vector<int32_t>& tokens, int64_t positions, int64_t chunk,
                          const std::function<void(int64_t, int64_t)>& progress = {});

// Log-softmax of one row of logits, in double for the normalizer.
void log_softmax(const float* logits, int64_t n, std::vector<double>& out);

}  // namespace tachyon::fp4
