// tachyon bench: batch-1 decode and prefill speed of a model on the GPU, against the card's roofline
// (shared/docs/benchmarks.md). Real weights (-m PATH) or random weights of a real shape (--random-weights
// CONFIG.json | DIR | smollm2-135m | qwen3-30b-a3b): speed does not depend on the weight values.
// --verify-sweep B,B,..: verify-pass time and distinct experts per block size, the drafter's part of a round
// (--drafter-config: a drafter directory, or random weights of the published Qwen3-Coder drafter's size) and a PROJECTION of DFlash tokens/s from published tau (docs/dflash.md, "Block size against
// cost").
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
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
#include "gpu/fp8_weights.h"
#include "gpu/gpu_config.h"
#include "loader/json_file.h"
#include "spec/block_size_policy.h"
#ifdef TACHYON_HAS_CUDA
#include "gpu/decode_bench.h"
#include "gpu/fp4_experts.h"
#include "gpu/gpu_spec_decoder.h"
#include "gpu/spec_bench.h"
#include "spec/random_drafter.h"
#include "tokenizer/tokenizer.h"
#include "loader/checkpoint.h"
#endif

namespace tachyon::cli {

namespace {

struct BenchOptions {
  std::string model_path, random_weights, prefill = "1024,8192", label, json_file, experts, fp8 = "none";
  std::string verify_sweep, drafter_config, tau = "6.4,8";
  std::string draft_path, prompts = "prompts/chat.jsonl,prompts/code.jsonl,prompts/math.jsonl";
  int max_tokens = 128, block_size = 0, prompt_limit = 0;
  bool adaptive_block_size = false, persistent = true, persistent_explicit = false, streamed = false;
  int64_t context = 1024, kv_positions = 0;
  int steps = 64, repeats = 5;
  uint64_t seed = 1;
  bool json = false;
};

// The comma-separated parts of `text`, empty ones included (the parsers below refuse them).
std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (true) {
    const size_t comma = text.find(',', pos);
    parts.push_back(text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
    if (comma == std::string::npos) return parts;
    pos = comma + 1;
  }
}

std::vector<int64_t> parse_lengths(const std::string& text, const char* what = "--prefill") {
  std::vector<int64_t> lengths;
  if (text.empty() || text == "none") return lengths;
  for (const std::string& part : split_commas(text)) {
    int64_t value = 0;
    auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (part.empty() || ec != std::errc() || end != part.data() + part.size() || value < 1)
      fail("{}: '{}' is not a positive token count", what, part);
    lengths.push_back(value);
  }
  return lengths;
}

std::vector<double> parse_numbers(const std::string& text, const char* what) {
  std::vector<double> values;
  for (const std::string& part : split_commas(text)) {
    char* end = nullptr;
    const double value = std::strtod(part.c_str(), &end);
    if (part.empty() || end != part.c_str() + part.size()) fail("{}: '{}' is not a number", what, part);
    values.push_back(value);
  }
  return values;
}

// The per-slot acceptance p, the same for every slot, with E(block) = (1 - p^block) / (1 - p) = tau: the
// policy's expected_tokens_per_round with alpha_k = p for every k.
double acceptance_for_tau(double tau, int block) {
  if (!(tau > 1 && tau < block)) fail("--tau {}: must lie strictly between 1 and {}", tau, block);
  double lo = 0, hi = 1;
  for (int i = 0; i < 100; ++i) {
    const double p = 0.5 * (lo + hi);
    (expected_tokens_per_round(std::vector<double>(block - 1, p), block) < tau ? lo : hi) = p;
  }
  return 0.5 * (lo + hi);
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%MZ", std::gmtime(&now));
  return text;
}

#ifdef TACHYON_HAS_CUDA
// --draft: DFlash on the GPU against plain decoding, same run (gpu/spec_bench.h).
int run_draft_bench(const BenchOptions& o) {
  if (o.model_path.empty()) fail("--draft needs a real model (-m PATH): acceptance depends on the weights");
  if (!o.verify_sweep.empty()) fail("--draft and --verify-sweep are separate runs");
  Checkpoint checkpoint = open_checkpoint(o.model_path);
  Checkpoint draft_checkpoint = open_checkpoint(o.draft_path);
  const Tokenizer tokenizer = Tokenizer::from_checkpoint(checkpoint);
  gpu::GpuModelOptions model_options;
  model_options.kv_positions = o.kv_positions > 0 ? o.kv_positions : 4096;
  if (!o.experts.empty()) model_options.experts = gpu::parse_expert_format(o.experts, "--experts");
  model_options.fp8 = gpu::parse_fp8_weights(o.fp8, "--fp8");
  // The plain-decode baseline stays on the kernel-per-op step even by default: its greedy tokens are the reference
  // the speculative output must equal, and only the per-op kernels give the verify passes' bits at one token (the
  // persistent kernel rounds differently: 16 of 18 identical in session 11, divergences at near-ties). Its plain
  // steps are ~1.3x faster on SmolLM2: --persistent measures against them.
  model_options.persistent_decode = o.persistent && o.persistent_explicit;
  gpu::GpuSpecDecoder loaded = gpu::load_gpu_spec_decoder(checkpoint, draft_checkpoint, model_options);
  gpu::GpuModel* model = loaded.target.get();
  gpu::GpuDrafter& drafter = *loaded.drafter;
  gpu::SpecBenchOptions bench;
  for (std::string& file : split_commas(o.prompts))
    if (!file.empty()) bench.prompt_files.push_back(std::move(file));
  bench.max_tokens = o.max_tokens;
  bench.limit = o.prompt_limit;
  bench.block_size = o.block_size;
  bench.adaptive = o.adaptive_block_size;
  bench.phase_context = o.context;
  nlohmann::json j = gpu::run_spec_bench(*model, drafter, tokenizer, bench);
  j["model"] = o.model_path;
  j["drafter"] = o.draft_path;
  j["experts"] = gpu::expert_format_name(model->config().expert_format);
  j["fp8"] = gpu::fp8_weights_name(model->config().fp8);
  j["device"] = cuda::current_device_info().name;
  j["date"] = utc_now();
  j["label"] = o.label;
  if (!o.json_file.empty()) {
    std::ofstream out(o.json_file);
    if (!out) fail("--json-file {}: cannot open for writing", o.json_file);
    out << j.dump(2) << "\n";
  }
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("tachyon bench --draft: %s + %s on %s (%s)\n", o.model_path.c_str(), o.draft_path.c_str(),
                j["device"].get<std::string>().c_str(), j["date"].get<std::string>().c_str());
    gpu::print_spec_bench(j);
  }
  return 0;
}

int run_bench(const BenchOptions& o) {
  if (!o.draft_path.empty()) return run_draft_bench(o);
  if (o.model_path.empty() == o.random_weights.empty()) fail("give exactly one of -m PATH or --random-weights CONFIG");
  if (!o.drafter_config.empty() && o.verify_sweep.empty()) fail("--drafter-config needs --verify-sweep");
  if (!o.verify_sweep.empty()) {  // check the arguments before minutes of loading
    for (int64_t b : parse_lengths(o.verify_sweep, "--verify-sweep"))
      if (b > gpu::kMaxPassTokens) fail("--verify-sweep: block size {} is above {}", b, gpu::kMaxPassTokens);
    for (double tau : parse_numbers(o.tau, "--tau")) acceptance_for_tau(tau, gpu::kMaxPassTokens);
  }
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
  if (!o.experts.empty()) model_options.experts = gpu::parse_expert_format(o.experts, "--experts");
  model_options.fp8 = gpu::parse_fp8_weights(o.fp8, "--fp8");
  model_options.persistent_decode = o.persistent;
  model_options.trace_persistent_decode = o.persistent;  // the phase times it prints
  model_options.force_streamed_persistent = o.streamed;

  const auto load_start = std::chrono::steady_clock::now();
  std::unique_ptr<gpu::GpuModel> model;
  Checkpoint checkpoint;  // outlives nothing on the GPU, but keeps the mapping while loading
  std::string model_name;
  if (!o.model_path.empty()) {
    checkpoint = open_checkpoint(o.model_path);
    model = gpu::GpuModel::load(checkpoint, model_options);
    model_name = o.model_path;
  } else {
    model = gpu::GpuModel::random(gpu::random_weights_config(o.random_weights), o.random_weights, o.seed, model_options);
    model_name = "random weights: " + o.random_weights;
  }
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  const gpu::GpuModelConfig& c = model->config();
  const gpu::DecodeBenchResult r = gpu::run_decode_bench(*model, bench);
  const std::string date = utc_now();

  nlohmann::json j = gpu::to_json(r);
  j["model"] = model_name;
  j["architecture"] = c.architecture;
  std::string precision =
      c.expert_format == gpu::ExpertFormat::Bf16
          ? "bf16 weights"
          : fmt::format("{} routed experts, other weights bf16", gpu::expert_format_name(c.expert_format));
  if (c.fp8.any()) precision += fmt::format(" (FP8: {})", gpu::fp8_weights_name(c.fp8));
  j["precision"] = precision + ", bf16 KV cache, fp32 activations" +
                   (model->persistent_decode_active()
                        ? "; decode steps as one persistent kernel (" + model->persistent_kernel_name() + ")"
                        : "");
  j["experts"] = gpu::expert_format_name(c.expert_format);
  j["fp8"] = gpu::fp8_weights_name(c.fp8);
  j["persistent_decode"] = model->persistent_decode_active();
  j["persistent_kernel"] = model->persistent_kernel_name();
  const auto phases = model->persistent_phase_times();
  const auto stream_phases = model->streamed_phase_times();
  if (stream_phases) {
    nlohmann::json per_phase = nlohmann::json::array();
    for (int k = 0; k < kernels::kStreamPhases; ++k)
      per_phase.push_back({{"phase", kernels::kStreamPhaseNames[k]},
                           {"median_block_us", stream_phases->median_block_us[k]},
                           {"slowest_block_us", stream_phases->slowest_block_us[k]},
                           {"slowest_block", stream_phases->slowest_block[k]},
                           {"block0_wait_us", stream_phases->block0_wait_us[k]}});
    j["persistent_phases_per_layer"] = per_phase;
    j["persistent_kernel_us"] = stream_phases->total_us;
    j["persistent_unit_stamps_us"] = stream_phases->unit_stamps_us;
  }
  if (phases) {
    nlohmann::json per_phase = nlohmann::json::array();
    for (int k = 0; k < kernels::kPersistentPhases; ++k)
      per_phase.push_back({{"phase", kernels::kPersistentPhaseNames[k]}, {"work_us", phases->work_us[k]},
                           {"barrier_us", phases->barrier_us[k]}});
    j["persistent_phases_per_layer"] = per_phase;
    j["persistent_kernel_us"] = phases->total_us;
    j["persistent_detail_stamps_us"] = phases->detail_stamps_us;
    j["persistent_slowest_block_us"] = phases->slowest_block_us;
    j["persistent_slowest_block"] = phases->slowest_block;
    j["persistent_median_block_us"] = phases->median_block_us;
  }
  j["date"] = date;
  j["label"] = o.label;
  j["weights_gb"] = model->weights().device_bytes / 1e9;
  j["kv_cache_gb"] = model->kv_cache_bytes() / 1e9;
  j["load_seconds"] = load_seconds;
  if (!o.verify_sweep.empty()) {
    // Block-size sweep (issue 5 item 6): measured verify / drafter-proxy pass times and distinct experts, then a
    // PROJECTION of tokens/s from published tau (docs/dflash.md, "Block size against cost").
    gpu::VerifySweepOptions sweep;
    sweep.blocks.clear();
    for (int64_t b : parse_lengths(o.verify_sweep, "--verify-sweep"))
      sweep.blocks.push_back(static_cast<int>(std::min<int64_t>(b, 1 << 20)));
    sweep.context = o.context;
    sweep.repeats = o.repeats;
    sweep.seed = o.seed;
    // The drafter: a checkpoint directory, or random weights of the published Qwen3-Coder-30B-A3B drafter's size
    // (speed only), run by the real GpuDrafter.
    std::unique_ptr<RandomDrafterCheckpoint> random_drafter;
    Checkpoint drafter_checkpoint;
    std::unique_ptr<gpu::GpuDrafter> drafter;
    nlohmann::json drafter_json;
    if (!o.drafter_config.empty()) {
      const nlohmann::json target_json = {{"hidden_size", c.hidden},
                                          {"num_hidden_layers", c.layers},
                                          {"num_attention_heads", c.heads},
                                          {"num_key_value_heads", c.kv_heads},
                                          {"head_dim", c.head_dim},
                                          {"vocab_size", c.vocab},
                                          {"rms_norm_eps", c.rms_eps},
                                          {"rope_theta", c.rope.theta},
                                          {"max_position_embeddings", c.max_context}};
      const Checkpoint* source = nullptr;
      if (o.drafter_config == "qwen3-coder-30b-a3b-dflash") {
        random_drafter = random_dflash_checkpoint(qwen3_coder_dflash_config(target_json), o.seed + 1);
        source = &random_drafter->checkpoint;
      } else {
        drafter_checkpoint = open_checkpoint(o.drafter_config);
        source = &drafter_checkpoint;
      }
      drafter_json = source->config;
      drafter = std::make_unique<gpu::GpuDrafter>(*source, *model, o.context + gpu::kMaxPassTokens + 1);
    }
    const std::vector<gpu::VerifySweepPoint> points = gpu::run_verify_sweep(*model, drafter.get(), sweep);
    const double decode_step = r.graph_step_seconds;  // plain decoding: one token per step (b = 1, no draft)

    nlohmann::json sweep_json = nlohmann::json::array();
    for (const auto& p : points) {
      auto us = [](const std::vector<double>& s) {
        std::vector<double> out;
        for (double v : s) out.push_back(v * 1e6);
        return out;
      };
      sweep_json.push_back({{"block", p.block},
                            {"verify_us", p.verify_seconds * 1e6},
                            {"draft_us", p.draft_seconds * 1e6},
                            {"round_us", p.round_seconds() * 1e6},
                            {"verify_over_decode_step", p.verify_seconds / decode_step},
                            {"distinct_experts_per_layer", p.distinct_experts_per_layer},
                            {"timed_as", p.graphed ? "graph" : "stream launches"},
                            {"verify_us_samples", us(p.verify_samples)},
                            {"draft_us_samples", us(p.draft_samples)}});
    }
    // Projection: slot acceptance p fitted to each published tau at b = 16; E(b) from the policy's model; cost[b]
    // = measured round time (b = 1: the plain decode step); the policy's pick vs fixed b = 16.
    nlohmann::json projections = nlohmann::json::array();
    std::vector<double> cost(gpu::kMaxPassTokens + 1, std::numeric_limits<double>::infinity());
    cost[1] = decode_step;
    for (const auto& p : points)
      if (p.block > 1) cost[p.block] = p.round_seconds();
    for (double tau : parse_numbers(o.tau, "--tau")) {
      const double acceptance = acceptance_for_tau(tau, gpu::kMaxPassTokens);
      const std::vector<double> alpha(gpu::kMaxPassTokens - 1, acceptance);
      const int picked = best_block_size(alpha, cost, 1, gpu::kMaxPassTokens);
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& p : points) {
        const double tokens = expected_tokens_per_round(alpha, p.block);
        const double seconds = p.block > 1 ? p.round_seconds() : decode_step;
        rows.push_back({{"block", p.block},
                        {"expected_tokens_per_round", tokens},
                        {"projected_tokens_per_second", tokens / seconds},
                        {"projected_speedup_over_decode", tokens / seconds * decode_step}});
      }
      const auto rate = [&](int b) { return std::isfinite(cost[b]) ? expected_tokens_per_round(alpha, b) / cost[b] : 0.0; };
      projections.push_back({{"tau_at_16", tau},
                             {"slot_acceptance", acceptance},
                             {"rows", rows},
                             {"policy_block", picked},
                             {"policy_tokens_per_second", rate(picked)},
                             {"fixed_16_tokens_per_second", rate(16)},
                             {"policy_over_fixed_16", rate(16) > 0 ? rate(picked) / rate(16) : 0.0}});
    }
    j["verify_sweep"] = {
        {"context", o.context},
        {"method",
         "measured: one target pass of b tokens at KV length context (CUDA graph replay, median) and the drafter's "
         "part of a round at the same KV length (GpuDrafter context pass over b rows + drafting pass of b slots, "
         "one graph); distinct experts of b pseudo-random tokens; projection: per-slot acceptance fitted to the "
         "published tau at b = 16"},
        {"drafter", drafter ? nlohmann::json{{"source", o.drafter_config}, {"config", drafter_json}} : nlohmann::json()},
        {"decode_step_us", decode_step * 1e6},
        {"points", sweep_json},
        {"projection", projections}};
  }
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
  if (phases) {
    std::printf("  persistent kernel, last step: %.1f us (block 0's clock); per layer, work + barrier wait (us):",
                phases->total_us);
    for (int k = 0; k < kernels::kPersistentPhases; ++k)
      std::printf(" %s %.2f + %.2f%s", kernels::kPersistentPhaseNames[k], phases->work_us[k], phases->barrier_us[k],
                  k + 1 < kernels::kPersistentPhases ? "," : "\n");
    const double* d = phases->detail_stamps_us;
    std::printf("  persistent, block 0 inside phases (us from the phase's start): qkv weights landed %.2f, norm %.2f; "
                "attention q/k %.2f, keys %.2f; o_proj combine %.2f\n", d[0], d[1], d[2], d[3], d[4]);
    std::printf("  persistent, all blocks' work per layer (us), slowest (block) / median:");
    for (int k = 0; k < kernels::kPersistentPhases; ++k)
      std::printf(" %s %.2f (%d) / %.2f%s", kernels::kPersistentPhaseNames[k], phases->slowest_block_us[k],
                  phases->slowest_block[k], phases->median_block_us[k], k + 1 < kernels::kPersistentPhases ? "," : "\n");
  }
  if (stream_phases) {
    std::printf("  streamed persistent kernel, last step: %.1f us (block 0's clock); per layer (us), work median / "
                "slowest (block), block 0's wait:", stream_phases->total_us);
    for (int k = 0; k < kernels::kStreamPhases; ++k)
      std::printf(" %s %.2f / %.2f (%d), %.2f%s", kernels::kStreamPhaseNames[k], stream_phases->median_block_us[k],
                  stream_phases->slowest_block_us[k], stream_phases->slowest_block[k],
                  stream_phases->block0_wait_us[k], k + 1 < kernels::kStreamPhases ? ";" : "\n");
    const double* u = stream_phases->unit_stamps_us;
    std::printf("  streamed, block 0's attention unit (us from the phase's start): q ready %.2f, keys staged %.2f, "
                "items %.2f, done %.2f\n", u[0], u[1], u[2], u[3]);
  }
  for (const auto& p : r.prefill)
    std::printf("  prefill %lld tokens: %.3f s = %.0f tok/s\n", static_cast<long long>(p.tokens), p.seconds,
                p.tokens_per_second);
  if (j.contains("verify_sweep")) {
    const auto& v = j["verify_sweep"];
    std::printf("  verify sweep at context %lld (measured; draft = %s):\n", static_cast<long long>(o.context),
                o.drafter_config.empty() ? "none" : o.drafter_config.c_str());
    std::printf("    %5s %11s %11s %11s %10s %9s\n", "b", "verify us", "draft us", "round us", "x decode", "experts");
    for (const auto& p : v["points"])
      std::printf("    %5d %11.1f %11.1f %11.1f %10.2f %9.1f\n", p["block"].get<int>(), p["verify_us"].get<double>(),
                  p["draft_us"].get<double>(), p["round_us"].get<double>(),
                  p["verify_over_decode_step"].get<double>(), p["distinct_experts_per_layer"].get<double>());
    for (const auto& q : v["projection"]) {
      std::printf("  PROJECTION (not a measurement) for published tau %.2f at b = 16 (slot acceptance %.4f):\n",
                  q["tau_at_16"].get<double>(), q["slot_acceptance"].get<double>());
      for (const auto& row : q["rows"])
        std::printf("    b %2d: E[tokens/round] %.2f, projected %.1f tok/s = %.2fx decode\n", row["block"].get<int>(),
                    row["expected_tokens_per_round"].get<double>(), row["projected_tokens_per_second"].get<double>(),
                    row["projected_speedup_over_decode"].get<double>());
      std::printf("    policy picks b = %d: projected %.1f tok/s vs fixed b = 16 %.1f tok/s (%.3fx)\n",
                  q["policy_block"].get<int>(), q["policy_tokens_per_second"].get<double>(),
                  q["fixed_16_tokens_per_second"].get<double>(), q["policy_over_fixed_16"].get<double>());
    }
  }
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
                  "quantized at load). Default: as stored (mxfp4 for gpt-oss MXFP4 checkpoints and gpt-oss random "
                  "weights, else bf16)");
  cmd->add_option("--fp8", options->fp8, gpu::kFp8OptionHelp)->capture_default_str();
  cmd->add_option("--verify-sweep", options->verify_sweep,
                  "Block sizes (1..16, comma-separated) at which to time one verify pass of b tokens at --context, "
                  "with distinct experts per MoE layer and a projected DFlash tokens/s (docs/dflash.md)");
  cmd->add_option("--drafter-config", options->drafter_config,
                  "With --verify-sweep: time the drafter's part of each round too: a DFlash drafter directory, or "
                  "qwen3-coder-30b-a3b-dflash (random weights of the published drafter's size: speed only)");
  cmd->add_option("--tau", options->tau,
                  "With --verify-sweep: published mean acceptance at b = 16 (comma-separated) for the projection")
      ->capture_default_str();
  cmd->add_option("--draft", options->draft_path,
                  "DFlash drafter directory: speculative decoding on the GPU against plain decoding of -m, same run, "
                  "on --prompts (tau, tokens per round, tokens/s, speedup, identical outputs, round part timings at "
                  "--context)");
  cmd->add_option("--prompts", options->prompts, "With --draft: JSON-lines prompt files (comma-separated)")
      ->capture_default_str();
  cmd->add_option("--max-tokens", options->max_tokens, "With --draft: tokens per prompt (EOS also ends one)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--prompt-limit", options->prompt_limit, "With --draft: prompts per file (0 = all)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--block-size", options->block_size, "With --draft: block size (default: the drafter's)")
      ->check(CLI::Range(1, 16));
  cmd->add_flag("--adaptive-block-size", options->adaptive_block_size,
                "With --draft: choose b per round from measured acceptance and cost (at most --block-size)");
  cmd->add_option("--kv-positions", options->kv_positions, "KV cache capacity (default: what the runs need)");
  CLI::Option* persistent = cmd->add_flag("--persistent,!--no-persistent", options->persistent,
                "Run each one-token decode step's layers as one persistent kernel and print its phase times (default "
                "on: the resident kernel for small dense Llama / Qwen2 / Qwen3 models, the streamed one for larger "
                "dense models and Qwen3-MoE with bf16 experts; other models keep the kernel-per-op step; "
                "docs/gpu-runtime.md). --no-persistent: the kernel-per-op step (the CUDA graph of one kernel per "
                "op). With --draft the plain baseline keeps the per-op step unless --persistent is given (it is the "
                "greedy reference)");
  cmd->add_flag("--streamed", options->streamed,
                "With the persistent kernel: take the streamed kernel wherever it can run, also for dense models the "
                "resident kernel takes and for FP4 experts (which keep the per-op step by default: measured faster at "
                "long contexts, slower at 1k)");
  cmd->add_option("--seed", options->seed, "Seed of the random weights and prompt ids")->capture_default_str();
  cmd->add_option("--label", options->label, "Free text recorded with the results (e.g. the commit)");
  cmd->add_flag("--json", options->json, "Print the results as JSON");
  cmd->add_option("--json-file", options->json_file, "Also write the results as JSON to this file");
  return [options, persistent] {
    options->persistent_explicit = persistent->count() > 0;
    return run_bench(*options);
  };
}

}  // namespace tachyon::cli
