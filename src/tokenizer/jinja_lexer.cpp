#include "tokenizer/jinja_lexer.h"

#include <cstdlib>
#include <optional>

#include "tokenizer/jinja_strings.h"
#include "tokenizer/jinja_value.h"

namespace tachyon::jinja {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

// jinja2 normalises \r\n and \r to \n everywhere (keep_trailing_newline=False drops one final \n).
std::string normalize_newlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Python's unicode-escape decoding of a string literal body ('\n', '\x41', '\u00e9', ...).
std::string unescape_string(std::string_view body, int line) {
  std::string out;
  auto hex_escape = [&](size_t at, int digits) -> char32_t {
    if (at + digits > body.size()) template_fail("line {}: truncated \\x/\\u escape in string literal", line);
    char32_t cp = 0;
    for (int k = 0; k < digits; ++k) {
      char c = body[at + k];
      int v = is_digit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
      if (v < 0) template_fail("line {}: truncated \\x/\\u escape in string literal", line);
      cp = cp * 16 + static_cast<char32_t>(v);
    }
    return cp;
  };
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out.push_back(body[i]);
      continue;
    }
    char e = body[++i];
    switch (e) {
      case '\n': break;  // line continuation
      case '\\': out.push_back('\\'); break;
      case '\'': out.push_back('\''); break;
      case '"': out.push_back('"'); break;
      case 'a': out.push_back('\a'); break;
      case 'b': out.push_back('\b'); break;
      case 'f': out.push_back('\f'); break;
      case 'n': out.push_back('\n'); break;
      case 'r': out.push_back('\r'); break;
      case 't': out.push_back('\t'); break;
      case 'v': out.push_back('\v'); break;
      case 'x': append_utf8(out, hex_escape(i + 1, 2)); i += 2; break;
      case 'u': append_utf8(out, hex_escape(i + 1, 4)); i += 4; break;
      case 'U': {
        char32_t cp = hex_escape(i + 1, 8);
        if (cp > 0x10FFFF) template_fail("line {}: illegal Unicode character in string literal", line);
        append_utf8(out, cp);
        i += 8;
        break;
      }
      case 'N': template_fail("line {}: \\N{{...}} escapes are not supported", line);
      default:
        if (e >= '0' && e <= '7') {
          char32_t cp = 0;
          size_t k = i;
          for (; k < body.size() && k < i + 3 && body[k] >= '0' && body[k] <= '7'; ++k) cp = cp * 8 + (body[k] - '0');
          append_utf8(out, cp);
          i = k - 1;
        } else {
          out.push_back('\\');  // Python keeps unknown escapes verbatim
          out.push_back(e);
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(normalize_newlines(source)) {}

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      size_t start = find_tag_start(pos_);
      if (start == std::string::npos) {
        emit_text(src_.substr(pos_), line_);
        advance_to(src_.size());
        break;
      }
      char kind = src_[start + 1];
      size_t after_open = start + 2;
      char sign = after_open < src_.size() && (src_[after_open] == '-' || src_[after_open] == '+') ? src_[after_open] : 0;
      if (sign) ++after_open;
      size_t raw_end = kind == '%' ? match_raw_marker(after_open, "raw", false) : std::string::npos;
      emit_stripped_text(src_.substr(pos_, start - pos_), sign, kind != '{');
      advance_to(after_open);
      line_starting_ = false;
      if (raw_end != std::string::npos) {
        lex_raw(raw_end);
      } else if (kind == '#') {
        lex_comment();
      } else {
        lex_tag(kind == '%');
      }
    }
    tokens_.push_back(Token{TokenType::End, "", 0, 0, line_});
    return std::move(tokens_);
  }

 private:
  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;  // the previous match ended with a newline (or nothing was matched yet)
  std::vector<Token> tokens_;

  void advance_to(size_t new_pos) {
    for (size_t i = pos_; i < new_pos; ++i) line_ += src_[i] == '\n';
    pos_ = new_pos;
  }

  size_t find_tag_start(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos && i + 1 < src_.size(); i = src_.find('{', i + 1)) {
      char next = src_[i + 1];
      if (next == '{' || next == '%' || next == '#') return i;
    }
    return std::string::npos;
  }

  size_t skip_space(size_t at) const {
    while (at < src_.size()) {
      size_t length = 1;
      if (!is_python_space(decode_one(src_, at, &length))) break;
      at += length;
    }
    return at;
  }

  // After "{%" (and its sign) at `at`: `\s*<word>\s*` then a block end. Returns the position
  // after the whole marker, or npos. The raw opener takes "-%}\s*" or "%}" (no trim_blocks);
  // the endraw closer also takes "+%}" and "%}\n?".
  size_t match_raw_marker(size_t at, std::string_view word, bool is_closer) const {
    at = skip_space(at);
    if (src_.compare(at, word.size(), word) != 0) return std::string::npos;
    at = skip_space(at + word.size());
    if (src_.compare(at, 3, "-%}") == 0) return skip_space(at + 3);
    if (is_closer && src_.compare(at, 3, "+%}") == 0) return at + 3;
    if (src_.compare(at, 2, "%}") == 0) {
      at += 2;
      if (is_closer && at < src_.size() && src_[at] == '\n') ++at;
      return at;
    }
    return std::string::npos;
  }

  void emit_text(std::string text, int line) {
    if (!text.empty()) tokens_.push_back(Token{TokenType::Text, std::move(text), 0, 0, line});
  }

  // Text before a tag: "-" strips all trailing whitespace; otherwise lstrip_blocks removes the
  // indentation of a block/comment tag that starts its line (or follows a trimmed newline).
  void emit_stripped_text(std::string text, char sign, bool lstrip_applies) {
    int line = line_;
    if (sign == '-') {
      text = python_strip(text, std::nullopt, false, true);
    } else if (sign != '+' && lstrip_applies) {
      size_t line_start = text.rfind('\n');
      line_start = line_start == std::string::npos ? 0 : line_start + 1;
      if ((line_start > 0 || line_starting_) && line_start < text.size() &&
          python_strip(text.substr(line_start), std::nullopt, true, false).empty())
        text.resize(line_start);
    }
    emit_text(std::move(text), line);
  }

  void lex_raw(size_t body_start) {
    line_starting_ = body_start > 0 && src_[body_start - 1] == '\n';
    advance_to(body_start);
    for (size_t i = find_tag_start(body_start); i != std::string::npos; i = find_tag_start(i + 1)) {
      if (src_[i + 1] != '%') continue;
      size_t after_open = i + 2;
      char sign = after_open < src_.size() && (src_[after_open] == '-' || src_[after_open] == '+') ? src_[after_open] : 0;
      size_t end = match_raw_marker(after_open + (sign ? 1 : 0), "endraw", true);
      if (end == std::string::npos) continue;
      emit_stripped_text(src_.substr(body_start, i - body_start), sign, true);
      advance_to(end);
      line_starting_ = src_[end - 1] == '\n';
      return;
    }
    template_fail("line {}: missing end of raw directive", line_);
  }

  void lex_comment() {
    int open_line = line_;
    // jinja2 quirk: a comment opener that ends the source is dropped, not reported.
    if (pos_ == src_.size()) return;
    size_t close = src_.find("#}", pos_);
    if (close == std::string::npos) template_fail("line {}: missing end of comment tag", open_line);
    char sign = close > pos_ && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : 0;
    size_t end = close + 2;
    if (sign == '-') end = skip_space(end);
    else if (sign != '+' && end < src_.size() && src_[end] == '\n') ++end;  // trim_blocks
    advance_to(end);
    line_starting_ = src_[end - 1] == '\n';
  }

  // Returns the position after the closing delimiter if one starts at pos_.
  size_t match_tag_end(bool is_block) const {
    std::string_view rest = std::string_view(src_).substr(pos_);
    std::string_view close = is_block ? "%}" : "}}";
    if (rest.size() > 2 && rest[0] == '-' && rest.substr(1, 2) == close) return skip_space(pos_ + 3);
    if (is_block && rest.size() > 2 && rest[0] == '+' && rest.substr(1, 2) == close) return pos_ + 3;
    if (rest.substr(0, 2) == close) {
      size_t end = pos_ + 2;
      if (is_block && end < src_.size() && src_[end] == '\n') ++end;  // trim_blocks
      return end;
    }
    return std::string::npos;
  }

  void lex_tag(bool is_block) {
    int open_line = line_;
    tokens_.push_back(Token{is_block ? TokenType::BlockBegin : TokenType::VariableBegin, "", 0, 0, line_});
    std::string brackets;  // jinja2 only ends a tag when (), [] and {} are balanced
    while (true) {
      if (pos_ >= src_.size())
        template_fail("line {}: unexpected end of template, the tag opened here is not closed", open_line);
      if (brackets.empty()) {
        size_t end = match_tag_end(is_block);
        if (end != std::string::npos) {
          tokens_.push_back(Token{is_block ? TokenType::BlockEnd : TokenType::VariableEnd, "", 0, 0, line_});
          advance_to(end);
          line_starting_ = src_[end - 1] == '\n';
          return;
        }
      }
      char c = src_[pos_];
      size_t space_end = skip_space(pos_);
      if (space_end > pos_) {
        advance_to(space_end);
      } else if (is_digit(c)) {
        lex_number();
      } else if (is_name_start(c)) {
        size_t end = pos_;
        while (end < src_.size() && is_name_char(src_[end])) ++end;
        tokens_.push_back(Token{TokenType::Name, src_.substr(pos_, end - pos_), 0, 0, line_});
        advance_to(end);
      } else if (c == '\'' || c == '"') {
        lex_string(c);
      } else {
        lex_operator(brackets);
      }
    }
  }

  // Matches (\d+_)*\d+ at `at`; returns its end or npos.
  size_t digit_run(size_t at) const {
    if (at >= src_.size() || !is_digit(src_[at])) return std::string::npos;
    while (true) {
      while (at < src_.size() && is_digit(src_[at])) ++at;
      if (at + 1 < src_.size() && src_[at] == '_' && is_digit(src_[at + 1])) ++at;
      else return at;
    }
  }

  static std::string without_underscores(std::string_view text) {
    std::string out;
    for (char c : text)
      if (c != '_') out.push_back(c);
    return out;
  }

  void lex_number() {
    // Float first, as in jinja2: digits then ".digits" and/or an exponent; never right after a
    // "." so that `x.0.1` stays two item lookups.
    if (pos_ == 0 || src_[pos_ - 1] != '.') {
      size_t int_end = digit_run(pos_);
      size_t frac_end = src_[int_end] == '.' ? digit_run(int_end + 1) : std::string::npos;
      size_t mantissa_end = frac_end != std::string::npos ? frac_end : int_end;
      size_t exp_end = std::string::npos;
      if (mantissa_end < src_.size() && (src_[mantissa_end] == 'e' || src_[mantissa_end] == 'E')) {
        size_t at = mantissa_end + 1;
        if (at < src_.size() && (src_[at] == '+' || src_[at] == '-')) ++at;
        exp_end = digit_run(at);
      }
      size_t end = exp_end != std::string::npos ? exp_end : frac_end;
      if (end != std::string::npos) {
        std::string text = without_underscores(std::string_view(src_).substr(pos_, end - pos_));
        tokens_.push_back(Token{TokenType::Float, text, 0, std::strtod(text.c_str(), nullptr), line_});
        advance_to(end);
        return;
      }
    }
    int base = 10;
    size_t digits_start = pos_;
    if (src_[pos_] == '0' && pos_ + 1 < src_.size()) {
      char p = static_cast<char>(src_[pos_ + 1] | 0x20);
      base = p == 'b' ? 2 : p == 'o' ? 8 : p == 'x' ? 16 : 10;
      if (base != 10) digits_start = pos_ + 2;
    }
    auto digit_value = [&](char c) {
      int v = is_digit(c) ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : 99;
      return v < base ? v : -1;
    };
    size_t end = digits_start;
    while (end < src_.size()) {
      if (digit_value(src_[end]) >= 0) ++end;
      else if (src_[end] == '_' && end + 1 < src_.size() && digit_value(src_[end + 1]) >= 0) ++end;
      else break;
    }
    if (base == 10 && src_[pos_] == '0') {  // decimal literals cannot have leading zeros
      end = pos_ + 1;
      while (true) {
        if (end < src_.size() && src_[end] == '0') ++end;
        else if (end + 1 < src_.size() && src_[end] == '_' && src_[end + 1] == '0') end += 2;
        else break;
      }
    }
    if (end == digits_start) {  // "0x" with no digits: lex the 0 alone
      base = 10;
      end = pos_ + 1;
      digits_start = pos_;
    }
    std::string digits = without_underscores(std::string_view(src_).substr(digits_start, end - digits_start));
    errno = 0;
    char* parse_end = nullptr;
    long long value = std::strtoll(digits.c_str(), &parse_end, base);
    if (errno == ERANGE) template_fail("line {}: integer literal {} is too large", line_, digits);
    tokens_.push_back(Token{TokenType::Integer, digits, static_cast<int64_t>(value), 0, line_});
    advance_to(end);
  }

  void lex_string(char quote) {
    size_t at = pos_ + 1;
    while (at < src_.size() && src_[at] != quote) at += src_[at] == '\\' ? 2 : 1;
    if (at >= src_.size()) template_fail("line {}: unterminated string literal", line_);
    std::string value = unescape_string(std::string_view(src_).substr(pos_ + 1, at - pos_ - 1), line_);
    tokens_.push_back(Token{TokenType::String, std::move(value), 0, 0, line_});
    advance_to(at + 1);
  }

  void lex_operator(std::string& brackets) {
    static constexpr std::string_view kTwoChar[] = {"**", "//", "==", "!=", ">=", "<="};
    static constexpr std::string_view kOneChar = "+-/*%~[](){}><=.:|,;";
    std::string op;
    for (std::string_view candidate : kTwoChar)
      if (src_.compare(pos_, 2, candidate) == 0) op = candidate;
    if (op.empty() && kOneChar.find(src_[pos_]) != std::string_view::npos) op = src_.substr(pos_, 1);
    if (op.empty()) {
      size_t length = 1;
      std::string shown;
      append_utf8(shown, decode_one(src_, pos_, &length));
      template_fail("line {}: unexpected character '{}' in tag", line_, shown);
    }
    char c = op[0];
    if (op.size() == 1 && (c == '(' || c == '[' || c == '{')) {
      brackets.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    } else if (op.size() == 1 && (c == ')' || c == ']' || c == '}')) {
      if (brackets.empty()) template_fail("line {}: unexpected '{}'", line_, op);
      if (brackets.back() != c) template_fail("line {}: unexpected '{}', expected '{}'", line_, op, brackets.back());
      brackets.pop_back();
    }
    tokens_.push_back(Token{TokenType::Operator, op, 0, 0, line_});
    advance_to(pos_ + op.size());
  }
};

}  // namespace

std::vector<Token> tokenize_template(std::string_view source) { return Lexer(source).run(); }

}  // namespace tachyon::jinja
