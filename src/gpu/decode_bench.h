// What `tachyon bench` measures on a GpuModel (shared/docs/benchmarks.md): batch-1 decode step time through
// the replayed graph and through plain stream launches, the bytes one step must read (every weight touched once:
// attention, dense MLPs, router, lm_head, only the experts the token routes to; plus the KV cache at the
// context length), the card's streaming-read bandwidth measured in the same run, the roofline efficiency
// floor / step, and prefill throughput.
#pragma once
#ifdef TACHYON_HAS_CUDA
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpu/gpu_model.h"

namespace tachyon::gpu {

struct DecodeBenchOptions {
  int64_t context = 1024;  // KV length when the timed decode steps start
  int steps = 64;          // decode steps per timed repetition (each repetition rewinds to `context`)
  int repeats = 5;         // repetitions; the median is reported
  std::vector<int64_t> prefill_lengths = {1024, 8192};
  uint64_t seed = 1;  // prompt token ids
};

// Bytes one decode step reads, by kind (stored precision, padding included).
struct StepBytes {
  double attention = 0, dense_mlp = 0, router = 0, experts = 0, norms = 0, lm_head = 0, kv_cache = 0;
  double weights() const { return attention + dense_mlp + router + experts + norms + lm_head; }
  double total() const { return weights() + kv_cache; }
};

struct PrefillResult {
  int64_t tokens = 0;
  double seconds = 0;
  double tokens_per_second = 0;
};

struct DecodeBenchResult {
  std::string device;
  int64_t context = 0;
  int steps = 0, repeats = 0;
  double bandwidth_bytes_per_second = 0;  // stream_read, this run
  StepBytes bytes;
  double mean_kv_length = 0;                 // KV length the kv_cache bytes are counted at
  double distinct_experts_per_layer = 0;     // MoE: the decode token's routing, averaged over sparse layers
  double distinct_experts_per_layer_16 = 0;  // MoE: for a 16-token pass (what a verify block reads)
  double floor_seconds = 0;                  // bytes / bandwidth
  double graph_step_seconds = 0, stream_step_seconds = 0;
  std::vector<double> graph_step_samples, stream_step_samples;
  std::vector<PrefillResult> prefill;
  double tokens_per_second() const { return graph_step_seconds > 0 ? 1.0 / graph_step_seconds : 0; }
  double efficiency() const { return graph_step_seconds > 0 ? floor_seconds / graph_step_seconds : 0; }
  double stream_efficiency() const { return stream_step_seconds > 0 ? floor_seconds / stream_step_seconds : 0; }
};

// Bytes a step reads at KV length `kv_length`, with `experts_per_layer` distinct experts per sparse layer.
StepBytes decode_step_bytes(const GpuModelConfig& config, double kv_length, double experts_per_layer);

// Streaming-read bandwidth of this GPU (bytes/s): median over repetitions of stream_read on a buffer far
// larger than L2.
double measure_read_bandwidth(size_t max_bytes = size_t{2} << 30);

DecodeBenchResult run_decode_bench(GpuModel& model, const DecodeBenchOptions& options);

nlohmann::json to_json(const DecodeBenchResult& result);

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
