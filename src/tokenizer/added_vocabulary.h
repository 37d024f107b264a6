// Added tokens (special tokens like <|im_start|> and user-added ones): found in the text before
// anything else runs, the way `tokenizers`' AddedVocabulary does it: leftmost-longest matching,
// then single_word / lstrip / rstrip. Tokens with normalized=false are searched in the raw
// text; tokens with normalized=true in the normalizer's output, in their normalized form.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tachyon {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// A piece of text: an added token (token_id >= 0) or text still to be tokenized (-1).
struct TextSegment {
  size_t start, end;
  int32_t token_id;
};

class AddedTokenMatcher {
 public:
  // `patterns[i]` is what token `tokens[i]` is matched as (its content, or normalized content).
  void add(const AddedToken& token, const std::string& pattern);
  bool empty() const { return nodes_.size() <= 1; }

  // Splits `text` into segments covering it in order. With parse_special false, special
  // tokens are found but then ignored, as `tokenizers`' encode_special_tokens does.
  std::vector<TextSegment> split(std::string_view text, bool parse_special) const;

 private:
  // A byte trie; children are few per node, so a sorted vector is compact and fast enough.
  struct Node {
    std::vector<std::pair<unsigned char, int>> children;
    int token = -1;  // index into tokens_ when a pattern ends here
  };
  int child(int node, unsigned char byte) const;
  // Longest pattern starting at text[pos], as an index into tokens_, and its length.
  int longest_match(std::string_view text, size_t pos, size_t& length) const;

  std::vector<Node> nodes_{Node{}};
  std::vector<AddedToken> tokens_;
};

}  // namespace tachyon
