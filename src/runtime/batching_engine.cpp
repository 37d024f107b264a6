#include "runtime/batching_engine.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "core/parallel.h"

namespace tachyon {

namespace {
SchedulerConfig capped(SchedulerConfig config, const ModelRunner& runner) {
  config.max_running = std::min(config.max_running, runner.max_sequences());
  return config;
}
}  // namespace

BatchingEngine::BatchingEngine(std::unique_ptr<ModelRunner> runner, const Tokenizer& tokenizer,
                               SchedulerConfig scheduler)
    : runner_(std::move(runner)),
      tokenizer_(tokenizer),
      scheduler_config_(capped(scheduler, *runner_)),
      scheduler_(scheduler_config_) {
  thread_ = std::thread([this] { loop(); });
}

BatchingEngine::~BatchingEngine() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  thread_.join();
  for (auto& [sequence, stream] : arrivals_) stream->finish(FinishReason::error, "the server is shutting down");
  for (auto& [id, active] : active_) active.stream->finish(FinishReason::error, "the server is shutting down");
}

std::shared_ptr<RequestStream> BatchingEngine::submit(EngineRequest request) {
  if (request.prompt.empty()) fail("the prompt is empty (no tokens)");
  if (request.params.max_tokens < 0) fail("max_tokens must be >= 0, got {}", request.params.max_tokens);
  for (int32_t id : request.prompt)
    if (id < 0 || id >= runner_->vocab_size())
      fail("prompt token id {} is outside the vocabulary [0, {})", id, runner_->vocab_size());
  validate(request.params.sampling);

  auto sequence = std::make_shared<Sequence>();
  sequence->prompt = std::move(request.prompt);
  sequence->params = std::move(request.params);
  sequence->arrival = request.arrival;
  sequence->deadline = request.deadline;
  if (sequence->max_positions() > runner_->max_context())
    fail("{} prompt tokens + {} max_tokens exceed the context length of {}", sequence->prompt_length(),
         sequence->params.max_tokens, runner_->max_context());

  std::shared_ptr<RequestStream> stream;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) fail("the server is shutting down");
    sequence->id = next_id_++;
    stream = std::make_shared<RequestStream>(sequence, request.arrival);
    if (!scheduler_.add(sequence)) return nullptr;
    arrivals_.emplace_back(std::move(sequence), stream);
  }
  work_.notify_all();
  return stream;
}

EngineStats BatchingEngine::stats() const {
  std::lock_guard lock(mutex_);
  EngineStats s = stats_;
  s.waiting = scheduler_.waiting();
  s.running = scheduler_.running();
  return s;
}

ModelInfo BatchingEngine::model_info() const {
  return {runner_->vocab_size(), runner_->max_context(), runner_->description()};
}

void BatchingEngine::loop() {
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    try {
      step();
    } catch (const std::exception& e) {
      // step() contains the runner's failures; anything here is a bug. Fail everything in flight rather
      // than leave clients waiting, and keep serving.
      std::fprintf(stderr, "engine: internal error: %s\n", e.what());
      std::vector<uint64_t> ids;
      for (auto& [id, active] : active_) ids.push_back(id);
      for (uint64_t id : ids) finish(active_.at(id), FinishReason::error, std::string("internal error: ") + e.what());
    }
  }
}

void BatchingEngine::step() {
  StepPlan plan;
  {
    std::unique_lock lock(mutex_);
    for (auto& [sequence, stream] : arrivals_) {
      Active active{sequence, stream, Sampler(sequence->params.sampling), IncrementalDecoder(tokenizer_),
                    StopStringFilter(sequence->params.stop_strings), stop_token_ids(sequence->params, tokenizer_)};
      active_.emplace(sequence->id, std::move(active));
    }
    arrivals_.clear();
    plan = scheduler_.schedule(SteadyClock::now());
    if (!plan.has_work() && plan.finished.empty()) {
      // Idle. Wake for new work, or now and then to sweep deadlines of queued requests.
      work_.wait_for(lock, std::chrono::milliseconds(50), [&] { return stopping_ || !arrivals_.empty(); });
      return;
    }
    stats_.steps += plan.has_work() ? 1 : 0;
    stats_.decode_rows += plan.decode.size();
    for (const PrefillChunk& chunk : plan.prefill) stats_.prefill_tokens += chunk.count;
  }
  for (const auto& sequence : plan.finished) finish(active_.at(sequence->id), sequence->finish);

  std::vector<RunItem> items;
  std::vector<Active*> owners;
  std::vector<bool> samples;  // whether the item's logits give the sequence its next token
  for (const PrefillChunk& chunk : plan.prefill) {
    Active& active = active_.at(chunk.sequence->id);
    if (!active.has_cache) {
      try {
        runner_->add_sequence(chunk.sequence->id, chunk.sequence->max_positions());
        active.has_cache = true;
      } catch (const std::exception& e) {
        finish(active, FinishReason::error, e.what());
        continue;
      }
    }
    items.push_back({chunk.sequence->id, std::span<const int32_t>(chunk.sequence->prompt).subspan(chunk.begin, chunk.count)});
    owners.push_back(&active);
    samples.push_back(chunk.completes_prompt());
  }
  for (Sequence* sequence : plan.decode) {
    items.push_back({sequence->id, std::span<const int32_t>(&sequence->generated.back(), 1)});
    owners.push_back(&active_.at(sequence->id));
    samples.push_back(true);
  }
  if (items.empty()) return;

  std::vector<float> logits;
  try {
    logits = runner_->run(items);
  } catch (const std::exception& e) {
    // Which row failed is unknown: fail the step's sequences, keep the others.
    for (Active* active : owners) finish(*active, FinishReason::error, e.what());
    return;
  }
  // Each sequence's next token; sampled rows (temperature > 0: ~0.3 ms each for a 49k vocabulary) on the thread
  // pool when there are several (each Sampler is its own state), then the post-processing in row order.
  const size_t vocab = static_cast<size_t>(runner_->vocab_size());
  std::vector<int32_t> tokens(items.size(), -1);
  std::vector<size_t> sampled_rows;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!samples[i]) continue;
    const Sequence& sequence = *owners[i]->sequence;
    if (static_cast<int64_t>(sequence.generated.size()) >= sequence.params.max_tokens) continue;  // (finishes)
    if (sequence.params.sampling.temperature > 0) sampled_rows.push_back(i);
    else tokens[i] = argmax(std::span<const float>(logits).subspan(i * vocab, vocab));
  }
  auto sample = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const size_t i = sampled_rows[r];
      tokens[i] = owners[i]->sampler.sample(std::span<const float>(logits).subspan(i * vocab, vocab));
    }
  };
  if (sampled_rows.size() > 1) parallel_for(static_cast<int64_t>(sampled_rows.size()), sample);
  else sample(0, static_cast<int64_t>(sampled_rows.size()));
  for (size_t i = 0; i < items.size(); ++i)
    if (samples[i]) on_token(*owners[i], tokens[i]);
}

void BatchingEngine::on_token(Active& active, int32_t token) {
  Sequence& sequence = *active.sequence;
  const auto now = SteadyClock::now();
  if (token < 0) {  // (not sampled: max_tokens reached, 0 for a prompt-only request)
    finish(active, FinishReason::length);
    return;
  }
  if (std::find(active.stop_ids.begin(), active.stop_ids.end(), token) != active.stop_ids.end()) {
    active.stream->push({}, 1, now);  // the stop token counts as generated, as vLLM counts it
    finish(active, FinishReason::stop);
    return;
  }
  sequence.generated.push_back(token);
  active.stream->push(active.stop_filter.push(active.decoder.push(token)), 1, now);
  if (active.stop_filter.stopped()) finish(active, FinishReason::stop);
  else if (static_cast<int64_t>(sequence.generated.size()) >= sequence.params.max_tokens) finish(active, FinishReason::length);
}

void BatchingEngine::finish(Active& active, FinishReason reason, const std::string& error) {
  Sequence& sequence = *active.sequence;
  if (reason == FinishReason::stop || reason == FinishReason::length) {
    // Text held back for a character still incomplete or a stop string that did not come.
    std::string tail = active.stop_filter.stopped() ? std::string() : active.stop_filter.push(active.decoder.flush());
    tail += active.stop_filter.flush();
    if (!tail.empty()) active.stream->push(tail, 0, SteadyClock::now());
  }
  sequence.finish = reason;
  // Free everything before the client hears of the end: a finished request holds nothing.
  if (active.has_cache) runner_->remove_sequence(sequence.id);
  {
    std::lock_guard lock(mutex_);
    scheduler_.remove(&sequence);
  }
  std::shared_ptr<RequestStream> stream = std::move(active.stream);
  active_.erase(sequence.id);  // `active` dangles from here
  stream->finish(reason, error);
}

}  // namespace tachyon
