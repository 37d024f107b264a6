#include "server/metrics.h"

#include <algorithm>

#include <fmt/format.h>

namespace tachyon::server {

namespace {
std::string format_bound(double bound) { return fmt::format("{}", bound); }

void header(std::string& out, const char* name, const char* type, const std::string& help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}
}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(const std::string& name, std::string& out) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, format_bound(bounds_[i]), cumulative);
  }
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, count_);
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, sum_, name, count_);
}

Metrics::Metrics()
    : time_to_first_token_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      inter_token_latency_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}),
      request_duration_({0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}) {}

void Metrics::count_response(const std::string& route, int status) {
  std::lock_guard lock(mutex_);
  ++responses_[{route, status}];
}

void Metrics::observe_request(int64_t prompt_tokens, int64_t completion_tokens, FinishReason reason, double seconds) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += prompt_tokens;
  completion_tokens_ += completion_tokens;
  ++finished_by_reason_[finish_reason_name(reason)];
  request_duration_.observe(seconds);
  recent_request_seconds_ = recent_request_seconds_ == 0 ? seconds : 0.9 * recent_request_seconds_ + 0.1 * seconds;
}

void Metrics::observe_token_times(const std::vector<double>& times, bool includes_first, double previous) {
  if (times.empty()) return;
  std::lock_guard lock(mutex_);
  size_t i = 0;
  if (includes_first) {
    time_to_first_token_.observe(times[0]);
    previous = times[0];
    i = 1;
  }
  for (; i < times.size(); ++i) {
    inter_token_latency_.observe(times[i] - previous);
    previous = times[i];
  }
}

void Metrics::count_rejected(const std::string& reason) {
  std::lock_guard lock(mutex_);
  ++rejected_[reason];
}

double Metrics::mean_request_seconds() const {
  std::lock_guard lock(mutex_);
  return recent_request_seconds_;
}

std::string Metrics::render(const EngineStats& engine, size_t max_waiting) const {
  std::lock_guard lock(mutex_);
  std::string out;
  header(out, "tachyon_http_responses_total", "counter", "HTTP responses by route and status code.");
  for (const auto& [key, count] : responses_)
    out += fmt::format("tachyon_http_responses_total{{route=\"{}\",code=\"{}\"}} {}\n", key.first, key.second, count);
  header(out, "tachyon_requests_finished_total", "counter",
         "Generation requests that reached the engine, by how they ended (stop, length, cancelled, timeout, error).");
  for (const char* reason : {"stop", "length", "cancelled", "timeout", "error"}) {
    auto it = finished_by_reason_.find(reason);
    out += fmt::format("tachyon_requests_finished_total{{reason=\"{}\"}} {}\n", reason,
                       it == finished_by_reason_.end() ? 0 : it->second);
  }
  header(out, "tachyon_requests_rejected_total", "counter", "Generation requests refused with 429 because the queue was full.");
  auto full = rejected_.find("queue_full");
  out += fmt::format("tachyon_requests_rejected_total{{reason=\"queue_full\"}} {}\n", full == rejected_.end() ? 0 : full->second);
  header(out, "tachyon_prompt_tokens_total", "counter", "Prompt tokens of finished generation requests.");
  out += fmt::format("tachyon_prompt_tokens_total {}\n", prompt_tokens_);
  header(out, "tachyon_generation_tokens_total", "counter", "Tokens generated for finished generation requests.");
  out += fmt::format("tachyon_generation_tokens_total {}\n", completion_tokens_);

  header(out, "tachyon_time_to_first_token_seconds", "histogram",
         "Seconds from a request's arrival to its first generated token (queueing and prefill included).");
  time_to_first_token_.render("tachyon_time_to_first_token_seconds", out);
  header(out, "tachyon_inter_token_latency_seconds", "histogram", "Seconds between consecutive tokens of a request.");
  inter_token_latency_.render("tachyon_inter_token_latency_seconds", out);
  header(out, "tachyon_request_duration_seconds", "histogram", "Seconds from arrival to the last token of a generation request.");
  request_duration_.render("tachyon_request_duration_seconds", out);

  header(out, "tachyon_queue_depth", "gauge", "Requests waiting for a slot in the batch.");
  out += fmt::format("tachyon_queue_depth {}\n", engine.waiting);
  header(out, "tachyon_queue_capacity", "gauge", "Requests that may wait before the server answers 429.");
  out += fmt::format("tachyon_queue_capacity {}\n", max_waiting);
  header(out, "tachyon_running_sequences", "gauge", "Sequences in the batch (prefilling or decoding).");
  out += fmt::format("tachyon_running_sequences {}\n", engine.running);
  header(out, "tachyon_engine_steps_total", "counter", "Engine steps run (one batched pass over the model each).");
  out += fmt::format("tachyon_engine_steps_total {}\n", engine.steps);
  header(out, "tachyon_engine_decode_rows_total", "counter",
         "Decode tokens run over all steps; divided by steps, the mean decode batch.");
  out += fmt::format("tachyon_engine_decode_rows_total {}\n", engine.decode_rows);
  header(out, "tachyon_engine_prefill_tokens_total", "counter", "Prompt tokens run through the model.");
  out += fmt::format("tachyon_engine_prefill_tokens_total {}\n", engine.prefill_tokens);

  // Speculative decoding (serve --draft): 0 without a drafter (the HELP line says which).
  const std::string without = engine.speculative ? "" : " Always 0: this server runs without --draft.";
  header(out, "tachyon_speculative_rounds_total", "counter",
         "Speculative rounds (one target verify pass of a drafted block each)." + without);
  out += fmt::format("tachyon_speculative_rounds_total {}\n", engine.speculative_rounds);
  header(out, "tachyon_speculative_draft_tokens_total", "counter", "Drafted tokens offered to the target." + without);
  out += fmt::format("tachyon_speculative_draft_tokens_total {}\n", engine.speculative_draft_tokens);
  header(out, "tachyon_speculative_accepted_tokens_total", "counter", "Drafted tokens the target accepted." + without);
  out += fmt::format("tachyon_speculative_accepted_tokens_total {}\n", engine.speculative_accepted_tokens);
  header(out, "tachyon_speculative_tau", "gauge",
         "Mean tokens committed per target pass, bonus token included (acceptance length tau), since start." + without);
  out += fmt::format("tachyon_speculative_tau {}\n",
                     engine.speculative_rounds ? static_cast<double>(engine.speculative_committed_tokens) /
                                                     static_cast<double>(engine.speculative_rounds)
                                               : 0.0);
  header(out, "tachyon_speculative_tokens_per_round", "histogram",
         "Tokens committed per speculative round (accepted drafts + the bonus token)." + without);
  const std::vector<uint64_t>& per_round = engine.speculative_tokens_per_round;
  const size_t top = std::max<size_t>(per_round.size(), 17);  // buckets 1..16 at least: the drafter's block
  uint64_t cumulative = 0;
  for (size_t k = 1; k < top; ++k) {
    cumulative += k < per_round.size() ? per_round[k] : 0;
    out += fmt::format("tachyon_speculative_tokens_per_round_bucket{{le=\"{}\"}} {}\n", k, cumulative);
  }
  out += fmt::format("tachyon_speculative_tokens_per_round_bucket{{le=\"+Inf\"}} {}\n", engine.speculative_rounds);
  out += fmt::format("tachyon_speculative_tokens_per_round_sum {}\n", engine.speculative_committed_tokens);
  out += fmt::format("tachyon_speculative_tokens_per_round_count {}\n", engine.speculative_rounds);
  return out;
}

}  // namespace tachyon::server
