#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>
#include <optional>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace tachyon {
namespace {

// Rewrites a `tokenizers` (Oniguruma) pattern so that PCRE2 matches the same characters:
// \s and \S become the White_Space property (PCRE2's \s also takes U+180E), and general
// categories (\p{L}, \p{Nd}, ...) also take the characters of the newer Unicode version.
std::string translate_for_pcre2(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  bool class_start = false;  // just after "[" or "[^", where "]" is a literal
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      char next = pattern[i + 1];
      size_t escape_end = i + 2;
      std::string_view property;
      if ((next == 'p' || next == 'P') && escape_end < pattern.size()) {
        if (pattern[escape_end] == '{') {
          size_t close = pattern.find('}', escape_end);
          if (close != std::string_view::npos) property = pattern.substr(escape_end + 1, close - escape_end - 1);
          escape_end = close == std::string_view::npos ? escape_end : close + 1;
        } else {
          property = pattern.substr(escape_end, 1);
          ++escape_end;
        }
      }
      std::string_view original = pattern.substr(i, escape_end - i);
      const char* newer = property.empty() ? nullptr : unicode::newer_category_members(property);
      if (next == 'Q') {  // \Q...\E is literal text: copy it untouched
        size_t end = pattern.find("\\E", i + 2);
        escape_end = end == std::string_view::npos ? pattern.size() : end + 2;
        out.append(pattern.substr(i, escape_end - i));
      } else if (next == 's' || next == 'S') {
        out += next == 's' ? "\\p{White_Space}" : "\\P{White_Space}";
      } else if (newer != nullptr && next == 'p') {
        out += in_class ? fmt::format("\\p{{{}}}{}", property, newer) : fmt::format("[\\p{{{}}}{}]", property, newer);
      } else if (newer != nullptr && !in_class) {
        out += fmt::format("[^\\p{{{}}}{}]", property, newer);
      } else {
        out.append(original);  // includes \P{L} inside a class: no way to widen it there
      }
      i = escape_end - 1;
      class_start = false;
      continue;
    }
    out.push_back(c);
    if (!in_class) {
      if (c == '[') {
        in_class = class_start = true;
        if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      }
    } else if (c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {  // [:alpha:]
      size_t close = pattern.find(":]", i + 2);
      if (close != std::string_view::npos) {
        out.append(pattern.substr(i + 1, close + 2 - (i + 1)));
        i = close + 1;
      }
      class_start = false;
    } else if (c == ']' && !class_start) {
      in_class = false;
    } else {
      class_start = false;
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
  std::string translated = translate_for_pcre2(pattern);
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
