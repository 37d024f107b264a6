// Serving metrics in the Prometheus text exposition format (version 0.0.4): counters, gauges and
// cumulative histograms, thread-safe, rendered by GET /metrics. Names start with tachyon_.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/engine.h"

namespace tachyon::server {

// A Prometheus histogram: cumulative bucket counts over fixed upper bounds, plus sum and count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // Appends "<name>_bucket{le=...}", "_sum" and "_count" lines.
  void render(const std::string& name, std::string& out) const;
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();

  // One HTTP response (any route), by route pattern and status code.
  void count_response(const std::string& route, int status);
  // A generation request that reached the engine and ended.
  void observe_request(int64_t prompt_tokens, int64_t completion_tokens, FinishReason reason, double seconds);
  // Token times of one request (seconds since its arrival): the first gives time to first token,
  // the gaps between consecutive ones the inter-token latency.
  void observe_token_times(const std::vector<double>& times, bool includes_first, double previous);
  void count_rejected(const std::string& reason);  // queue_full

  // The exposition text; `engine` supplies the gauges.
  std::string render(const EngineStats& engine, size_t max_waiting) const;
  // Mean end-to-end seconds of recent requests (for Retry-After); 0 when none finished yet.
  double mean_request_seconds() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> responses_;
  std::map<std::string, uint64_t> finished_by_reason_, rejected_;
  uint64_t prompt_tokens_ = 0, completion_tokens_ = 0;
  Histogram time_to_first_token_, inter_token_latency_, request_duration_;
  double recent_request_seconds_ = 0;  // exponential moving average
};

}  // namespace tachyon::server
