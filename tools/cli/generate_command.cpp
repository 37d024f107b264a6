// tachyon generate: stream a completion of a prompt (or of a chat turn) to stdout.
#include <charconv>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "core/parallel.h"
#include "fp4/fp4_checkpoint.h"
#include "gpu/fp8_weights.h"
#include "loader/checkpoint.h"
#include "models/model.h"
#include "runtime/generate.h"
#include "spec/driver.h"
#include "tokenizer/tokenizer.h"
#ifdef TACHYON_HAS_CUDA
#include "gpu/gpu_generate.h"
#include "gpu/gpu_spec_decoder.h"
#endif

namespace tachyon::cli {

namespace {
struct GenerateOptions {
  std::string model_path, prompt, prompt_ids, system, device = "cpu", draft_path, stats_json, fp8 = "none";
  bool chat = false, print_ids = false, stats = false, ignore_eos = false, adaptive_block_size = false;
  bool persistent = true;  // where the model qualifies (GpuModel::persistent_decode_unsupported)
  int max_tokens = 256, threads = 0, block_size = 0;
  std::vector<std::string> stop;
  SamplingParams sampling;
};

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string part = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    int32_t value = 0;
    auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (part.empty() || ec != std::errc() || end != part.data() + part.size())
      fail("--prompt-ids: '{}' is not an integer token id", part);
    ids.push_back(value);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return ids;
}

std::vector<int32_t> build_prompt(const GenerateOptions& o, const Tokenizer& tokenizer) {
  if (!o.prompt_ids.empty()) return parse_ids(o.prompt_ids);
  return encode_prompt(tokenizer, o.prompt, o.chat, o.system, o.model_path);
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

// One JSON line per run for scripts (scripts/measure_tau.sh): timing, the generated ids and, with a drafter,
// the round statistics.
void append_stats_json(const std::string& path, const GenerationResult& result, const SpecStats* spec) {
  nlohmann::json j = {{"prompt_tokens", result.prompt_tokens},   {"generated", result.tokens.size()},
                      {"prefill_seconds", result.prefill_seconds}, {"decode_seconds", result.decode_seconds},
                      {"finish", result.finish_reason},           {"tokens", result.tokens}};
  if (spec) {
    j["spec"] = {{"tau", spec->tau()},
                 {"rounds", spec->rounds},
                 {"drafted_rounds", spec->drafted_rounds},
                 {"committed", spec->committed},
                 {"draft_tokens", spec->draft_tokens},
                 {"accepted_tokens", spec->accepted_tokens},
                 {"histogram", spec->histogram},
                 {"block_sizes", spec->block_sizes},
                 {"draft_seconds", spec->draft_seconds},
                 {"verify_seconds", spec->verify_seconds}};
  }
  std::ofstream out(path, std::ios::app);
  if (!out) fail("--stats-json {}: cannot open for appending", path);
  out << j.dump() << "\n";
}

int run_generate(const GenerateOptions& o) {
  if (o.device != "cpu" && o.device != "cuda") fail("--device {}: expected cpu or cuda", o.device);
  if (o.fp8 != "none" && o.device != "cuda") fail("--fp8 {}: FP8 weights run on the GPU only (add --device cuda)", o.fp8);
#ifndef TACHYON_HAS_CUDA
  if (o.device == "cuda") fail("--device cuda: this build has no CUDA backend (TACHYON_CUDA=OFF)");
#endif
  if (o.prompt.empty() && o.prompt_ids.empty()) fail("give a prompt with -p TEXT or --prompt-ids 1,2,3");
  if (o.threads > 0) set_cpu_thread_count(o.threads);
  Checkpoint checkpoint = open_checkpoint(o.model_path);
  // The CPU models read FP4 / FP8 linears dequantized (fp4_checkpoint.h); the GPU loader reads them itself.
  std::unique_ptr<fp4::DerivedCheckpoint> presented;
  auto cpu_checkpoint = [&]() -> const Checkpoint& {
    presented = fp4::present_fp4_as_float(checkpoint);
    return presented->checkpoint();
  };
  Tokenizer tokenizer = Tokenizer::from_checkpoint(checkpoint);
  std::vector<int32_t> prompt = build_prompt(o, tokenizer);

  GenerationParams params;
  params.max_tokens = o.max_tokens;
  params.sampling = o.sampling;
  params.stop_strings = o.stop;
  params.ignore_eos = o.ignore_eos;
  auto print_piece = [&](std::string_view piece) {
    if (o.print_ids) return;
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  };
  GenerationResult result;
  SpecStats spec_stats;
  // With --draft: the same text-level loop over the CPU driver or the GPU round (a SpecDecodeFn each).
  auto run_speculative = [&](const SpecDecodeFn& decode, int drafter_block_size) {
    SpecOptions spec;
    spec.block_size = o.block_size;
    const int max_block = o.block_size > 0 ? o.block_size : drafter_block_size;
    CostAwareBlockSize adaptive(max_block, {}, /*min_block=*/1);  // 1 = plain decoding when drafts do not pay
    if (o.adaptive_block_size) spec.policy = &adaptive;
    result = generate_speculative(decode, tokenizer, prompt, params, spec, &spec_stats, print_piece);
    if (o.stats)
      std::fprintf(stderr, "[dflash%s %s%d: %s]\n", o.device == "cuda" ? " (GPU)" : "",
                   o.adaptive_block_size ? "adaptive b<=" : "b=", max_block, format_spec_stats(spec_stats).c_str());
  };
  if (o.device == "cuda") {
#ifdef TACHYON_HAS_CUDA
    // The KV cache holds the prompt and every token that may follow, within the model's context length.
    gpu::GpuModelOptions gpu_options;
    gpu_options.kv_positions = static_cast<int64_t>(prompt.size()) + o.max_tokens + 1;
    gpu_options.fp8 = gpu::parse_fp8_weights(o.fp8, "--fp8");
    gpu_options.persistent_decode = o.persistent;
    if (!o.draft_path.empty()) {
      // Room for the rounds the GPU runs ahead of the host's stop checks (their rows are dropped), so the last
      // rounds before max_tokens need not shrink their blocks to fit.
      gpu_options.kv_positions += 128;
      const Checkpoint draft_checkpoint = open_checkpoint(o.draft_path);
      gpu::GpuSpecDecoder gpu = gpu::load_gpu_spec_decoder(checkpoint, draft_checkpoint, gpu_options);
      run_speculative(gpu.decode_fn(), gpu.drafter->block_size());
    } else {
      std::unique_ptr<gpu::GpuModel> model = gpu::GpuModel::load(checkpoint, gpu_options);
      result = gpu::generate_on_gpu(*model, tokenizer, prompt, params, print_piece);
    }
#endif
  } else if (!o.draft_path.empty()) {
    std::unique_ptr<Model> model = create_model(cpu_checkpoint());
    auto* decoder = dynamic_cast<DecoderModel*>(model.get());
    if (!decoder) fail("--draft: {} is not a decoder model the drafter can read features from", o.model_path);
    Checkpoint draft_checkpoint = open_checkpoint(o.draft_path);
    DFlashDrafter drafter(draft_checkpoint, drafter_target_info(*decoder));
    // Like generate(): KV for the prompt and every token that may follow, within the context length (per call).
    run_speculative(cpu_spec_decoder(*decoder, drafter), drafter.block_size());
  } else {
    std::unique_ptr<Model> model = create_model(cpu_checkpoint());
    result = generate(*model, tokenizer, prompt, params, print_piece);
  }
  if (!o.stats_json.empty()) append_stats_json(o.stats_json, result, o.draft_path.empty() ? nullptr : &spec_stats);
  if (o.print_ids) std::printf("%s\n", join_ids(result.tokens).c_str());
  else std::printf("\n");
  if (o.stats) {
    std::fprintf(stderr, "[%lld prompt tokens in %.2f s (%.1f tok/s); %zu generated in %.2f s (%.2f tok/s); finish: %s]\n",
                 static_cast<long long>(result.prompt_tokens), result.prefill_seconds,
                 result.prompt_tokens / std::max(result.prefill_seconds, 1e-9), result.tokens.size(),
                 result.decode_seconds, result.tokens.size() / std::max(result.decode_seconds, 1e-9),
                 result.finish_reason.c_str());
  }
  return 0;
}
}  // namespace

Runner add_generate_command(CLI::App& app) {
  auto options = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt and stream it to stdout");
  cmd->add_option("-m,--model", options->model_path, "Model: a .gguf file or a Hugging Face directory")->required();
  cmd->add_option("-p,--prompt", options->prompt, "Prompt text");
  cmd->add_option("--prompt-ids", options->prompt_ids, "Prompt as comma-separated token ids (skips the tokenizer)");
  cmd->add_flag("--chat", options->chat, "Wrap the prompt in the model's chat template as a user turn");
  cmd->add_option("--system", options->system, "System message for --chat");
  cmd->add_option("-n,--max-tokens", options->max_tokens, "Maximum tokens to generate")->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--temperature", options->sampling.temperature, "Sampling temperature; 0 = greedy")
      ->capture_default_str()->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", options->sampling.top_k, "Keep the k most likely tokens; 0 = off")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", options->sampling.top_p, "Nucleus sampling mass; 1 = off")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--min-p", options->sampling.min_p, "Drop tokens below min-p x the top probability; 0 = off")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", options->sampling.seed, "Random seed for sampling")->capture_default_str();
  cmd->add_option("--stop", options->stop, "Stop string (repeatable); it is not printed");
  cmd->add_flag("--ignore-eos", options->ignore_eos, "Do not stop at end-of-sequence tokens");
  cmd->add_flag("--print-ids", options->print_ids, "Print generated token ids instead of text");
  cmd->add_flag("--stats", options->stats, "Print timing to stderr");
  cmd->add_flag("--persistent,!--no-persistent", options->persistent,
                "With --device cuda: run each plain decode step's layers as one persistent kernel (default on for "
                "dense Llama / Qwen2 / Qwen3 models and Qwen3-MoE with bf16 experts: ~1.3x the kernel-per-op step on "
                "SmolLM2, ~1.18x on Qwen3-30B-A3B's shape; other models keep the kernel-per-op step). "
                "--no-persistent: always the kernel-per-op step");
  cmd->add_option("--stats-json", options->stats_json,
                  "Append one JSON line (timing, generated ids, DFlash round statistics) to this file");
  cmd->add_option("--device", options->device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--fp8", options->fp8, gpu::kFp8OptionHelp)->capture_default_str();
  cmd->add_option("-t,--threads", options->threads, "CPU threads (default: all cores)");
  cmd->add_option("--draft", options->draft_path,
                  "DFlash drafter directory (z-lab layout): speculative decoding, same output distribution (CPU or "
                  "--device cuda; on the GPU blocks of at most 16 and no --min-p)");
  cmd->add_option("--block-size", options->block_size, "Drafted block size with --draft (0 = the drafter's)")
      ->check(CLI::Range(0, 64));
  cmd->add_flag("--adaptive-block-size", options->adaptive_block_size,
                "With --draft: choose each round's block size (up to --block-size) from observed acceptance and round time");
  return [options] { return run_generate(*options); };
}

}  // namespace tachyon::cli
