// The BPE model: turns one pre-tokenized word into token ids by applying merges in rank order
// (lowest rank first, leftmost first among equal ranks), as Hugging Face `tokenizers` does.
#pragma once
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tachyon {

// Hashing that lets an unordered_map<std::string, ...> be searched with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct BpeOptions {
  std::optional<std::string> unk_token;  // characters missing from the vocabulary become this
  bool fuse_unk = false;                 // consecutive unknowns become one unk token
  bool byte_fallback = false;            // unknown characters become <0xXX> byte tokens
  bool ignore_merges = false;            // a word that is a whole vocabulary entry is that token
};

class BpeModel {
 public:
  BpeModel() = default;
  // Merges are (left, right) token pairs in rank order; every part and result must be in
  // `vocab`, else Error naming `source` and the merge.
  BpeModel(TokenIdMap vocab, const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
           const std::string& source);
  BpeModel(BpeModel&& other) noexcept;
  BpeModel& operator=(BpeModel&& other) noexcept;

  // Appends the ids of `word` to `out`. Results of short words are cached (thread-safe).
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  const TokenIdMap& vocab() const { return vocab_; }

 private:
  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  TokenIdMap vocab_;
  std::unordered_map<uint64_t, Merge> merges_;
  BpeOptions options_;
  std::optional<int32_t> unk_id_;

  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace tachyon
