// The host side of the paged KV cache (kernels/attention/kv_cache.h): which pages each sequence owns.
// A free list of page ids; a sequence holds the pages for positions [0, reserved length) in order, so its
// block-table row is its page list. Truncation (speculative-decoding rollback, or starting over) frees the
// pages wholly past the new length; reserving again takes pages from the free list. Never touches the GPU:
// the model copies block_table_row() to the device when version() changes. Unit-tested on the CPU.
#pragma once
#include <cstdint>
#include <vector>

namespace tachyon::gpu {

class KvBlockAllocator {
 public:
  // n_pages pages of page_size positions, shared by up to max_sequences sequences of up to
  // max_pages_per_sequence pages each (the width of the device block table).
  KvBlockAllocator(int n_pages, int page_size, int max_sequences, int max_pages_per_sequence);

  // A new empty sequence; its id indexes the block table rows. Throws when max_sequences are live.
  int add_sequence();
  void remove_sequence(int sequence);  // returns its pages to the free list

  // Makes `sequence` own pages for positions [0, length). Returns false, changing nothing, when that needs
  // more pages than are free or than a block-table row holds.
  bool reserve(int sequence, int64_t length);
  // Frees the pages that hold only positions >= length (those below stay, with their contents).
  void truncate(int sequence, int64_t length);

  int64_t reserved_positions(int sequence) const;  // pages owned x page_size
  const std::vector<int>& pages(int sequence) const;
  // The device block-table row: owned pages in order, then -1 (a read past the reserved length faults
  // instead of silently reading another sequence's page).
  std::vector<int> block_table_row(int sequence) const;
  // Changes whenever the sequence's page list does.
  uint64_t version(int sequence) const;

  int free_pages() const { return static_cast<int>(free_.size()); }
  int total_pages() const { return n_pages_; }
  int page_size() const { return page_size_; }
  int max_pages_per_sequence() const { return max_pages_per_sequence_; }

 private:
  struct Sequence {
    bool live = false;
    std::vector<int> pages;
    uint64_t version = 0;
  };
  const Sequence& live_sequence(int sequence) const;
  Sequence& live_sequence(int sequence);

  int n_pages_, page_size_, max_pages_per_sequence_;
  std::vector<int> free_;  // a stack: the most recently freed page is reused first (still warm in L2)
  std::vector<Sequence> sequences_;
};

}  // namespace tachyon::gpu
