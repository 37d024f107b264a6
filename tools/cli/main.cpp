// tachyon: one CLI with subcommands (generate, inspect; serve, bench, quantize come with their issues).
#include <cstdio>
#include <map>

#include "commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"tachyon: a batch-1-first LLM inference engine (CPU reference path; CUDA to follow)"};
  app.require_subcommand(1);
  std::map<CLI::App*, tachyon::cli::Runner> runners;
  auto add = [&](tachyon::cli::Runner (*adder)(CLI::App&)) {
    size_t before = app.get_subcommands({}).size();
    tachyon::cli::Runner runner = adder(app);
    runners[app.get_subcommands({})[before]] = runner;
  };
  add(tachyon::cli::add_generate_command);
  add(tachyon::cli::add_inspect_command);
  add(tachyon::cli::add_bench_command);
  add(tachyon::cli::add_quantize_command);
  add(tachyon::cli::add_eval_command);
  add(tachyon::cli::add_serve_command);
  CLI11_PARSE(app, argc, argv);
  try {
    for (auto& [command, runner] : runners)
      if (command->parsed()) return runner();
  } catch (const tachyon::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {  // a bug if reached: every user-input error should be a tachyon::Error
    std::fprintf(stderr, "error: internal: %s\n", e.what());
    return 2;
  }
  return 0;
}
