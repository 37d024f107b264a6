// Subcommands of the `tachyon` CLI. Each registers its options on a CLI11 subcommand and
// returns the function that runs it.
#pragma once
#include <functional>

#include <CLI/CLI.hpp>

namespace tachyon::cli {

using Runner = std::function<int()>;

Runner add_generate_command(CLI::App& app);
Runner add_inspect_command(CLI::App& app);
Runner add_bench_command(CLI::App& app);
Runner add_quantize_command(CLI::App& app);
Runner add_eval_command(CLI::App& app);
Runner add_serve_command(CLI::App& app);

}  // namespace tachyon::cli
