#include "tokenizer/jinja_operators.h"

#include <cmath>
#include <cstdio>

#include "tokenizer/jinja_strings.h"

namespace tachyon::jinja {

namespace {

[[noreturn]] void unsupported(std::string_view op, const Value& left, const Value& right) {
  template_fail("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(left), type_name(right));
}

[[noreturn]] void overflow() {
  template_fail("integer overflow (Python's unbounded integers are limited to 64 bits here)");
}

int64_t checked_add(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) overflow();
  return r;
}
int64_t checked_sub(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_sub_overflow(a, b, &r)) overflow();
  return r;
}
int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) overflow();
  return r;
}

int64_t floor_div(int64_t a, int64_t b) {
  if (b == 0) template_fail("integer division or modulo by zero");
  if (a == INT64_MIN && b == -1) overflow();
  int64_t q = a / b;
  if (a % b != 0 && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t floor_mod(int64_t a, int64_t b) {
  if (b == 0) template_fail("integer division or modulo by zero");
  if (b == -1) return 0;
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

// CPython's float_divmod, so that // and % on floats round exactly like Python.
std::pair<double, double> float_divmod(double x, double y) {
  if (y == 0.0) template_fail("float division by zero");
  double mod = std::fmod(x, y);
  double div = (x - mod) / y;
  if (mod != 0.0) {
    if ((y < 0) != (mod < 0)) {
      mod += y;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, y);
  }
  double floordiv;
  if (div != 0.0) {
    floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = std::copysign(0.0, x / y);
  }
  return {floordiv, mod};
}

Value integer_power(int64_t base, int64_t exponent) {
  if (exponent < 0) {
    if (base == 0) template_fail("0.0 cannot be raised to a negative power");
    return Value(std::pow(static_cast<double>(base), static_cast<double>(exponent)));
  }
  int64_t result = 1;
  while (exponent > 0) {
    if (exponent & 1) result = checked_mul(result, base);
    exponent >>= 1;
    if (exponent > 0) base = checked_mul(base, base);
  }
  return Value(result);
}

Value repeat(const Value& sequence, int64_t times) {
  if (times < 0) times = 0;
  if (sequence.is_string()) {
    const std::string& text = sequence.as_string();
    if (!text.empty() && static_cast<uint64_t>(times) > kMaxOutputBytes / text.size()) check_string_size(kMaxOutputBytes + 1);
    std::string out;
    out.reserve(text.size() * static_cast<size_t>(times));
    for (int64_t i = 0; i < times; ++i) out += text;
    return Value(std::move(out));
  }
  const ListData& list = sequence.as_list();
  if (!list.items.empty() && static_cast<uint64_t>(times) > kMaxListLength / list.items.size())
    template_fail("list grows past {} items", kMaxListLength);
  std::vector<Value> items;
  for (int64_t i = 0; i < times; ++i) items.insert(items.end(), list.items.begin(), list.items.end());
  return Value::list(std::move(items), list.is_tuple());
}

}  // namespace

Value binary_operation(std::string_view op, const Value& left, const Value& right) {
  require_defined(left);
  // str.__mod__ formats any object, undefined included ('%s' % undefined gives '').
  if (op == "%" && left.is_string()) return Value(percent_format(left.as_string(), right));
  require_defined(right);
  bool numbers = left.is_number() && right.is_number();
  bool any_float = numbers && (left.is_float() || right.is_float());
  if (op == "+") {
    if (numbers && !any_float) return Value(checked_add(left.as_int(), right.as_int()));
    if (numbers) return Value(left.as_float() + right.as_float());
    if (left.is_string() && right.is_string()) {
      check_string_size(left.as_string().size() + right.as_string().size());
      return Value(left.as_string() + right.as_string());
    }
    if (left.is_list() && right.is_list() && left.as_list().is_plain() && left.as_list().kind == right.as_list().kind) {
      std::vector<Value> items = left.as_list().items;
      if (items.size() + right.as_list().items.size() > kMaxListLength) template_fail("list grows past {} items", kMaxListLength);
      items.insert(items.end(), right.as_list().items.begin(), right.as_list().items.end());
      return Value::list(std::move(items), left.as_list().is_tuple());
    }
    if (left.is_string()) template_fail("can only concatenate str (not \"{}\") to str", type_name(right));
    if (left.is_list() && left.as_list().kind == SequenceKind::List)
      template_fail("can only concatenate list (not \"{}\") to list", type_name(right));
    unsupported(op, left, right);
  }
  if (op == "-") {
    if (!numbers) unsupported(op, left, right);
    if (any_float) return Value(left.as_float() - right.as_float());
    return Value(checked_sub(left.as_int(), right.as_int()));
  }
  if (op == "*") {
    if (numbers && !any_float) return Value(checked_mul(left.as_int(), right.as_int()));
    if (numbers) return Value(left.as_float() * right.as_float());
    auto repeatable = [](const Value& v) { return v.is_string() || (v.is_list() && v.as_list().is_plain()); };
    if (repeatable(left) && (right.is_int() || right.is_bool())) return repeat(left, right.as_int());
    if (repeatable(right) && (left.is_int() || left.is_bool())) return repeat(right, left.as_int());
    unsupported(op, left, right);
  }
  if (op == "/") {
    if (!numbers) unsupported(op, left, right);
    if (right.as_float() == 0.0) template_fail("division by zero");
    return Value(left.as_float() / right.as_float());
  }
  if (op == "//") {
    if (!numbers) unsupported(op, left, right);
    if (!any_float) return Value(floor_div(left.as_int(), right.as_int()));
    return Value(float_divmod(left.as_float(), right.as_float()).first);
  }
  if (op == "%") {
    if (left.is_string()) return Value(percent_format(left.as_string(), right));
    if (!numbers) unsupported(op, left, right);
    if (!any_float) return Value(floor_mod(left.as_int(), right.as_int()));
    return Value(float_divmod(left.as_float(), right.as_float()).second);
  }
  if (op == "**") {
    if (!numbers) unsupported(op, left, right);
    if (!any_float) return integer_power(left.as_int(), right.as_int());
    if (left.as_float() == 0.0 && right.as_float() < 0) template_fail("0.0 cannot be raised to a negative power");
    if (left.as_float() < 0 && std::floor(right.as_float()) != right.as_float())
      template_fail("negative number raised to a fractional power (complex result) is not supported");
    return Value(std::pow(left.as_float(), right.as_float()));
  }
  template_fail("unknown operator '{}'", op);
}

Value negate(const Value& operand) {
  require_defined(operand);
  if (operand.is_float()) return Value(-operand.as_float());
  if (operand.is_int() || operand.is_bool()) {
    if (operand.as_int() == INT64_MIN) overflow();
    return Value(-operand.as_int());
  }
  template_fail("bad operand type for unary -: '{}'", type_name(operand));
}

Value unary_plus(const Value& operand) {
  require_defined(operand);
  if (operand.is_float()) return operand;
  if (operand.is_int() || operand.is_bool()) return Value(operand.as_int());
  template_fail("bad operand type for unary +: '{}'", type_name(operand));
}

bool contains(const Value& container, const Value& item) {
  switch (container.type()) {
    case Value::Type::Undefined: return false;  // jinja2's Undefined iterates as empty
    case Value::Type::String:
      if (!item.is_string())
        template_fail("'in <string>' requires string as left operand, not {}", type_name(item));
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Type::List: {
      const ListData& list = container.as_list();
      if (list.kind == SequenceKind::Iterator) {
        // `in` advances a Python iterator up to and including the match.
        if (!list.deferred_error.empty()) throw TemplateError(list.deferred_error);
        while (list.consumed < list.items.size())
          if (values_equal(list.items[list.consumed++], item)) return true;
        return false;
      }
      for (const Value& element : list.items)
        if (values_equal(element, item)) return true;
      return false;
    }
    case Value::Type::Dict:
      if (item.is_dict() || (item.is_list() && item.as_list().kind == SequenceKind::List))
        template_fail("unhashable type: '{}'", type_name(item));
      return container.as_dict().find(item) != nullptr;
    default: template_fail("argument of type '{}' is not iterable", type_name(container));
  }
}

bool compare_operation(std::string_view op, const Value& left, const Value& right) {
  if (op == "==") return values_equal(left, right);
  if (op == "!=") return !values_equal(left, right);
  if (op == "in") return contains(right, left);
  if (op == "not in") return !contains(right, left);
  int order = compare_values(left, right, op);
  if (op == "<") return order < 0;
  if (op == "<=") return order <= 0;
  if (op == ">") return order > 0;
  return order >= 0;
}

std::string percent_format(const std::string& format, const Value& args) {
  bool is_tuple = args.is_list() && args.as_list().is_tuple();
  std::vector<Value> positional = is_tuple ? args.as_list().items : std::vector<Value>{args};
  size_t next_arg = 0;
  bool used_mapping = false;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out.push_back(format[i]);
      continue;
    }
    if (++i >= format.size()) template_fail("incomplete format");
    Value arg;
    bool have_arg = false;
    if (format[i] == '(') {
      size_t close = format.find(')', i);
      if (close == std::string::npos) template_fail("incomplete format key");
      if (!args.is_dict()) template_fail("format requires a mapping");
      const Value* found = args.as_dict().find(std::string_view(format).substr(i + 1, close - i - 1));
      if (!found) template_fail("format key '{}' not found", format.substr(i + 1, close - i - 1));
      arg = *found;
      have_arg = used_mapping = true;
      i = close + 1;
    }
    std::string flags;
    while (i < format.size() && std::string_view("-+ #0").find(format[i]) != std::string_view::npos) flags += format[i++];
    std::string width, precision;
    while (i < format.size() && format[i] >= '0' && format[i] <= '9') width += format[i++];
    bool has_precision = i < format.size() && format[i] == '.';
    if (has_precision)
      for (++i; i < format.size() && format[i] >= '0' && format[i] <= '9';) precision += format[i++];
    while (i < format.size() && (format[i] == 'h' || format[i] == 'l' || format[i] == 'L')) ++i;
    if (i >= format.size()) template_fail("incomplete format");
    char conversion = format[i];
    if (conversion == '%') {
      out.push_back('%');
      continue;
    }
    if (!have_arg) {
      if (next_arg >= positional.size()) template_fail("not enough arguments for format string");
      arg = positional[next_arg++];
    }
    std::string spec = "%" + flags + width + (has_precision ? "." + (precision.empty() ? "0" : precision) : "");
    char buffer[512];
    std::string piece;
    switch (conversion) {
      case 's':
      case 'r':
      case 'a': {
        piece = conversion == 's' ? to_display(arg) : repr(arg);
        if (has_precision) {
          std::u32string cps = decode_utf8(piece);
          size_t keep = static_cast<size_t>(precision.empty() ? 0 : std::stoul(precision));
          if (cps.size() > keep) piece = encode_utf8(std::u32string_view(cps).substr(0, keep));
        }
        size_t pad = width.empty() ? 0 : std::stoul(width);
        size_t length = count_code_points(piece);
        if (pad > length) {
          if (flags.find('-') != std::string::npos) piece += std::string(pad - length, ' ');
          else piece = std::string(pad - length, ' ') + piece;
        }
        break;
      }
      case 'd':
      case 'i':
      case 'u':
      case 'x':
      case 'X':
      case 'o': {
        if (!arg.is_number() || (arg.is_float() && (conversion == 'x' || conversion == 'X' || conversion == 'o')))
          template_fail("%{} format: a real number is required, not {}", conversion, type_name(arg));
        int64_t n = arg.is_float() ? static_cast<int64_t>(arg.as_float()) : arg.as_int();
        char c = conversion == 'i' || conversion == 'u' ? 'd' : conversion;
        std::snprintf(buffer, sizeof buffer, (spec + "ll" + c).c_str(), static_cast<long long>(n));
        piece = buffer;
        break;
      }
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G': {
        if (!arg.is_number()) template_fail("must be real number, not {}", type_name(arg));
        std::snprintf(buffer, sizeof buffer, (spec + conversion).c_str(), arg.as_float());
        piece = buffer;
        break;
      }
      case 'c': {
        if (arg.is_string() && count_code_points(arg.as_string()) == 1) piece = arg.as_string();
        else if (arg.is_int()) append_utf8(piece, static_cast<char32_t>(arg.as_int()));
        else template_fail("%c requires an int or a unicode character");
        break;
      }
      default: template_fail("unsupported format character '{}'", conversion);
    }
    out += piece;
    check_string_size(out.size());
  }
  // Python only insists that every argument is used when the argument is not "mapping-like"
  // (anything with __getitem__ other than a tuple or str: dicts, lists, jinja2's Undefined).
  bool mapping_like = args.is_dict() || args.is_undefined() || (args.is_list() && !is_tuple);
  if (!used_mapping && !mapping_like && next_arg < positional.size())
    template_fail("not all arguments converted during string formatting");
  return out;
}

}  // namespace tachyon::jinja
