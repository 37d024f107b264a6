#include "tokenizer/jinja_value.h"

#include <algorithm>
#include <cmath>

#include "tokenizer/jinja_strings.h"

namespace tachyon::jinja {

namespace {

// Guards the recursive walks over values (repr, json, equality) against values nested deeper
// than any chat needs, which would otherwise overflow the native stack.
void check_depth(int depth) {
  if (depth > kMaxNestingDepth) template_fail("value nested more than {} levels deep", kMaxNestingDepth);
}

std::string repr_at(const Value& value, int depth);

std::string dict_repr(const DictData& dict, int depth) {
  std::string out = "{";
  bool first = true;
  for (const auto& [key, item] : dict.entries) {
    if (!first) out += ", ";
    first = false;
    out += repr_at(key, depth + 1) + ": " + repr_at(item, depth + 1);
  }
  return out + "}";
}

std::string repr_at(const Value& value, int depth) {
  check_depth(depth);
  switch (value.type()) {
    case Value::Type::Undefined: return "Undefined";
    case Value::Type::String: return python_string_repr(value.as_string());
    case Value::Type::List: {
      const ListData& list = value.as_list();
      if (list.kind == SequenceKind::Iterator) return "<" + list.type_label + " object>";
      if (list.kind == SequenceKind::Range) return list.display;
      std::string out = list.is_tuple() ? "(" : "[";
      for (size_t i = 0; i < list.items.size(); ++i) {
        if (i) out += ", ";
        out += repr_at(list.items[i], depth + 1);
      }
      if (list.is_tuple() && list.items.size() == 1) out += ",";
      out += list.is_tuple() ? ")" : "]";
      return list.kind == SequenceKind::View ? list.type_label + "(" + out + ")" : out;
    }
    case Value::Type::Dict: return dict_repr(value.as_dict(), depth);
    case Value::Type::Namespace: return "<Namespace " + dict_repr(value.as_namespace().attributes, depth) + ">";
    default: return to_display(value);
  }
}

bool equal_at(const Value& a, const Value& b, int depth) {
  check_depth(depth);
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Value::Type::Undefined:
    case Value::Type::None: return true;
    case Value::Type::String: return a.as_string() == b.as_string();
    case Value::Type::List: {
      const ListData& x = a.as_list();
      const ListData& y = b.as_list();
      if (x.kind != y.kind || !(x.is_subscriptable())) return &x == &y;  // iterators and views: identity
      if (x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i)
        if (!equal_at(x.items[i], y.items[i], depth + 1)) return false;
      return true;
    }
    case Value::Type::Dict: {
      const DictData& x = a.as_dict();
      const DictData& y = b.as_dict();
      if (x.entries.size() != y.entries.size()) return false;
      for (const auto& [key, item] : x.entries) {
        const Value* other = y.find(key);
        if (!other || !equal_at(item, *other, depth + 1)) return false;
      }
      return true;
    }
    default: return a.same_object(b);
  }
}

int compare_at(const Value& a, const Value& b, std::string_view op, int depth) {
  check_depth(depth);
  require_defined(a);
  require_defined(b);
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      double x = a.as_float(), y = b.as_float();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    int64_t x = a.as_int(), y = b.as_int();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    // Byte order of UTF-8 equals code point order, which is how Python orders str.
    int c = a.as_string().compare(b.as_string());
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_list() && b.is_list() && a.as_list().kind == b.as_list().kind && a.as_list().is_plain()) {
    const auto& x = a.as_list().items;
    const auto& y = b.as_list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i)
      if (!equal_at(x[i], y[i], depth + 1)) return compare_at(x[i], y[i], op, depth + 1);
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  template_fail("'{}' not supported between instances of '{}' and '{}'", op, type_name(a), type_name(b));
}

Value from_json_at(const nlohmann::ordered_json& json, int depth) {
  check_depth(depth);
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      uint64_t u = json.get<uint64_t>();
      // Python ints are unbounded; beyond int64 we fall back to a float (documented gap).
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value(json.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(from_json_at(item, depth + 1));
      return Value::list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      DictData dict;
      dict.entries.reserve(json.size());
      for (const auto& [key, item] : json.items()) dict.entries.emplace_back(Value(key), from_json_at(item, depth + 1));
      return Value::dict(std::move(dict));
    }
    default: template_fail("unsupported JSON value in the template context");
  }
}

std::string json_key(const Value& key) {
  switch (key.type()) {
    case Value::Type::String: return key.as_string();
    case Value::Type::Bool: return key.as_bool() ? "true" : "false";
    case Value::Type::None: return "null";
    case Value::Type::Int: return std::to_string(key.as_int());
    case Value::Type::Float: return python_float_repr(key.as_float());
    default: template_fail("keys must be str, int, float, bool or None, not {}", type_name(key));
  }
}

void json_at(std::string& out, const Value& value, const JsonStyle& style, int level, int depth) {
  check_depth(depth);
  check_string_size(out.size());
  auto newline = [&](int indent_level) {
    out.push_back('\n');
    for (int i = 0; i < indent_level; ++i) out += *style.indent;
  };
  switch (value.type()) {
    case Value::Type::None: out += "null"; return;
    case Value::Type::Bool: out += value.as_bool() ? "true" : "false"; return;
    case Value::Type::Int: out += std::to_string(value.as_int()); return;
    case Value::Type::Float: {
      double f = value.as_float();
      if (std::isnan(f)) out += "NaN";
      else if (std::isinf(f)) out += f > 0 ? "Infinity" : "-Infinity";
      else out += python_float_repr(f);
      return;
    }
    case Value::Type::String: append_json_string(out, value.as_string(), style.ensure_ascii); return;
    case Value::Type::List: {
      if (!value.as_list().is_plain()) template_fail("Object of type {} is not JSON serializable", type_name(value));
      const auto& items = value.as_list().items;
      if (items.empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += style.item_separator;
        if (style.indent) newline(level + 1);
        json_at(out, items[i], style, level + 1, depth + 1);
      }
      if (style.indent) newline(level);
      out.push_back(']');
      return;
    }
    case Value::Type::Dict: {
      std::vector<const std::pair<Value, Value>*> entries;
      for (const auto& entry : value.as_dict().entries) entries.push_back(&entry);
      if (entries.empty()) {
        out += "{}";
        return;
      }
      if (style.sort_keys)
        std::stable_sort(entries.begin(), entries.end(),
                         [](auto* a, auto* b) { return compare_values(a->first, b->first) < 0; });
      out.push_back('{');
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i) out += style.item_separator;
        if (style.indent) newline(level + 1);
        append_json_string(out, json_key(entries[i]->first), style.ensure_ascii);
        out += style.key_separator;
        json_at(out, entries[i]->second, style, level + 1, depth + 1);
      }
      if (style.indent) newline(level);
      out.push_back('}');
      return;
    }
    default: {
      std::string kind = value.is_undefined() ? "Undefined" : value.is_callable() ? "Macro" : type_name(value);
      template_fail("Object of type {} is not JSON serializable", kind);
    }
  }
}

}  // namespace

const Value* DictData::find(const Value& key) const {
  if (key.is_string()) return find(std::string_view(key.as_string()));
  for (const auto& [k, v] : entries)
    if (values_equal(k, key)) return &v;
  return nullptr;
}

const Value* DictData::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k.is_string() && k.as_string() == key) return &v;
  return nullptr;
}

void DictData::set(Value key, Value value) {
  for (auto& [k, v] : entries) {
    if (values_equal(k, key)) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

Value Value::undefined(std::string hint) {
  Value v;
  v.data_ = UndefinedData{std::move(hint)};
  return v;
}

Value Value::none() {
  Value v;
  v.data_ = NoneData{};
  return v;
}

Value Value::list(std::vector<Value> items, bool is_tuple) {
  ListData data;
  data.items = std::move(items);
  data.kind = is_tuple ? SequenceKind::Tuple : SequenceKind::List;
  return sequence(std::move(data));
}

Value Value::sequence(ListData data) {
  Value v;
  v.data_ = std::make_shared<const ListData>(std::move(data));
  return v;
}

Value Value::iterator(std::vector<Value> items, std::string type_label, std::string deferred_error) {
  ListData data;
  data.items = std::move(items);
  data.kind = SequenceKind::Iterator;
  data.type_label = std::move(type_label);
  data.deferred_error = std::move(deferred_error);
  return sequence(std::move(data));
}

Value Value::dict(DictData dict) {
  Value v;
  v.data_ = std::make_shared<const DictData>(std::move(dict));
  return v;
}

Value Value::make_namespace(DictData attributes) {
  Value v;
  v.data_ = std::make_shared<NamespaceData>(NamespaceData{std::move(attributes)});
  return v;
}

Value Value::callable(std::string name, std::function<Value(CallArgs&)> invoke, bool is_macro) {
  Value v;
  v.data_ = std::make_shared<const CallableData>(CallableData{std::move(name), is_macro, std::move(invoke)});
  return v;
}

int64_t Value::as_int() const {
  if (is_bool()) return as_bool() ? 1 : 0;
  return std::get<int64_t>(data_);
}

double Value::as_float() const {
  if (is_float()) return std::get<double>(data_);
  return static_cast<double>(as_int());
}

bool Value::same_object(const Value& other) const {
  if (type() != other.type()) return false;
  switch (type()) {
    case Type::Undefined:
    case Type::None: return true;
    case Type::Bool: return as_bool() == other.as_bool();
    case Type::Int: return as_int() == other.as_int();
    case Type::Float: return as_float() == other.as_float();
    case Type::String: return as_string() == other.as_string();
    case Type::List: return &as_list() == &other.as_list();
    case Type::Dict: return &as_dict() == &other.as_dict();
    case Type::Namespace: return &as_namespace() == &other.as_namespace();
    case Type::Callable: return &as_callable() == &other.as_callable();
  }
  return false;
}

std::string type_name(const Value& value) {
  switch (value.type()) {
    case Value::Type::Undefined: return "Undefined";
    case Value::Type::None: return "NoneType";
    case Value::Type::Bool: return "bool";
    case Value::Type::Int: return "int";
    case Value::Type::Float: return "float";
    case Value::Type::String: return "str";
    case Value::Type::List: {
      const ListData& list = value.as_list();
      return list.kind == SequenceKind::List ? "list" : list.kind == SequenceKind::Tuple ? "tuple" : list.type_label;
    }
    case Value::Type::Dict: return "dict";
    case Value::Type::Namespace: return "Namespace";
    case Value::Type::Callable: return value.as_callable().is_macro ? "Macro" : "builtin_function_or_method";
  }
  return "object";
}

void require_defined(const Value& value) {
  if (value.is_undefined())
    throw TemplateError(value.undefined_hint().empty() ? "value is undefined" : value.undefined_hint());
}

bool truthy(const Value& value) {
  switch (value.type()) {
    case Value::Type::Undefined:
    case Value::Type::None: return false;
    case Value::Type::Bool: return value.as_bool();
    case Value::Type::Int: return value.as_int() != 0;
    case Value::Type::Float: return value.as_float() != 0.0;
    case Value::Type::String: return !value.as_string().empty();
    case Value::Type::List:
      return value.as_list().kind == SequenceKind::Iterator || !value.as_list().items.empty();
    case Value::Type::Dict: return !value.as_dict().entries.empty();
    default: return true;
  }
}

std::string to_display(const Value& value) {
  switch (value.type()) {
    case Value::Type::Undefined: return "";
    case Value::Type::None: return "None";
    case Value::Type::Bool: return value.as_bool() ? "True" : "False";
    case Value::Type::Int: return std::to_string(value.as_int());
    case Value::Type::Float: return python_float_repr(value.as_float());
    case Value::Type::String: return value.as_string();
    case Value::Type::Callable: {
      const CallableData& callable = value.as_callable();
      return callable.is_macro ? "<Macro '" + callable.name + "'>" : "<built-in function " + callable.name + ">";
    }
    default: return repr_at(value, 0);
  }
}

std::string repr(const Value& value) { return repr_at(value, 0); }

bool values_equal(const Value& a, const Value& b) { return equal_at(a, b, 0); }

int compare_values(const Value& a, const Value& b, std::string_view op) { return compare_at(a, b, op, 0); }

int64_t length_of(const Value& value) {
  switch (value.type()) {
    case Value::Type::Undefined: return 0;
    case Value::Type::String: return static_cast<int64_t>(count_code_points(value.as_string()));
    case Value::Type::List:
      if (value.as_list().kind == SequenceKind::Iterator)
        template_fail("object of type '{}' has no len()", type_name(value));
      return static_cast<int64_t>(value.as_list().items.size());
    case Value::Type::Dict: return static_cast<int64_t>(value.as_dict().entries.size());
    default: template_fail("object of type '{}' has no len()", type_name(value));
  }
}

std::optional<Value> first_item(const Value& value) {
  if (value.is_list() && value.as_list().kind == SequenceKind::Iterator) {
    const ListData& iterator = value.as_list();
    if (!iterator.deferred_error.empty()) throw TemplateError(iterator.deferred_error);
    if (iterator.consumed >= iterator.items.size()) return std::nullopt;
    return iterator.items[iterator.consumed++];
  }
  std::vector<Value> items = iterate(value);
  if (items.empty()) return std::nullopt;
  return items.front();
}

std::vector<Value> iterate(const Value& value) {
  switch (value.type()) {
    case Value::Type::Undefined: return {};
    case Value::Type::List: {
      const ListData& list = value.as_list();
      if (list.kind != SequenceKind::Iterator) return list.items;
      if (!list.deferred_error.empty()) throw TemplateError(list.deferred_error);
      std::vector<Value> rest(list.items.begin() + static_cast<long>(std::min(list.consumed, list.items.size())),
                              list.items.end());
      list.consumed = list.items.size();
      return rest;
    }
    case Value::Type::Dict: {
      std::vector<Value> keys;
      for (const auto& entry : value.as_dict().entries) keys.push_back(entry.first);
      return keys;
    }
    case Value::Type::String: {
      std::vector<Value> chars;
      for (char32_t c : decode_utf8(value.as_string())) {
        std::string one;
        append_utf8(one, c);
        chars.emplace_back(std::move(one));
      }
      return chars;
    }
    default: template_fail("'{}' object is not iterable", type_name(value));
  }
}

Value from_json(const nlohmann::ordered_json& json) { return from_json_at(json, 0); }

std::string to_json(const Value& value, const JsonStyle& style) {
  std::string out;
  json_at(out, value, style, 0, 0);
  check_string_size(out.size());
  return out;
}

void check_string_size(size_t bytes) {
  if (bytes > kMaxOutputBytes) template_fail("string grows past the {} byte limit", kMaxOutputBytes);
}

}  // namespace tachyon::jinja
