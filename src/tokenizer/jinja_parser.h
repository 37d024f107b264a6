// Recursive-descent parser from tokens to the syntax tree, following jinja2's grammar and
// operator precedence (including its quirks: filters bind tighter than unary minus's operand
// but looser than attribute access, `**` is left-associative, `a if c` without else yields
// undefined). Unknown tags, filters and tests are rejected here, as jinja2 rejects them at
// compile time, with the line and the name.
#pragma once
#include <string_view>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_lexer.h"

namespace tachyon::jinja {

StmtList parse_template(std::string_view source);

// Implemented by the builtins (jinja_builtins.cpp); the parser asks them to validate names.
bool is_known_filter(std::string_view name);
bool is_known_test(std::string_view name);

}  // namespace tachyon::jinja
