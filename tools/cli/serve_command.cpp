// tachyon serve: the OpenAI-compatible HTTP server (docs/server.md).
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <pthread.h>
#include <string>
#include <thread>

#include "commands.h"
#include "core/error.h"
#include "core/parallel.h"
#include "loader/checkpoint.h"
#include "models/model.h"
#include "runtime/batching_engine.h"
#include "runtime/cpu_model_runner.h"
#include "server/http_server.h"
#include "tokenizer/tokenizer.h"

namespace tachyon::cli {

namespace {
struct ServeOptions {
  std::string model_path, draft_path, device = "cpu";
  server::ServerOptions server;
  SchedulerConfig scheduler;
  int threads = 0;
  bool quiet = false;
};

std::string default_model_name(const std::string& path) {
  std::filesystem::path p(path);
  if (p.filename().empty()) p = p.parent_path();  // "dir/"
  return p.extension() == ".gguf" ? p.stem().string() : p.filename().string();
}

int run_serve(ServeOptions& o) {
  if (!o.draft_path.empty())
    fail("--draft: speculative decoding is not wired into the server yet; serve without a drafter for now");
  if (o.device != "cpu")
    fail("--device {}: the server runs on the CPU for now (the GPU runner plugs into runtime/model_runner.h)", o.device);
  if (o.threads > 0) set_cpu_thread_count(o.threads);
  if (o.server.model_name.empty()) o.server.model_name = default_model_name(o.model_path);
  o.server.log_requests = !o.quiet;

  // SIGINT/SIGTERM are taken by one thread (sigwait) that stops the server; every other thread,
  // created after this, has them blocked.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that disconnects mid-write is an error code, not a death

  Checkpoint checkpoint = open_checkpoint(o.model_path);
  Tokenizer tokenizer = Tokenizer::from_checkpoint(checkpoint);
  auto runner = std::make_unique<CpuModelRunner>(create_model(checkpoint), o.scheduler.max_running);
  std::fprintf(stderr, "tachyon serve: %s\n", runner->description().c_str());
  BatchingEngine engine(std::move(runner), tokenizer, o.scheduler);
  server::HttpServer http(engine, tokenizer, o.server);
  const int port = http.bind();

  std::thread signal_thread([&] {
    int received = 0;
    sigwait(&signals, &received);
    std::fprintf(stderr, "tachyon serve: signal %d, stopping\n", received);
    http.stop();
  });
  std::fprintf(stderr, "tachyon serve: model '%s' on http://%s:%d (batch %d, queue %d%s)\n", o.server.model_name.c_str(),
               o.server.host.c_str(), port, o.scheduler.max_running, o.scheduler.max_waiting,
               o.server.api_key.empty() ? "" : ", API key required");
  http.serve();
  // serve() also returns without a signal (the listening socket failed): wake the signal thread.
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
  return 0;
}
}  // namespace

Runner add_serve_command(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  cmd->add_option("-m,--model", o->model_path, "Model: a .gguf file or a Hugging Face directory")->required();
  cmd->add_option("--draft", o->draft_path, "Drafter model for speculative decoding (not wired into the server yet)");
  cmd->add_option("--host", o->server.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->server.port, "TCP port (0 = any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", o->server.api_key,
                  "Require 'Authorization: Bearer KEY' on every route but /health")->envname("TACHYON_API_KEY");
  cmd->add_option("--served-model-name", o->server.model_name, "Model id for clients (default: the file or directory name)");
  cmd->add_option("--max-batch", o->scheduler.max_running, "Requests decoded together (continuous batching)")
      ->capture_default_str()->check(CLI::Range(1, 1024));
  cmd->add_option("--max-queue", o->scheduler.max_waiting, "Requests that may wait for the batch; past it, 429")
      ->capture_default_str()->check(CLI::Range(0, 100000));
  cmd->add_option("--step-tokens", o->scheduler.step_token_budget,
                  "Tokens per engine step (decode rows + prompt chunk): bounds how long a prefill stalls the streams")
      ->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--request-timeout", o->server.request_timeout_seconds, "Seconds a request may take, from arrival")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--device", o->device, "cpu (cuda: not yet)")->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "CPU threads (default: all cores)");
  cmd->add_flag("-q,--quiet", o->quiet, "Do not log each request on stderr");
  return [o] { return run_serve(*o); };
}

}  // namespace tachyon::cli
