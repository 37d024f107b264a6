// The proposer: what drafts a block. DFlash drafts a whole block [bonus, MASK, ...] in one pass, conditioned on
// the target features of every committed row (its "context"), which it keeps projected in its own KV cache.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "models/dflash_drafter.h"

namespace tachyon {

class DraftProposer {
 public:
  virtual ~DraftProposer() = default;
  virtual int default_block_size() const = 0;  // the checkpoint's block size
  virtual int feature_width() const = 0;       // floats per context row
  // Rows of context held: target features of positions [0, context_length()).
  virtual int64_t context_length() const = 0;
  // Appends target features of the rows at positions [context_length(), + n): [n, feature_width()].
  virtual void add_context(const float* features, int64_t n) = 0;
  // Drafts a block of block_size slots whose bonus token sits at position context_length(). Returns the logits
  // of slots 1..block_size-1, [block_size - 1, vocab]. Leaves the context as it was.
  virtual std::vector<float> propose(int32_t bonus, int block_size) = 0;
  // Drops context rows >= length.
  virtual void truncate_context(int64_t length) = 0;
};

// DFlash on the CPU: the drafter model and its context KV cache.
class DFlashProposer : public DraftProposer {
 public:
  DFlashProposer(const DFlashDrafter& drafter, int64_t max_positions);
  int default_block_size() const override { return drafter_.block_size(); }
  int feature_width() const override { return drafter_.feature_width(); }
  int64_t context_length() const override { return cache_.length(); }
  void add_context(const float* features, int64_t n) override { drafter_.add_context(features, n, cache_); }
  std::vector<float> propose(int32_t bonus, int block_size) override;
  void truncate_context(int64_t length) override { cache_.truncate(length); }

 private:
  const DFlashDrafter& drafter_;
  KvCache cache_;
  std::vector<int32_t> block_;
};

}  // namespace tachyon
