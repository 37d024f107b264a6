// Attribute/item/slice lookup, Python methods on str/dict/list, argument binding and globals.
#include <algorithm>
#include <ctime>
#include <unordered_set>

#include "tokenizer/jinja_builtins.h"
#include "tokenizer/jinja_operators.h"
#include "tokenizer/jinja_strings.h"

namespace tachyon::jinja {

Params::Params(std::string_view function, const CallArgs& args, std::initializer_list<std::string_view> names)
    : function_(function), values_(names.size()) {
  if (args.positional.size() > names.size())
    template_fail("{}() takes at most {} argument(s) ({} given)", function, names.size(), args.positional.size());
  for (size_t i = 0; i < args.positional.size(); ++i) values_[i] = args.positional[i];
  for (const auto& [keyword, value] : args.keywords) {
    auto it = std::find(names.begin(), names.end(), keyword);
    if (it == names.end()) template_fail("{}() got an unexpected keyword argument '{}'", function, keyword);
    size_t index = static_cast<size_t>(it - names.begin());
    if (values_[index]) template_fail("{}() got multiple values for argument '{}'", function, keyword);
    values_[index] = value;
  }
}

int64_t Params::get_int(size_t index, int64_t fallback) const {
  if (!has(index) || values_[index]->is_none()) return fallback;
  const Value& value = *values_[index];
  if (!value.is_int() && !value.is_bool())
    template_fail("{}(): '{}' object cannot be interpreted as an integer", function_, type_name(value));
  return value.as_int();
}

namespace {

const std::unordered_set<std::string_view> kStrMethods = {
    "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format",
    "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower",
    "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans",
    "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit",
    "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill"};
const std::unordered_set<std::string_view> kDictMethods = {"clear", "copy",       "fromkeys", "get",    "items", "keys",
                                                           "pop",   "popitem",    "setdefault", "update", "values"};
const std::unordered_set<std::string_view> kListMethods = {"append", "clear",  "copy",    "count",   "extend", "index",
                                                           "insert", "pop",    "remove",  "reverse", "sort"};
// Methods that mutate; jinja2's ImmutableSandboxedEnvironment refuses them.
const std::unordered_set<std::string_view> kMutatingMethods = {"append", "clear",  "extend",     "insert", "pop",
                                                               "popitem", "remove", "reverse",   "sort",   "update",
                                                               "setdefault"};

std::string object_description(const Value& value) {
  return value.is_none() ? "None" : "'" + type_name(value) + " object'";
}

Value missing_attribute(const Value& object, std::string_view name) {
  return Value::undefined(fmt::format("{} has no attribute '{}'", object_description(object), name));
}

// Returns a copy: arguments often come from Params::get, which returns a temporary.
std::string require_string_arg(std::string_view method, const Value& value) {
  if (!value.is_string()) template_fail("{}() argument must be str, not {}", method, type_name(value));
  return value.as_string();
}

std::optional<std::string> optional_string_arg(std::string_view method, const Params& params, size_t index) {
  Value value = params.get(index);
  if (value.is_none()) return std::nullopt;
  return require_string_arg(method, value);
}

// Code-point slice [start, end) with Python's negative/clamped bounds, for find/startswith.
std::string_view clip(const std::string& text, const Params& params, size_t start_index, std::string& storage) {
  if (!params.has(start_index) && !params.has(start_index + 1)) return text;
  std::u32string cps = decode_utf8(text);
  auto length = static_cast<int64_t>(cps.size());
  auto normalize = [&](int64_t i) { return std::clamp(i < 0 ? i + length : i, int64_t{0}, length); };
  int64_t start = normalize(params.get_int(start_index, 0));
  int64_t end = normalize(params.get_int(start_index + 1, length));
  storage = end > start ? encode_utf8(std::u32string_view(cps).substr(start, end - start)) : "";
  return storage;
}

bool affix_matches(std::string_view text, const Value& affixes, bool at_start) {
  auto one = [&](const Value& affix) {
    const std::string a = require_string_arg(at_start ? "startswith" : "endswith", affix);
    return text.size() >= a.size() && (at_start ? text.substr(0, a.size()) == a : text.substr(text.size() - a.size()) == a);
  };
  if (affixes.is_list() && affixes.as_list().is_tuple()) {
    for (const Value& affix : affixes.as_list().items)
      if (one(affix)) return true;
    return false;
  }
  return one(affixes);
}

Value list_of_strings(const std::vector<std::string>& parts) {
  std::vector<Value> items(parts.begin(), parts.end());
  return Value::list(std::move(items));
}

template <typename Predicate>
bool all_code_points(const std::string& text, Predicate predicate) {
  std::u32string cps = decode_utf8(text);
  return !cps.empty() && std::all_of(cps.begin(), cps.end(), predicate);
}

std::string pad(const std::string& text, int64_t width, const std::string& fill, char align) {
  if (count_code_points(fill) != 1) template_fail("The fill character must be exactly one character long");
  auto length = static_cast<int64_t>(count_code_points(text));
  if (width <= length) return text;
  int64_t margin = width - length;
  int64_t left = align == 'r' ? margin : align == 'l' ? 0 : margin / 2 + (margin & width & 1);
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += text;
  for (int64_t i = 0; i < margin - left; ++i) out += fill;
  return out;
}

// str.format with auto/explicit indices, keyword names and .attr/[key] lookups; no format specs.
std::string brace_format(const std::string& format, const CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    char c = format[i];
    if (c == '}') {
      if (i + 1 < format.size() && format[i + 1] == '}') ++i;
      else template_fail("Single '}}' encountered in format string");
      out.push_back('}');
      continue;
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < format.size() && format[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    size_t close = format.find('}', i);
    if (close == std::string::npos) template_fail("Single '{{' encountered in format string");
    std::string field = format.substr(i + 1, close - i - 1);
    i = close;
    char conversion = 's';
    if (size_t bang = field.find('!'); bang != std::string::npos) {
      conversion = bang + 1 < field.size() ? field[bang + 1] : 's';
      field.resize(bang);
    }
    if (field.find(':') != std::string::npos) template_fail("format specs in str.format are not supported");
    size_t name_end = std::min(field.find('.'), field.find('['));
    std::string head = field.substr(0, name_end);
    Value value;
    if (head.empty() || std::all_of(head.begin(), head.end(), [](char d) { return d >= '0' && d <= '9'; })) {
      size_t index = head.empty() ? auto_index++ : std::stoul(head);
      if (index >= args.positional.size()) template_fail("Replacement index {} out of range for positional args tuple", index);
      value = args.positional[index];
    } else {
      auto it = std::find_if(args.keywords.begin(), args.keywords.end(), [&](const auto& kw) { return kw.first == head; });
      if (it == args.keywords.end()) template_fail("format key '{}' not given", head);
      value = it->second;
    }
    for (size_t at = name_end; at < field.size();) {
      if (field[at] == '.') {
        size_t end = std::min(field.find('.', at + 1), field.find('[', at + 1));
        value = get_attribute(value, field.substr(at + 1, end - at - 1));
        at = end;
      } else {
        size_t end = field.find(']', at);
        if (end == std::string::npos) template_fail("Missing ']' in format string");
        std::string key = field.substr(at + 1, end - at - 1);
        bool numeric = !key.empty() && std::all_of(key.begin(), key.end(), [](char d) { return d >= '0' && d <= '9'; });
        value = get_item(value, numeric ? Value(static_cast<int64_t>(std::stoll(key))) : Value(key));
        at = end + 1;
      }
    }
    out += conversion == 'r' || conversion == 'a' ? repr(value) : to_display(value);
  }
  return out;
}

Value call_string_method(const std::string& self, const std::string& name, CallArgs& args) {
  if (name == "format") return Value(brace_format(self, args));
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    Params p(name, args, {"chars"});
    return Value(python_strip(self, optional_string_arg(name, p, 0), name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    Params p(name, args, {"sep", "maxsplit"});
    std::optional<std::string> sep = optional_string_arg(name, p, 0);
    if (sep && sep->empty()) template_fail("empty separator");
    return list_of_strings(python_split(self, sep, p.get_int(1, -1), name == "rsplit"));
  }
  if (name == "splitlines") {
    Params p(name, args, {"keepends"});
    return list_of_strings(python_splitlines(self, p.get_bool(0, false)));
  }
  if (name == "startswith" || name == "endswith") {
    Params p(name, args, {"prefix", "start", "end"});
    std::string storage;
    return Value(affix_matches(clip(self, p, 1, storage), p.get(0), name == "startswith"));
  }
  if (name == "upper") return Value(python_upper(self));
  if (name == "lower" || name == "casefold") return Value(python_lower(self));
  if (name == "title") return Value(python_title(self));
  if (name == "capitalize") return Value(python_capitalize(self));
  if (name == "swapcase") return Value(python_swapcase(self));
  if (name == "replace") {
    Params p(name, args, {"old", "new", "count"});
    std::string out = python_replace(self, require_string_arg(name, p.get(0)), require_string_arg(name, p.get(1)), p.get_int(2, -1));
    check_string_size(out.size());
    return Value(std::move(out));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    Params p(name, args, {"sub", "start", "end"});
    std::string storage;
    std::string_view text = clip(self, p, 1, storage);
    const std::string needle = require_string_arg(name, p.get(0));
    if (name == "count") return Value(python_count(text, needle));
    int64_t found = python_find(text, needle, name[0] == 'r');
    if (found < 0 && (name == "index" || name == "rindex")) template_fail("substring not found");
    int64_t offset = p.has(1) ? p.get_int(1, 0) : 0;
    if (offset < 0) offset = std::max<int64_t>(0, offset + static_cast<int64_t>(count_code_points(self)));
    return Value(found < 0 ? found : found + offset);
  }
  if (name == "join") {
    Params p(name, args, {"iterable"});
    std::string out;
    bool first = true;
    for (const Value& item : iterate(p.get(0))) {
      if (!first) out += self;
      first = false;
      out += require_string_arg("join", item);
      check_string_size(out.size());
    }
    return Value(std::move(out));
  }
  if (name == "center" || name == "ljust" || name == "rjust") {
    Params p(name, args, {"width", "fillchar"});
    std::string fill = p.has(1) ? require_string_arg(name, p.get(1)) : " ";
    int64_t width = p.get_int(0, 0);
    check_string_size(static_cast<size_t>(std::max<int64_t>(width, 0)));
    return Value(pad(self, width, fill, name == "center" ? 'c' : name == "ljust" ? 'l' : 'r'));
  }
  if (name == "zfill") {
    Params p(name, args, {"width"});
    int64_t width = p.get_int(0, 0);
    check_string_size(static_cast<size_t>(std::max<int64_t>(width, 0)));
    auto length = static_cast<int64_t>(count_code_points(self));
    if (width <= length) return Value(self);
    size_t sign = !self.empty() && (self[0] == '-' || self[0] == '+') ? 1 : 0;
    return Value(self.substr(0, sign) + std::string(static_cast<size_t>(width - length), '0') + self.substr(sign));
  }
  if (name == "partition" || name == "rpartition") {
    Params p(name, args, {"sep"});
    const std::string sep = require_string_arg(name, p.get(0));
    if (sep.empty()) template_fail("empty separator");
    size_t at = name == "partition" ? self.find(sep) : self.rfind(sep);
    if (at == std::string::npos)
      return name == "partition" ? Value::list({Value(self), Value(""), Value("")}, true)
                                 : Value::list({Value(""), Value(""), Value(self)}, true);
    return Value::list({Value(self.substr(0, at)), Value(sep), Value(self.substr(at + sep.size()))}, true);
  }
  if (name == "removeprefix" || name == "removesuffix") {
    Params p(name, args, {"affix"});
    const std::string affix = require_string_arg(name, p.get(0));
    bool prefix = name == "removeprefix";
    if (affix_matches(self, Value(affix), prefix))
      return Value(prefix ? self.substr(affix.size()) : self.substr(0, self.size() - affix.size()));
    return Value(self);
  }
  Params p(name, args, {});
  // Character classes: exact for ASCII; beyond ASCII letters are recognised through the case
  // tables and common scripts only (documented gap).
  auto is_letter = [](char32_t c) {
    return (c < 0x80 && ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) || (c >= 0x80 && is_cased(c)) ||
           (c >= 0x3040 && c <= 0x30FF) || (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xAC00 && c <= 0xD7AF);
  };
  auto is_digit = [](char32_t c) { return c >= '0' && c <= '9'; };
  if (name == "isdigit" || name == "isdecimal" || name == "isnumeric") return Value(all_code_points(self, is_digit));
  if (name == "isalpha") return Value(all_code_points(self, is_letter));
  if (name == "isalnum") return Value(all_code_points(self, [&](char32_t c) { return is_letter(c) || is_digit(c); }));
  if (name == "isspace") return Value(all_code_points(self, is_python_space));
  if (name == "isascii") return Value(std::all_of(self.begin(), self.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; }));
  if (name == "islower" || name == "isupper") {
    bool want_lower = name == "islower", any_cased = false;
    for (char32_t c : decode_utf8(self)) {
      bool lower = simple_upper(c) != c, upper = simple_lower(c) != c;
      if ((want_lower && upper) || (!want_lower && lower)) return Value(false);
      any_cased |= lower || upper;
    }
    return Value(any_cased);
  }
  template_fail("str.{}() is not supported in chat templates", name);
}

Value call_container_method(const Value& self, const std::string& name, CallArgs& args) {
  std::string kind = type_name(self);
  if (kMutatingMethods.count(name)) template_fail("access to attribute '{}' of '{}' object is unsafe.", name, kind);
  if (self.is_dict()) {
    const DictData& dict = self.as_dict();
    if (name == "get") {
      Params p("get", args, {"key", "default"});
      const Value* found = dict.find(p.get(0));
      return found ? *found : p.get(1);
    }
    Params p(name, args, {});
    ListData view;
    view.kind = SequenceKind::View;
    view.type_label = "dict_" + name;
    for (const auto& [key, value] : dict.entries) {
      if (name == "items") view.items.push_back(Value::list({key, value}, true));
      else if (name == "keys") view.items.push_back(key);
      else if (name == "values") view.items.push_back(value);
    }
    if (name == "items" || name == "keys" || name == "values") return Value::sequence(std::move(view));
    if (name == "copy") return self;
  } else {
    const auto& items = self.as_list().items;
    if (name == "count" || name == "index") {
      Params p(name, args, {"value"});
      int64_t count = 0;
      for (size_t i = 0; i < items.size(); ++i) {
        if (!values_equal(items[i], p.get(0))) continue;
        if (name == "index") return Value(static_cast<int64_t>(i));
        ++count;
      }
      if (name == "index") template_fail("{} is not in list", repr(p.get(0)));
      return Value(count);
    }
    Params p(name, args, {});
    if (name == "copy") return self;
  }
  template_fail("{}.{}() is not supported in chat templates", kind, name);
}

Value bound_method(const Value& self, const std::string& name) {
  return Value::callable(name, [self, name](CallArgs& args) {
    return self.is_string() ? call_string_method(self.as_string(), name, args) : call_container_method(self, name, args);
  });
}

}  // namespace

Value get_attribute(const Value& object, const std::string& name) {
  switch (object.type()) {
    case Value::Type::Undefined: require_defined(object); break;
    case Value::Type::Dict: {
      if (kDictMethods.count(name)) return bound_method(object, name);
      const Value* found = object.as_dict().find(std::string_view(name));
      return found ? *found : missing_attribute(object, name);
    }
    case Value::Type::String:
      if (kStrMethods.count(name)) return bound_method(object, name);
      break;
    case Value::Type::List:
      if (kListMethods.count(name) && object.as_list().kind == SequenceKind::List) return bound_method(object, name);
      if ((name == "count" || name == "index") && object.as_list().is_subscriptable()) return bound_method(object, name);
      break;
    case Value::Type::Namespace: {
      const Value* found = object.as_namespace().attributes.find(std::string_view(name));
      if (found) return *found;
      break;
    }
    case Value::Type::Bool:
    case Value::Type::Int:
    case Value::Type::Float:
      // The number attributes Python has (methods such as bit_length() are not offered).
      if (name == "real") return object.is_float() ? object : Value(object.as_int());
      if (name == "imag") return object.is_float() ? Value(0.0) : Value(0);
      break;
    default: break;
  }
  return missing_attribute(object, name);
}

Value get_item(const Value& object, const Value& key) {
  require_defined(object);
  if (object.is_dict()) {
    if (!(key.is_list() && key.as_list().kind == SequenceKind::List) && !key.is_dict()) {
      const Value* found = object.as_dict().find(key);
      if (found) return *found;
    }
  } else if (((object.is_list() && object.as_list().is_subscriptable()) || object.is_string()) &&
             (key.is_int() || key.is_bool())) {
    int64_t index = key.as_int();
    if (object.is_list()) {
      const auto& items = object.as_list().items;
      if (index < 0) index += static_cast<int64_t>(items.size());
      if (index >= 0 && index < static_cast<int64_t>(items.size())) return items[static_cast<size_t>(index)];
    } else {
      std::u32string cps = decode_utf8(object.as_string());
      if (index < 0) index += static_cast<int64_t>(cps.size());
      if (index >= 0 && index < static_cast<int64_t>(cps.size())) {
        std::string one;
        append_utf8(one, cps[static_cast<size_t>(index)]);
        return Value(std::move(one));
      }
    }
    return Value::undefined(fmt::format("{} has no element {}", object_description(object), key.as_int()));
  }
  // jinja2 falls back to attribute lookup for string keys (so ns['x'] and d['items'] work).
  if (key.is_string()) return get_attribute(object, key.as_string());
  return Value::undefined(fmt::format("{} has no element {}", object_description(object), repr(key)));
}

Value get_slice(const Value& object, const Value& start_value, const Value& stop_value, const Value& step_value) {
  // jinja2 compiles slices to a plain Python subscript (no lenient getitem), so slicing
  // anything but a sequence is an error, not undefined.
  require_defined(object);
  if (object.is_dict()) template_fail("unhashable type: 'slice'");
  if (!object.is_string() && !(object.is_list() && object.as_list().is_subscriptable()))
    template_fail("'{}' object is not subscriptable", type_name(object));
  auto is_bound = [](const Value& v) { return v.is_none() || v.is_int() || v.is_bool(); };
  if (!is_bound(start_value) || !is_bound(stop_value) || !is_bound(step_value))
    template_fail("slice indices must be integers or None or have an __index__ method");
  int64_t step = step_value.is_none() ? 1 : step_value.as_int();
  if (step == 0) template_fail("slice step cannot be zero");
  std::u32string cps;
  int64_t length;
  if (object.is_string()) {
    cps = decode_utf8(object.as_string());
    length = static_cast<int64_t>(cps.size());
  } else {
    length = static_cast<int64_t>(object.as_list().items.size());
  }
  // Python's PySlice_AdjustIndices.
  auto adjust = [&](const Value& bound, int64_t fallback) {
    if (bound.is_none()) return fallback;
    int64_t i = bound.as_int();
    if (i < 0) {
      i += length;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= length) {
      i = step < 0 ? length - 1 : length;
    }
    return i;
  };
  int64_t start = adjust(start_value, step < 0 ? length - 1 : 0);
  int64_t stop = adjust(stop_value, step < 0 ? -1 : length);
  std::vector<size_t> picks;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) picks.push_back(static_cast<size_t>(i));
  if (object.is_string()) {
    std::u32string out;
    for (size_t i : picks) out.push_back(cps[i]);
    return Value(encode_utf8(out));
  }
  std::vector<Value> items;
  for (size_t i : picks) items.push_back(object.as_list().items[i]);
  return Value::list(std::move(items), object.as_list().is_tuple());
}

Value get_attribute_path(const Value& object, std::string_view path) {
  Value current = object;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part(path.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    current = get_item(current, numeric ? Value(static_cast<int64_t>(std::stoll(part))) : Value(part));
    if (dot == std::string_view::npos) return current;
    start = dot + 1;
  }
}

DictData make_globals() {
  DictData globals;
  auto add = [&](const char* name, std::function<Value(CallArgs&)> fn) {
    globals.entries.emplace_back(Value(name), Value::callable(name, std::move(fn)));
  };
  add("range", [](CallArgs& args) {
    Params p("range", args, {"start", "stop", "step"});
    if (!p.has(0)) template_fail("range expected at least 1 argument, got 0");
    int64_t start = p.has(1) ? p.get_int(0, 0) : 0;
    int64_t stop = p.has(1) ? p.get_int(1, 0) : p.get_int(0, 0);
    int64_t step = p.get_int(2, 1);
    if (step == 0) template_fail("range() arg 3 must not be zero");
    int64_t length = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0)
                              : (start > stop ? (start - stop - step - 1) / -step : 0);
    if (length > kMaxRangeLength)
      template_fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE ({}).", kMaxRangeLength);
    ListData range;
    range.kind = SequenceKind::Range;
    range.type_label = "range";
    range.display = step == 1 ? fmt::format("range({}, {})", start, stop) : fmt::format("range({}, {}, {})", start, stop, step);
    for (int64_t i = 0; i < length; ++i) range.items.emplace_back(start + i * step);
    return Value::sequence(std::move(range));
  });
  auto keyword_dict = [](const char* function, CallArgs& args) {
    if (args.positional.size() > 1) template_fail("{} expected at most 1 positional argument", function);
    DictData dict;
    if (!args.positional.empty()) {
      const Value& source = args.positional[0];
      if (source.is_dict()) dict = source.as_dict();
      else
        for (const Value& pair : iterate(source)) {
          std::vector<Value> kv = iterate(pair);
          if (kv.size() != 2) template_fail("{}: sequence elements must have length 2", function);
          dict.set(kv[0], kv[1]);
        }
    }
    for (auto& [name, value] : args.keywords) dict.set(Value(name), value);
    return dict;
  };
  add("dict", [keyword_dict](CallArgs& args) { return Value::dict(keyword_dict("dict", args)); });
  add("namespace", [keyword_dict](CallArgs& args) { return Value::make_namespace(keyword_dict("namespace", args)); });
  add("joiner", [](CallArgs& args) {
    Params p("joiner", args, {"sep"});
    std::string separator = p.has(0) ? to_display(p.get(0)) : ", ";
    auto used = std::make_shared<bool>(false);
    return Value::callable("joiner", [separator, used](CallArgs&) {
      if (!*used) {
        *used = true;
        return Value("");
      }
      return Value(separator);
    });
  });
  add("raise_exception", [](CallArgs& args) -> Value {
    Params p("raise_exception", args, {"message"});
    throw TemplateRaised(to_display(p.get(0)));
  });
  add("strftime_now", [](CallArgs& args) {
    Params p("strftime_now", args, {"format"});
    const std::string format = require_string_arg("strftime_now", p.get(0));
    std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    std::string out(256 + format.size() * 8, '\0');
    size_t written = format.empty() ? 0 : std::strftime(out.data(), out.size(), format.c_str(), &local);
    out.resize(written);
    return Value(std::move(out));
  });
  return globals;
}

}  // namespace tachyon::jinja
