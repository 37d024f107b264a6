// The resident decode loop: one decode step (embed -> layers -> lm_head -> argmax or sampling -> bookkeeping)
// captured as ONE CUDA graph and replayed once per token. Everything a step needs lives in fixed device buffers:
// the step reads its input token from `next_token`, writes the chosen token back there and appends it to a
// device ring; a one-thread kernel at the end of the graph advances the position, the KV length and the
// sampler's Philox offset. So N steps are N graph launches back to back with no host synchronization; the host
// reads the ring every few steps (checking EOS / stop strings) while the next steps already run.
//
// The same step can be launched kernel by kernel on the stream instead (use_graph = false): identical kernels
// and arguments, so identical results; `tachyon bench` times both to show the launch overhead the graph removes.
//
// Graphs are cached per attention bucket: the attention kernel sizes its split over the keys from a host-side
// bound on the KV length, baked into the graph, so a graph serves lengths up to its bucket (buckets grow by
// 1/8 to 1/4 of the length, keeping the over-estimate and the number of captures small).
#pragma once
#ifdef TACHYON_HAS_CUDA
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <vector>

#include "cuda/device_buffer.h"
#include "cuda/pinned_buffer.h"
#include "cuda/stream.h"
#include "gpu/gpu_model.h"
#include "sampling/sampling.h"

namespace tachyon::gpu {

struct DecodeSampling {
  float temperature = 0.0f;  // <= 0: greedy (argmax)
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  uint64_t seed = 0;
  int vocab_limit = 0;       // > 0: choose among the first vocab_limit ids only (random weights, a smaller tokenizer)
};

// The KV-length bound baked into a graph that serves KV lengths up to `length` (buckets grow by 1/8 to 1/4 of the
// length, capped at the cache capacity). Shared by the decode loop and the speculative round.
int attention_bucket(int64_t length, int64_t capacity);

class DecodeLoop {
 public:
  // `ring_size` bounds the tokens generated between two reads of the ring. A sampling loop (temperature > 0) reads
  // its temperature / top-k / top-p / seed from device memory at each step, so set_sampling() can change them for
  // the next start() without new graphs (the server keeps one sampling loop for every sampled request).
  DecodeLoop(GpuModel& model, const DecodeSampling& sampling, int ring_size = 1 << 14);
  ~DecodeLoop();
  DecodeLoop(const DecodeLoop&) = delete;
  DecodeLoop& operator=(const DecodeLoop&) = delete;

  // Prefills `prompt` after what the model's cache holds and picks the first new token on the device (it is
  // generated token 0). Resets the ring.
  void start(std::span<const int32_t> prompt);
  // A sampling loop's next settings (temperature > 0; the vocabulary limit stays the constructor's). Call between
  // generations: it is ordered on the model's stream before the next start().
  void set_sampling(const DecodeSampling& sampling);
  // Rollback: truncates the cache to `length` positions and makes `next_token` the next input (as if it had
  // just been generated). Resets the ring; the Philox offset continues.
  void rewind(int64_t length, int32_t next_token);

  // Enqueues `steps` decode steps (graph replays, or the same kernels launched one by one). No host sync.
  void enqueue(int steps, bool use_graph = true);
  // Tokens written to the ring since start/rewind (the host's count; they may still be in flight).
  int64_t generated() const { return generated_; }
  // Waits for the stream and returns every token generated since start/rewind (at most ring_size).
  std::vector<int32_t> tokens();

  // Generation: the first token from start(), then steps until `max_tokens` tokens exist, the KV cache is
  // full, or `on_tokens` returns false. The ring is read every `read_every` steps, one chunk behind the GPU;
  // read_every <= 0: as many steps as take about kAdaptiveReadSeconds (measured as it goes), so that a stream's
  // tokens reach the host at a steady pace whatever the model's step time (a 3.4 ms Qwen3 step read every 8 steps
  // came in bursts 27 ms apart).
  static constexpr double kAdaptiveReadSeconds = 0.004;
  using TokenSink = std::function<bool(std::span<const int32_t> tokens)>;
  void run(int64_t max_tokens, int read_every, const TokenSink& on_tokens, bool use_graph = true);

  int graphs_captured() const { return static_cast<int>(graphs_.size()); }
  // The KV-length bound baked into the graph that serves lengths up to `length`.
  int bucket_for(int64_t length) const { return attention_bucket(length, model_.capacity()); }

 private:
  void enqueue_step(int bucket, cudaStream_t stream);
  void select_token(const float* logits, cudaStream_t stream);
  cudaGraphExec_t graph_for(int bucket);
  // Copies ring slots [first, first + count) into `host` (pinned) on the stream.
  void enqueue_ring_read(int64_t first, int64_t count, int* host);
  void set_device_state(int64_t length, const int32_t* next_token, bool reset_ring);

  GpuModel& model_;
  DecodeSampling sampling_;
  int ring_size_;
  // [next_token | position | seq_len | query_start 0, 1 | token_sequence 0 | step_count]
  cuda::DeviceBuffer<int> state_;
  cuda::DeviceBuffer<uint64_t> rng_offset_;
  cuda::DeviceBuffer<kernels::SamplingParams> sampling_params_;  // a sampling loop's settings (read at each step)
  cuda::DeviceBuffer<int> ring_;
  cuda::PinnedBuffer<int> pinned_;  // 2 x ring_size: double-buffered ring reads
  std::map<int, cudaGraphExec_t> graphs_;
  int64_t generated_ = 0;
};

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
