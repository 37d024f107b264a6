// What the engine needs from a backend: KV memory per sequence, and one step that appends tokens to
// several sequences at once and returns the logits of each one's last row. The CPU runner
// (cpu_model_runner.h) implements it over models/ and a KvCache per sequence; a GPU runner implements
// the same interface over src/gpu's paged KV cache (its decode kernels take up to 16 tokens of one
// sequence per pass today, so it reports max_batch() = 1 until they take several sequences).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tachyon {

struct RunItem {
  uint64_t sequence = 0;
  std::span<const int32_t> tokens;  // a prompt chunk, or one decode token
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  virtual std::string description() const = 0;  // "cpu: llama, 30 layers" (for logs)
  virtual int vocab_size() const = 0;
  virtual int64_t max_context() const = 0;
  // Sequences that can hold KV memory at once (the scheduler's max_running is capped by it).
  virtual int max_sequences() const = 0;

  // Reserves KV memory for positions [0, max_positions) of a new sequence. Throws Error when that
  // cannot be had (the engine then fails that request only).
  virtual void add_sequence(uint64_t sequence, int64_t max_positions) = 0;
  virtual void remove_sequence(uint64_t sequence) = 0;

  // Appends every item's tokens to its sequence's KV cache and returns the logits of each item's last
  // token, [items.size(), vocab], in item order. Items name distinct sequences.
  virtual std::vector<float> run(std::span<const RunItem> items) = 0;
};

}  // namespace tachyon
