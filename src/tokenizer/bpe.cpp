#include "tokenizer/bpe.h"

#include <queue>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace tachyon {
namespace {

// Words this long or longer are not cached (as in `tokenizers`): they are rare and large.
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kCacheCapacity = 1 << 16;

struct Symbol {
  int32_t id;
  int prev;
  int next;
  bool removed;
};

struct QueuedMerge {
  uint32_t rank;
  int pos;
  int32_t new_id;
  // priority_queue pops the largest: make the lowest rank, then the leftmost, the largest.
  bool operator<(const QueuedMerge& other) const {
    return rank != other.rank ? rank > other.rank : pos > other.pos;
  }
};

}  // namespace

BpeModel::BpeModel(TokenIdMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                   BpeOptions options, const std::string& source)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
  auto lookup = [&](const std::string& token, size_t rank) {
    auto it = vocab_.find(token);
    if (it == vocab_.end()) fail("{}: merge #{} uses '{}', which is not in the vocabulary", source, rank + 1, token);
    return it->second;
  };
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    int32_t left_id = lookup(left, rank), right_id = lookup(right, rank);
    int32_t new_id = lookup(left + right, rank);
    // A repeated pair keeps its last rank, as a hash map filled in order does in `tokenizers`.
    merges_[pair_key(left_id, right_id)] = Merge{static_cast<uint32_t>(rank), new_id};
  }
  if (options_.unk_token) {
    auto it = vocab_.find(*options_.unk_token);
    if (it == vocab_.end()) fail("{}: unk_token '{}' is not in the vocabulary", source, *options_.unk_token);
    unk_id_ = it->second;
  }
}

BpeModel::BpeModel(BpeModel&& other) noexcept
    : vocab_(std::move(other.vocab_)),
      merges_(std::move(other.merges_)),
      options_(std::move(other.options_)),
      unk_id_(other.unk_id_) {}

BpeModel& BpeModel::operator=(BpeModel&& other) noexcept {
  vocab_ = std::move(other.vocab_);
  merges_ = std::move(other.merges_);
  options_ = std::move(other.options_);
  unk_id_ = other.unk_id_;
  std::lock_guard lock(cache_mutex_);
  cache_.clear();
  return *this;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  bool cacheable = word.size() < kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t first = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + first, out.end()));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id) {
    int index = static_cast<int>(symbols.size());
    if (index > 0) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, false});
  };

  // One symbol per character. Unknown characters follow `tokenizers`' BPE::merge_word: byte
  // fallback, else unk (a pending unk is only flushed by the next known character), else dropped.
  int32_t pending_unk = -1;
  for (size_t pos = 0; pos < word.size();) {
    size_t length = unicode::next_utf8(word, pos).length;
    std::string_view character = word.substr(pos, length);
    pos += length;
    if (auto it = vocab_.find(character); it != vocab_.end()) {
      if (pending_unk >= 0) add(pending_unk), pending_unk = -1;
      add(it->second);
      continue;
    }
    if (options_.byte_fallback) {
      std::vector<int32_t> bytes;
      for (unsigned char b : character) {
        static const char* const kHex = "0123456789ABCDEF";
        std::string name = std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
        auto it = vocab_.find(name);
        if (it == vocab_.end()) break;
        bytes.push_back(it->second);
      }
      if (bytes.size() == character.size()) {
        for (int32_t id : bytes) add(id);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !options_.fuse_unk) add(pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk >= 0) add(pending_unk);

  std::priority_queue<QueuedMerge> queue;
  auto push_pair = [&](int pos) {
    int next = symbols[pos].next;
    if (next < 0) return;
    auto it = merges_.find(pair_key(symbols[pos].id, symbols[next].id));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.new_id});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) push_pair(i);

  while (!queue.empty()) {
    QueuedMerge top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.removed || left.next < 0) continue;
    // Entries go stale when a neighbour merged first: the pair must still produce new_id.
    auto it = merges_.find(pair_key(left.id, symbols[left.next].id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    Symbol& right = symbols[left.next];
    left.id = top.new_id;
    right.removed = true;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (!s.removed) out.push_back(s.id);
  }
}

}  // namespace tachyon
