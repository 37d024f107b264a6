// The little Unicode the tokenizer needs beyond PCRE2: strict UTF-8 stepping (with the
// "maximal subpart" rule that Rust's from_utf8_lossy and the Unicode standard use for
// replacement characters), the White_Space property, and canonical normalization (NFC/NFD).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace tachyon::unicode {

enum class Utf8Status {
  kValid,      // `length` bytes encode `code_point`
  kInvalid,    // the first `length` bytes (>= 1) are a maximal ill-formed subpart: one U+FFFD
  kTruncated,  // the text ends after `length` bytes that start a well-formed sequence
};

struct Utf8Step {
  Utf8Status status;
  size_t length;
  char32_t code_point;
};

// Reads the sequence at text[pos] (pos < text.size()).
Utf8Step next_utf8(std::string_view text, size_t pos);

void append_utf8(std::string& out, char32_t code_point);

// Valid UTF-8 with every ill-formed subpart replaced by U+FFFD (a truncated tail too).
std::string to_valid_utf8(std::string_view text);

bool is_valid_utf8(std::string_view text);

// Unicode's White_Space property: what Rust's char::is_whitespace and regex \s test.
bool is_white_space(char32_t code_point);

// PCRE2 class items (\x{..}-\x{..} ranges) for the characters of general category
// `category` ("L", "Nd", ...) that `tokenizers`' Oniguruma knows from Unicode versions newer
// than this PCRE2's (10.42: Unicode 14); nullptr if there are none.
const char* newer_category_members(std::string_view category);

// Canonical normalization forms, with the data of `tokenizers`' normalizers (slightly older
// than Unicode 14: a few newer combining classes and one composition are left out). Ill-formed UTF-8 bytes are copied through unchanged, and
// they separate the text around them like any starter would.
std::string nfc(std::string_view text);
std::string nfd(std::string_view text);

}  // namespace tachyon::unicode
