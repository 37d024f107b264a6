// Values of the Jinja interpreter. They mirror the Python objects jinja2 works on (None,
// bool, int, float, str, list, tuple, dict, jinja2's Undefined and namespace, callables) so
// that truthiness, equality, ordering, str() and repr() can be reproduced byte for byte.
// Lists and dicts are immutable once built (transformers renders in jinja2's immutable
// sandbox), so they are shared by pointer; only namespace objects are mutable.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace tachyon::jinja {

// Bounds that keep hostile or broken templates from hanging the process or overflowing the
// stack; docs/chat_template.md lists them.
inline constexpr size_t kMaxOutputBytes = 64u << 20;      // rendered text, and any one string value
inline constexpr int kMaxNestingDepth = 200;              // template syntax nesting and value nesting
inline constexpr int kMaxMacroCallDepth = 100;            // macro recursion
inline constexpr int kMaxEvaluationDepth = 1000;          // nested statement/expression evaluation
inline constexpr int64_t kMaxRenderSteps = 10'000'000;    // statements + loop iterations + calls per render
inline constexpr int64_t kMaxRangeLength = 100'000;       // jinja2's sandbox MAX_RANGE
inline constexpr size_t kMaxListLength = 10'000'000;      // items in one list built by the template

// Every template problem is raised as TemplateError; the interpreter prefixes the template
// line before it leaves render_jinja_template.
class TemplateError : public Error {
 public:
  using Error::Error;
};

template <typename... Args>
[[noreturn]] void template_fail(fmt::format_string<Args...> format, Args&&... args) {
  throw TemplateError(fmt::format(format, std::forward<Args>(args)...));
}

class Value;

// The sequence-like Python objects templates meet. Literals build lists and tuples (tuples
// print as (a, b) and never equal lists); the other kinds come from filters and methods and
// keep their Python behaviour, which templates can observe:
//   Iterator  generators of select/reject/map/unique/items and reverse iterators: always
//             true, no len(), not subscriptable, single pass, and errors surface only when
//             consumed (jinja2's filters are lazy);
//   View      dict.items()/keys()/values(): sized and re-iterable, not subscriptable;
//   Range     range(): a sized, subscriptable sequence that prints as range(a, b).
enum class SequenceKind { List, Tuple, Iterator, View, Range };

struct ListData {
  std::vector<Value> items;
  SequenceKind kind = SequenceKind::List;
  std::string type_label;         // Python type name for Iterator/View/Range ("generator", "dict_items")
  std::string display;            // repr of a Range ("range(0, 3)")
  std::string deferred_error;     // Iterator: what the lazy filter raises once it is consumed
  mutable size_t consumed = 0;    // Iterator: items already taken

  bool is_tuple() const { return kind == SequenceKind::Tuple; }
  bool is_plain() const { return kind == SequenceKind::List || kind == SequenceKind::Tuple; }
  bool is_subscriptable() const { return is_plain() || kind == SequenceKind::Range; }
};

// Insertion-ordered like a Python dict; linear lookup is fine for chat-sized dicts.
struct DictData {
  std::vector<std::pair<Value, Value>> entries;
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value value);
};

struct NamespaceData {
  DictData attributes;
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;
};

struct CallableData {
  std::string name;
  bool is_macro = false;  // macros print as <Macro 'name'>
  std::function<Value(CallArgs&)> invoke;
};

class Value {
 public:
  enum class Type { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Callable };

  Value() = default;  // undefined
  Value(bool v) : data_(v) {}
  Value(int v) : data_(static_cast<int64_t>(v)) {}
  Value(int64_t v) : data_(v) {}
  Value(double v) : data_(v) {}
  Value(std::string v) : data_(std::move(v)) {}
  Value(const char* v) : data_(std::string(v)) {}

  // hint is the jinja2 message shown if the undefined value is used where that is an error.
  static Value undefined(std::string hint);
  static Value none();
  static Value list(std::vector<Value> items, bool is_tuple = false);
  static Value sequence(ListData data);
  // A lazy filter's result: the items, or the error that consuming it raises.
  static Value iterator(std::vector<Value> items, std::string type_label = "generator",
                        std::string deferred_error = "");
  static Value dict(DictData dict);
  static Value make_namespace(DictData attributes);
  static Value callable(std::string name, std::function<Value(CallArgs&)> invoke, bool is_macro = false);

  Type type() const { return static_cast<Type>(data_.index()); }
  bool is_undefined() const { return type() == Type::Undefined; }
  bool is_none() const { return type() == Type::None; }
  bool is_bool() const { return type() == Type::Bool; }
  bool is_int() const { return type() == Type::Int; }
  bool is_float() const { return type() == Type::Float; }
  bool is_number() const { return is_bool() || is_int() || is_float(); }  // bool is an int in Python
  bool is_string() const { return type() == Type::String; }
  bool is_list() const { return type() == Type::List; }  // lists and tuples
  bool is_dict() const { return type() == Type::Dict; }
  bool is_namespace() const { return type() == Type::Namespace; }
  bool is_callable() const { return type() == Type::Callable; }

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_int() const;  // bool or int
  double as_float() const; // any number
  const std::string& as_string() const { return std::get<std::string>(data_); }
  const ListData& as_list() const { return *std::get<std::shared_ptr<const ListData>>(data_); }
  const DictData& as_dict() const { return *std::get<std::shared_ptr<const DictData>>(data_); }
  NamespaceData& as_namespace() const { return *std::get<std::shared_ptr<NamespaceData>>(data_); }
  const CallableData& as_callable() const { return *std::get<std::shared_ptr<const CallableData>>(data_); }
  const std::string& undefined_hint() const { return std::get<UndefinedData>(data_).hint; }

  // Python `is`: same object for containers, same value for None/bools/numbers/strings.
  bool same_object(const Value& other) const;

 private:
  struct UndefinedData {
    std::string hint;
  };
  struct NoneData {};
  std::variant<UndefinedData, NoneData, bool, int64_t, double, std::string, std::shared_ptr<const ListData>,
               std::shared_ptr<const DictData>, std::shared_ptr<NamespaceData>, std::shared_ptr<const CallableData>>
      data_;
};

// Python type names, used in error messages ('int', 'str', 'NoneType', 'dict', ...).
std::string type_name(const Value& value);
// Raises jinja2's UndefinedError for a value that is used where undefined is not allowed.
void require_defined(const Value& value);

bool truthy(const Value& value);
std::string to_display(const Value& value);  // Python str()
std::string repr(const Value& value);        // Python repr()
bool values_equal(const Value& a, const Value& b);
// Python ordering (<0, 0, >0); raises TemplateError for types Python cannot order.
int compare_values(const Value& a, const Value& b, std::string_view op = "<");
int64_t length_of(const Value& value);
// The items a for loop (or list()) sees: list items, dict keys, string characters; undefined
// iterates as empty; an iterator yields what is left of it (and is then exhausted); anything
// else is an error.
std::vector<Value> iterate(const Value& value);
// next(iter(value)): the first item, consuming only that one from an iterator; nullopt if empty.
std::optional<Value> first_item(const Value& value);

Value from_json(const nlohmann::ordered_json& json);

// json.dumps options that transformers' tojson filter exposes.
struct JsonStyle {
  std::optional<std::string> indent;  // nullopt: single line
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;
};
std::string to_json(const Value& value, const JsonStyle& style);

// Output size guard shared by every operation that can grow a string.
void check_string_size(size_t bytes);

}  // namespace tachyon::jinja
