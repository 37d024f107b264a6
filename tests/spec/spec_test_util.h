// Helpers of the speculative decoding tests: loading a CPU target, random in-memory DFlash drafters, plain
// decoding (the loop of runtime/generate.cpp without a tokenizer), and chi-square p-values.
#pragma once
#include <cmath>
#include <fstream>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/checkpoint.h"
#include "models/decoder.h"
#include "models/dflash_drafter.h"
#include "runtime/sampler.h"
#include "spec/target.h"
#include "support/paths.h"

namespace tachyon::test {

inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot open " + path);
  return nlohmann::json::parse(file);
}

inline std::vector<float> read_f32_file(const std::string& path, size_t count) {
  std::vector<float> values(count);
  std::ifstream file(path, std::ios::binary);
  file.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(count * sizeof(float)));
  if (!file) throw std::runtime_error(path + ": too short");
  return values;
}

// A target model and its checkpoint, kept alive together.
struct LoadedTarget {
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<Model> model;
  DecoderModel& decoder() const { return dynamic_cast<DecoderModel&>(*model); }
};

inline LoadedTarget load_target(const std::string& path) {
  LoadedTarget t;
  t.checkpoint = std::make_unique<Checkpoint>(open_checkpoint(path));
  t.model = create_model(*t.checkpoint);
  return t;
}

struct DrafterShape {
  int layers = 1, heads = 2, kv_heads = 1, head_dim = 16, intermediate = 32, block_size = 8;
  std::vector<int> target_layer_ids;  // empty = z-lab's default for `layers` features
  int32_t mask_token_id = 0;
  float weight_std = 0.15f;
};

// A random drafter checkpoint in memory (float32 tensors, z-lab names) for a target.
struct InMemoryDrafter {
  std::vector<std::unique_ptr<std::vector<float>>> buffers;
  Checkpoint checkpoint;
  std::unique_ptr<DFlashDrafter> drafter;
};

inline std::unique_ptr<InMemoryDrafter> random_drafter(const DecoderModel& target, const DrafterShape& shape,
                                                       uint64_t seed) {
  auto out = std::make_unique<InMemoryDrafter>();
  const int64_t d = target.hidden_size();
  nlohmann::json dflash = {{"mask_token_id", shape.mask_token_id}};
  if (!shape.target_layer_ids.empty()) dflash["target_layer_ids"] = shape.target_layer_ids;
  const int64_t k = shape.target_layer_ids.empty() ? shape.layers : static_cast<int64_t>(shape.target_layer_ids.size());
  out->checkpoint.path = "<random drafter>";
  out->checkpoint.format = "safetensors";
  out->checkpoint.config = {{"architectures", {"DFlashDraftModel"}},
                            {"block_size", shape.block_size},
                            {"dflash_config", dflash},
                            {"num_target_layers", target.num_layers()},
                            {"hidden_size", d},
                            {"intermediate_size", shape.intermediate},
                            {"num_hidden_layers", shape.layers},
                            {"num_attention_heads", shape.heads},
                            {"num_key_value_heads", shape.kv_heads},
                            {"head_dim", shape.head_dim},
                            {"rms_norm_eps", 1e-6},
                            {"rope_theta", 1000000.0}};
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto add = [&](const std::string& name, std::vector<int64_t> dims, bool norm) {
    int64_t count = 1;
    for (int64_t v : dims) count *= v;
    auto buffer = std::make_unique<std::vector<float>>(count);
    for (float& v : *buffer) v = norm ? 1.0f + 0.2f * normal(rng) : shape.weight_std * normal(rng);
    TensorView t;
    t.name = name;
    t.dtype = DType::F32;
    t.shape = dims;
    t.data = reinterpret_cast<const uint8_t*>(buffer->data());
    t.nbytes = count * sizeof(float);
    t.file = "<memory>";
    out->checkpoint.weights.add(t);
    out->buffers.push_back(std::move(buffer));
  };
  const int64_t q = int64_t{shape.heads} * shape.head_dim, kv = int64_t{shape.kv_heads} * shape.head_dim;
  add("fc.weight", {d, k * d}, false);
  add("hidden_norm.weight", {d}, true);
  add("norm.weight", {d}, true);
  for (int i = 0; i < shape.layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    add(p + "self_attn.q_proj.weight", {q, d}, false);
    add(p + "self_attn.k_proj.weight", {kv, d}, false);
    add(p + "self_attn.v_proj.weight", {kv, d}, false);
    add(p + "self_attn.o_proj.weight", {d, q}, false);
    add(p + "self_attn.q_norm.weight", {shape.head_dim}, true);
    add(p + "self_attn.k_norm.weight", {shape.head_dim}, true);
    add(p + "mlp.gate_proj.weight", {shape.intermediate, d}, false);
    add(p + "mlp.up_proj.weight", {shape.intermediate, d}, false);
    add(p + "mlp.down_proj.weight", {d, shape.intermediate}, false);
    add(p + "input_layernorm.weight", {d}, true);
    add(p + "post_attention_layernorm.weight", {d}, true);
  }
  out->drafter = std::make_unique<DFlashDrafter>(out->checkpoint, drafter_target_info(target));
  return out;
}

// Plain decoding as runtime/generate.cpp does it (a Sampler, one token per forward), without a tokenizer.
inline std::vector<int32_t> plain_decode(Model& model, const std::vector<int32_t>& prompt, int max_tokens,
                                         const SamplingParams& sampling, const std::vector<int32_t>& stop_ids = {}) {
  KvCache cache = model.new_cache(std::min<int64_t>(model.max_context(), static_cast<int64_t>(prompt.size()) + max_tokens));
  Sampler sampler(sampling);
  std::vector<float> logits = model.forward(prompt, cache);
  std::vector<int32_t> out;
  for (int i = 0; i < max_tokens; ++i) {
    int32_t token = sampler.sample(logits);
    if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) break;
    out.push_back(token);
    if (i + 1 == max_tokens || cache.length() >= cache.max_positions()) break;
    int32_t next[1] = {token};
    logits = model.forward(next, cache);
  }
  return out;
}

// Regularized upper incomplete gamma Q(a, x) (series / continued fraction).
inline double gamma_q(double a, double x) {
  if (x <= 0) return 1.0;
  const double log_prefix = -x + a * std::log(x) - std::lgamma(a);
  if (x < a + 1) {
    double sum = 1.0 / a, term = sum;
    for (int n = 1; n < 100000; ++n) {
      term *= x / (a + n);
      sum += term;
      if (std::abs(term) < std::abs(sum) * 1e-15) break;
    }
    return 1.0 - sum * std::exp(log_prefix);
  }
  // Lentz's continued fraction for Q.
  double b = x + 1 - a, c = 1e300, d = 1 / b, h = d;
  for (int i = 1; i < 100000; ++i) {
    const double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (std::abs(d) < 1e-300) d = 1e-300;
    c = b + an / c;
    if (std::abs(c) < 1e-300) c = 1e-300;
    d = 1 / d;
    const double delta = d * c;
    h *= delta;
    if (std::abs(delta - 1) < 1e-15) break;
  }
  return std::exp(log_prefix) * h;
}

// P(chi-square with df degrees of freedom >= statistic).
inline double chi_square_p_value(double statistic, int df) { return gamma_q(df / 2.0, statistic / 2.0); }

struct ChiSquare {
  double statistic = 0;
  int df = 0;
  double p_value = 1;
};

// Goodness of fit of counts to expected probabilities; categories with expected count < min_expected are
// pooled into one.
inline ChiSquare chi_square_fit(const std::vector<int64_t>& counts, const std::vector<double>& probs,
                                double min_expected = 5) {
  int64_t n = 0;
  for (int64_t c : counts) n += c;
  ChiSquare r;
  double pooled_expected = 0, pooled_count = 0;
  int cells = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double e = probs[i] * n;
    if (e < min_expected) {
      pooled_expected += e;
      pooled_count += counts[i];
      continue;
    }
    r.statistic += (counts[i] - e) * (counts[i] - e) / e;
    ++cells;
  }
  if (pooled_expected > 0) {
    r.statistic += (pooled_count - pooled_expected) * (pooled_count - pooled_expected) / pooled_expected;
    ++cells;
  }
  r.df = cells - 1;
  r.p_value = chi_square_p_value(r.statistic, r.df);
  return r;
}

// Homogeneity of two samples over the same categories (cells empty in both are dropped).
inline ChiSquare chi_square_two_sample(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  double na = 0, nb = 0;
  for (int64_t c : a) na += c;
  for (int64_t c : b) nb += c;
  ChiSquare r;
  int cells = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double total = a[i] + b[i];
    if (total == 0) continue;
    const double ea = total * na / (na + nb), eb = total * nb / (na + nb);
    r.statistic += (a[i] - ea) * (a[i] - ea) / ea + (b[i] - eb) * (b[i] - eb) / eb;
    ++cells;
  }
  r.df = cells - 1;
  r.p_value = chi_square_p_value(r.statistic, r.df);
  return r;
}

}  // namespace tachyon::test
