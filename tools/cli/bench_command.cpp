// tachyon bench: batch-1 decode and prefill speed of a model on the GPU, against the card's roofline
// (shared/docs/benchmarks.md). Real weights (-m PATH) or random weights of a real shape (--random-weights
// CONFIG.json | DIR | smollm2-135m | qwen3-30b-a3b): speed does not depend on the weight values.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "core/error.h"
#include "gpu/gpu_config.h"
#include "loader/json_file.h"
#ifdef TACHYON_HAS_CUDA
#include "gpu/decode_bench.h"
#include "gpu/fp4_experts.h"
#include "loader/checkpoint.h"
#endif

namespace tachyon::cli {

namespace {

struct BenchOptions {
  std::string model_path, random_weights, prefill = "1024,8192", label, json_file, experts = "bf16";
  int64_t context = 1024, kv_positions = 0;
  int steps = 64, repeats = 5;
  uint64_t seed = 1;
  bool json = false;
};

std::vector<int64_t> parse_lengths(const std::string& text) {
  std::vector<int64_t> lengths;
  if (text.empty() || text == "none") return lengths;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = text.find(',', pos);
    const std::string part = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    int64_t value = 0;
    auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (part.empty() || ec != std::errc() || end != part.data() + part.size() || value < 1)
      fail("--prefill: '{}' is not a positive token count", part);
    lengths.push_back(value);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return lengths;
}

// A built-in shape name, a config.json, or a directory holding one.
nlohmann::json random_weights_config(const std::string& what) {
  if (auto builtin = gpu::builtin_model_config(what)) return *builtin;
  std::filesystem::path path(what);
  if (std::filesystem::is_directory(path)) path /= "config.json";
  if (!std::filesystem::exists(path)) {
    std::string names;
    for (const auto& name : gpu::builtin_model_config_names()) names += (names.empty() ? "" : ", ") + name;
    fail("--random-weights {}: neither a config.json nor a built-in shape ({})", what, names);
  }
  return read_json_file(path.string());
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%MZ", std::gmtime(&now));
  return text;
}

#ifdef TACHYON_HAS_CUDA
int run_bench(const BenchOptions& o) {
  if (o.model_path.empty() == o.random_weights.empty()) fail("give exactly one of -m PATH or --random-weights CONFIG");
  gpu::DecodeBenchOptions bench;
  bench.context = o.context;
  bench.steps = o.steps;
  bench.repeats = o.repeats;
  bench.prefill_lengths = parse_lengths(o.prefill);
  bench.seed = o.seed;
  gpu::GpuModelOptions model_options;
  int64_t needed = o.context + o.steps + gpu::kMaxPassTokens + 1;
  for (int64_t length : bench.prefill_lengths) needed = std::max(needed, length);
  model_options.kv_positions = o.kv_positions > 0 ? o.kv_positions : needed;
  model_options.experts = gpu::parse_expert_format(o.experts, "--experts");

  const auto load_start = std::chrono::steady_clock::now();
  std::unique_ptr<gpu::GpuModel> model;
  Checkpoint checkpoint;  // outlives nothing on the GPU, but keeps the mapping while loading
  std::string model_name;
  if (!o.model_path.empty()) {
    checkpoint = open_checkpoint(o.model_path);
    model = gpu::GpuModel::load(checkpoint, model_options);
    model_name = o.model_path;
  } else {
    model = gpu::GpuModel::random(random_weights_config(o.random_weights), o.random_weights, o.seed, model_options);
    model_name = "random weights: " + o.random_weights;
  }
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  const gpu::GpuModelConfig& c = model->config();
  const gpu::DecodeBenchResult r = gpu::run_decode_bench(*model, bench);
  const std::string date = utc_now();

  nlohmann::json j = gpu::to_json(r);
  j["model"] = model_name;
  j["architecture"] = c.architecture;
  const std::string precision =
      c.expert_format == gpu::ExpertFormat::Bf16
          ? "bf16 weights"
          : fmt::format("{} routed experts, other weights bf16", gpu::expert_format_name(c.expert_format));
  j["precision"] = precision + ", bf16 KV cache, fp32 activations";
  j["experts"] = gpu::expert_format_name(c.expert_format);
  j["date"] = date;
  j["label"] = o.label;
  j["weights_gb"] = model->weights().device_bytes / 1e9;
  j["kv_cache_gb"] = model->kv_cache_bytes() / 1e9;
  j["load_seconds"] = load_seconds;
  if (!o.json_file.empty()) {
    std::ofstream file(o.json_file);
    file << j.dump(2) << "\n";
    if (!file) fail("--json-file {}: cannot write", o.json_file);
  }
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  const double mb = 1e6;
  std::printf("tachyon bench: %s (%s) on %s, %s%s%s\n", model_name.c_str(), c.architecture.c_str(), r.device.c_str(),
              date.c_str(), o.label.empty() ? "" : ", ", o.label.c_str());
  std::printf("  weights %.2f GB on the GPU (%s; loaded in %.1f s); KV cache %.2f GB bf16 (%lld positions)\n",
              model->weights().device_bytes / 1e9, precision.c_str(), load_seconds, model->kv_cache_bytes() / 1e9,
              static_cast<long long>(model->capacity()));
  std::printf("  read bandwidth (stream_read, this run): %.0f GB/s\n", r.bandwidth_bytes_per_second / 1e9);
  std::printf(
      "  bytes per decode token: %.1f MB = weights %.1f MB (attention %.1f, dense MLP %.1f, router %.2f, "
      "experts %.1f, lm_head %.1f, norms %.2f) + KV %.1f MB at mean length %.0f\n",
      r.bytes.total() / mb, r.bytes.weights() / mb, r.bytes.attention / mb, r.bytes.dense_mlp / mb, r.bytes.router / mb,
      r.bytes.experts / mb, r.bytes.lm_head / mb, r.bytes.norms / mb, r.bytes.kv_cache / mb, r.mean_kv_length);
  if (c.experts > 0)
    std::printf("  MoE: %.2f distinct experts per layer per decode token, %.2f for a 16-token pass (of %d)\n",
                r.distinct_experts_per_layer, r.distinct_experts_per_layer_16, c.experts);
  std::printf("  roofline floor: %.1f us/token\n", r.floor_seconds * 1e6);
  std::printf("  decode, batch 1, context %lld, %d steps x %d: graph %.1f us/step = %.1f tok/s, efficiency %.1f%%\n",
              static_cast<long long>(r.context), r.steps, r.repeats, r.graph_step_seconds * 1e6, r.tokens_per_second(),
              100 * r.efficiency());
  std::printf("  decode, stream launches: %.1f us/step = %.1f tok/s, efficiency %.1f%%; host gaps %.1f us/step\n",
              r.stream_step_seconds * 1e6, 1.0 / r.stream_step_seconds, 100 * r.stream_efficiency(),
              (r.stream_step_seconds - r.graph_step_seconds) * 1e6);
  for (const auto& p : r.prefill)
    std::printf("  prefill %lld tokens: %.3f s = %.0f tok/s\n", static_cast<long long>(p.tokens), p.seconds,
                p.tokens_per_second);
  return 0;
}
#else
int run_bench(const BenchOptions&) {
  fail("tachyon bench needs the CUDA backend: this build has none (TACHYON_CUDA=OFF)");
}
#endif

}  // namespace

Runner add_bench_command(CLI::App& app) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Batch-1 decode / prefill speed on the GPU against the roofline");
  cmd->add_option("-m,--model", options->model_path, "Model: a .gguf file or a Hugging Face directory");
  cmd->add_option("--random-weights", options->random_weights,
                  "Random weights of a shape: a config.json, a directory with one, or smollm2-135m / qwen3-30b-a3b");
  cmd->add_option("--context", options->context, "KV length at which decode is timed")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  cmd->add_option("--steps", options->steps, "Decode steps per timed repetition")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--repeats", options->repeats, "Timed repetitions (median reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--prefill", options->prefill, "Prompt lengths timed for prefill (comma-separated; none = skip)")
      ->capture_default_str();
  cmd->add_option("--experts", options->experts,
                  "Routed experts on the GPU: bf16, or nvfp4 / mxfp4 (FP4 kernels; a checkpoint's experts are "
                  "quantized at load)")
      ->capture_default_str();
  cmd->add_option("--kv-positions", options->kv_positions, "KV cache capacity (default: what the runs need)");
  cmd->add_option("--seed", options->seed, "Seed of the random weights and prompt ids")->capture_default_str();
  cmd->add_option("--label", options->label, "Free text recorded with the results (e.g. the commit)");
  cmd->add_flag("--json", options->json, "Print the results as JSON");
  cmd->add_option("--json-file", options->json_file, "Also write the results as JSON to this file");
  return [options] { return run_bench(*options); };
}

}  // namespace tachyon::cli
