#include "gpu/kv_block_allocator.h"

#include "core/error.h"

namespace tachyon::gpu {

KvBlockAllocator::KvBlockAllocator(int n_pages, int page_size, int max_sequences, int max_pages_per_sequence)
    : n_pages_(n_pages), page_size_(page_size), max_pages_per_sequence_(max_pages_per_sequence) {
  if (n_pages <= 0 || page_size <= 0 || max_sequences <= 0 || max_pages_per_sequence <= 0)
    fail("KvBlockAllocator: pages ({}), page size ({}), sequences ({}) and pages per sequence ({}) must be positive",
         n_pages, page_size, max_sequences, max_pages_per_sequence);
  free_.reserve(n_pages);
  for (int page = n_pages - 1; page >= 0; --page) free_.push_back(page);  // page 0 handed out first
  sequences_.resize(max_sequences);
}

const KvBlockAllocator::Sequence& KvBlockAllocator::live_sequence(int sequence) const {
  if (sequence < 0 || sequence >= static_cast<int>(sequences_.size()) || !sequences_[sequence].live)
    fail("KvBlockAllocator: sequence {} does not exist", sequence);
  return sequences_[sequence];
}

KvBlockAllocator::Sequence& KvBlockAllocator::live_sequence(int sequence) {
  return const_cast<Sequence&>(static_cast<const KvBlockAllocator&>(*this).live_sequence(sequence));
}

int KvBlockAllocator::add_sequence() {
  for (size_t i = 0; i < sequences_.size(); ++i) {
    if (!sequences_[i].live) {
      sequences_[i].live = true;
      sequences_[i].pages.clear();
      ++sequences_[i].version;
      return static_cast<int>(i);
    }
  }
  fail("KvBlockAllocator: all {} sequence slots are in use", sequences_.size());
}

void KvBlockAllocator::remove_sequence(int sequence) {
  truncate(sequence, 0);
  sequences_[sequence].live = false;
}

bool KvBlockAllocator::reserve(int sequence, int64_t length) {
  Sequence& s = live_sequence(sequence);
  if (length < 0) fail("KvBlockAllocator::reserve: negative length {}", length);
  const int64_t needed = (length + page_size_ - 1) / page_size_;
  const int64_t owned = static_cast<int64_t>(s.pages.size());
  if (needed <= owned) return true;
  if (needed > max_pages_per_sequence_ || needed - owned > static_cast<int64_t>(free_.size())) return false;
  for (int64_t i = owned; i < needed; ++i) {
    s.pages.push_back(free_.back());
    free_.pop_back();
  }
  ++s.version;
  return true;
}

void KvBlockAllocator::truncate(int sequence, int64_t length) {
  Sequence& s = live_sequence(sequence);
  if (length < 0) fail("KvBlockAllocator::truncate: negative length {}", length);
  const size_t keep = static_cast<size_t>((length + page_size_ - 1) / page_size_);
  if (keep >= s.pages.size()) return;
  while (s.pages.size() > keep) {
    free_.push_back(s.pages.back());
    s.pages.pop_back();
  }
  ++s.version;
}

int64_t KvBlockAllocator::reserved_positions(int sequence) const {
  return static_cast<int64_t>(live_sequence(sequence).pages.size()) * page_size_;
}

const std::vector<int>& KvBlockAllocator::pages(int sequence) const { return live_sequence(sequence).pages; }

std::vector<int> KvBlockAllocator::block_table_row(int sequence) const {
  const Sequence& s = live_sequence(sequence);
  std::vector<int> row(max_pages_per_sequence_, -1);
  for (size_t i = 0; i < s.pages.size(); ++i) row[i] = s.pages[i];
  return row;
}

uint64_t KvBlockAllocator::version(int sequence) const { return live_sequence(sequence).version; }

}  // namespace tachyon::gpu
