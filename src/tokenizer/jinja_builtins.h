// jinja2's built-in filters, tests and globals, transformers' additions (tojson without HTML
// escaping, raise_exception, strftime_now), and the Python methods that templates call on
// str, dict and list values. Attribute and item lookup follow jinja2's sandboxed getattr /
// getitem, including their fallbacks to each other and to undefined.
#pragma once
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "tokenizer/jinja_value.h"

namespace tachyon::jinja {

// Thrown by raise_exception(): the message is the template's own and is reported verbatim.
class TemplateRaised : public TemplateError {
 public:
  using TemplateError::TemplateError;
};

Value call_filter(std::string_view name, const Value& input, CallArgs& args);
bool call_test(std::string_view name, const Value& subject, CallArgs& args);

// obj.name: methods of str/dict/list first (as Python getattr), then dict items, namespace
// attributes; anything missing is undefined. obj must not be undefined.
Value get_attribute(const Value& object, const std::string& name);
// obj[key]: items first, then attributes for string keys; failures give undefined.
Value get_item(const Value& object, const Value& key);
// obj[start:stop:step] with Python's clamping rules (nullopt for an omitted bound).
Value get_slice(const Value& object, const Value& start, const Value& stop, const Value& step);

// Binds a builtin's Python-style signature: positional arguments in order, or by keyword.
// Unknown keywords and surplus positionals raise TemplateError naming the function.
class Params {
 public:
  Params(std::string_view function, const CallArgs& args, std::initializer_list<std::string_view> names);
  bool has(size_t index) const { return index < values_.size() && values_[index].has_value(); }
  Value get(size_t index, Value fallback = Value::none()) const { return has(index) ? *values_[index] : fallback; }
  int64_t get_int(size_t index, int64_t fallback) const;
  bool get_bool(size_t index, bool fallback) const { return has(index) ? truthy(*values_[index]) : fallback; }

 private:
  std::string function_;
  std::vector<std::optional<Value>> values_;
};

// Dotted attribute path as jinja2's make_attrgetter: "a.b.0" looks up item a, then b, then 0.
Value get_attribute_path(const Value& object, std::string_view path);

// Globals every template sees: range, dict, namespace, cycler, joiner, raise_exception, strftime_now.
DictData make_globals();

}  // namespace tachyon::jinja
