#include "tokenizer/added_vocabulary.h"

#include <algorithm>

#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace tachyon {
namespace {

// Rust regex's Unicode \w, which `tokenizers` uses for single_word checks: Alphabetic, M, Nd,
// Pc and Join_Control. \p{L} and \p{Nl} (within Alphabetic) bring in newer letters.
const Regex& word_character() {
  static const Regex regex(R"([\p{Alphabetic}\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\p{Join_Control}])",
                           "added token word test");
  return regex;
}

bool starts_with_word(std::string_view text, size_t pos) {
  return pos < text.size() && word_character().matches_at(text, pos);
}

bool ends_with_word(std::string_view text, size_t pos) {
  // Find where the last character before pos starts; ill-formed bytes are not word characters.
  for (size_t back = 1; back <= 4 && back <= pos; ++back) {
    auto byte = static_cast<unsigned char>(text[pos - back]);
    if ((byte & 0xC0) == 0x80) continue;  // a continuation byte: keep looking left
    auto step = unicode::next_utf8(text, pos - back);
    return step.status == unicode::Utf8Status::kValid && step.length == back &&
           word_character().matches_at(text.substr(0, pos), pos - back);
  }
  return false;
}

// Start of the White_Space run that ends at `end`, not looking left of `floor`.
size_t white_space_run_start(std::string_view text, size_t floor, size_t end) {
  size_t run_start = floor;
  for (size_t pos = floor; pos < end;) {
    auto step = unicode::next_utf8(text, pos);
    pos += step.length;
    if (step.status != unicode::Utf8Status::kValid || !unicode::is_white_space(step.code_point)) run_start = pos;
  }
  return std::min(run_start, end);
}

// End of the White_Space run that starts at `start`.
size_t white_space_run_end(std::string_view text, size_t start) {
  size_t pos = start;
  while (pos < text.size()) {
    auto step = unicode::next_utf8(text, pos);
    if (step.status != unicode::Utf8Status::kValid || !unicode::is_white_space(step.code_point)) break;
    pos += step.length;
  }
  return pos;
}

}  // namespace

int AddedTokenMatcher::child(int node, unsigned char byte) const {
  const auto& children = nodes_[node].children;
  auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, 0),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
  return it != children.end() && it->first == byte ? it->second : -1;
}

void AddedTokenMatcher::add(const AddedToken& token, const std::string& pattern) {
  if (pattern.empty()) return;  // `tokenizers` ignores empty added tokens
  int node = 0;
  for (unsigned char byte : pattern) {
    int next = child(node, byte);
    if (next < 0) {
      next = static_cast<int>(nodes_.size());
      nodes_.emplace_back();
      auto& children = nodes_[node].children;
      auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, 0),
                                 [](const auto& a, const auto& b) { return a.first < b.first; });
      children.insert(it, {byte, next});
    }
    node = next;
  }
  nodes_[node].token = static_cast<int>(tokens_.size());  // a repeated pattern: the last one wins
  tokens_.push_back(token);
}

int AddedTokenMatcher::longest_match(std::string_view text, size_t pos, size_t& length) const {
  int best = -1;
  int node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    node = child(node, static_cast<unsigned char>(text[i]));
    if (node < 0) break;
    if (nodes_[node].token >= 0) best = nodes_[node].token, length = i + 1 - pos;
  }
  return best;
}

std::vector<TextSegment> AddedTokenMatcher::split(std::string_view text, bool parse_special) const {
  std::vector<TextSegment> segments;
  if (text.empty()) return segments;
  size_t segment_start = 0;  // end of the last emitted token: where unmatched text resumes
  size_t search = 0;         // the matcher continues after the raw match, as an Aho-Corasick iterator
  while (search < text.size() && !empty()) {
    size_t length = 0;
    int index = -1;
    size_t match_start = search;
    for (; match_start < text.size(); ++match_start) {
      if ((index = longest_match(text, match_start, length)) >= 0) break;
    }
    if (index < 0) break;
    size_t start = match_start, stop = match_start + length;
    search = stop;
    const AddedToken& token = tokens_[index];
    if (!parse_special && token.special) continue;
    if (token.single_word && (ends_with_word(text, start) || starts_with_word(text, stop))) continue;
    if (token.lstrip) start = std::max(white_space_run_start(text, segment_start, start), segment_start);
    if (token.rstrip) stop = white_space_run_end(text, stop);
    if (segment_start < start) segments.push_back({segment_start, start, -1});
    // After an rstrip the next match can begin inside the stripped spaces; `tokenizers` then
    // emits overlapping pieces, and so does this.
    segments.push_back({start, stop, token.id});
    segment_start = stop;
  }
  if (segment_start < text.size()) segments.push_back({segment_start, text.size(), -1});
  return segments;
}

}  // namespace tachyon
