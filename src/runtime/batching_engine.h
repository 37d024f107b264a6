// The engine loop of continuous batching, as nano-vllm's llm_engine: one thread repeats
//   plan = scheduler.schedule(); logits = runner.run(plan); postprocess(logits)
// where postprocess samples each sequence's next token, detokenizes it incrementally, applies stop
// tokens / stop strings / max_tokens and hands the text to the request's RequestStream. HTTP threads
// only submit() and cancel; nothing else crosses threads.
#pragma once
#include <atomic>
#include <thread>
#include <unordered_map>

#include "runtime/engine.h"
#include "runtime/model_runner.h"
#include "runtime/sampler.h"
#include "runtime/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace tachyon {

class BatchingEngine final : public InferenceEngine {
 public:
  // The tokenizer must outlive the engine. scheduler.max_running is capped at runner->max_sequences().
  BatchingEngine(std::unique_ptr<ModelRunner> runner, const Tokenizer& tokenizer, SchedulerConfig scheduler);
  ~BatchingEngine() override;  // stops the loop; unfinished requests finish with an error

  std::shared_ptr<RequestStream> submit(EngineRequest request) override;
  EngineStats stats() const override;
  ModelInfo model_info() const override;
  size_t max_running() const override { return static_cast<size_t>(scheduler_config_.max_running); }
  size_t max_waiting() const override { return static_cast<size_t>(scheduler_config_.max_waiting); }

 private:
  // Per-sequence state of the post-processing (engine thread only).
  struct Active {
    std::shared_ptr<Sequence> sequence;
    std::shared_ptr<RequestStream> stream;
    Sampler sampler;
    IncrementalDecoder decoder;
    StopStringFilter stop_filter;
    std::vector<int32_t> stop_ids;
    bool has_cache = false;
  };

  void loop();
  void step();
  // Takes a sequence's next token (chosen from its logits row; -1: none, max_tokens reached) and emits its text.
  void on_token(Active& active, int32_t token);
  void finish(Active& active, FinishReason reason, const std::string& error = {});

  std::unique_ptr<ModelRunner> runner_;
  const Tokenizer& tokenizer_;
  SchedulerConfig scheduler_config_;

  mutable std::mutex mutex_;  // guards scheduler_, stats_ and stopping_
  std::condition_variable work_;
  Scheduler scheduler_;
  EngineStats stats_;
  bool stopping_ = false;
  uint64_t next_id_ = 1;

  // Submitted since the engine thread last looked (guarded by mutex_); it builds their Active.
  std::vector<std::pair<std::shared_ptr<Sequence>, std::shared_ptr<RequestStream>>> arrivals_;
  std::unordered_map<uint64_t, Active> active_;  // engine thread only
  std::thread thread_;
};

}  // namespace tachyon
