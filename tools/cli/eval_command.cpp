// tachyon eval: the quality of FP4 (and block-scaled FP8) weights, measured on the CPU reference path. A reference model (a checkpoint,
// or an MoE split from it in memory) against candidates: the reference quantized in memory by a spec
// ("experts=nvfp4", "mlp=mxfp4,scale=mse") and/or checkpoints on disk (written by `tachyon quantize`).
// Reports per-tensor relative error of every quantized weight, and over >= 20k positions of real text the KL
// divergence and top-1 agreement of the next-token distributions against the reference, and the perplexity
// of every model. Method: docs/fp4.md.
#include <cstdio>
#include <fstream>
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
#include "models/model.h"
#include "tokenizer/tokenizer.h"
#ifdef TACHYON_HAS_CUDA
#include "fp4_moe/fp4_moe_bench.h"
#endif

namespace tachyon::cli {

namespace {

struct EvalCliOptions {
  std::string model_path, json_path;
  std::vector<std::string> quantize_specs, candidate_paths, text_files, calibration_files;
  int split_experts = 0, top_k = 0, threads = 0;
  int64_t positions = 20480, chunk = 512, calibration_tokens = 4096;
  bool dense_baseline = false;
  std::string kernel_bench;  // GPU: benchmark kernels/fp4_moe instead (shapes: qwen3, gpt-oss, smollm2, all)
  bool sweep = false;
};

// The evaluation text when none is given: Python standard library source (code, comments, docstrings) in a
// fixed order; the first (positions / (chunk - 1)) * chunk tokens are used.
const std::vector<std::string> kDefaultTextFiles = {
    "textwrap.py", "heapq.py",    "shlex.py",   "fractions.py", "queue.py",   "csv.py",    "json/decoder.py",
    "json/encoder.py", "graphlib.py", "sched.py", "colorsys.py",  "bisect.py",  "copy.py",   "glob.py",
    "string.py",   "operator.py", "hashlib.py", "gettext.py",   "selectors.py", "pprint.py", "calendar.py"};
const std::vector<std::string> kDefaultCalibrationFiles = {"dataclasses.py", "enum.py", "ipaddress.py"};
constexpr const char* kPythonLib = "/usr/lib/python3.11/";

std::vector<std::string> with_prefix(const std::vector<std::string>& names) {
  std::vector<std::string> paths;
  for (const std::string& n : names) paths.push_back(kPythonLib + n);
  return paths;
}

// "experts=nvfp4,mlp=mxfp4,scale=mse,layout=compressed-tensors"
fp4::QuantizeOptions parse_spec(const std::string& spec) {
  fp4::QuantizeOptions options;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string::npos) comma = spec.size();
    const std::string item = spec.substr(start, comma - start);
    const size_t eq = item.find('=');
    if (eq == std::string::npos) fail("--quantize {}: '{}' is not key=value", spec, item);
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    fp4::Fp4Format format;
    if (key == "mlp" && value == "fp8") {
      options.mlp_fp8 = true;
    } else if (key == "attention" || key == "lm_head") {
      if (value != "fp8") fail("--quantize {}: {} must be fp8", spec, key);
      (key == "attention" ? options.attention_fp8 : options.lm_head_fp8) = true;
    } else if (key == "experts" || key == "mlp") {
      if (!fp4::parse_format(value, &format)) fail("--quantize {}: {} must be mxfp4 or nvfp4{}", spec, key, key == "mlp" ? " or fp8" : "");
      (key == "experts" ? options.experts : options.mlp) = format;
    } else if (key == "scale") {
      if (!fp4::parse_scale_rule(value, &options.mxfp4_rule)) fail("--quantize {}: scale must be round-up, ocp or mse", spec);
    } else if (key == "layout") {
      if (!fp4::parse_layout(value, &options.nvfp4_layout)) fail("--quantize {}: layout must be modelopt or compressed-tensors", spec);
    } else {
      fail("--quantize {}: unknown key '{}' (experts, mlp, attention, lm_head, scale, layout)", spec, key);
    }
    start = comma + 1;
  }
  if (!options.experts && !options.mlp && !options.mlp_fp8 && !options.attention_fp8 && !options.lm_head_fp8)
    fail("--quantize {}: names none of experts, mlp, attention, lm_head", spec);
  return options;
}

// Relative error of each FP4 linear of a checkpoint on disk against the reference's weight of the same name.
std::vector<fp4::TensorRecord> file_records(const fp4::DerivedCheckpoint& candidate, const Checkpoint& reference) {
  std::vector<fp4::TensorRecord> records;
  for (const fp4::Fp4Linear& linear : fp4::find_fp4_linears(candidate.base().weights)) {
    const std::string name = linear.base + ".weight";
    const TensorView* ref = reference.weights.find(name);
    if (ref == nullptr || ref->shape != std::vector<int64_t>{linear.matrix.rows, linear.matrix.cols}) continue;
    const std::vector<float> values = ref->to_float();
    records.push_back({name, fp4::weight_role(name), linear.matrix.format, false, linear.matrix.rows, linear.matrix.cols,
                       fp4::quantization_error(values.data(), linear.matrix)});
  }
  return records;
}

int run_eval(const EvalCliOptions& o) {
  if (!o.kernel_bench.empty()) {
#ifdef TACHYON_HAS_CUDA
    return kernels::run_fp4_moe_bench({o.kernel_bench, o.sweep});
#else
    fail("--kernel-bench needs a build with the CUDA backend");
#endif
  }
  if (o.model_path.empty()) fail("eval: -m MODEL is required");
  if (o.threads > 0) set_cpu_thread_count(o.threads);
  const std::shared_ptr<const Checkpoint> dense = fp4::shared_checkpoint(fp4::open_fp4_checkpoint(o.model_path));
  const Tokenizer tokenizer = Tokenizer::from_checkpoint(*dense);

  // The reference: the model itself, or an MoE split from it.
  std::shared_ptr<const Checkpoint> reference = dense;
  std::string reference_label = "reference";
  nlohmann::json split_json = nullptr;
  if (o.split_experts > 0) {
    fp4::MoeSplitOptions split;
    split.experts = o.split_experts;
    split.top_k = o.top_k > 0 ? o.top_k : o.split_experts;
    if (split.top_k < split.experts)
      split.calibration_tokens =
          fp4::tokenize_files(tokenizer, o.calibration_files.empty() ? with_prefix(kDefaultCalibrationFiles) : o.calibration_files,
                              o.calibration_tokens)
              .tokens;
    std::fprintf(stderr, "splitting MLPs into %d experts (top-%d)...\n", split.experts, split.top_k);
    fp4::MoeSplitReport report;
    reference = fp4::shared_checkpoint(fp4::split_mlp_into_experts(dense, split, &report));
    std::fprintf(stderr, "%s", report.summary().c_str());
    reference_label = fmt::format("MoE {}x top-{}", split.experts, split.top_k);
    split_json = {{"experts", split.experts}, {"top_k", split.top_k}, {"summary", report.summary()}};
  }

  // Candidates: each keeps its checkpoint alive beside the model built on it.
  struct Candidate {
    std::string label;
    std::shared_ptr<const Checkpoint> checkpoint;
    std::unique_ptr<Model> model;
    std::vector<fp4::TensorRecord> records;
  };
  std::vector<Candidate> candidates;
  for (const std::string& spec : o.quantize_specs) {
    const fp4::QuantizeOptions options = parse_spec(spec);
    Candidate c;
    c.label = options.describe();
    std::fprintf(stderr, "quantizing in memory: %s\n", c.label.c_str());
    c.checkpoint = fp4::shared_checkpoint(fp4::quantize_in_memory(reference, options, &c.records));
    if (c.records.empty()) fail("--quantize {}: no tensor of {} matched", spec, o.model_path);
    candidates.push_back(std::move(c));
  }
  for (const std::string& path : o.candidate_paths) {
    Candidate c;
    c.label = path;
    std::unique_ptr<fp4::DerivedCheckpoint> opened = fp4::open_fp4_checkpoint(path);
    c.records = file_records(*opened, *reference);
    c.checkpoint = fp4::shared_checkpoint(std::move(opened));
    candidates.push_back(std::move(c));
  }
  if (o.dense_baseline) {
    if (o.split_experts == 0) fail("--dense-baseline needs --split-experts");
    candidates.push_back({"dense (unsplit) model", dense, nullptr, {}});
  }
  if (candidates.empty()) fail("nothing to compare: give --quantize SPEC and/or --candidate PATH");

  std::unique_ptr<Model> reference_model = create_model(*reference);
  std::vector<fp4::LabelledModel> labelled;
  for (Candidate& c : candidates) {
    c.model = create_model(*c.checkpoint);
    labelled.push_back({c.label, c.model.get()});
  }
  for (const Candidate& c : candidates)
    if (!c.records.empty())
      std::fprintf(stderr, "%s: per-tensor relative L2 error\n%s", c.label.c_str(), fp4::summarize_records(c.records).c_str());

  const int64_t chunks = (o.positions + o.chunk - 2) / (o.chunk - 1);
  const fp4::EvalCorpus corpus =
      fp4::tokenize_files(tokenizer, o.text_files.empty() ? with_prefix(kDefaultTextFiles) : o.text_files, chunks * o.chunk);
  std::fprintf(stderr, "scoring %lld positions of %zu files on %d threads...\n", static_cast<long long>(o.positions),
               corpus.files.size(), cpu_thread_count());
  const bool tty = ::isatty(STDERR_FILENO);
  const fp4::EvalReport report = fp4::compare_models({reference_label, reference_model.get()}, labelled, corpus.tokens,
                                                     o.positions, o.chunk, [tty](int64_t done, int64_t total) {
                                                       std::fprintf(stderr, tty ? "\rchunk %lld/%lld" : "chunk %lld/%lld\n",
                                                                    static_cast<long long>(done), static_cast<long long>(total));
                                                       if (tty && done == total) std::fprintf(stderr, "\n");
                                                       std::fflush(stderr);
                                                     });
  std::printf("reference: %s (%s)\n", o.model_path.c_str(), reference_label.c_str());
  for (const Candidate& c : candidates)
    if (!c.records.empty()) std::printf("%s: per-tensor relative L2 error\n%s", c.label.c_str(), fp4::summarize_records(c.records).c_str());
  std::printf("%s", report.table().c_str());

  if (!o.json_path.empty()) {
    nlohmann::json j = report.to_json();
    j["model"] = o.model_path;
    j["text_files"] = corpus.files;
    j["split"] = split_json;
    j["threads"] = cpu_thread_count();
    for (size_t i = 0; i < candidates.size(); ++i) j["candidates"][i]["tensors"] = fp4::records_json(candidates[i].records)["tensors"];
    std::ofstream out(o.json_path);
    if (!out) fail("{}: cannot open for writing", o.json_path);
    out << j.dump(1) << "\n";
  }
  return 0;
}

}  // namespace

Runner add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalCliOptions>();
  CLI::App* cmd = app.add_subcommand("eval", "Quality of FP4 weights: per-tensor error, KL, top-1 agreement, perplexity");
  cmd->add_option("-m,--model", o->model_path, "The reference model: a .gguf file or a Hugging Face directory");
  cmd->add_option("--quantize", o->quantize_specs,
                  "A candidate quantized in memory: experts=F, mlp=F (F = mxfp4|nvfp4, or fp8 for mlp), attention=fp8 "
                  "(block-scaled E4M3, 128x128 tiles), lm_head=fp8 (a tied head: an FP8 copy of the embedding), "
                  "scale=round-up|ocp|mse, layout=modelopt|compressed-tensors, comma-separated (repeatable)");
  cmd->add_option("--candidate", o->candidate_paths, "A candidate checkpoint on disk (repeatable)");
  cmd->add_option("--split-experts", o->split_experts, "Reference = the model with each MLP split into this many experts");
  cmd->add_option("--top-k", o->top_k, "Experts per token of the split MoE (default: all; fewer fits a router)");
  cmd->add_flag("--dense-baseline", o->dense_baseline, "With --split-experts: also score the unsplit model against the MoE");
  cmd->add_option("--calibration", o->calibration_files, "Router calibration text files (default: Python stdlib files)");
  cmd->add_option("--calibration-tokens", o->calibration_tokens, "Tokens of calibration text")->capture_default_str();
  cmd->add_option("--text", o->text_files, "Evaluation text files, in order (default: a fixed list of Python stdlib files)");
  cmd->add_option("--positions", o->positions, "Scored positions (rounded up to whole chunks)")->capture_default_str();
  cmd->add_option("--chunk", o->chunk, "Tokens per independent sequence")->capture_default_str();
  cmd->add_option("--json", o->json_path, "Write the full report (and every tensor's error) as JSON");
  cmd->add_option("--threads", o->threads, "CPU threads (default: all)");
  cmd->add_option("--kernel-bench", o->kernel_bench,
                  "GPU: time the FP4 MoE kernels against stream read and the BF16 expert path instead "
                  "(qwen3, gpt-oss, smollm2 or all)");
  cmd->add_flag("--sweep", o->sweep, "With --kernel-bench: every k_split of the gate/up kernel, each kernel alone");
  return [o] { return run_eval(*o); };
}

}  // namespace tachyon::cli
