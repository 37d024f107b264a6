// tachyon quantize: write a checkpoint with FP4 routed experts (and, on request, FP4 dense MLPs) as a Hugging
// Face directory that tachyon and other engines read: model.safetensors in the ModelOpt NVFP4 or the
// compressed-tensors NVFP4/MXFP4 layout, config.json with its quantization_config, tokenizer files. A GGUF
// source works too (its tokenizer becomes tokenizer.json, llama q/k rows go back to HF order). Optionally the
// dense MLPs are first split into experts (a Mixtral-layout MoE built from the dense model, docs/fp4.md).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "commands.h"
#include "core/error.h"
#include "core/parallel.h"
#include "fp4/fp4_checkpoint.h"
#include "fp4/moe_split.h"
#include "fp4/quality_eval.h"
#include "fp4/quantize_checkpoint.h"
#include "tokenizer/tokenizer.h"

namespace tachyon::cli {

namespace {

struct QuantizeCliOptions {
  std::string source, destination;
  std::string experts = "none", mlp = "none", attention = "none";
  std::string layout = "modelopt", mxfp4_scale = "round-up", dtype = "bf16";
  int split_experts = 0, top_k = 0, threads = 0;
  std::vector<std::string> calibration_files;
  int64_t calibration_tokens = 4096;
  bool force = false;
};

// The calibration text of the router fit when none is given: Python standard library source not used by
// `tachyon eval`'s default text.
const std::vector<std::string> kDefaultCalibrationFiles = {"/usr/lib/python3.11/dataclasses.py",
                                                           "/usr/lib/python3.11/enum.py",
                                                           "/usr/lib/python3.11/ipaddress.py"};

std::optional<fp4::Fp4Format> parse_optional_format(const std::string& text, const char* option) {
  if (text == "none") return std::nullopt;
  fp4::Fp4Format format;
  if (!fp4::parse_format(text, &format))
    fail("{} {}: expected mxfp4, nvfp4{} or none", option, text, std::string_view(option) == "--mlp" ? ", fp8" : "");
  return format;
}

// Progress on stderr: a line rewritten in place on a terminal, every 10% otherwise.
fp4::Progress stderr_progress(const char* what) {
  const bool tty = ::isatty(STDERR_FILENO);
  auto last_decile = std::make_shared<int>(-1);
  return [tty, what, last_decile](size_t done, size_t total, const std::string& name) {
    if (tty) {
      std::fprintf(stderr, "\r%s [%zu/%zu] %-70.70s", what, done, total, name.c_str());
      if (done == total) std::fprintf(stderr, "\n");
    } else {
      const int decile = static_cast<int>(10 * done / std::max<size_t>(total, 1));
      if (decile != *last_decile) {
        *last_decile = decile;
        std::fprintf(stderr, "%s [%zu/%zu] %s\n", what, done, total, name.c_str());
      }
    }
    std::fflush(stderr);
  };
}

int run_quantize(const QuantizeCliOptions& o) {
  if (o.threads > 0) set_cpu_thread_count(o.threads);
  fp4::QuantizeOptions options;
  options.experts = parse_optional_format(o.experts, "--experts");
  options.mlp_fp8 = o.mlp == "fp8";
  if (!options.mlp_fp8) options.mlp = parse_optional_format(o.mlp, "--mlp");
  if (o.attention != "none" && o.attention != "fp8") fail("--attention {}: expected fp8 or none", o.attention);
  options.attention_fp8 = o.attention == "fp8";
  if (!fp4::parse_layout(o.layout, &options.nvfp4_layout)) fail("--layout {}: expected modelopt or compressed-tensors", o.layout);
  if (!fp4::parse_scale_rule(o.mxfp4_scale, &options.mxfp4_rule)) fail("--mxfp4-scale {}: expected round-up, ocp or mse", o.mxfp4_scale);
  fp4::WriteOptions write;
  if (o.dtype == "bf16") write.other_dtype = DType::BF16;
  else if (o.dtype == "f32") write.other_dtype = DType::F32;
  else if (o.dtype == "f16") write.other_dtype = DType::F16;
  else fail("--dtype {}: expected bf16, f32 or f16", o.dtype);
  const bool fp8 = options.attention_fp8 || options.mlp_fp8;
  if (!options.experts && !options.mlp && !fp8 && o.split_experts == 0)
    fail("nothing to do: give --experts and/or --mlp (mxfp4 or nvfp4), --attention / --mlp fp8, or --split-experts");
  namespace fs = std::filesystem;
  if (!o.force && (fs::exists(fs::path(o.destination) / "model.safetensors") || fs::exists(fs::path(o.destination) / "config.json")))
    fail("{}: already holds a model (use --force to overwrite)", o.destination);

  const std::shared_ptr<const Checkpoint> source = fp4::shared_checkpoint(fp4::open_fp4_checkpoint(o.source));
  std::unique_ptr<fp4::DerivedCheckpoint> split;
  const Checkpoint* to_write = source.get();
  if (o.split_experts > 0) {
    fp4::MoeSplitOptions split_options;
    split_options.experts = o.split_experts;
    split_options.top_k = o.top_k > 0 ? o.top_k : o.split_experts;
    if (split_options.top_k < split_options.experts) {
      const Tokenizer tokenizer = Tokenizer::from_checkpoint(*source);
      const std::vector<std::string>& files = o.calibration_files.empty() ? kDefaultCalibrationFiles : o.calibration_files;
      split_options.calibration_tokens = fp4::tokenize_files(tokenizer, files, o.calibration_tokens).tokens;
      std::fprintf(stderr, "fitting routers on %zu calibration tokens...\n", split_options.calibration_tokens.size());
    }
    fp4::MoeSplitReport report;
    split = fp4::split_mlp_into_experts(source, split_options, &report);
    std::fprintf(stderr, "split every MLP into %d experts, top-%d:\n%s", split_options.experts, split_options.top_k,
                 report.summary().c_str());
    to_write = &split->checkpoint();
  }
  if (!options.experts && !options.mlp && !fp8) {
    std::fprintf(stderr, "no FP4 weights requested: writing %s unquantized\n", o.destination.c_str());
  }
  const std::vector<fp4::TensorRecord> records =
      fp4::write_quantized_checkpoint(*to_write, o.destination, options, write, stderr_progress("writing"));
  if (records.empty() && (options.experts || options.mlp || fp8))
    std::fprintf(stderr, "warning: no tensor matched (%s); %s has no routed experts? use --mlp for dense MLPs\n",
                 options.describe().c_str(), o.source.c_str());
  std::fprintf(stderr, "%s: %zu tensors quantized (%s, %s layout)\n%s", o.destination.c_str(), records.size(),
               options.describe().c_str(),
               fp8 ? "block-scaled FP8 (weight_scale_inv)" : std::string(fp4::layout_name(options.layout())).c_str(),
               fp4::summarize_records(records).c_str());
  return 0;
}

}  // namespace

Runner add_quantize_command(CLI::App& app) {
  auto o = std::make_shared<QuantizeCliOptions>();
  CLI::App* cmd = app.add_subcommand("quantize", "Write a checkpoint with FP4 (MXFP4 / NVFP4) experts and optionally MLPs");
  cmd->add_option("source", o->source, "A .gguf file or a Hugging Face directory")->required();
  cmd->add_option("destination", o->destination, "Output directory (Hugging Face layout)")->required();
  cmd->add_option("--experts", o->experts, "Routed experts: mxfp4, nvfp4 or none")->capture_default_str();
  cmd->add_option("--mlp", o->mlp, "Dense MLPs and shared experts: mxfp4, nvfp4, fp8 or none")->capture_default_str();
  cmd->add_option("--attention", o->attention,
                  "Attention projections: fp8 (e4m3, a float scale per 128 x 128 tile, as DeepSeek-V3 / Qwen3-FP8) "
                  "or none")
      ->capture_default_str();
  cmd->add_option("--layout", o->layout, "NVFP4 layout: modelopt or compressed-tensors (MXFP4 is always compressed-tensors)")
      ->capture_default_str();
  cmd->add_option("--mxfp4-scale", o->mxfp4_scale, "MXFP4 block scale rule: round-up, ocp or mse")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "Tensors not quantized (from GGUF blocks or converted): bf16, f32 or f16")
      ->capture_default_str();
  cmd->add_option("--split-experts", o->split_experts, "First split each dense MLP into this many experts (Mixtral layout)");
  cmd->add_option("--top-k", o->top_k, "Experts per token of the split MoE (default: all; fewer fits a router)");
  cmd->add_option("--calibration", o->calibration_files, "Text files for the router fit (default: Python stdlib files)");
  cmd->add_option("--calibration-tokens", o->calibration_tokens, "Tokens of calibration text")->capture_default_str();
  cmd->add_flag("--force", o->force, "Overwrite a model already in the destination");
  cmd->add_option("--threads", o->threads, "CPU threads (default: all)");
  return [o] { return run_quantize(*o); };
}

}  // namespace tachyon::cli
