// tachyon inspect: what a checkpoint holds (architecture, sizes, parameters by kind, dtypes).
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>

#include <fmt/format.h>

#include "commands.h"
#include "loader/checkpoint.h"
#include "models/model.h"

namespace tachyon::cli {

namespace {
struct InspectOptions {
  std::string path;
  bool list_tensors = false;
};

std::string human(double n, const char* unit) {
  const char* prefixes[] = {"", "K", "M", "G", "T"};
  int i = 0;
  while (n >= 1000 && i < 4) {
    n /= 1000;
    ++i;
  }
  return fmt::format("{:.2f} {}{}", n, prefixes[i], unit);
}

int run_inspect(const InspectOptions& o) {
  Checkpoint checkpoint = open_checkpoint(o.path);
  const auto& config = checkpoint.config;
  std::string architecture = config.contains("architectures") ? config["architectures"].dump() : "(none)";
  fmt::print("path:          {}\nformat:        {}\narchitecture:  {}\n", checkpoint.path, checkpoint.format, architecture);
  for (const char* field : {"model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                            "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size",
                            "max_position_embeddings", "num_experts", "num_local_experts", "n_routed_experts",
                            "num_experts_per_tok", "moe_intermediate_size", "rope_theta", "tie_word_embeddings"}) {
    if (config.contains(field) && !config[field].is_null()) fmt::print("  {:<24} {}\n", field, config[field].dump());
  }
  ParameterCounts counts = count_parameters(checkpoint.weights);
  fmt::print("parameters:    {} total\n", human(static_cast<double>(counts.total()), ""));
  const std::pair<const char*, int64_t> kinds[] = {{"attention", counts.attention}, {"dense MLP", counts.dense_mlp},
                                                   {"experts", counts.experts},     {"router", counts.router},
                                                   {"embeddings", counts.embeddings}, {"norms", counts.norms},
                                                   {"other", counts.other}};
  for (const auto& [kind, n] : kinds)
    if (n > 0) fmt::print("  {:<12} {:>14}  ({:.1f}%)\n", kind, n, 100.0 * n / std::max<int64_t>(1, counts.total()));
  std::map<std::string, std::pair<int, uint64_t>> by_dtype;
  uint64_t total_bytes = 0;
  for (const auto& [name, tensor] : checkpoint.weights.all()) {
    auto& entry = by_dtype[std::string(dtype_name(tensor.dtype))];
    entry.first += 1;
    entry.second += tensor.nbytes;
    total_bytes += tensor.nbytes;
  }
  fmt::print("tensors:       {} ({})\n", checkpoint.weights.all().size(), human(static_cast<double>(total_bytes), "B"));
  for (const auto& [dtype, entry] : by_dtype) fmt::print("  {:<8} {:>6} tensors  {}\n", dtype, entry.first, human(static_cast<double>(entry.second), "B"));
  if (o.list_tensors)
    for (const auto& [name, tensor] : checkpoint.weights.all())
      fmt::print("  {:<60} {:<8} {}\n", name, dtype_name(tensor.dtype), tensor.shape_string());
  return 0;
}
}  // namespace

Runner add_inspect_command(CLI::App& app) {
  auto options = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand("inspect", "Print a checkpoint's architecture, parameter counts and tensor dtypes");
  cmd->add_option("path", options->path, "A .gguf file or a Hugging Face directory")->required();
  cmd->add_flag("--tensors", options->list_tensors, "List every tensor with dtype and shape");
  return [options] { return run_inspect(*options); };
}

}  // namespace tachyon::cli
