#ifdef TACHYON_HAS_CUDA
#include "gpu/decode_bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <set>

#include "bandwidth/stream_read.h"
#include "core/error.h"
#include "gpu/decode_loop.h"
#include "gpu/fp8_weights.h"
#include "gpu/gpu_drafter.h"
#include "gpu/fp4_experts.h"

namespace tachyon::gpu {

namespace {

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

// Prompt ids from a fixed LCG: speed does not depend on the values, but they should not all be one token.
std::vector<int32_t> bench_prompt(int64_t length, int vocab, uint64_t seed) {
  std::vector<int32_t> ids(length);
  uint64_t state = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (auto& id : ids) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(vocab));
  }
  return ids;
}

double mean_distinct_experts(const GpuModelConfig& c, const std::vector<std::vector<int>>& routing) {
  double sum = 0;
  int layers = 0;
  for (int layer = 0; layer < c.layers; ++layer) {
    if (!c.is_sparse(layer)) continue;
    sum += static_cast<double>(std::set<int>(routing[layer].begin(), routing[layer].end()).size());
    ++layers;
  }
  return layers ? sum / layers : 0;
}

}  // namespace

StepBytes decode_step_bytes(const GpuModelConfig& c, double kv_length, double experts_per_layer) {
  StepBytes b;
  const double bf16 = 2, f32 = 4, H = c.hidden_padded;
  // A dense matrix as stored: bf16, or FP8 codes + scales.
  auto matrix_bytes = [](bool fp8, int64_t rows, int64_t cols) {
    return fp8 ? fp8_matrix_bytes(rows, cols) : 2.0 * static_cast<double>(rows) * cols;
  };
  for (int layer = 0; layer < c.layers; ++layer) {
    b.attention += matrix_bytes(c.fp8.attention, c.qkv_width(), c.hidden_padded) +
                   matrix_bytes(c.fp8.attention, c.hidden_padded, c.q_width());
    if (c.qkv_bias) b.attention += f32 * c.qkv_width();
    if (c.o_bias) b.attention += f32 * H;
    b.norms += f32 * 2 * H + (c.qk_norm ? f32 * 2 * c.head_dim_padded : 0);
    if (c.is_sparse(layer)) {
      b.router += bf16 * c.experts * H + (c.router_bias ? f32 * c.experts : 0);
      b.experts += experts_per_layer * stored_expert_bytes(c);  // bf16, or FP4 codes + scales
      if (c.expert_biases)  // gpt-oss: float32 gate/up and down biases of each touched expert
        b.experts += experts_per_layer * f32 * (2.0 * c.moe_intermediate_padded + H);
    } else {
      b.dense_mlp += 2 * matrix_bytes(c.fp8.mlp, c.intermediate_padded, c.hidden_padded) +
                     matrix_bytes(c.fp8.mlp, c.hidden_padded, c.intermediate_padded);
    }
    // Keys and values of every position the layer attends to (a sliding-window layer: at most its window).
    const double window = c.sliding_window(layer);
    b.kv_cache += 2 * bf16 * (window > 0 ? std::min(kv_length, window) : kv_length) * c.kv_width();
    if (c.attention_sinks) b.attention += f32 * c.heads;
  }
  b.norms += f32 * H;
  b.lm_head = matrix_bytes(c.fp8.lm_head, c.vocab, c.hidden_padded) + bf16 * H;  // + the embedding row
  return b;
}

double measure_read_bandwidth(size_t max_bytes) {
  size_t free_bytes = 0, total_bytes = 0;
  TACHYON_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  size_t bytes = std::min(max_bytes, free_bytes / 2) / (1 << 20) * (1 << 20);
  if (bytes < (size_t{256} << 20))
    fail("bench: only {} MB of GPU memory left to measure the read bandwidth", free_bytes >> 20);
  cuda::DeviceBuffer<uint8_t> buffer(bytes);
  cuda::DeviceBuffer<uint32_t> checksum(1);
  cuda::Stream stream;
  buffer.fill_bytes(0x5a, stream);  // not zeros: a card may treat zero data differently
  checksum.fill_bytes(0, stream);
  for (int i = 0; i < 3; ++i) kernels::stream_read(buffer.data(), bytes, checksum.data(), stream);
  std::vector<double> samples;
  cuda::Event begin, end;
  for (int i = 0; i < 15; ++i) {
    begin.record(stream);
    kernels::stream_read(buffer.data(), bytes, checksum.data(), stream);
    end.record(stream);
    end.synchronize();
    samples.push_back(bytes / (end.elapsed_ms_since(begin) * 1e-3));
  }
  return median(samples);
}

DecodeBenchResult run_decode_bench(GpuModel& model, const DecodeBenchOptions& options) {
  const GpuModelConfig& c = model.config();
  if (options.context < 1 || options.steps < 1 || options.repeats < 1)
    fail("bench: context, steps and repeats must be positive");
  if (options.context + options.steps + 1 > model.capacity())
    fail("bench: context {} + {} steps exceed the KV capacity of {}", options.context, options.steps, model.capacity());
  DecodeBenchResult r;
  r.device = cuda::current_device_info().name;
  r.context = options.context;
  r.steps = options.steps;
  r.repeats = options.repeats;
  r.bandwidth_bytes_per_second = measure_read_bandwidth();
  cudaStream_t stream = model.stream();
  auto seconds_since = [](std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };

  // Prefill: a warm-up pass of each length (cuBLASLt plans, buffers), then the timed ones.
  for (int64_t length : options.prefill_lengths) {
    if (length > model.capacity()) {
      std::fprintf(stderr, "[bench: skipping the %lld-token prefill: the KV cache holds %lld]\n",
                   static_cast<long long>(length), static_cast<long long>(model.capacity()));
      continue;
    }
    const std::vector<int32_t> prompt = bench_prompt(length, c.vocab, options.seed + length);
    std::vector<double> samples;
    const int runs = length <= 2048 ? 4 : 3;
    for (int run = 0; run < runs; ++run) {
      model.truncate(0);
      TACHYON_CUDA_CHECK(cudaStreamSynchronize(stream));
      const auto start = std::chrono::steady_clock::now();
      model.prefill(prompt);
      TACHYON_CUDA_CHECK(cudaStreamSynchronize(stream));
      if (run > 0) samples.push_back(seconds_since(start));
    }
    const double seconds = median(samples);
    r.prefill.push_back({length, seconds, length / seconds});
  }

  // Decode at `context`: every repetition rewinds to the same KV length and input token, so each times the
  // same steps. Reserving the pages first keeps the block-table upload out of the timed region.
  model.truncate(0);
  DecodeLoop loop(model, DecodeSampling{});
  loop.start(bench_prompt(options.context, c.vocab, options.seed));
  loop.enqueue(4, true);  // capture + warm-up
  loop.enqueue(4, false);
  const std::vector<int32_t> warm_tokens = loop.tokens();
  const int32_t first_input = warm_tokens.front();
  cuda::Event begin, end;
  auto time_steps = [&](bool use_graph) {
    loop.rewind(options.context, first_input);
    model.reserve(options.context + options.steps);
    begin.record(stream);
    loop.enqueue(options.steps, use_graph);
    end.record(stream);
    end.synchronize();
    return end.elapsed_ms_since(begin) * 1e-3 / options.steps;
  };
  time_steps(true);
  time_steps(false);
  for (int i = 0; i < options.repeats; ++i) {
    r.graph_step_samples.push_back(time_steps(true));
    r.stream_step_samples.push_back(time_steps(false));
  }
  r.graph_step_seconds = median(r.graph_step_samples);
  r.stream_step_seconds = median(r.stream_step_samples);

  // Routing of the last decode step (outside timing), then of one 16-token pass.
  if (c.experts > 0) {
    r.distinct_experts_per_layer = mean_distinct_experts(c, model.last_routing(1));
    model.truncate(options.context);
    const std::vector<int32_t> block = bench_prompt(kMaxPassTokens, c.vocab, options.seed + 7);
    model.forward(block);
    r.distinct_experts_per_layer_16 = mean_distinct_experts(c, model.last_routing(kMaxPassTokens));
  }
  // The timed steps ran at KV lengths context + 1 .. context + steps.
  r.mean_kv_length = options.context + 0.5 * (options.steps + 1);
  r.bytes = decode_step_bytes(c, r.mean_kv_length, c.experts > 0 ? r.distinct_experts_per_layer : 0);
  r.floor_seconds = r.bytes.total() / r.bandwidth_bytes_per_second;
  model.truncate(0);
  return r;
}

namespace {

// A pass of b tokens at KV length `context` on `model`, as one CUDA graph replayed back to back. The KV rows of
// the pass are rewritten by every replay (enqueue_pass does not advance the model), so each replay times the
// same pass. Returns per-sample seconds per pass.
// With a drafter: its context pass over the b rows plus its drafting pass of b slots at the same positions
// (target = the model whose embedding and lm_head it reads; features are zeros: values do not change the time).
std::vector<double> time_block_pass(GpuModel& model, int block, const VerifySweepOptions& o,
                                    std::vector<std::vector<int>>* routing, bool* graphed,
                                    GpuDrafter* drafter = nullptr) {
  const GpuModelConfig& c = model.config();
  cudaStream_t stream = model.stream();
  if (!drafter) model.reserve(o.context + block);
  const std::vector<int32_t> ids = bench_prompt(block, c.vocab, o.seed + 1000 + block);
  SingleSequencePassInputs inputs(block);
  const PassInputs in = inputs.upload(ids, block, o.context, stream);
  const int max_seq_len = static_cast<int>(o.context + block);
  cuda::DeviceBuffer<float> features, draft_logits;
  if (drafter) {
    features = cuda::DeviceBuffer<float>(static_cast<size_t>(block) * drafter->feature_width());
    features.fill_bytes(0, stream);
    draft_logits = cuda::DeviceBuffer<float>(static_cast<size_t>(kMaxPassTokens) * c.vocab);
  }
  auto enqueue = [&] {
    if (drafter) {
      drafter->enqueue_context(features.data(), in, block, max_seq_len, stream);
      drafter->enqueue_draft(in, block, max_seq_len, draft_logits.data(), stream);
    } else {
      model.enqueue_pass(in, block, max_seq_len, model.pass_logits(), stream);
    }
  };
  enqueue();  // warm-up, kernel attributes
  TACHYON_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (routing && !drafter) *routing = model.last_routing(block);

  // Captured as a graph, so that host launch gaps do not count; if capture fails, plain stream launches (the
  // caller is told through *graphed).
  cudaGraphExec_t exec = nullptr;
  cudaGraph_t graph = nullptr;
  if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed) == cudaSuccess) {
    bool enqueued = true;
    try {
      enqueue();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "[bench: capturing the %d-token pass failed (%s); timing stream launches]\n", block,
                   e.what());
      enqueued = false;
    }
    if (cudaStreamEndCapture(stream, &graph) == cudaSuccess && graph && enqueued) {
      if (cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) exec = nullptr;
    }
    if (graph) cudaGraphDestroy(graph);
  }
  cudaGetLastError();  // clear the (non-sticky) error a failed capture leaves; the stream is usable again
  *graphed = exec != nullptr;
  auto launch = [&] {
    if (exec)
      TACHYON_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    else
      enqueue();
  };
  std::vector<double> samples;
  cuda::Event begin, end;
  try {
    for (int i = 0; i < 2; ++i) launch();
    for (int r = 0; r < o.repeats; ++r) {
      begin.record(stream);
      for (int i = 0; i < o.launches; ++i) launch();
      end.record(stream);
      end.synchronize();
      samples.push_back(end.elapsed_ms_since(begin) * 1e-3 / o.launches);
    }
  } catch (...) {
    if (exec) cudaGraphExecDestroy(exec);
    throw;
  }
  if (exec) cudaGraphExecDestroy(exec);
  return samples;
}

void prefill_context(GpuModel& model, const VerifySweepOptions& o) {
  if (o.context + kMaxPassTokens > model.capacity())
    fail("bench --verify-sweep: context {} + {} exceeds the KV capacity of {}", o.context, kMaxPassTokens,
         model.capacity());
  model.truncate(0);
  model.prefill(bench_prompt(o.context, model.config().vocab, o.seed));
  TACHYON_CUDA_CHECK(cudaStreamSynchronize(model.stream()));
}

}  // namespace

std::vector<VerifySweepPoint> run_verify_sweep(GpuModel& target, GpuDrafter* drafter, const VerifySweepOptions& o) {
  if (o.repeats < 1 || o.launches < 1) fail("bench --verify-sweep: repeats and launches must be positive");
  for (int b : o.blocks)
    if (b < 1 || b > kMaxPassTokens) fail("bench --verify-sweep: block size {} is outside 1..{}", b, kMaxPassTokens);
  if (drafter && o.context + kMaxPassTokens > drafter->capacity())
    fail("bench --verify-sweep: context {} + {} exceeds the drafter's capacity of {}", o.context, kMaxPassTokens,
         drafter->capacity());
  std::vector<VerifySweepPoint> points;
  prefill_context(target, o);
  for (int b : o.blocks) {
    VerifySweepPoint p;
    p.block = b;
    std::vector<std::vector<int>> routing;
    p.verify_samples = time_block_pass(target, b, o, &routing, &p.graphed);
    p.verify_seconds = median(p.verify_samples);
    if (target.config().experts > 0) p.distinct_experts_per_layer = mean_distinct_experts(target.config(), routing);
    if (drafter && b >= 2) {  // b = 1 is plain decoding: no draft
      bool graphed = false;
      p.draft_samples = time_block_pass(target, b, o, nullptr, &graphed, drafter);
      p.graphed = p.graphed && graphed;
      p.draft_seconds = median(p.draft_samples);
    }
    points.push_back(std::move(p));
  }
  target.truncate(0);
  return points;
}

nlohmann::json to_json(const DecodeBenchResult& r) {
  nlohmann::json prefill = nlohmann::json::array();
  for (const auto& p : r.prefill)
    prefill.push_back({{"tokens", p.tokens}, {"seconds", p.seconds}, {"tokens_per_second", p.tokens_per_second}});
  return {
      {"device", r.device},
      {"context", r.context},
      {"steps", r.steps},
      {"repeats", r.repeats},
      {"read_bandwidth_gb_per_s", r.bandwidth_bytes_per_second / 1e9},
      {"bytes_per_token",
       {{"total", r.bytes.total()},
        {"weights", r.bytes.weights()},
        {"attention", r.bytes.attention},
        {"dense_mlp", r.bytes.dense_mlp},
        {"router", r.bytes.router},
        {"experts", r.bytes.experts},
        {"norms", r.bytes.norms},
        {"lm_head", r.bytes.lm_head},
        {"kv_cache", r.bytes.kv_cache},
        {"mean_kv_length", r.mean_kv_length}}},
      {"distinct_experts_per_layer", r.distinct_experts_per_layer},
      {"distinct_experts_per_layer_16_tokens", r.distinct_experts_per_layer_16},
      {"floor_us", r.floor_seconds * 1e6},
      {"graph_step_us", r.graph_step_seconds * 1e6},
      {"stream_step_us", r.stream_step_seconds * 1e6},
      {"graph_step_us_samples",
       [&] {
         std::vector<double> us;
         for (double s : r.graph_step_samples) us.push_back(s * 1e6);
         return us;
       }()},
      {"stream_step_us_samples",
       [&] {
         std::vector<double> us;
         for (double s : r.stream_step_samples) us.push_back(s * 1e6);
         return us;
       }()},
      {"decode_tokens_per_second", r.tokens_per_second()},
      {"roofline_efficiency", r.efficiency()},
      {"stream_roofline_efficiency", r.stream_efficiency()},
      {"host_gap_us_per_step", (r.stream_step_seconds - r.graph_step_seconds) * 1e6},
      {"prefill", prefill},
  };
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
