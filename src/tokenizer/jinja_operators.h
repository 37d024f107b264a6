// Python operator semantics for the interpreter: arithmetic with int/float promotion (bool is
// an int), floor division and modulo rounding toward negative infinity, str/list repetition
// and concatenation, comparisons and membership, and printf-style `str % args` formatting.
// Python's unbounded ints are int64 here; overflow raises TemplateError instead of wrapping.
#pragma once
#include <string>
#include <string_view>

#include "tokenizer/jinja_value.h"

namespace tachyon::jinja {

// op is one of + - * / // % **.
Value binary_operation(std::string_view op, const Value& left, const Value& right);
Value negate(const Value& operand);
Value unary_plus(const Value& operand);
// op is one of == != < <= > >= in, "not in".
bool compare_operation(std::string_view op, const Value& left, const Value& right);
bool contains(const Value& container, const Value& item);
// Python's `format % args` (args is a tuple for several values, a dict for %(name)s).
std::string percent_format(const std::string& format, const Value& args);

}  // namespace tachyon::jinja
