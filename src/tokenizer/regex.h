// PCRE2 behind the tokenizer's splitting regexes, set up to match what Hugging Face
// `tokenizers` gets from Oniguruma: Unicode properties for \p{..}, \d, \w (UTF + UCP), \s
// meaning the White_Space property (PCRE2's own \s also takes U+180E; Oniguruma's does not),
// and general categories (\p{L}, \p{N}, ...) widened to the newer Unicode Oniguruma knows.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tachyon {

class Regex {
 public:
  // Throws Error naming `what` (e.g. "tokenizer.json: pre_tokenizer Split") if it won't compile.
  Regex(const std::string& pattern, const std::string& what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches left to right, as [start, end) byte offsets. Empty matches follow
  // the Oniguruma iterator used by `tokenizers`: one right after the previous match is skipped.
  // Ill-formed UTF-8 in `text` never matches anything and never stops the search.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

  // Whether the match of the whole pattern anchored at text[pos] exists (used for 1-char tests).
  bool matches_at(std::string_view text, size_t pos) const;

  // A pattern that matches `literal` as is.
  static std::string escape(std::string_view literal);

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
};

}  // namespace tachyon
