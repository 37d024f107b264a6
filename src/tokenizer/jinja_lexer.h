// Splits Jinja source into template text and the tokens inside {{ }}, {% %} tags, applying
// whitespace control exactly as jinja2's lexer does for transformers' environment:
// trim_blocks (drop the newline after a block or comment tag), lstrip_blocks (drop the
// indentation before one), "-" on either side of any tag strips all whitespace on that side,
// "+" disables the two options for one tag, newlines are normalised to "\n" and one trailing
// newline of the source is dropped. Comments and {% raw %} markers never reach the parser.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tachyon::jinja {

enum class TokenType {
  Text,           // template text outside tags (already whitespace-controlled)
  VariableBegin,  // {{
  VariableEnd,    // }}
  BlockBegin,     // {%
  BlockEnd,       // %}
  Name,
  String,         // text holds the unescaped value
  Integer,
  Float,
  Operator,       // text holds the operator: "+", "//", "==", "(", ...
  End,
};

struct Token {
  TokenType type;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
};

// Throws TemplateError ("line N: ...") for unclosed tags, bad characters and bad literals.
std::vector<Token> tokenize_template(std::string_view source);

}  // namespace tachyon::jinja
