#ifdef TACHYON_HAS_CUDA
#include "gpu/spec_bench.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>

#include "bench/graph_timing.h"
#include "core/error.h"
#include "gpu/decode_loop.h"
#include "gpu/gpu_generate.h"
#include "gpu/gpu_speculative.h"
#include "runtime/generate.h"
#include "spec/block_size_policy.h"

namespace tachyon::gpu {

namespace {

struct BenchPrompt {
  std::string id, category;
  std::vector<int32_t> ids;
};

std::vector<BenchPrompt> read_prompts(const SpecBenchOptions& o, const Tokenizer& tokenizer) {
  std::vector<BenchPrompt> prompts;
  for (const std::string& file : o.prompt_files) {
    std::ifstream in(file);
    if (!in) fail("--prompts {}: cannot open", file);
    std::string line;
    int line_number = 0, taken = 0;
    while (std::getline(in, line)) {
      ++line_number;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      if (o.limit > 0 && taken >= o.limit) break;
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("prompt") || !j["prompt"].is_string())
        fail("--prompts {} line {}: expected a JSON object with a string \"prompt\"", file, line_number);
      BenchPrompt p;
      p.id = j.value("id", fmt::format("{}:{}", file, line_number));
      p.category = j.value("category", "all");
      p.ids = encode_prompt(tokenizer, j["prompt"].get<std::string>(), j.value("chat", false), {}, file);
      prompts.push_back(std::move(p));
      ++taken;
    }
  }
  if (prompts.empty()) fail("bench --draft: no prompts in {}", fmt::join(o.prompt_files, ", "));
  return prompts;
}

struct CategoryTotals {
  int prompts = 0, identical = 0;
  int64_t plain_tokens = 0, spec_tokens = 0;
  double plain_seconds = 0, spec_seconds = 0;
  SpecStats stats;
};

nlohmann::json to_json(const CategoryTotals& t) {
  const double plain_tps = t.plain_tokens / std::max(t.plain_seconds, 1e-12);
  const double spec_tps = t.spec_tokens / std::max(t.spec_seconds, 1e-12);
  return {{"prompts", t.prompts},
          {"identical_to_plain", t.identical},
          {"tau", t.stats.tau()},
          {"rounds", t.stats.rounds},
          {"histogram", t.stats.histogram},
          {"accepted_fraction",
           t.stats.draft_tokens ? static_cast<double>(t.stats.accepted_tokens) / t.stats.draft_tokens : 0.0},
          {"plain_tokens", t.plain_tokens},
          {"plain_seconds", t.plain_seconds},
          {"plain_tokens_per_second", plain_tps},
          {"spec_tokens", t.spec_tokens},
          {"spec_seconds", t.spec_seconds},
          {"spec_tokens_per_second", spec_tps},
          {"speedup", spec_tps / std::max(plain_tps, 1e-12)},
          {"block_sizes", t.stats.block_sizes}};
}

// Device microseconds of the round's parts at KV length `context` (CUDA graphs of 8 launches, median of 15).
nlohmann::json time_round_parts(GpuModel& model, GpuDrafter& drafter, int block, int64_t context) {
  const int64_t capacity = std::min(model.capacity(), drafter.capacity());
  context = std::min<int64_t>(context, capacity - kMaxPassTokens);
  if (context < 1) fail("bench --draft: the KV cache is too small to time the round's parts");
  model.truncate(0);
  model.reserve(context + kMaxPassTokens);
  // [tokens 16 | positions 16 | seq_len | query_start 2 | token_sequence 16 | one token: seq_len, query_start 2]
  std::vector<int> host(54, 0);
  for (int i = 0; i < kMaxPassTokens; ++i) {
    host[i] = drafter.mask_token_id();
    host[16 + i] = static_cast<int>(context + i);
  }
  host[32] = static_cast<int>(context + block);
  host[34] = block;
  host[51] = static_cast<int>(context + 1);
  host[53] = 1;
  cuda::DeviceBuffer<int> ints(host);
  cuda::DeviceBuffer<float> features(static_cast<size_t>(kMaxPassTokens) * model.feature_width());
  cuda::DeviceBuffer<float> logits(static_cast<size_t>(kMaxPassTokens) * model.config().vocab);
  features.fill_bytes(0, model.stream());
  TACHYON_CUDA_CHECK(cudaStreamSynchronize(model.stream()));
  auto inputs = [&](bool with_features, bool one_token = false) {
    PassInputs in;
    in.tokens = ints.data();
    in.positions = ints.data() + 16;
    in.seq_lens = ints.data() + (one_token ? 51 : 32);
    in.query_start = ints.data() + (one_token ? 52 : 33);
    in.token_sequence = ints.data() + 35;
    in.features = with_features ? features.data() : nullptr;
    return in;
  };
  const int bucket = attention_bucket(context + block, capacity);
  const int launches = 8;
  // b = 1 is plain decoding plus the drafter's context pass (no draft pass).
  const double draft_us = kernels::graph_time_us(
      [&](int, cudaStream_t s) {
        drafter.enqueue_context(features.data(), inputs(false), block, bucket, s);
        if (block >= 2) drafter.enqueue_draft(inputs(false), block, bucket, logits.data(), s);
      },
      launches);
  const double verify_us = kernels::graph_time_us(
      [&](int, cudaStream_t s) { model.enqueue_pass(inputs(true), block, bucket, logits.data(), s); }, launches);
  // The plain decode pass: one token at the same KV length.
  const double decode_us = kernels::graph_time_us(
      [&](int, cudaStream_t s) { model.enqueue_pass(inputs(false, true), 1, bucket, logits.data(), s); }, launches);
  model.truncate(0);
  return {{"context", context},
          {"block", block},
          {"drafter_context_and_draft_us", draft_us},
          {"verify_us", verify_us},
          {"round_us", draft_us + verify_us},
          {"decode_pass_us", decode_us}};
}

}  // namespace

nlohmann::json run_spec_bench(GpuModel& model, GpuDrafter& drafter, const Tokenizer& tokenizer,
                              const SpecBenchOptions& o) {
  if (o.max_tokens < 1) fail("bench --draft: --max-tokens must be positive");
  const std::vector<BenchPrompt> prompts = read_prompts(o, tokenizer);
  const int block = o.block_size > 0 ? o.block_size : drafter.block_size();
  GenerationParams plain_params;
  plain_params.max_tokens = o.max_tokens;  // greedy; EOS ends generation
  SpecDecodeParams spec_params;
  spec_params.max_tokens = o.max_tokens;
  spec_params.stop_ids = stop_token_ids(plain_params, tokenizer);
  spec_params.spec.block_size = block;
  CostAwareBlockSize adaptive(block, {}, /*min_block=*/1);
  if (o.adaptive) spec_params.spec.policy = &adaptive;

  // Warm-up (cuBLASLt plans, kernel attributes, clocks) on the first prompt, not timed. Graphs are captured per
  // call in both loops (DecodeLoop and the speculative round live for one generation), so each timed prompt pays
  // its own captures on both sides.
  generate_on_gpu(model, tokenizer, prompts[0].ids, plain_params);
  gpu_speculative_decode(model, drafter, prompts[0].ids, spec_params);

  std::map<std::string, CategoryTotals> categories;
  CategoryTotals all;
  nlohmann::json per_prompt = nlohmann::json::array();
  int done = 0;
  for (const BenchPrompt& p : prompts) {
    const GenerationResult plain = generate_on_gpu(model, tokenizer, p.ids, plain_params);
    const SpecDecodeResult spec = gpu_speculative_decode(model, drafter, p.ids, spec_params);
    const bool identical = spec.tokens == plain.tokens;
    for (CategoryTotals* t : {&categories[p.category], &all}) {
      ++t->prompts;
      t->identical += identical;
      t->plain_tokens += static_cast<int64_t>(plain.tokens.size());
      t->plain_seconds += plain.decode_seconds;
      t->spec_tokens += static_cast<int64_t>(spec.tokens.size());
      t->spec_seconds += spec.decode_seconds;
      t->stats.add(spec.stats);
    }
    per_prompt.push_back({{"id", p.id},
                          {"prompt_tokens", p.ids.size()},
                          {"tokens", spec.tokens.size()},
                          {"tau", spec.stats.tau()},
                          {"identical", identical}});
    std::fprintf(stderr, "\r[bench --draft] %d/%zu prompts", ++done, prompts.size());
  }
  std::fprintf(stderr, "\n");

  nlohmann::json result;
  result["block_size"] = block;
  result["adaptive"] = o.adaptive;
  result["max_tokens"] = o.max_tokens;
  result["sampling"] = "greedy (T = 0)";
  result["all"] = to_json(all);
  for (const auto& [name, totals] : categories) result["categories"][name] = to_json(totals);
  result["prompts"] = per_prompt;
  result["round_parts"] = time_round_parts(model, drafter, block, o.phase_context);
  result["timing_note"] =
      "tokens/s = generated tokens / decode seconds (after the prefill), plain = the CUDA-graph decode loop, "
      "spec = the on-device DFlash round (graphs per block size); both read tokens back every few steps/rounds";
  return result;
}

void print_spec_bench(const nlohmann::json& r) {
  std::printf("  DFlash on the GPU, b = %d%s, greedy, up to %d tokens per prompt:\n", r["block_size"].get<int>(),
              r["adaptive"].get<bool>() ? " (adaptive policy, max)" : "", r["max_tokens"].get<int>());
  std::printf("    %-8s %7s %6s %10s %10s %8s %10s  %s\n", "category", "prompts", "tau", "plain t/s", "spec t/s",
              "speedup", "identical", "tokens per round (1, 2, ...)");
  auto row = [](const std::string& name, const nlohmann::json& c) {
    std::string histogram;
    const auto h = c["histogram"].get<std::vector<int64_t>>();
    for (size_t k = 1; k < h.size(); ++k) histogram += fmt::format("{}{}", k > 1 ? " " : "", h[k]);
    std::printf("    %-8s %7d %6.2f %10.1f %10.1f %7.2fx %6d/%-3d  %s\n", name.c_str(), c["prompts"].get<int>(),
                c["tau"].get<double>(), c["plain_tokens_per_second"].get<double>(),
                c["spec_tokens_per_second"].get<double>(), c["speedup"].get<double>(),
                c["identical_to_plain"].get<int>(), c["prompts"].get<int>(), histogram.c_str());
  };
  for (const auto& [name, c] : r["categories"].items()) row(name, c);
  row("all", r["all"]);
  const auto& parts = r["round_parts"];
  std::printf("    round parts at KV %lld, b = %d (device us): drafter context + draft %.1f, verify %.1f, round %.1f; "
              "plain decode pass %.1f\n",
              static_cast<long long>(parts["context"].get<int64_t>()), parts["block"].get<int>(),
              parts["drafter_context_and_draft_us"].get<double>(), parts["verify_us"].get<double>(),
              parts["round_us"].get<double>(), parts["decode_pass_us"].get<double>());
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
