// DFlash speculative decoding on the GPU (batch 1): the whole round stays on the device.
//
// One round at block size b is a fixed sequence of kernels whose every varying input (the committed length L,
// the bonus token, positions) lives in a small device state, so the round is captured once per b as a CUDA graph
// and replayed back to back with no host synchronization:
//   begin:    block = [bonus, MASK * (b-1)], positions [L, L + b), seq_len L + b          (spec_round kernels)
//   draft:    GpuDrafter::enqueue_draft -> drafter logits [b-1, vocab] -> argmax into block[1..b-1]
//   verify:   GpuModel::enqueue_pass over the block (causal inside it) -> logits [b, vocab], features [b, F]
//   choose:   the target's token per row (argmax at T = 0; at T > 0 the target samples every row with the
//             plain sampler: the "target-sampled" rule of spec/verifier.h, lossless for any top-k / top-p)
//   accept:   a = longest prefix with block[j+1] == choice[j]; bonus = choice[a]; the committed tokens go to a
//             device ring; L += a + 1 (the target's rows past L are rejected: attention never reads them, and
//             the next round overwrites them: rollback costs nothing)
//   context:  GpuDrafter::enqueue_context over ALL b verified rows at positions [L_old, L_old + b); only the
//             first a + 1 are valid, the next round's seq_len hides and then overwrites the others.
// The host reads the token ring every few rounds (like DecodeLoop) to apply stop rules while later rounds run;
// tokens past a stop are discarded. Logits never leave the device.
//
// Across requests: a GpuSpecSession keeps the round's device state, pinned snapshots and graphs for as long as the
// target and drafter live, so a request pays no capture, instantiation or cudaMallocHost once its (block size,
// attention bucket) graph exists. What a captured round bakes in, and why that is safe to replay for any request:
//   - by value: the block size b, the attention bucket (the attention kernels' split over the keys), the drafter's
//     mask token, the vocab, the ring sizes, and whether the target's choice is an argmax or a sample: the graph
//     key is (b, bucket, sampled);
//   - device pointers: the round state, rings, rng offset, sampling parameters, draft logits and features (all
//     owned by the session), the target's weights, KV storage, block table (one device row, rewritten in place for
//     the selected sequence), pass buffers and attention workspace, the drafter's own buffers: none changes while
//     the pair is loaded;
//   - read from device memory at every replay: L, bonus, counts (SpecState), the Philox offset, and the sampling
//     parameters (temperature, top_k, top_p, seed: kernels::sample_rows_from_device), which start() uploads per
//     request, so requests with different sampling settings and seeds share the sampled graphs.
#pragma once
#ifdef TACHYON_HAS_CUDA
#include <memory>
#include <span>

#include "gpu/gpu_drafter.h"
#include "gpu/gpu_model.h"
#include "spec/driver.h"

namespace tachyon::gpu {

struct GpuSpecRunOptions {
  bool use_graph = true;    // false: the same kernels launched one by one (bench compares)
  int rounds_per_read = 4;  // rounds enqueued between two reads of the token ring
};

// The round's state, kept across requests on one target + drafter pair (both must outlive it). One request at a
// time, on the target's stream.
//
// decode() (and gpu_speculative_decode below): the contract of spec/driver.h's speculative_decode (stop ids,
// max_tokens, the context limit, on_token per committed token, SpecStats) on a GpuModel and GpuDrafter. The target
// must have been loaded with the drafter's feature layers (GpuModelOptions::feature_layers); its selected sequence
// is reset to empty first, as is the drafter's context. params.spec.block_size 0 = the drafter's; a policy
// (params.spec.policy) is consulted once per read of the ring rather than every round. min_p is not available (an
// error, as in generate_on_gpu).
class GpuSpecSession {
 public:
  GpuSpecSession(GpuModel& target, GpuDrafter& drafter);
  ~GpuSpecSession();  // waits for the target's stream (queued replays read the graphs and buffers)
  GpuSpecSession(const GpuSpecSession&) = delete;
  GpuSpecSession& operator=(const GpuSpecSession&) = delete;

  // gpu_speculative_decode's contract, reusing the graphs captured by earlier requests.
  SpecDecodeResult decode(std::span<const int32_t> prompt, const SpecDecodeParams& params,
                          const TokenCallback& on_token = {}, const GpuSpecRunOptions& options = {});
  // Round graphs captured since construction (one per distinct (block size, bucket, sampled) key; tests check
  // that later requests reuse them).
  int graphs_captured() const;
  GpuModel& target() const { return target_; }
  GpuDrafter& drafter() const { return drafter_; }

  class Round;  // gpu_speculative.cpp

 private:
  GpuModel& target_;
  GpuDrafter& drafter_;
  std::unique_ptr<Round> round_;
};

// One request on a fresh GpuSpecSession (captures its own graphs; the bench times this way on both sides).
SpecDecodeResult gpu_speculative_decode(GpuModel& target, GpuDrafter& drafter, std::span<const int32_t> prompt,
                                        const SpecDecodeParams& params, const TokenCallback& on_token = {},
                                        const GpuSpecRunOptions& options = {});

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
