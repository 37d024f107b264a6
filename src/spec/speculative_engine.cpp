#include "spec/speculative_engine.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "runtime/generate.h"

namespace tachyon {

SpeculativeEngine::SpeculativeEngine(SpecDecodeFn decode, ModelInfo model, const Tokenizer& tokenizer,
                                     size_t max_waiting, SpecOptions options, bool speculative)
    : decode_(std::move(decode)),
      model_(std::move(model)),
      tokenizer_(tokenizer),
      max_waiting_(max_waiting),
      options_(options),
      speculative_(speculative) {
  if (!decode_) fail("SpeculativeEngine: no decode function");
  stats_.speculative = speculative;
  thread_ = std::thread([this] { loop(); });
}

SpeculativeEngine::SpeculativeEngine(DecoderModel& model, const DFlashDrafter& drafter, const Tokenizer& tokenizer,
                                     size_t max_waiting, SpecOptions options)
    : SpeculativeEngine(cpu_spec_decoder(model, drafter),
                        {model.vocab_size(), model.max_context(),
                         "CPU, speculative decoding with a DFlash drafter (block " +
                             std::to_string(options.block_size > 0 ? options.block_size : drafter.block_size()) +
                             "), one request at a time"},
                        tokenizer, max_waiting, options) {}

SpeculativeEngine::~SpeculativeEngine() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  thread_.join();  // a running request notices stopping_ at its next token
  for (Queued& queued : queue_) queued.stream->finish(FinishReason::error, "the server is shutting down");
}

std::shared_ptr<RequestStream> SpeculativeEngine::submit(EngineRequest request) {
  if (request.prompt.empty()) fail("the prompt is empty (no tokens)");
  if (request.params.max_tokens < 0) fail("max_tokens must be >= 0, got {}", request.params.max_tokens);
  for (int32_t id : request.prompt)
    if (id < 0 || id >= model_.vocab_size)
      fail("prompt token id {} is outside the vocabulary [0, {})", id, model_.vocab_size);
  // The CPU driver implements every SamplingParams field (min_p through the speculative min(1, p/q) rule); the
  // GPU round has no min_p (ModelInfo::min_p false), so such a request is refused here, before it queues.
  validate(request.params.sampling);
  if (!model_.min_p && request.params.sampling.min_p > 0)
    fail("min_p is not supported {} (use top_k / top_p)", speculative_ ? "with a drafter on the GPU" : "on the GPU sampler");

  auto sequence = std::make_shared<Sequence>();
  sequence->prompt = std::move(request.prompt);
  sequence->params = std::move(request.params);
  sequence->arrival = request.arrival;
  sequence->deadline = request.deadline;
  if (sequence->max_positions() > model_.max_context)
    fail("{} prompt tokens + {} max_tokens exceed the context length of {}", sequence->prompt_length(),
         sequence->params.max_tokens, model_.max_context);

  std::shared_ptr<RequestStream> stream;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) fail("the server is shutting down");
    if (queue_.size() >= max_waiting_) return nullptr;
    sequence->id = next_id_++;
    stream = std::make_shared<RequestStream>(sequence, request.arrival);
    queue_.push_back({std::move(sequence), stream});
  }
  work_.notify_all();
  return stream;
}

EngineStats SpeculativeEngine::stats() const {
  std::lock_guard lock(mutex_);
  EngineStats s = stats_;
  s.waiting = queue_.size();
  return s;
}

ModelInfo SpeculativeEngine::model_info() const { return model_; }

void SpeculativeEngine::loop() {
  for (;;) {
    Queued next;
    std::vector<std::pair<Queued, FinishReason>> swept;
    {
      std::unique_lock lock(mutex_);
      // Wake for new work, or now and then to sweep deadlines of queued requests.
      work_.wait_for(lock, std::chrono::milliseconds(50), [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      const auto now = SteadyClock::now();
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (it->sequence->cancel_requested.load(std::memory_order_relaxed)) swept.emplace_back(std::move(*it), FinishReason::cancelled);
        else if (now >= it->sequence->deadline) swept.emplace_back(std::move(*it), FinishReason::timeout);
        else {
          ++it;
          continue;
        }
        it = queue_.erase(it);
      }
      if (!queue_.empty()) {
        next = std::move(queue_.front());
        queue_.pop_front();
        stats_.running = 1;
      }
    }
    for (auto& [queued, reason] : swept) {
      queued.sequence->finish = reason;
      queued.stream->finish(reason);
    }
    if (!next.stream) continue;
    try {
      run(next);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "engine: internal error: %s\n", e.what());
      next.stream->finish(FinishReason::error, std::string("internal error: ") + e.what());
    }
    std::lock_guard lock(mutex_);
    stats_.running = 0;
  }
}

void SpeculativeEngine::run(Queued& request) {
  Sequence& sequence = *request.sequence;
  RequestStream& stream = *request.stream;
  const GenerationParams& params = sequence.params;

  const std::vector<int32_t> stop_ids = stop_token_ids(params, tokenizer_);
  IncrementalDecoder decoder(tokenizer_);
  StopStringFilter stop_filter(params.stop_strings);
  FinishReason reason = FinishReason::none;

  // Stop ids, stop strings and max_tokens are applied here, token by token, exactly as BatchingEngine::on_logits
  // does (the driver gets no stop ids): the stop token counts as generated and is not shown.
  auto on_token = [&](int32_t token) {
    const auto now = SteadyClock::now();
    if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
      stream.push({}, 1, now);
      reason = FinishReason::stop;
      return false;
    }
    sequence.generated.push_back(token);
    stream.push(stop_filter.push(decoder.push(token)), 1, now);
    if (stop_filter.stopped()) reason = FinishReason::stop;
    else if (static_cast<int64_t>(sequence.generated.size()) >= params.max_tokens) reason = FinishReason::length;
    else if (sequence.cancel_requested.load(std::memory_order_relaxed)) reason = FinishReason::cancelled;
    else if (now >= sequence.deadline) reason = FinishReason::timeout;
    else {
      std::lock_guard lock(mutex_);
      if (stopping_) reason = FinishReason::error;
    }
    return reason == FinishReason::none;
  };

  const auto now = SteadyClock::now();
  if (sequence.cancel_requested.load(std::memory_order_relaxed)) reason = FinishReason::cancelled;
  else if (now >= sequence.deadline) reason = FinishReason::timeout;
  SpecDecodeResult decoded;
  bool ran = false;  // the driver returned (its prefill pass and rounds are in decoded.stats)
  std::string error;
  if (reason == FinishReason::none) {
    SpecDecodeParams decode;
    decode.max_tokens = params.max_tokens;
    decode.sampling = params.sampling;
    decode.spec = options_;
    try {
      decoded = decode_(sequence.prompt, decode, on_token);
      ran = true;
    } catch (const std::exception& e) {
      reason = FinishReason::error;
      error = e.what();
    }
    // The driver ended without a stop: max_tokens 0 (the prompt only) or the context length.
    if (reason == FinishReason::none) reason = FinishReason::length;
    if (reason == FinishReason::error && error.empty()) error = "the server is shutting down";
  }

  {
    std::lock_guard lock(mutex_);
    stats_.running = 0;  // before the client hears of the end, as its counters below
    const SpecStats& s = decoded.stats;
    // One step per target pass: the prefill and each round (a round's rows are one sequence's block).
    stats_.steps += static_cast<uint64_t>(s.rounds) + (ran ? 1 : 0);
    stats_.decode_rows += static_cast<uint64_t>(s.rounds);
    if (ran) stats_.prefill_tokens += static_cast<uint64_t>(sequence.prompt_length());
    if (speculative_) {  // (a plain decode function's rounds are decode steps: no drafts)
      stats_.speculative_rounds += static_cast<uint64_t>(s.rounds);
      stats_.speculative_draft_tokens += static_cast<uint64_t>(s.draft_tokens);
      stats_.speculative_accepted_tokens += static_cast<uint64_t>(s.accepted_tokens);
      stats_.speculative_committed_tokens += static_cast<uint64_t>(s.committed);
      auto& per_round = stats_.speculative_tokens_per_round;
      if (per_round.size() < s.histogram.size()) per_round.resize(s.histogram.size(), 0);
      for (size_t k = 0; k < s.histogram.size(); ++k) per_round[k] += static_cast<uint64_t>(s.histogram[k]);
    }
  }
  if (reason == FinishReason::stop || reason == FinishReason::length) {
    // Text held back for a character still incomplete or a stop string that did not come.
    std::string tail = stop_filter.stopped() ? std::string() : stop_filter.push(decoder.flush());
    tail += stop_filter.flush();
    if (!tail.empty()) stream.push(tail, 0, SteadyClock::now());
  }
  sequence.finish = reason;
  stream.finish(reason, error);
}

}  // namespace tachyon
