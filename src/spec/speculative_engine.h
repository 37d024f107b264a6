// The server's engine with a DFlash drafter (tachyon serve --draft): requests run one at a time through a
// speculative decode function (spec/driver.h's SpecDecodeFn: the CPU driver over a fresh CpuSpecTarget and
// DFlashProposer per request, or the GPU round over a GpuModel and GpuDrafter); the others wait in a bounded queue.
// Text reaches the handler through the same RequestStream as BatchingEngine's, with the same post-processing (stop
// ids counted as generated, IncrementalDecoder, StopStringFilter, max_tokens), so a greedy completion is the same
// text with or without the drafter. Cancellation and the deadline are checked as each committed token comes out of
// a round (and in the queue), so a request ends within one round of either (on the GPU, within one read of its
// token ring). Batch 1 is the honest first version: the round is single-sequence (docs/server.md).
// Without a drafter (speculative = false), the same engine serves a plain decode function one request at a time:
// the GPU's resident decode loop (gpu::resident_decode_fn, `serve --device cuda --max-batch 1`); its rounds are
// decode steps and the speculative counters stay 0.
#pragma once
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "models/decoder.h"
#include "models/dflash_drafter.h"
#include "runtime/engine.h"
#include "spec/driver.h"
#include "tokenizer/tokenizer.h"

namespace tachyon {

class SpeculativeEngine final : public InferenceEngine {
 public:
  // `decode` runs one request (it gets no stop ids: the engine applies them); `model` is what requests are checked
  // against (vocabulary, context length) and what /v1/models describes. Whatever decode uses and the tokenizer must
  // outlive the engine; the engine is their only user while it runs.
  SpeculativeEngine(SpecDecodeFn decode, ModelInfo model, const Tokenizer& tokenizer, size_t max_waiting,
                    SpecOptions options = {}, bool speculative = true);
  // The CPU path: cpu_spec_decoder(model, drafter).
  SpeculativeEngine(DecoderModel& model, const DFlashDrafter& drafter, const Tokenizer& tokenizer, size_t max_waiting,
                    SpecOptions options = {});
  ~SpeculativeEngine() override;  // stops the loop; unfinished requests finish with an error

  std::shared_ptr<RequestStream> submit(EngineRequest request) override;
  EngineStats stats() const override;
  ModelInfo model_info() const override;
  size_t max_running() const override { return 1; }
  size_t max_waiting() const override { return max_waiting_; }

 private:
  struct Queued {
    std::shared_ptr<Sequence> sequence;
    std::shared_ptr<RequestStream> stream;
  };
  void loop();
  void run(Queued& request);  // the whole request, on the engine thread

  const SpecDecodeFn decode_;
  const ModelInfo model_;
  const Tokenizer& tokenizer_;
  const size_t max_waiting_;
  const SpecOptions options_;
  const bool speculative_;

  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable work_;
  std::deque<Queued> queue_;
  EngineStats stats_;
  bool stopping_ = false;
  uint64_t next_id_ = 1;
  std::thread thread_;
};

}  // namespace tachyon
