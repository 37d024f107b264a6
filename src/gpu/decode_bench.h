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

// The block-size sweep of issue 5 item 6 (docs/dflash.md, "Block size against cost"). For each block size b:
//   verify: one target pass of b tokens at KV length `context` (enqueue_pass captured in a CUDA graph, so it
//           is the GPU time of the pass, the same kernels a verify block runs; FP4 experts use the fused FP4 MoE
//           kernels), median over `repeats` samples of `launches` back-to-back replays;
//   draft:  (with a drafter) what a round runs on the drafter at the same KV length: the context pass over the b
//           verified rows (fc, hidden_norm, every layer's K/V) and the drafting pass of b slots (bidirectional,
//           target lm_head on b - 1 rows), also one CUDA graph;
//   distinct experts per MoE layer that the b (pseudo-random) tokens route to.
struct VerifySweepPoint {
  int block = 0;
  double verify_seconds = 0, draft_seconds = 0;  // draft_seconds 0 without a drafter
  double distinct_experts_per_layer = 0;
  bool graphed = false;  // timed as CUDA graph replays (else stream launches: capture failed)
  std::vector<double> verify_samples, draft_samples;
  double round_seconds() const { return verify_seconds + draft_seconds; }
};

struct VerifySweepOptions {
  std::vector<int> blocks = {2, 4, 8, 16};
  int64_t context = 1024;
  int repeats = 5;
  int launches = 10;  // graph replays per timed sample
  uint64_t seed = 1;
};

class GpuDrafter;
std::vector<VerifySweepPoint> run_verify_sweep(GpuModel& target, GpuDrafter* drafter, const VerifySweepOptions& options);

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
