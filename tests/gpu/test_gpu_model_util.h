// Shared by the GPU model tests: the CPU reference run on the GPU's own (bf16-rounded) weights, greedy runs
// that record how close each choice was, and logit comparisons.
//
// Why bf16-rounded: the GPU stores matrices in bf16, so against the CPU on the original float32 (or Q4_1-
// dequantized) weights the logits differ by the rounding of every weight (~2^-9 relative each), which can flip
// a greedy choice at a near-tie. With the CPU on the same rounded weights, what remains is the GPU's arithmetic:
// bf16 KV cache, bf16 attention probabilities, bf16 GEMM activations in prefill.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/dtype.h"
#include "gpu/decode_loop.h"
#include "gpu/gpu_model.h"
#include "loader/checkpoint.h"
#include "loader/json_file.h"
#include "models/model.h"

namespace tachyon::gpu_model_test {

// The GPU model tests' bounds (test_gpu_model_tiny.cpp explains them): max |gpu - cpu| / max |cpu| per logit row
// against the CPU on the same weights; a row over it is accepted only at a router near-tie (margin below
// kFlipMargin, at most kMaxFlips rows: expect_rows_within).
constexpr double kCpuBound = 5e-2;
constexpr float kFlipMargin = 0.05f;
constexpr int kMaxFlips = 4;

// A checkpoint whose float tensors of two or more dimensions hold the bf16 rounding of the source's values (as
// float32); vectors (norms, biases) and integer tensors (MXFP4 codes / scales) stay as they are, as on the GPU.
struct RoundedCheckpoint {
  Checkpoint checkpoint;
  std::deque<std::vector<float>> storage;
};

inline std::unique_ptr<RoundedCheckpoint> round_matrices_to_bf16(const Checkpoint& source) {
  auto rounded = std::make_unique<RoundedCheckpoint>();
  Checkpoint& c = rounded->checkpoint;
  c.path = source.path + " (bf16-rounded)";
  c.format = source.format;
  c.config = source.config;
  c.generation_config = source.generation_config;
  c.weights.set_source(source.weights.source());
  for (const auto& [name, tensor] : source.weights.all()) {
    // Integer tensors stay as they are: gpt-oss MXFP4 `*_blocks` / `*_scales` are U8 bytes that the models read
    // as codes (the GPU keeps them exactly), not values to round.
    const bool integer = tensor.dtype == DType::U8 || tensor.dtype == DType::I8 || tensor.dtype == DType::U16 ||
                         tensor.dtype == DType::I16 || tensor.dtype == DType::U32 || tensor.dtype == DType::I32 ||
                         tensor.dtype == DType::U64 || tensor.dtype == DType::I64 || tensor.dtype == DType::BOOL;
    if (integer || !dtype_info(tensor.dtype).is_float_convertible) {
      c.weights.add(tensor);
      continue;
    }
    std::vector<float>& values = rounded->storage.emplace_back(tensor.to_float());
    if (tensor.shape.size() >= 2)
      for (float& v : values) v = bf16_to_float(float_to_bf16(v));
    TensorView view = tensor;
    view.dtype = DType::F32;
    view.data = reinterpret_cast<const uint8_t*>(values.data());
    view.nbytes = values.size() * sizeof(float);
    c.weights.add(view);
  }
  return rounded;
}

inline int32_t argmax(const float* logits, int vocab) {
  return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
}

// Difference between the largest and second largest logit.
inline float top2_gap(const float* logits, int vocab) {
  float first = -INFINITY, second = -INFINITY;
  for (int i = 0; i < vocab; ++i) {
    if (logits[i] > first)
      second = first, first = logits[i];
    else if (logits[i] > second)
      second = logits[i];
  }
  return first - second;
}

struct GreedyRun {
  std::vector<int32_t> tokens;
  std::vector<float> gaps;  // top-2 gap at each choice
};

// Greedy decoding on the CPU reference: the first token from the prompt's logits, then one token per step.
inline GreedyRun cpu_greedy(Model& model, const std::vector<int32_t>& prompt, int n_tokens) {
  GreedyRun run;
  KvCache cache = model.new_cache(static_cast<int64_t>(prompt.size()) + n_tokens + 1);
  std::vector<float> logits = model.forward(prompt, cache);
  const int vocab = model.vocab_size();
  for (int i = 0; i < n_tokens; ++i) {
    const int32_t token = argmax(logits.data(), vocab);
    run.tokens.push_back(token);
    run.gaps.push_back(top2_gap(logits.data(), vocab));
    if (i + 1 < n_tokens) logits = model.forward(std::vector<int32_t>{token}, cache);
  }
  return run;
}

// GPU tokens must equal the CPU's. A divergence is accepted only at a near-tie of the CPU's choice (top-2 gap
// below `tie_gap`, where the logit error allows either token); after it the runs are not comparable.
inline void expect_same_greedy(const std::vector<int32_t>& gpu, const GreedyRun& cpu, float tie_gap,
                               const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.tokens.size()) << what;
  for (size_t i = 0; i < gpu.size(); ++i) {
    if (gpu[i] == cpu.tokens[i]) continue;
    EXPECT_LE(cpu.gaps[i], tie_gap) << what << ": token " << i << " is " << gpu[i] << " on the GPU, " << cpu.tokens[i]
                                    << " on the CPU, whose top-2 gap " << cpu.gaps[i] << " is not a near-tie";
    std::printf("[ %s ] diverges at token %zu of %zu (CPU top-2 gap %.4g <= %.4g: a near-tie)\n", what.c_str(), i,
                gpu.size(), cpu.gaps[i], tie_gap);
    return;
  }
  std::printf("[ %s ] %zu greedy tokens identical\n", what.c_str(), gpu.size());
}

// A tiny fixture's transformers run (tests/fixtures/tiny/NAME/reference.json): the prompt, transformers' greedy
// continuation, the vocabulary, the file of its prompt logits. The fixtures of the GPU model tests derive from it.
struct TinyReference {
  std::vector<int32_t> prompt, reference_greedy;
  int vocab = 0;
  std::string logits_file;  // in the fixture's directory: float32 [prompt, vocab]
};
inline void read_tiny_reference(const std::string& dir, TinyReference& out) {
  const nlohmann::json reference = read_json_file(dir + "/reference.json");
  out.prompt = reference["prompt_ids"].get<std::vector<int32_t>>();
  out.reference_greedy = reference["greedy_ids"].get<std::vector<int32_t>>();
  out.vocab = reference["logits_shape"][1].get<int>();
  out.logits_file = dir + "/" + reference["logits_file"].get<std::string>();
}

// max_i |ours_i - ref_i| / max_i |ref_i| over each row of [rows, vocab]; the worst row's value.
inline double max_relative_error(const std::vector<float>& ours, const std::vector<float>& ref, int vocab) {
  EXPECT_EQ(ours.size(), ref.size());
  double worst = 0;
  for (size_t row = 0; row * vocab < std::min(ours.size(), ref.size()); ++row) {
    double difference = 0, scale = 0;
    for (int i = 0; i < vocab; ++i) {
      const double a = ours[row * vocab + i], b = ref[row * vocab + i];
      difference = std::isfinite(a) ? std::max(difference, std::fabs(a - b)) : INFINITY;
      scale = std::max(scale, std::fabs(b));
    }
    worst = std::max(worst, difference / scale);
  }
  return worst;
}

// MoE routing is discontinuous: at a near-tie between a token's k-th and (k+1)-th expert, GPU and CPU may pick
// different experts and that row's logits differ by O(1). (On the CPU alone, perturbing the tiny MoE fixtures'
// non-expert weights by 1% does this to a few of 64 rows, with errors up to 1.3.) So a row over `bound` is
// accepted only where the GPU's router margin for that token (GpuModel::prefill_router_margins) is below
// `flip_margin` in some sparse layer, and at most `max_flips` rows. Dense models (no margins) get no exception.
// Returns the worst error over the rows that count.
inline double expect_rows_within(const std::vector<float>& ours, const std::vector<float>& ref, int vocab, double bound,
                                 const std::vector<std::vector<float>>& margins, float flip_margin, int max_flips,
                                 const std::string& what) {
  double worst = 0;
  int flips = 0;
  std::string report;
  for (size_t row = 0; (row + 1) * vocab <= ours.size(); ++row) {
    const std::vector<float> a(ours.begin() + row * vocab, ours.begin() + (row + 1) * vocab);
    const std::vector<float> b(ref.begin() + row * vocab, ref.begin() + (row + 1) * vocab);
    const double error = max_relative_error(a, b, vocab);
    if (error <= bound) {
      worst = std::max(worst, error);
      continue;
    }
    float margin = INFINITY;
    for (const auto& layer : margins)
      if (row < layer.size()) margin = std::min(margin, layer[row]);
    report += " row " + std::to_string(row) + ": error " + std::to_string(error) + ", router margin " +
              std::to_string(margin) + ";";
    if (margin < flip_margin) {
      ++flips;
    } else {
      ADD_FAILURE() << what << ": row " << row << " error " << error << " > " << bound << " (router margin " << margin
                    << ")";
    }
  }
  EXPECT_LE(flips, max_flips) << what << ": too many rows over the bound at router near-ties:" << report;
  if (!report.empty()) std::printf("[ %s ] rows over %.3g:%s\n", what.c_str(), bound, report.c_str());
  return worst;
}

inline double max_abs_difference(const std::vector<float>& ours, const std::vector<float>& ref) {
  double worst = 0;
  for (size_t i = 0; i < std::min(ours.size(), ref.size()); ++i)
    worst = std::isfinite(ours[i]) ? std::max(worst, static_cast<double>(std::fabs(ours[i] - ref[i]))) : INFINITY;
  return worst;
}

// n greedy tokens of `model` through the CUDA-graph decode loop against the CPU reference's: a divergence is
// accepted only at a near-tie, judged by how far apart a fresh GPU model on the same weights (`probe`) and the CPU
// are on the prompt's logits. Returns the GPU's tokens.
inline std::vector<int32_t> expect_graph_greedy_matches_cpu(gpu::GpuModel& model, gpu::GpuModel& probe, Model& cpu,
                                                            const std::vector<int32_t>& prompt, int n,
                                                            const std::string& what) {
  gpu::DecodeLoop loop(model, gpu::DecodeSampling{});
  loop.start(prompt);
  loop.enqueue(n - 1, /*use_graph=*/true);
  const std::vector<int32_t> tokens = loop.tokens();
  const GreedyRun reference = cpu_greedy(cpu, prompt, n);
  KvCache cache = cpu.new_cache();
  const double difference = max_abs_difference(probe.prefill_to_host(prompt), cpu.forward(prompt, cache));
  expect_same_greedy(tokens, reference, static_cast<float>(4 * difference + 1e-3), what);
  return tokens;
}

// Logit rows of the same tokens on the GPU and on the CPU: the first `first` tokens in one pass (the verify path),
// then one token per step, each model continuing from its KV state (the CPU's in `cache`).
struct PassAndSteps {
  std::vector<float> gpu, cpu;
};
inline PassAndSteps pass_then_steps(gpu::GpuModel& gpu, Model& cpu, KvCache& cache, std::span<const int32_t> tokens,
                                    size_t first) {
  PassAndSteps rows{gpu.forward_to_host(tokens.first(first)), cpu.forward(tokens.first(first), cache, /*all_rows=*/true)};
  for (size_t t = first; t < tokens.size(); ++t) {
    const std::vector<float> g = gpu.forward_to_host(tokens.subspan(t, 1));
    const std::vector<float> c = cpu.forward(tokens.subspan(t, 1), cache);
    rows.gpu.insert(rows.gpu.end(), g.begin(), g.end());
    rows.cpu.insert(rows.cpu.end(), c.begin(), c.end());
  }
  return rows;
}

}  // namespace tachyon::gpu_model_test
