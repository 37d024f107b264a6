#include "tokenizer/jinja_interpreter.h"

#include "tokenizer/jinja_builtins.h"
#include "tokenizer/jinja_operators.h"

namespace tachyon::jinja {

const Value* Scope::find(std::string_view name) const {
  for (const Scope* scope = this; scope; scope = scope->parent.get())
    for (const auto& [key, value] : scope->variables)
      if (key == name) return &value;
  return nullptr;
}

void Scope::set(const std::string& name, Value value) {
  for (auto& [key, existing] : variables) {
    if (key == name) {
      existing = std::move(value);
      return;
    }
  }
  variables.emplace_back(name, std::move(value));
}

namespace {

using ScopePtr = std::shared_ptr<Scope>;

enum class Flow { Normal, Break, Continue };

ScopePtr child_of(const ScopePtr& parent) {
  auto scope = std::make_shared<Scope>();
  scope->parent = parent;
  return scope;
}

class Interpreter {
 public:
  std::string render(const StmtList& program, const DictData& context) {
    auto globals = std::make_shared<Scope>();
    for (auto& [name, value] : make_globals().entries) globals->set(name.as_string(), value);
    for (const auto& [name, value] : context.entries)
      if (name.is_string()) globals->set(name.as_string(), value);
    std::string out;
    out_ = &out;
    try {
      exec_block(program, child_of(globals));
    } catch (const TemplateRaised&) {
      throw;
    } catch (const TemplateError& error) {
      throw TemplateError(fmt::format("line {}: {}", line_, error.what()));
    }
    return out;
  }

 private:
  std::string* out_ = nullptr;
  int line_ = 0;
  int depth_ = 0;
  int macro_depth_ = 0;
  int64_t steps_ = 0;

  // Bounds native recursion (statement and expression nesting, including through macros).
  struct DepthGuard {
    explicit DepthGuard(int& counter, int limit, const char* what) : depth(counter) {
      if (++depth > limit) {
        --depth;
        template_fail("{} nested more than {} levels deep", what, limit);
      }
    }
    ~DepthGuard() { --depth; }
    int& depth;
  };

  void step() {
    if (++steps_ > kMaxRenderSteps)
      template_fail("template ran more than {} steps (statements, loop iterations, calls)", kMaxRenderSteps);
  }

  void emit(std::string_view text) {
    out_->append(text);
    if (out_->size() > kMaxOutputBytes) template_fail("rendered output exceeds {} bytes", kMaxOutputBytes);
  }

  std::string capture(const StmtList& body, const ScopePtr& scope) {
    std::string buffer;
    std::string* saved = out_;
    out_ = &buffer;
    try {
      exec_block(body, scope);
    } catch (...) {
      out_ = saved;
      throw;
    }
    out_ = saved;
    return buffer;
  }

  // ---- statements ----

  Flow exec_block(const StmtList& body, const ScopePtr& scope) {
    for (const auto& stmt : body) {
      Flow flow = exec(*stmt, scope);
      if (flow != Flow::Normal) return flow;
    }
    return Flow::Normal;
  }

  Flow exec(const Stmt& stmt, const ScopePtr& scope) {
    DepthGuard guard(depth_, kMaxEvaluationDepth, "template evaluation");
    line_ = stmt.line;
    step();
    switch (stmt.kind) {
      case StmtKind::Text: emit(stmt.text); return Flow::Normal;
      case StmtKind::Output: emit(to_display(eval(*stmt.expr, scope))); return Flow::Normal;
      case StmtKind::If:
        for (const IfBranch& branch : stmt.branches)
          if (!branch.condition || truthy(eval(*branch.condition, scope))) return exec_block(branch.body, scope);
        return Flow::Normal;
      case StmtKind::For: return exec_for(stmt, scope);
      case StmtKind::Set: assign(stmt.target, eval(*stmt.expr, scope), *scope); return Flow::Normal;
      case StmtKind::SetBlock: {
        Value value(capture(stmt.body, scope));
        if (stmt.expr) value = apply_filter_chain(*stmt.expr, scope, value);
        assign(stmt.target, value, *scope);
        return Flow::Normal;
      }
      case StmtKind::Macro: scope->set(stmt.name, make_macro(stmt, stmt.name, scope)); return Flow::Normal;
      case StmtKind::CallBlock: {
        const Expr& call = *stmt.expr;
        Value callee = eval(*call.operands[0], scope);
        CallArgs args = eval_args(call, scope);
        args.keywords.emplace_back("caller", make_macro(stmt, "caller", scope));
        emit(to_display(invoke(callee, args)));
        return Flow::Normal;
      }
      case StmtKind::FilterBlock: {
        Value body(capture(stmt.body, scope));
        emit(to_display(apply_filter_chain(*stmt.expr, scope, body)));
        return Flow::Normal;
      }
      case StmtKind::With: {
        ScopePtr inner = child_of(scope);
        for (const MacroParam& binding : stmt.params) inner->set(binding.name, eval(*binding.default_value, scope));
        return exec_block(stmt.body, inner);
      }
      case StmtKind::Scope: return exec_block(stmt.body, scope);
      case StmtKind::Break: return Flow::Break;
      case StmtKind::Continue: return Flow::Continue;
    }
    return Flow::Normal;
  }

  static Value make_loop(const std::vector<Value>& items, size_t index) {
    int64_t length = static_cast<int64_t>(items.size());
    int64_t i = static_cast<int64_t>(index);
    DictData loop;
    loop.entries.reserve(12);
    loop.entries.emplace_back(Value("index"), Value(i + 1));
    loop.entries.emplace_back(Value("index0"), Value(i));
    loop.entries.emplace_back(Value("revindex"), Value(length - i));
    loop.entries.emplace_back(Value("revindex0"), Value(length - i - 1));
    loop.entries.emplace_back(Value("first"), Value(i == 0));
    loop.entries.emplace_back(Value("last"), Value(i == length - 1));
    loop.entries.emplace_back(Value("length"), Value(length));
    loop.entries.emplace_back(Value("depth"), Value(1));
    loop.entries.emplace_back(Value("depth0"), Value(0));
    if (i > 0) loop.entries.emplace_back(Value("previtem"), items[index - 1]);
    if (i + 1 < length) loop.entries.emplace_back(Value("nextitem"), items[index + 1]);
    loop.entries.emplace_back(Value("cycle"), Value::callable("cycle", [i](CallArgs& args) {
      if (args.positional.empty()) template_fail("no items for cycling given");
      return args.positional[static_cast<size_t>(i) % args.positional.size()];
    }));
    return Value::dict(std::move(loop));
  }

  Flow exec_for(const Stmt& stmt, const ScopePtr& scope) {
    std::vector<Value> items = iterate(eval(*stmt.expr, scope));
    if (stmt.loop_filter) {
      std::vector<Value> kept;
      for (Value& item : items) {
        step();
        ScopePtr probe = child_of(scope);
        assign(stmt.target, item, *probe);
        if (truthy(eval(*stmt.loop_filter, probe))) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    // jinja2 runs the else block unless some iteration reached the end of the body, so a loop
    // whose every pass ended in break or continue also gets it.
    bool completed_an_iteration = false;
    for (size_t i = 0; i < items.size(); ++i) {
      step();
      line_ = stmt.line;
      ScopePtr iteration = child_of(scope);
      assign(stmt.target, items[i], *iteration);
      if (stmt.uses_loop) iteration->set("loop", make_loop(items, i));
      Flow flow = exec_block(stmt.body, iteration);
      if (flow == Flow::Break) break;
      completed_an_iteration |= flow == Flow::Normal;
    }
    if (completed_an_iteration || stmt.else_body.empty()) return Flow::Normal;
    return exec_block(stmt.else_body, child_of(scope));
  }

  void assign(const AssignTarget& target, const Value& value, Scope& scope) {
    switch (target.kind) {
      case AssignTarget::Kind::Name: scope.set(target.name, value); return;
      case AssignTarget::Kind::Tuple: {
        std::vector<Value> parts = iterate(value);
        if (parts.size() > target.items.size())
          template_fail("too many values to unpack (expected {})", target.items.size());
        if (parts.size() < target.items.size())
          template_fail("not enough values to unpack (expected {}, got {})", target.items.size(), parts.size());
        for (size_t i = 0; i < parts.size(); ++i) assign(target.items[i], parts[i], scope);
        return;
      }
      case AssignTarget::Kind::NamespaceAttribute: {
        const Value* object = scope.find(target.name);
        if (!object || !object->is_namespace()) template_fail("cannot assign attribute on non-namespace object");
        object->as_namespace().attributes.set(Value(target.attribute), value);
        return;
      }
    }
  }

  // ---- macros ----

  // A macro (or the `caller` of a call block) closes over the scope it was defined in. The
  // scope is held weakly because the macro value itself lives in that scope.
  Value make_macro(const Stmt& definition, const std::string& name, const ScopePtr& scope) {
    std::weak_ptr<Scope> defining_scope = scope;
    const Stmt* macro = &definition;
    return Value::callable(
        name, [this, macro, name, defining_scope](CallArgs& args) { return invoke_macro(*macro, name, defining_scope, args); },
        true);
  }

  Value invoke_macro(const Stmt& macro, const std::string& name, const std::weak_ptr<Scope>& defining_scope,
                     CallArgs& args) {
    ScopePtr parent = defining_scope.lock();
    if (!parent) template_fail("macro '{}' called after the scope that defined it ended", name);
    DepthGuard guard(macro_depth_, kMaxMacroCallDepth, "macro calls");
    ScopePtr scope = child_of(parent);
    std::vector<bool> bound(macro.params.size(), false);
    std::vector<Value> extra_positional;
    if (args.positional.size() > macro.params.size() && !macro.uses_varargs)
      template_fail("macro '{}' takes not more than {} argument(s)", name, macro.params.size());
    for (size_t i = 0; i < args.positional.size(); ++i) {
      if (i < macro.params.size()) {
        scope->set(macro.params[i].name, args.positional[i]);
        bound[i] = true;
      } else {
        extra_positional.push_back(args.positional[i]);
      }
    }
    DictData extra_keywords;
    bool caller_given = false;
    for (auto& [keyword, value] : args.keywords) {
      if (keyword == "caller" && macro.uses_caller) {
        scope->set("caller", value);
        caller_given = true;
        continue;
      }
      size_t index = 0;
      while (index < macro.params.size() && macro.params[index].name != keyword) ++index;
      if (index == macro.params.size()) {
        if (!macro.uses_kwargs) template_fail("macro '{}' takes no keyword argument '{}'", name, keyword);
        extra_keywords.set(Value(keyword), value);
        continue;
      }
      if (bound[index]) template_fail("macro '{}' got multiple values for argument '{}'", name, keyword);
      scope->set(keyword, value);
      bound[index] = true;
    }
    for (size_t i = 0; i < macro.params.size(); ++i) {
      if (bound[i]) continue;
      const MacroParam& param = macro.params[i];
      scope->set(param.name, param.default_value
                                 ? eval(*param.default_value, scope)
                                 : Value::undefined(fmt::format("parameter '{}' was not provided", param.name)));
    }
    if (macro.uses_caller && !caller_given) scope->set("caller", Value::undefined("No caller defined"));
    scope->set("varargs", Value::list(std::move(extra_positional), true));
    scope->set("kwargs", Value::dict(std::move(extra_keywords)));
    return Value(capture(macro.body, scope));
  }

  Value invoke(const Value& callee, CallArgs& args) {
    require_defined(callee);
    if (!callee.is_callable()) template_fail("'{}' object is not callable", type_name(callee));
    step();
    return callee.as_callable().invoke(args);
  }

  // ---- expressions ----

  CallArgs eval_args(const Expr& call, const ScopePtr& scope) {
    CallArgs args;
    for (size_t i = 1; i < call.operands.size(); ++i) args.positional.push_back(eval(*call.operands[i], scope));
    for (const Keyword& keyword : call.keywords) args.keywords.emplace_back(keyword.name, eval(*keyword.value, scope));
    return args;
  }

  // Evaluates a filter chain whose innermost input is `input` ({% filter %} and {% set %} blocks).
  Value apply_filter_chain(const Expr& filter, const ScopePtr& scope, const Value& input) {
    Value base = filter.operands[0] ? apply_filter_chain(*filter.operands[0], scope, input) : input;
    CallArgs args = eval_args(filter, scope);
    return call_filter(filter.name, base, args);
  }

  Value eval(const Expr& expr, const ScopePtr& scope) {
    DepthGuard guard(depth_, kMaxEvaluationDepth, "template evaluation");
    line_ = expr.line;
    switch (expr.kind) {
      case ExprKind::Literal: return expr.literal;
      case ExprKind::Name: {
        const Value* found = scope->find(expr.name);
        return found ? *found : Value::undefined(fmt::format("'{}' is undefined", expr.name));
      }
      case ExprKind::Attribute: {
        Value object = eval(*expr.operands[0], scope);
        require_defined(object);
        return get_attribute(object, expr.name);
      }
      case ExprKind::Item: {
        Value object = eval(*expr.operands[0], scope);
        require_defined(object);
        const Expr& key = *expr.operands[1];
        if (key.kind == ExprKind::Slice) {
          auto bound = [&](const ExprPtr& part) { return part ? eval(*part, scope) : Value::none(); };
          return get_slice(object, bound(key.operands[0]), bound(key.operands[1]), bound(key.operands[2]));
        }
        return get_item(object, eval(key, scope));
      }
      case ExprKind::Slice: template_fail("slice outside of a subscript");
      case ExprKind::Call: {
        Value callee = eval(*expr.operands[0], scope);
        CallArgs args = eval_args(expr, scope);
        return invoke(callee, args);
      }
      case ExprKind::Filter: {
        Value input = eval(*expr.operands[0], scope);
        CallArgs args = eval_args(expr, scope);
        return call_filter(expr.name, input, args);
      }
      case ExprKind::Test: {
        Value subject = eval(*expr.operands[0], scope);
        CallArgs args = eval_args(expr, scope);
        return Value(call_test(expr.name, subject, args) != expr.negated);
      }
      case ExprKind::Not: return Value(!truthy(eval(*expr.operands[0], scope)));
      case ExprKind::Negate: return negate(eval(*expr.operands[0], scope));
      case ExprKind::Plus: return unary_plus(eval(*expr.operands[0], scope));
      case ExprKind::Binary: {
        Value left = eval(*expr.operands[0], scope);
        Value right = eval(*expr.operands[1], scope);
        return binary_operation(expr.name, left, right);
      }
      case ExprKind::Concat: {
        std::string text;
        for (const auto& part : expr.operands) {
          text += to_display(eval(*part, scope));
          check_string_size(text.size());
        }
        return Value(std::move(text));
      }
      case ExprKind::Compare: {
        Value left = eval(*expr.operands[0], scope);
        for (size_t i = 0; i < expr.compare_ops.size(); ++i) {
          Value right = eval(*expr.operands[i + 1], scope);
          if (!compare_operation(expr.compare_ops[i], left, right)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case ExprKind::And: {
        Value left = eval(*expr.operands[0], scope);
        return truthy(left) ? eval(*expr.operands[1], scope) : left;
      }
      case ExprKind::Or: {
        Value left = eval(*expr.operands[0], scope);
        return truthy(left) ? left : eval(*expr.operands[1], scope);
      }
      case ExprKind::Conditional: {
        if (truthy(eval(*expr.operands[1], scope))) return eval(*expr.operands[0], scope);
        if (expr.operands[2]) return eval(*expr.operands[2], scope);
        return Value::undefined("the inline if-expression evaluated to false and no else section was defined");
      }
      case ExprKind::List:
      case ExprKind::Tuple: {
        std::vector<Value> items;
        items.reserve(expr.operands.size());
        for (const auto& item : expr.operands) items.push_back(eval(*item, scope));
        return Value::list(std::move(items), expr.kind == ExprKind::Tuple);
      }
      case ExprKind::Dict: {
        DictData dict;
        for (size_t i = 0; i + 1 < expr.operands.size(); i += 2) {
          Value key = eval(*expr.operands[i], scope);
          if (key.is_list() && key.as_list().kind == SequenceKind::List) template_fail("unhashable type: 'list'");
          if (key.is_dict() || key.is_undefined()) template_fail("unhashable type: '{}'", type_name(key));
          dict.set(std::move(key), eval(*expr.operands[i + 1], scope));
        }
        return Value::dict(std::move(dict));
      }
    }
    template_fail("unsupported expression");
  }
};

}  // namespace

std::string render_program(const StmtList& program, const DictData& context) {
  return Interpreter().render(program, context);
}

}  // namespace tachyon::jinja
