#include "tokenizer/jinja_strings.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace tachyon::jinja {

char32_t decode_one(std::string_view text, size_t pos, size_t* length) {
  auto byte = static_cast<unsigned char>(text[pos]);
  *length = 1;
  if (byte < 0x80) return byte;
  int extra = byte >= 0xF0 && byte <= 0xF4 ? 3 : byte >= 0xE0 && byte <= 0xEF ? 2 : byte >= 0xC2 && byte <= 0xDF ? 1 : -1;
  char32_t cp = extra == 3 ? byte & 0x07 : extra == 2 ? byte & 0x0F : byte & 0x1F;
  bool valid = extra > 0 && pos + extra < text.size();
  for (int k = 1; valid && k <= extra; ++k) {
    auto next = static_cast<unsigned char>(text[pos + k]);
    if ((next & 0xC0) != 0x80) valid = false;
    cp = (cp << 6) | (next & 0x3F);
  }
  // Reject overlong forms, UTF-16 surrogates and values past U+10FFFF like Python's decoder.
  if (valid && ((extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
                (cp >= 0xD800 && cp <= 0xDFFF)))
    valid = false;
  if (!valid) return 0xDC00 + byte;
  *length = static_cast<size_t>(extra) + 1;
  return cp;
}

std::u32string decode_utf8(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0, length = 0; i < text.size(); i += length) out.push_back(decode_one(text, i, &length));
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp >= 0xDC80 && cp <= 0xDCFF) {  // an undecodable byte carried through (see decode_utf8)
    out.push_back(static_cast<char>(cp - 0xDC00));
  } else if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode_utf8(std::u32string_view code_points) {
  std::string out;
  out.reserve(code_points.size());
  for (char32_t cp : code_points) append_utf8(out, cp);
  return out;
}

size_t count_code_points(std::string_view text) {
  bool ascii = true;
  for (char c : text) ascii &= static_cast<unsigned char>(c) < 0x80;
  return ascii ? text.size() : decode_utf8(text).size();
}

bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_line_break(char32_t c) {
  return c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E || c == 0x85 ||
         c == 0x2028 || c == 0x2029;
}

// Python's isprintable() is "not in categories Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs (except space)".
// Without the Unicode database we list the control, format, separator, surrogate and
// private-use ranges; unassigned code points are treated as printable (a known gap).
bool is_python_printable(char32_t c) {
  if (c < 0x20 || (c >= 0x7F && c < 0xA0) || c == 0xAD) return false;
  if (c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) ||
      (c >= 0x205F && c <= 0x2064) || (c >= 0x2066 && c <= 0x206F) || c == 0x3000)
    return false;
  if ((c >= 0x600 && c <= 0x605) || c == 0x61C || c == 0x6DD || c == 0x70F || c == 0x8E2 || c == 0x180E) return false;
  if ((c >= 0xD800 && c <= 0xF8FF) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB) || c == 0xFFFE || c == 0xFFFF)
    return false;
  if (c == 0x110BD || (c >= 0x1BCA0 && c <= 0x1BCA3) || (c >= 0x1D173 && c <= 0x1D17A) || c == 0xE0001 ||
      (c >= 0xE0020 && c <= 0xE007F) || c >= 0xF0000)
    return false;
  return true;
}

namespace {

// Blocks where upper and lower case letters alternate (U+0100 "Ā", U+0101 "ā", ...).
struct AlternatingBlock {
  char32_t first, last;
  bool upper_is_even;
};
constexpr AlternatingBlock kAlternatingBlocks[] = {
    {0x100, 0x12F, true},  {0x132, 0x137, true},  {0x139, 0x148, false}, {0x14A, 0x177, true},
    {0x179, 0x17E, false}, {0x460, 0x481, true},  {0x48A, 0x4BF, true},  {0x4C1, 0x4CE, false},
    {0x4D0, 0x52F, true},  {0x1E00, 0x1E95, true}, {0x1EA0, 0x1EFF, true},
};

// Blocks where the lower-case letter is the upper-case one plus a fixed offset.
struct OffsetBlock {
  char32_t upper_first, upper_last;
  int32_t offset;
};
constexpr OffsetBlock kOffsetBlocks[] = {
    {'A', 'Z', 32},        {0xC0, 0xD6, 32},      {0xD8, 0xDE, 32},      {0x391, 0x3A1, 32},
    {0x3A3, 0x3AB, 32},    {0x388, 0x38A, 37},    {0x38E, 0x38F, 63},    {0x410, 0x42F, 32},
    {0x400, 0x40F, 80},    {0x531, 0x556, 48},    {0xFF21, 0xFF3A, 32},
};

}  // namespace

char32_t simple_lower(char32_t c) {
  if (c < 0x80) return c >= 'A' && c <= 'Z' ? c + 32 : c;
  for (const auto& block : kOffsetBlocks)
    if (c >= block.upper_first && c <= block.upper_last) return c + block.offset;
  for (const auto& block : kAlternatingBlocks)
    if (c >= block.first && c <= block.last) return ((c % 2 == 0) == block.upper_is_even) ? c + 1 : c;
  switch (c) {
    case 0x178: return 0xFF;
    case 0x130: return 'i';
    case 0x386: return 0x3AC;
    case 0x38C: return 0x3CC;
    case 0x4C0: return 0x4CF;
    default: return c;
  }
}

char32_t simple_upper(char32_t c) {
  if (c < 0x80) return c >= 'a' && c <= 'z' ? c - 32 : c;
  for (const auto& block : kOffsetBlocks)
    if (c >= block.upper_first + block.offset && c <= block.upper_last + block.offset) return c - block.offset;
  for (const auto& block : kAlternatingBlocks)
    if (c >= block.first && c <= block.last) return ((c % 2 == 0) == block.upper_is_even) ? c : c - 1;
  switch (c) {
    case 0xB5: return 0x39C;
    case 0xFF: return 0x178;
    case 0x131: return 'I';
    case 0x17F: return 'S';
    case 0x3C2: return 0x3A3;
    case 0x3AC: return 0x386;
    case 0x3CC: return 0x38C;
    case 0x4CF: return 0x4C0;
    default: return c;
  }
}

bool is_cased(char32_t c) { return simple_upper(c) != c || simple_lower(c) != c || c == 0xDF || c == 0x138; }

namespace {

// Full (one-to-many) mappings that Python applies on top of the simple ones.
void append_upper(std::string& out, char32_t c, bool title) {
  if (c == 0xDF) {
    out += title ? "Ss" : "SS";
  } else if (c == 0x149) {
    append_utf8(out, 0x2BC);
    out.push_back('N');
  } else {
    append_utf8(out, simple_upper(c));
  }
}

void append_lower(std::string& out, char32_t c) {
  if (c == 0x130) {
    out.push_back('i');
    append_utf8(out, 0x307);
  } else {
    append_utf8(out, simple_lower(c));
  }
}

}  // namespace

std::string python_upper(std::string_view text) {
  std::string out;
  for (char32_t c : decode_utf8(text)) append_upper(out, c, false);
  return out;
}

std::string python_lower(std::string_view text) {
  std::string out;
  for (char32_t c : decode_utf8(text)) append_lower(out, c);
  return out;
}

std::string python_swapcase(std::string_view text) {
  std::string out;
  for (char32_t c : decode_utf8(text)) {
    if (simple_lower(c) != c) append_lower(out, c);
    else append_upper(out, c, false);
  }
  return out;
}

std::string python_capitalize(std::string_view text) {
  std::string out;
  bool first = true;
  for (char32_t c : decode_utf8(text)) {
    if (first) append_upper(out, c, true);
    else append_lower(out, c);
    first = false;
  }
  return out;
}

std::string python_title(std::string_view text) {
  std::string out;
  bool previous_cased = false;
  for (char32_t c : decode_utf8(text)) {
    if (previous_cased) append_lower(out, c);
    else append_upper(out, c, true);
    previous_cased = is_cased(c);
  }
  return out;
}

std::string python_strip(std::string_view text, const std::optional<std::string>& chars, bool left, bool right) {
  std::u32string cps = decode_utf8(text);
  std::u32string strip_set = chars ? decode_utf8(*chars) : std::u32string();
  auto strips = [&](char32_t c) {
    return chars ? strip_set.find(c) != std::u32string::npos : is_python_space(c);
  };
  size_t begin = 0, end = cps.size();
  if (left)
    while (begin < end && strips(cps[begin])) ++begin;
  if (right)
    while (end > begin && strips(cps[end - 1])) --end;
  return encode_utf8(std::u32string_view(cps).substr(begin, end - begin));
}

std::vector<std::string> python_split(std::string_view text, const std::optional<std::string>& sep,
                                      int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (sep) {
    // UTF-8 is self-synchronising, so a byte search finds exactly the code-point matches.
    if (!from_right) {
      size_t start = 0;
      while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
        size_t hit = text.find(*sep, start);
        if (hit == std::string_view::npos) break;
        parts.emplace_back(text.substr(start, hit - start));
        start = hit + sep->size();
      }
      parts.emplace_back(text.substr(start));
    } else {
      size_t end = text.size();
      while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
        if (end < sep->size()) break;
        size_t hit = text.rfind(*sep, end - sep->size());
        if (hit == std::string_view::npos) break;
        parts.emplace_back(text.substr(hit + sep->size(), end - hit - sep->size()));
        end = hit;
      }
      parts.emplace_back(text.substr(0, end));
      std::reverse(parts.begin(), parts.end());
    }
    return parts;
  }
  std::u32string cps = decode_utf8(text);
  if (from_right) std::reverse(cps.begin(), cps.end());
  size_t i = 0;
  while (true) {
    while (i < cps.size() && is_python_space(cps[i])) ++i;
    if (i >= cps.size()) break;
    size_t word_end = i;
    if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
      word_end = cps.size();  // the remainder is kept verbatim, trailing whitespace included
    } else {
      while (word_end < cps.size() && !is_python_space(cps[word_end])) ++word_end;
    }
    std::u32string word = cps.substr(i, word_end - i);
    if (from_right) std::reverse(word.begin(), word.end());
    parts.push_back(encode_utf8(word));
    i = word_end;
  }
  if (from_right) std::reverse(parts.begin(), parts.end());
  return parts;
}

std::vector<std::string> python_splitlines(std::string_view text, bool keep_ends) {
  std::u32string cps = decode_utf8(text);
  std::vector<std::string> lines;
  size_t start = 0, i = 0;
  while (i < cps.size()) {
    if (!is_line_break(cps[i])) {
      ++i;
      continue;
    }
    size_t break_len = (cps[i] == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ? 2 : 1;
    size_t end = keep_ends ? i + break_len : i;
    lines.push_back(encode_utf8(std::u32string_view(cps).substr(start, end - start)));
    i += break_len;
    start = i;
  }
  if (start < cps.size()) lines.push_back(encode_utf8(std::u32string_view(cps).substr(start)));
  return lines;
}

std::string python_replace(std::string_view text, std::string_view old_text, std::string_view new_text,
                           int64_t count) {
  std::string out;
  int64_t done = 0;
  if (old_text.empty()) {
    // Python inserts the replacement before every code point and at the end.
    std::u32string cps = decode_utf8(text);
    for (char32_t c : cps) {
      if (count < 0 || done < count) {
        out += new_text;
        ++done;
      }
      append_utf8(out, c);
    }
    if (count < 0 || done < count) out += new_text;
    return out;
  }
  size_t start = 0;
  while (count < 0 || done < count) {
    size_t hit = text.find(old_text, start);
    if (hit == std::string_view::npos) break;
    out.append(text.substr(start, hit - start));
    out.append(new_text);
    start = hit + old_text.size();
    ++done;
  }
  out.append(text.substr(start));
  return out;
}

int64_t python_find(std::string_view text, std::string_view needle, bool from_right) {
  size_t hit = from_right ? text.rfind(needle) : text.find(needle);
  if (hit == std::string_view::npos) return -1;
  return static_cast<int64_t>(count_code_points(text.substr(0, hit)));
}

int64_t python_count(std::string_view text, std::string_view needle) {
  if (needle.empty()) return static_cast<int64_t>(count_code_points(text)) + 1;
  int64_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string_view::npos; pos = text.find(needle, pos + needle.size()))
    ++n;
  return n;
}

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // Shortest round-trip digits (what CPython's repr uses), then CPython's layout rule:
  // positional notation when the decimal exponent is in [-4, 16), else scientific.
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
  std::string_view sci(buffer, result.ptr - buffer);
  std::string out;
  if (sci.front() == '-') {
    out.push_back('-');
    sci.remove_prefix(1);
  }
  size_t e_pos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e_pos))
    if (c != '.') digits.push_back(c);
  int exponent = std::stoi(std::string(sci.substr(e_pos + 1)));
  if (exponent >= -4 && exponent < 16) {
    if (exponent >= 0) {
      size_t int_len = static_cast<size_t>(exponent) + 1;
      if (digits.size() <= int_len) {
        out += digits + std::string(int_len - digits.size(), '0') + ".0";
      } else {
        out += digits.substr(0, int_len) + "." + digits.substr(int_len);
      }
    } else {
      out += "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
    }
    return out;
  }
  out.push_back(digits[0]);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exp_text[32];
  std::snprintf(exp_text, sizeof exp_text, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out + exp_text;
}

std::string python_string_repr(std::string_view text) {
  bool has_single = text.find('\'') != std::string_view::npos;
  bool has_double = text.find('"') != std::string_view::npos;
  char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : decode_utf8(text)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!is_python_printable(c)) {
      char escape[32];
      if (c < 0x100) std::snprintf(escape, sizeof escape, "\\x%02x", static_cast<unsigned>(c));
      else if (c < 0x10000) std::snprintf(escape, sizeof escape, "\\u%04x", static_cast<unsigned>(c));
      else std::snprintf(escape, sizeof escape, "\\U%08x", static_cast<unsigned>(c));
      out += escape;
    } else {
      append_utf8(out, c);
    }
  }
  out.push_back(quote);
  return out;
}

void append_json_string(std::string& out, std::string_view text, bool ensure_ascii) {
  auto append_u_escape = [&](unsigned unit) {
    char escape[16];
    std::snprintf(escape, sizeof escape, "\\u%04x", unit);
    out += escape;
  };
  out.push_back('"');
  for (char32_t c : decode_utf8(text)) {
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (c < 0x20 || (ensure_ascii && c >= 0x7F)) {
      if (c >= 0x10000) {
        char32_t v = c - 0x10000;
        append_u_escape(0xD800 + (v >> 10));
        append_u_escape(0xDC00 + (v & 0x3FF));
      } else {
        append_u_escape(c);
      }
    } else {
      append_utf8(out, c);
    }
  }
  out.push_back('"');
}

}  // namespace tachyon::jinja
