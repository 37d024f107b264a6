// jinja2's filters and tests (with transformers' tojson), following jinja2 3.1 semantics:
// string filters stringify their input with str() (so undefined becomes ""), sort/unique/
// dictsort/min/max compare strings case-insensitively by default, first/last/min/max of an
// empty sequence are undefined.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>

#include "tokenizer/jinja_builtins.h"
#include "tokenizer/jinja_operators.h"
#include "tokenizer/jinja_parser.h"
#include "tokenizer/jinja_strings.h"

namespace tachyon::jinja {

namespace {

using FilterFunction = Value (*)(const Value& input, CallArgs& args);
using TestFunction = bool (*)(const Value& subject, CallArgs& args);

std::string text_of(const Value& value) { return to_display(value); }

// jinja2's select/reject/map/unique/items filters are generators: nothing runs until the
// result is consumed, so an error in them surfaces only then (and an unconsumed result is
// simply true). Computing eagerly and deferring the error reproduces that.
template <typename Compute>
Value lazy(const char* type_label, Compute compute) {
  try {
    return Value::iterator(compute(), type_label);
  } catch (const TemplateError& error) {
    return Value::iterator({}, type_label, error.what());
  }
}

// Sort key as jinja2's ignore_case: strings compare lower-cased unless case_sensitive.
Value sort_key(const Value& value, bool case_sensitive) {
  return value.is_string() && !case_sensitive ? Value(python_lower(value.as_string())) : value;
}

Value attribute_or_self(const Value& item, const Value& attribute) {
  if (attribute.is_none()) return item;
  if (attribute.is_int()) return get_item(item, attribute);
  return get_attribute_path(item, text_of(attribute));
}

std::vector<Value> sorted_by(std::vector<Value> items, bool reverse, const std::function<Value(const Value&)>& key) {
  std::vector<std::pair<Value, Value>> keyed;
  keyed.reserve(items.size());
  for (Value& item : items) keyed.emplace_back(key(item), std::move(item));
  std::stable_sort(keyed.begin(), keyed.end(), [reverse](const auto& a, const auto& b) {
    return reverse ? compare_values(b.first, a.first) < 0 : compare_values(a.first, b.first) < 0;
  });
  std::vector<Value> out;
  out.reserve(keyed.size());
  for (auto& entry : keyed) out.push_back(std::move(entry.second));
  return out;
}

Value filter_default(const Value& input, CallArgs& args) {
  Params p("default", args, {"default_value", "boolean"});
  bool use_default = input.is_undefined() || (p.get_bool(1, false) && !truthy(input));
  return use_default ? p.get(0, Value("")) : input;
}

Value filter_length(const Value& input, CallArgs& args) {
  Params p("length", args, {});
  return Value(length_of(input));
}

Value filter_tojson(const Value& input, CallArgs& args) {
  // transformers: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
  Params p("tojson", args, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonStyle style;
  style.ensure_ascii = p.get_bool(0, false);
  Value indent = p.get(1);
  if (indent.is_string()) style.indent = indent.as_string();
  else if (!indent.is_none()) style.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, p.get_int(1, 0))), ' ');
  if (style.indent) style.item_separator = ",";
  Value separators = p.get(2);
  if (!separators.is_none()) {
    std::vector<Value> parts = iterate(separators);
    if (parts.size() != 2 || !parts[0].is_string() || !parts[1].is_string())
      template_fail("tojson: separators must be a pair of strings");
    style.item_separator = parts[0].as_string();
    style.key_separator = parts[1].as_string();
  }
  style.sort_keys = p.get_bool(3, false);
  return Value(to_json(input, style));
}

Value filter_upper(const Value& input, CallArgs& args) {
  Params p("upper", args, {});
  return Value(python_upper(text_of(input)));
}
Value filter_lower(const Value& input, CallArgs& args) {
  Params p("lower", args, {});
  return Value(python_lower(text_of(input)));
}
Value filter_capitalize(const Value& input, CallArgs& args) {
  Params p("capitalize", args, {});
  return Value(python_capitalize(text_of(input)));
}

// jinja2's title filter: upper-case the first character of each word, where words start
// after whitespace or one of - ( { [ <, and lower-case the rest.
Value filter_title(const Value& input, CallArgs& args) {
  Params p("title", args, {});
  std::string out;
  bool word_start = true;
  for (char32_t c : decode_utf8(text_of(input))) {
    bool separator = is_python_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    if (separator) append_utf8(out, c);
    else if (word_start) out += python_upper(encode_utf8(std::u32string(1, c)));
    else out += python_lower(encode_utf8(std::u32string(1, c)));
    word_start = separator;
  }
  return Value(std::move(out));
}

Value filter_trim(const Value& input, CallArgs& args) {
  Params p("trim", args, {"chars"});
  std::optional<std::string> chars;
  if (!p.get(0).is_none()) chars = text_of(p.get(0));
  return Value(python_strip(text_of(input), chars, true, true));
}

Value filter_replace(const Value& input, CallArgs& args) {
  Params p("replace", args, {"old", "new", "count"});
  std::string out = python_replace(text_of(input), text_of(p.get(0)), text_of(p.get(1)), p.get_int(2, -1));
  check_string_size(out.size());
  return Value(std::move(out));
}

Value filter_string(const Value& input, CallArgs& args) {
  Params p("string", args, {});
  return Value(text_of(input));
}

// Markup(value): a string, so `xs|safe` is the text "[1, 2]" from then on.
Value filter_safe(const Value& input, CallArgs& args) {
  Params p("safe", args, {});
  return Value(text_of(input));
}

Value filter_escape(const Value& input, CallArgs& args) {
  Params p("escape", args, {});
  std::string out;
  for (char c : text_of(input)) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return Value(std::move(out));
}

Value filter_first(const Value& input, CallArgs& args) {
  Params p("first", args, {});
  std::optional<Value> first = first_item(input);
  return first ? *first : Value::undefined("No first item, sequence was empty.");
}

Value filter_last(const Value& input, CallArgs& args) {
  Params p("last", args, {});
  if (input.is_list() && input.as_list().kind == SequenceKind::Iterator)
    template_fail("'{}' object is not reversible", type_name(input));  // last() uses reversed()
  std::vector<Value> items = iterate(input);
  return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
}

Value filter_join(const Value& input, CallArgs& args) {
  Params p("join", args, {"d", "attribute"});
  std::string separator = text_of(p.get(0, Value("")));
  std::string out;
  bool first = true;
  for (const Value& item : iterate(input)) {
    if (!first) out += separator;
    first = false;
    out += text_of(attribute_or_self(item, p.get(1)));
    check_string_size(out.size());
  }
  return Value(std::move(out));
}

Value filter_list(const Value& input, CallArgs& args) {
  Params p("list", args, {});
  return Value::list(iterate(input));
}

Value filter_items(const Value& input, CallArgs& args) {
  Params p("items", args, {});
  return lazy("generator", [&] {
    std::vector<Value> pairs;
    if (input.is_undefined()) return pairs;
    if (!input.is_dict()) template_fail("Can only get item pairs from a mapping.");
    for (const auto& [key, value] : input.as_dict().entries) pairs.push_back(Value::list({key, value}, true));
    return pairs;
  });
}

// jinja2: a string reversed; otherwise Python's reversed() iterator, or a reversed list for
// iterables that reversed() refuses (generators).
Value filter_reverse(const Value& input, CallArgs& args) {
  Params p("reverse", args, {});
  if (input.is_string()) {
    std::u32string cps = decode_utf8(input.as_string());
    std::reverse(cps.begin(), cps.end());
    return Value(encode_utf8(cps));
  }
  bool reversible = input.is_undefined() || input.is_dict() || (input.is_list() && input.as_list().kind != SequenceKind::Iterator);
  std::vector<Value> items = iterate(input);
  std::reverse(items.begin(), items.end());
  if (!reversible) return Value::list(std::move(items));
  std::string label = input.is_dict() ? "dict_reversekeyiterator"
                      : input.is_list() && input.as_list().kind == SequenceKind::List ? "list_reverseiterator"
                                                                                      : "reversed";
  return Value::iterator(std::move(items), label);
}

Value filter_sort(const Value& input, CallArgs& args) {
  Params p("sort", args, {"reverse", "case_sensitive", "attribute"});
  bool case_sensitive = p.get_bool(1, false);
  Value attribute = p.get(2);
  return Value::list(sorted_by(iterate(input), p.get_bool(0, false), [&](const Value& item) {
    return sort_key(attribute_or_self(item, attribute), case_sensitive);
  }));
}

Value filter_unique(const Value& input, CallArgs& args) {
  Params p("unique", args, {"case_sensitive", "attribute"});
  return lazy("generator", [&] {
    std::vector<Value> seen, out;
    for (const Value& item : iterate(input)) {
      Value key = sort_key(attribute_or_self(item, p.get(1)), p.get_bool(0, false));
      if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return values_equal(s, key); })) continue;
      seen.push_back(key);
      out.push_back(item);
    }
    return out;
  });
}

Value filter_dictsort(const Value& input, CallArgs& args) {
  Params p("dictsort", args, {"case_sensitive", "by", "reverse"});
  if (!input.is_dict()) template_fail("dictsort: expected a mapping, got {}", type_name(input));
  std::string by = text_of(p.get(1, Value("key")));
  if (by != "key" && by != "value") template_fail("You can only sort by either \"key\" or \"value\"");
  std::vector<Value> pairs;
  for (const auto& [key, value] : input.as_dict().entries) pairs.push_back(Value::list({key, value}, true));
  bool case_sensitive = p.get_bool(0, false);
  return Value::list(sorted_by(std::move(pairs), p.get_bool(2, false), [&](const Value& pair) {
    return sort_key(pair.as_list().items[by == "key" ? 0 : 1], case_sensitive);
  }));
}

// min/max: first extreme element by (case-insensitive) key, as Python's min()/max().
Value extreme(const char* name, const Value& input, CallArgs& args, bool want_max) {
  Params p(name, args, {"case_sensitive", "attribute"});
  std::vector<Value> items = iterate(input);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  bool case_sensitive = p.get_bool(0, false);
  auto key = [&](const Value& item) { return sort_key(attribute_or_self(item, p.get(1)), case_sensitive); };
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i) {
    int order = compare_values(key(items[i]), key(items[best]));
    if (want_max ? order > 0 : order < 0) best = i;
  }
  return items[best];
}
Value filter_max(const Value& input, CallArgs& args) { return extreme("max", input, args, true); }
Value filter_min(const Value& input, CallArgs& args) { return extreme("min", input, args, false); }

Value filter_sum(const Value& input, CallArgs& args) {
  Params p("sum", args, {"attribute", "start"});
  Value total = p.get(1, Value(0));
  for (const Value& item : iterate(input)) total = binary_operation("+", total, attribute_or_self(item, p.get(0)));
  return total;
}

Value filter_map(const Value& input, CallArgs& args) {
  auto attribute = std::find_if(args.keywords.begin(), args.keywords.end(), [](auto& kw) { return kw.first == "attribute"; });
  if (attribute != args.keywords.end() || args.positional.empty()) {
    Params p("map", args, {"attribute", "default"});
    return lazy("generator", [&] {
      std::vector<Value> out;
      for (const Value& item : iterate(input)) {
        Value mapped = attribute_or_self(item, p.get(0));
        out.push_back(mapped.is_undefined() && p.has(1) ? p.get(1) : mapped);
      }
      return out;
    });
  }
  std::string filter = text_of(args.positional[0]);
  if (!is_known_filter(filter)) template_fail("no filter named '{}'", filter);
  CallArgs rest{std::vector<Value>(args.positional.begin() + 1, args.positional.end()), args.keywords};
  return lazy("generator", [&] {
    std::vector<Value> out;
    for (const Value& item : iterate(input)) {
      CallArgs copy = rest;
      out.push_back(call_filter(filter, item, copy));
    }
    return out;
  });
}

// select/reject/selectattr/rejectattr share jinja2's select_or_reject.
Value select_or_reject(const Value& input, CallArgs& args, bool by_attribute, bool keep_matches) {
  size_t next = 0;
  Value attribute;
  if (by_attribute) {
    if (args.positional.empty()) template_fail("selectattr/rejectattr need an attribute name");
    attribute = args.positional[next++];
  }
  std::string test;
  if (next < args.positional.size()) test = text_of(args.positional[next++]);
  if (!test.empty() && !is_known_test(test)) template_fail("no test named '{}'", test);
  CallArgs test_args{std::vector<Value>(args.positional.begin() + static_cast<long>(next), args.positional.end()),
                     args.keywords};
  return lazy("generator", [&] {
    std::vector<Value> out;
    for (const Value& item : iterate(input)) {
      Value subject = by_attribute ? attribute_or_self(item, attribute) : item;
      CallArgs copy = test_args;
      bool matches = test.empty() ? truthy(subject) : call_test(test, subject, copy);
      if (matches == keep_matches) out.push_back(item);
    }
    return out;
  });
}
Value filter_select(const Value& input, CallArgs& args) { return select_or_reject(input, args, false, true); }
Value filter_reject(const Value& input, CallArgs& args) { return select_or_reject(input, args, false, false); }
Value filter_selectattr(const Value& input, CallArgs& args) { return select_or_reject(input, args, true, true); }
Value filter_rejectattr(const Value& input, CallArgs& args) { return select_or_reject(input, args, true, false); }

Value filter_abs(const Value& input, CallArgs& args) {
  Params p("abs", args, {});
  if (input.is_float()) return Value(std::fabs(input.as_float()));
  if (input.is_int() || input.is_bool()) return input.as_int() < 0 ? negate(input) : Value(input.as_int());
  template_fail("bad operand type for abs(): '{}'", type_name(input));
}

// Python's int(str): optional sign, digits with single underscores, surrounding whitespace.
std::optional<int64_t> parse_python_int(const std::string& text, int base) {
  std::string cleaned = python_strip(text, std::nullopt, true, true);
  std::string digits;
  for (size_t i = 0; i < cleaned.size(); ++i) {
    if (cleaned[i] != '_') {
      digits.push_back(cleaned[i]);
      continue;
    }
    // Python allows single underscores between digits only.
    if (i == 0 || i + 1 == cleaned.size() || !std::isalnum(static_cast<unsigned char>(cleaned[i - 1])) ||
        !std::isalnum(static_cast<unsigned char>(cleaned[i + 1])))
      return std::nullopt;
  }
  if (digits.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  long long value = std::strtoll(digits.c_str(), &end, base);
  if (*end != '\0' || end == digits.c_str() || errno == ERANGE) return std::nullopt;
  return value;
}

std::optional<double> parse_python_float(const std::string& text) {
  std::string cleaned = python_strip(text, std::nullopt, true, true);
  if (cleaned.empty()) return std::nullopt;
  char* end = nullptr;
  double value = std::strtod(cleaned.c_str(), &end);
  if (*end != '\0') return std::nullopt;
  return value;
}

Value filter_int(const Value& input, CallArgs& args) {
  Params p("int", args, {"default", "base"});
  require_defined(input);  // int(Undefined) raises UndefinedError, which do_int does not catch
  Value fallback = p.get(0, Value(0));
  if (input.is_int() || input.is_bool()) return Value(input.as_int());
  if (input.is_float()) {
    double f = input.as_float();
    if (std::isnan(f) || std::isinf(f) || std::fabs(f) >= 9.2e18) return fallback;
    return Value(static_cast<int64_t>(f));
  }
  if (input.is_string()) {
    if (auto parsed = parse_python_int(input.as_string(), static_cast<int>(p.get_int(1, 10)))) return Value(*parsed);
    if (auto parsed = parse_python_float(input.as_string()); parsed && std::fabs(*parsed) < 9.2e18)
      return Value(static_cast<int64_t>(*parsed));
  }
  return fallback;
}

Value filter_float(const Value& input, CallArgs& args) {
  Params p("float", args, {"default"});
  require_defined(input);
  if (input.is_number()) return Value(input.as_float());
  if (input.is_string())
    if (auto parsed = parse_python_float(input.as_string())) return Value(*parsed);
  return p.get(0, Value(0.0));
}

// Python's round(x, n): the exact binary value rounded half-to-even, which is what glibc's
// printf does for "%.*f".
Value filter_round(const Value& input, CallArgs& args) {
  Params p("round", args, {"precision", "method"});
  int64_t precision = p.get_int(0, 0);
  std::string method = text_of(p.get(1, Value("common")));
  if (method != "common" && method != "ceil" && method != "floor")
    template_fail("method must be common, ceil or floor");
  if (!input.is_number()) template_fail("type {} doesn't define __round__ method", type_name(input));
  if (method == "common") {
    if (!input.is_float()) return Value(input.as_int());
    if (precision < 0 || precision > 300) template_fail("round: unsupported precision {}", precision);
    char buffer[512];
    std::snprintf(buffer, sizeof buffer, "%.*f", static_cast<int>(precision), input.as_float());
    return Value(std::strtod(buffer, nullptr));
  }
  double scale = std::pow(10.0, static_cast<double>(precision));
  double scaled = input.as_float() * scale;
  return Value((method == "ceil" ? std::ceil(scaled) : std::floor(scaled)) / scale);
}

Value filter_indent(const Value& input, CallArgs& args) {
  Params p("indent", args, {"width", "first", "blank"});
  require_defined(input);
  if (!input.is_string()) template_fail("'{}' object has no attribute 'splitlines'", type_name(input));
  Value width = p.get(0, Value(4));
  std::string indentation = width.is_string() ? width.as_string() : std::string(static_cast<size_t>(std::max<int64_t>(0, p.get_int(0, 4))), ' ');
  // jinja2 appends a newline before splitlines() so that a trailing newline survives.
  std::vector<std::string> lines = python_splitlines(text_of(input) + "\n", false);
  std::string out;
  if (p.get_bool(2, false)) {
    for (size_t i = 0; i < lines.size(); ++i) out += (i ? "\n" + indentation : "") + lines[i];
  } else {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) out += "\n";
      out += (i && !lines[i].empty() ? indentation : "") + lines[i];
    }
  }
  if (p.get_bool(1, false)) out = indentation + out;
  check_string_size(out.size());
  return Value(std::move(out));
}

Value filter_center(const Value& input, CallArgs& args) {
  Params p("center", args, {"width"});
  CallArgs method_args{{Value(p.get_int(0, 80))}, {}};
  return get_attribute(Value(text_of(input)), "center").as_callable().invoke(method_args);
}

Value filter_wordcount(const Value& input, CallArgs& args) {
  Params p("wordcount", args, {});
  int64_t words = 0;
  bool in_word = false;
  for (char32_t c : decode_utf8(text_of(input))) {
    bool word_char = c == '_' || (c < 0x80 ? std::isalnum(static_cast<int>(c)) != 0 : !is_python_space(c) && is_python_printable(c));
    words += word_char && !in_word;
    in_word = word_char;
  }
  return Value(words);
}

Value filter_format(const Value& input, CallArgs& args) {
  if (!args.positional.empty() && !args.keywords.empty())
    template_fail("can't handle positional and keyword arguments at the same time");
  if (!args.keywords.empty()) {
    DictData mapping;
    for (auto& [name, value] : args.keywords) mapping.set(Value(name), value);
    return Value(percent_format(text_of(input), Value::dict(std::move(mapping))));
  }
  return Value(percent_format(text_of(input), Value::list(args.positional, true)));
}

Value filter_attr(const Value& input, CallArgs& args) {
  Params p("attr", args, {"name"});
  require_defined(input);
  // attr() uses getattr only, so dict keys are not attributes here.
  std::string name = text_of(p.get(0));
  if (input.is_dict() || input.is_string() || input.is_list() || input.is_namespace()) {
    Value found = get_attribute(input, name);
    if (input.is_dict() && !found.is_callable()) return Value::undefined("'dict object' has no attribute '" + name + "'");
    return found;
  }
  return Value::undefined("object has no attribute '" + name + "'");
}

const std::unordered_map<std::string_view, FilterFunction>& filters() {
  static const std::unordered_map<std::string_view, FilterFunction> table = {
      {"abs", filter_abs},           {"attr", filter_attr},         {"capitalize", filter_capitalize},
      {"center", filter_center},     {"count", filter_length},      {"d", filter_default},
      {"default", filter_default},   {"dictsort", filter_dictsort}, {"e", filter_escape},
      {"escape", filter_escape},     {"first", filter_first},       {"float", filter_float},
      {"forceescape", filter_escape}, {"format", filter_format},    {"indent", filter_indent},
      {"int", filter_int},           {"items", filter_items},       {"join", filter_join},
      {"last", filter_last},         {"length", filter_length},     {"list", filter_list},
      {"lower", filter_lower},       {"map", filter_map},           {"max", filter_max},
      {"min", filter_min},           {"reject", filter_reject},     {"rejectattr", filter_rejectattr},
      {"replace", filter_replace},   {"reverse", filter_reverse},   {"round", filter_round},
      {"safe", filter_safe},         {"select", filter_select},     {"selectattr", filter_selectattr},
      {"sort", filter_sort},         {"string", filter_string},     {"sum", filter_sum},
      {"title", filter_title},       {"tojson", filter_tojson},     {"trim", filter_trim},
      {"unique", filter_unique},     {"upper", filter_upper},       {"wordcount", filter_wordcount},
  };
  return table;
}

// ---- tests ----

const Value& test_argument(const char* name, CallArgs& args) {
  if (args.positional.size() != 1 || !args.keywords.empty()) template_fail("test '{}' takes exactly one argument", name);
  return args.positional[0];
}

bool integer_test(const Value& v, int64_t divisor, int64_t remainder) {
  if (!v.is_number()) template_fail("unsupported operand type(s) for %: '{}' and 'int'", type_name(v));
  Value mod = binary_operation("%", v, Value(divisor));
  return values_equal(mod, Value(remainder));
}

const std::unordered_map<std::string_view, TestFunction>& tests() {
  static const std::unordered_map<std::string_view, TestFunction> table = {
      {"defined", [](const Value& v, CallArgs&) { return !v.is_undefined(); }},
      {"undefined", [](const Value& v, CallArgs&) { return v.is_undefined(); }},
      {"none", [](const Value& v, CallArgs&) { return v.is_none(); }},
      {"boolean", [](const Value& v, CallArgs&) { return v.is_bool(); }},
      {"true", [](const Value& v, CallArgs&) { return v.is_bool() && v.as_bool(); }},
      {"false", [](const Value& v, CallArgs&) { return v.is_bool() && !v.as_bool(); }},
      {"integer", [](const Value& v, CallArgs&) { return v.is_int(); }},
      {"float", [](const Value& v, CallArgs&) { return v.is_float(); }},
      {"number", [](const Value& v, CallArgs&) { return v.is_number(); }},
      {"string", [](const Value& v, CallArgs&) { return v.is_string(); }},
      {"mapping", [](const Value& v, CallArgs&) { return v.is_dict(); }},
      // len() and __getitem__: iterators and dict views are not sequences.
      {"sequence", [](const Value& v, CallArgs&) {
         return v.is_string() || (v.is_list() && v.as_list().is_subscriptable()) || v.is_dict() || v.is_undefined();
       }},
      {"iterable", [](const Value& v, CallArgs&) { return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined(); }},
      // Undefined defines __call__ (to raise), so Python's callable() says yes.
      {"callable", [](const Value& v, CallArgs&) { return v.is_callable() || v.is_undefined(); }},
      {"escaped", [](const Value&, CallArgs&) { return false; }},
      {"odd", [](const Value& v, CallArgs&) { return integer_test(v, 2, 1); }},
      {"even", [](const Value& v, CallArgs&) { return integer_test(v, 2, 0); }},
      {"divisibleby", [](const Value& v, CallArgs& a) {
         const Value& d = test_argument("divisibleby", a);
         return values_equal(binary_operation("%", v, d), Value(0));
       }},
      {"eq", [](const Value& v, CallArgs& a) { return values_equal(v, test_argument("eq", a)); }},
      {"ne", [](const Value& v, CallArgs& a) { return !values_equal(v, test_argument("ne", a)); }},
      {"lt", [](const Value& v, CallArgs& a) { return compare_operation("<", v, test_argument("lt", a)); }},
      {"le", [](const Value& v, CallArgs& a) { return compare_operation("<=", v, test_argument("le", a)); }},
      {"gt", [](const Value& v, CallArgs& a) { return compare_operation(">", v, test_argument("gt", a)); }},
      {"ge", [](const Value& v, CallArgs& a) { return compare_operation(">=", v, test_argument("ge", a)); }},
      {"in", [](const Value& v, CallArgs& a) { return contains(test_argument("in", a), v); }},
      {"sameas", [](const Value& v, CallArgs& a) { return v.same_object(test_argument("sameas", a)); }},
      {"lower", [](const Value& v, CallArgs&) {
         CallArgs none;
         return truthy(get_attribute(Value(to_display(v)), "islower").as_callable().invoke(none));
       }},
      {"upper", [](const Value& v, CallArgs&) {
         CallArgs none;
         return truthy(get_attribute(Value(to_display(v)), "isupper").as_callable().invoke(none));
       }},
      {"filter", [](const Value& v, CallArgs&) { return v.is_string() && is_known_filter(v.as_string()); }},
      {"test", [](const Value& v, CallArgs&) { return v.is_string() && is_known_test(v.as_string()); }},
  };
  return table;
}

// jinja2 registers comparison tests under several names.
std::string_view canonical_test(std::string_view name) {
  if (name == "equalto" || name == "==") return "eq";
  if (name == "!=") return "ne";
  if (name == "lessthan" || name == "<") return "lt";
  if (name == "<=") return "le";
  if (name == "greaterthan" || name == ">") return "gt";
  if (name == ">=") return "ge";
  return name;
}

}  // namespace

bool is_known_filter(std::string_view name) { return filters().count(name) > 0; }
bool is_known_test(std::string_view name) { return tests().count(canonical_test(name)) > 0; }

Value call_filter(std::string_view name, const Value& input, CallArgs& args) {
  auto it = filters().find(name);
  if (it == filters().end()) template_fail("no filter named '{}'", name);
  return it->second(input, args);
}

bool call_test(std::string_view name, const Value& subject, CallArgs& args) {
  auto it = tests().find(canonical_test(name));
  if (it == tests().end()) template_fail("no test named '{}'", name);
  return it->second(subject, args);
}

}  // namespace tachyon::jinja
