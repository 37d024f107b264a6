#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>
#include <optional>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace tachyon {
namespace {

// Rewrites \s and \S (inside or outside classes) to the White_Space property so that PCRE2
// agrees with Oniguruma, which `tokenizers` compiles these patterns with.
std::string with_white_space_property(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c != '\\' || i + 1 == pattern.size()) {
      out.push_back(c);
      continue;
    }
    char next = pattern[++i];
    if (next == 'Q') {  // \Q...\E is literal text: copy it untouched
      size_t end = pattern.find("\\E", i + 1);
      size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
      out.append(pattern.substr(i - 1, stop - (i - 1)));
      i = stop - 1;
    } else if (next == 's') {
      out += "\\p{White_Space}";
    } else if (next == 'S') {
      out += "\\P{White_Space}";
    } else {
      out.push_back('\\');
      out.push_back(next);
    }
  }
  return out;
}

}  // namespace

struct Regex::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() { pcre2_code_free(code); }
};

Regex::Regex(const std::string& pattern, const std::string& what) : compiled_(std::make_unique<Compiled>()) {
  std::string translated = with_white_space_property(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  compiled_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                  PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code, &error_offset,
                                  nullptr);
  if (compiled_->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    fail("{}: regex /{}/ does not compile: {} (at offset {})", what, pattern,
         reinterpret_cast<const char*>(message), error_offset);
  }
  // JIT is an optimization only; without it (or when it fails) pcre2_match interprets.
  compiled_->jit = pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() = default;

namespace {

struct MatchData {
  pcre2_match_data* data;
  explicit MatchData(const pcre2_code* code) : data(pcre2_match_data_create_from_pattern(code, nullptr)) {
    if (data == nullptr) throw std::bad_alloc();
  }
  ~MatchData() { pcre2_match_data_free(data); }
};

// pcre2_match, retried without JIT when the JIT stack is too small for this input.
int match(const pcre2_code* code, std::string_view text, size_t start, uint32_t options, pcre2_match_data* data) {
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = pcre2_match(code, subject, text.size(), start, options, data, nullptr);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) rc = pcre2_match(code, subject, text.size(), start, options | PCRE2_NO_JIT, data, nullptr);
  return rc;
}

}  // namespace

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  MatchData md(compiled_->code);
  size_t search_from = 0;
  std::optional<size_t> last_match_end;
  while (search_from <= text.size()) {
    // Any error (no match, or a match/heap limit on hostile input) ends the search: the
    // rest of the text then counts as unmatched, which is still a valid split.
    if (match(compiled_->code, text, search_from, 0, md.data) < 0) break;
    PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(md.data);
    size_t start = ovector[0], end = ovector[1];
    if (start == end && last_match_end == end) {
      search_from += search_from < text.size() ? unicode::next_utf8(text, search_from).length : 1;
      continue;
    }
    matches.emplace_back(start, end);
    search_from = end;
    last_match_end = end;
  }
  return matches;
}

bool Regex::matches_at(std::string_view text, size_t pos) const {
  MatchData md(compiled_->code);
  return match(compiled_->code, text, pos, PCRE2_ANCHORED, md.data) >= 0;
}

std::string Regex::escape(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    unsigned char u = static_cast<unsigned char>(c);
    // A backslash before any ASCII non-alphanumeric character makes it literal in PCRE2.
    if (u < 0x80 && !std::isalnum(u)) out.push_back('\\');
    if (c == '\0') {
      out += "x{0}";  // "\<NUL>" is not an escape PCRE2 knows
      continue;
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace tachyon
