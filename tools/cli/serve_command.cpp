// tachyon serve: the OpenAI-compatible HTTP server (docs/server.md).
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <pthread.h>
#include <string>
#include <thread>

#include "commands.h"
#include "core/error.h"
#include "core/parallel.h"
#include "fp4/fp4_checkpoint.h"
#include "gpu/fp8_weights.h"
#include "loader/checkpoint.h"
#include "models/model.h"
#include "runtime/batching_engine.h"
#include "runtime/cpu_model_runner.h"
#include "server/http_server.h"
#include "spec/speculative_engine.h"
#include "spec/target.h"
#include "tokenizer/tokenizer.h"
#include "loader/json_file.h"
#ifdef TACHYON_HAS_CUDA
#include "gpu/gpu_config.h"
#include "gpu/gpu_generate.h"
#include "gpu/gpu_model.h"
#include "gpu/gpu_spec_decoder.h"
#include "runtime/gpu_model_runner.h"
#endif

namespace tachyon::cli {

namespace {
struct ServeOptions {
  std::string model_path, draft_path, device = "cpu", random_weights, fp8 = "none";
  int64_t kv_positions = 0;
  int draft_block_size = 0;  // 0 = the drafter's
  uint64_t seed = 1;
  server::ServerOptions server;
  SchedulerConfig scheduler;
  int threads = 0;
  bool quiet = false;
  bool persistent = true;  // --max-batch 1 on the GPU: the persistent decode kernel where the model has one
};

std::string default_model_name(const std::string& path) {
  std::filesystem::path p(path);
  if (p.filename().empty()) p = p.parent_path();  // "dir/"
  return p.extension() == ".gguf" ? p.stem().string() : p.filename().string();
}

#ifdef TACHYON_HAS_CUDA
// The served GPU model: real weights from the checkpoint, or random weights of a shape (the checkpoint then only
// gives the tokenizer, whose vocabulary bounds the chosen ids). KV positions: --kv-positions, else
// positions_for(the model's context length).
std::unique_ptr<gpu::GpuModel> load_served_model(const ServeOptions& o, const Checkpoint& checkpoint,
                                                 gpu::GpuModelOptions options,
                                                 const std::function<int64_t(int64_t context)>& positions_for) {
  options.fp8 = gpu::parse_fp8_weights(o.fp8, "--fp8");
  const bool random = !o.random_weights.empty();
  const nlohmann::json random_config = random ? gpu::random_weights_config(o.random_weights) : nlohmann::json();
  const nlohmann::json& config = random ? random_config : checkpoint.config;
  const int64_t context = gpu::read_gpu_model_config(config, random ? o.random_weights : checkpoint.path).max_context;
  options.kv_positions = o.kv_positions > 0 ? o.kv_positions : positions_for(context);
  return random ? gpu::GpuModel::random(config, o.random_weights, o.seed, options)
                : gpu::GpuModel::load(checkpoint, options);
}

// The batched runner: every running sequence's KV in one pool (default max-batch x min(context, 2048) positions).
std::unique_ptr<ModelRunner> make_gpu_runner(const ServeOptions& o, const Checkpoint& checkpoint,
                                             const Tokenizer& tokenizer) {
  gpu::GpuModelOptions options;
  options.max_sequences = o.scheduler.max_running + 1;  // + the runner's idle sequence 0
  auto model = load_served_model(o, checkpoint, options, [&](int64_t context) {
    return o.scheduler.max_running * std::min<int64_t>(context, 2048);
  });
  const std::string label = o.random_weights.empty()
                                ? o.model_path
                                : "random weights " + o.random_weights + ", tokenizer " + o.model_path;
  const int vocab_limit = o.random_weights.empty() ? 0 : tokenizer.vocab_size();
  return std::make_unique<GpuModelRunner>(std::move(model), o.scheduler.max_running, label, vocab_limit);
}
#endif

int run_serve(ServeOptions& o) {
  if (o.device != "cpu" && o.device != "cuda") fail("--device {}: cpu or cuda", o.device);
  if (!o.draft_path.empty() && !o.random_weights.empty())
    fail("--draft with --random-weights: a drafter needs the target it was trained on (give -m a real model)");
#ifndef TACHYON_HAS_CUDA
  if (o.device == "cuda") fail("--device cuda: this tachyon was built without CUDA (configure with -DTACHYON_CUDA=ON)");
#endif
  if (!o.random_weights.empty() && o.device != "cuda") fail("--random-weights runs on the GPU only: add --device cuda");
  if (o.fp8 != "none" && o.device != "cuda") fail("--fp8 {}: FP8 weights run on the GPU only (add --device cuda)", o.fp8);
  if (o.threads > 0) set_cpu_thread_count(o.threads);
  if (o.server.model_name.empty())
    o.server.model_name = o.random_weights.empty() ? default_model_name(o.model_path)
                                                   : "random-" + default_model_name(o.random_weights);
  o.server.log_requests = !o.quiet;

  // SIGINT/SIGTERM are taken by one thread (sigwait) that stops the server; every other thread,
  // created after this, has them blocked.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that disconnects mid-write is an error code, not a death

  // With --random-weights, -m may be a tokenizer folder alone (tokenizer.json + tokenizer_config.json, e.g.
  // tests/fixtures/tokenizers/smollm2): no weights need to travel to the GPU host.
  Checkpoint checkpoint;
  Tokenizer tokenizer;
  // The CPU models read FP4 / FP8 linears dequantized (fp4_checkpoint.h); the GPU loader reads them itself.
  std::unique_ptr<fp4::DerivedCheckpoint> presented;
  auto cpu_checkpoint = [&]() -> const Checkpoint& {
    presented = fp4::present_fp4_as_float(checkpoint);
    return presented->checkpoint();
  };
  const std::filesystem::path folder(o.model_path);
  if (!o.random_weights.empty() && std::filesystem::is_directory(folder) && !std::filesystem::exists(folder / "config.json") &&
      std::filesystem::exists(folder / "tokenizer.json")) {
    const std::filesystem::path config = folder / "tokenizer_config.json";
    tokenizer = Tokenizer::from_hf_json(read_json_file((folder / "tokenizer.json").string()),
                                        std::filesystem::exists(config) ? read_json_file(config.string()) : nlohmann::json::object(),
                                        o.model_path);
  } else {
    checkpoint = open_checkpoint(o.model_path);
    tokenizer = Tokenizer::from_checkpoint(checkpoint);
  }
  // --draft: one request at a time through the speculative driver (CPU) or round (GPU), spec/speculative_engine.h.
  // Declared in this order so that the engine (its thread) goes first, then what it reads.
  Checkpoint draft_checkpoint;
  std::unique_ptr<Model> target_model;
  std::unique_ptr<DFlashDrafter> drafter;
#ifdef TACHYON_HAS_CUDA
  gpu::GpuSpecDecoder gpu_spec;
  std::unique_ptr<gpu::GpuModel> resident_model;  // --max-batch 1 on the GPU (below)
#endif
  std::unique_ptr<InferenceEngine> engine;
  if (!o.draft_path.empty()) {
    draft_checkpoint = open_checkpoint(o.draft_path);
    if (o.scheduler.max_running != SchedulerConfig{}.max_running && o.scheduler.max_running != 1)
      std::fprintf(stderr, "tachyon serve: --draft runs one request at a time; --max-batch %d is ignored\n",
                   o.scheduler.max_running);
    o.scheduler.max_running = 1;
    const size_t max_waiting = static_cast<size_t>(o.scheduler.max_waiting);
    SpecOptions spec;
    spec.block_size = o.draft_block_size;
    if (o.device == "cuda") {
#ifdef TACHYON_HAS_CUDA
      // One sequence's KV (--kv-positions, default min(context, 4096)); requests are checked against it.
      gpu::GpuModelOptions options;
      options.kv_positions = o.kv_positions;
      options.fp8 = gpu::parse_fp8_weights(o.fp8, "--fp8");
      gpu_spec = gpu::load_gpu_spec_decoder(checkpoint, draft_checkpoint, options);
      const int block = o.draft_block_size > 0 ? o.draft_block_size : gpu_spec.drafter->block_size();
      if (block > gpu::kMaxPassTokens)
        fail("--block-size {}: the GPU verify pass takes at most {} tokens (the drafter's block is {}; pass "
             "--block-size 16 or less)", block, gpu::kMaxPassTokens, gpu_spec.drafter->block_size());
      ModelInfo info{gpu_spec.target->config().vocab, gpu_spec.max_context(),
                     "GPU, speculative decoding with a DFlash drafter (block " + std::to_string(block) +
                         "), one request at a time"};
      info.min_p = false;  // the GPU sampler has none
      engine = std::make_unique<SpeculativeEngine>(gpu_spec.decode_fn(), info, tokenizer, max_waiting, spec);
#endif
    } else {
      target_model = create_model(cpu_checkpoint());
      auto* decoder = dynamic_cast<DecoderModel*>(target_model.get());
      if (!decoder) fail("--draft: {} is not a decoder model the drafter can read features from", o.model_path);
      drafter = std::make_unique<DFlashDrafter>(draft_checkpoint, drafter_target_info(*decoder));
      engine = std::make_unique<SpeculativeEngine>(*decoder, *drafter, tokenizer, max_waiting, spec);
    }
    std::fprintf(stderr, "tachyon serve: %s, drafter %s\n", engine->model_info().description.c_str(),
                 o.draft_path.c_str());
  }
  std::unique_ptr<ModelRunner> runner;
#ifdef TACHYON_HAS_CUDA
  // --max-batch 1 on the GPU: requests one at a time through the resident decode loop (CUDA graph, persistent
  // kernel, sampling on the device), the speed of `tachyon generate`; the batched pass is for several streams.
  if (o.device == "cuda" && !engine && o.scheduler.max_running == 1) {
    gpu::GpuModelOptions options;
    options.persistent_decode = o.persistent;
    resident_model = load_served_model(o, checkpoint, options,
                                       [](int64_t context) { return std::min<int64_t>(context, 4096); });
    const gpu::GpuModel& m = *resident_model;
    const int vocab_limit = o.random_weights.empty() ? 0 : std::min(tokenizer.vocab_size(), m.config().vocab);
    ModelInfo info{vocab_limit > 0 ? vocab_limit : m.config().vocab, std::min(m.config().max_context, m.capacity()),
                   "GPU, one request at a time through the resident decode loop (" +
                       (m.persistent_decode_active() ? m.persistent_kernel_name() + " persistent kernel"
                                                     : std::string("per-op CUDA graph")) +
                       ")"};
    info.min_p = false;  // the GPU sampler has none
    engine = std::make_unique<SpeculativeEngine>(gpu::resident_decode_fn(*resident_model, 0, vocab_limit), info,
                                                 tokenizer, static_cast<size_t>(o.scheduler.max_waiting),
                                                 SpecOptions{}, false);
    std::fprintf(stderr, "tachyon serve: %s\n", info.description.c_str());
  }
  if (o.device == "cuda" && !engine) runner = make_gpu_runner(o, checkpoint, tokenizer);
#endif
  if (!engine) {
    if (!runner) runner = std::make_unique<CpuModelRunner>(create_model(cpu_checkpoint()), o.scheduler.max_running);
    std::fprintf(stderr, "tachyon serve: %s\n", runner->description().c_str());
    engine = std::make_unique<BatchingEngine>(std::move(runner), tokenizer, o.scheduler);
  }
  server::HttpServer http(*engine, tokenizer, o.server);
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
  cmd->add_option("--draft", o->draft_path,
                  "DFlash drafter directory (z-lab layout): speculative decoding, one request at a time (CPU or "
                  "--device cuda)");
  cmd->add_option("--block-size", o->draft_block_size,
                  "With --draft: tokens per drafted block, 2..16 on the GPU (default: the drafter's)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--host", o->server.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->server.port, "TCP port (0 = any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", o->server.api_key,
                  "Require 'Authorization: Bearer KEY' on every route but /health")->envname("TACHYON_API_KEY");
  cmd->add_option("--served-model-name", o->server.model_name, "Model id for clients (default: the file or directory name)");
  cmd->add_option("--max-batch", o->scheduler.max_running,
                  "Requests decoded together (continuous batching). 1 on the GPU: one request at a time through the "
                  "resident decode loop (CUDA graph, persistent kernel, sampling on the device): the fastest single "
                  "stream")
      ->capture_default_str()->check(CLI::Range(1, 1024));
  cmd->add_option("--max-queue", o->scheduler.max_waiting, "Requests that may wait for the batch; past it, 429")
      ->capture_default_str()->check(CLI::Range(0, 100000));
  cmd->add_option("--step-tokens", o->scheduler.step_token_budget,
                  "Tokens per engine step (decode rows + prompt chunk): bounds how long a prefill stalls the streams")
      ->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--request-timeout", o->server.request_timeout_seconds, "Seconds a request may take, from arrival")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--device", o->device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--fp8", o->fp8, gpu::kFp8OptionHelp)->capture_default_str();
  cmd->add_option("--random-weights", o->random_weights,
                  "GPU only: random weights of a shape (a config.json, a directory with one, or smollm2-135m / "
                  "qwen3-30b-a3b); -m then gives only the tokenizer (a model, or a folder with tokenizer.json)");
  cmd->add_option("--kv-positions", o->kv_positions,
                  "GPU only: KV cache positions shared by all sequences (default: max-batch x min(context, 2048); "
                  "with --draft or --max-batch 1, one sequence's: min(context, 4096))");
  cmd->add_option("--seed", o->seed, "Seed of --random-weights")->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "CPU threads (default: all cores)");
  cmd->add_flag("-q,--quiet", o->quiet, "Do not log each request on stderr");
  cmd->add_flag("!--no-persistent", o->persistent,
                "With --device cuda --max-batch 1: the per-op CUDA graph instead of the persistent decode kernel");
  return [o] { return run_serve(*o); };
}

}  // namespace tachyon::cli
