#include "tokenizer/jinja_parser.h"

#include <initializer_list>

namespace tachyon::jinja {

namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  StmtList parse_all() {
    StmtList body = subparse({});
    if (current().type != TokenType::End) fail_unknown_tag(current().text);
    return body;
  }

 private:
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;  // break/continue are only valid inside a for body
  // How often each of the names the interpreter special-cases has been read so far; a
  // statement compares the counts before and after its body to see whether the body reads it.
  int loop_reads_ = 0, varargs_reads_ = 0, kwargs_reads_ = 0, caller_reads_ = 0;

  // Counts nesting of recursive grammar rules so that deeply nested input fails cleanly
  // instead of exhausting the native stack.
  struct DepthGuard {
    explicit DepthGuard(Parser& p) : parser(p) {
      if (++parser.depth_ > kMaxNestingDepth)
        template_fail("line {}: template nested more than {} levels deep", parser.current().line, kMaxNestingDepth);
    }
    ~DepthGuard() { --parser.depth_; }
    Parser& parser;
  };

  const Token& current() const { return tokens_[pos_]; }
  const Token& peek(size_t ahead = 1) const { return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)]; }
  const Token& next() {
    const Token& token = tokens_[pos_];
    if (pos_ + 1 < tokens_.size()) ++pos_;
    return token;
  }

  static std::string describe(const Token& token) {
    switch (token.type) {
      case TokenType::Text: return "template text";
      case TokenType::VariableBegin: return "'{{'";
      case TokenType::VariableEnd: return "end of print statement";
      case TokenType::BlockBegin: return "'{%'";
      case TokenType::BlockEnd: return "end of statement block";
      case TokenType::End: return "end of template";
      case TokenType::String: return "string";
      default: return "'" + token.text + "'";
    }
  }

  [[noreturn]] void fail_here(std::string_view what) const {
    template_fail("line {}: {}", current().line, what);
  }

  [[noreturn]] void fail_unknown_tag(const std::string& name) const {
    template_fail("line {}: encountered unknown tag '{}'", current().line, name);
  }

  bool at_name(std::string_view name) const { return current().type == TokenType::Name && current().text == name; }
  bool at_op(std::string_view op) const { return current().type == TokenType::Operator && current().text == op; }
  bool skip_name(std::string_view name) {
    if (!at_name(name)) return false;
    next();
    return true;
  }
  bool skip_op(std::string_view op) {
    if (!at_op(op)) return false;
    next();
    return true;
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op)) fail_here(fmt::format("expected '{}', got {}", op, describe(current())));
  }
  std::string expect_name() {
    if (current().type != TokenType::Name) fail_here(fmt::format("expected a name, got {}", describe(current())));
    return next().text;
  }
  void expect(TokenType type) {
    if (current().type != type) {
      Token wanted{type, "", 0, 0, 0};
      fail_here(fmt::format("expected {}, got {}", describe(wanted), describe(current())));
    }
    next();
  }

  static ExprPtr make(ExprKind kind, int line) {
    auto expr = std::make_unique<Expr>();
    expr->kind = kind;
    expr->line = line;
    return expr;
  }

  // ---- statements ----

  // Parses until a {% tag %} whose name is in end_names (left current, after its "{%") or the end.
  StmtList subparse(std::initializer_list<std::string_view> end_names) {
    DepthGuard guard(*this);
    StmtList body;
    while (current().type != TokenType::End) {
      const Token& token = current();
      if (token.type == TokenType::Text) {
        auto stmt = std::make_unique<Stmt>();
        stmt->kind = StmtKind::Text;
        stmt->line = token.line;
        stmt->text = next().text;
        body.push_back(std::move(stmt));
      } else if (token.type == TokenType::VariableBegin) {
        next();
        auto stmt = std::make_unique<Stmt>();
        stmt->kind = StmtKind::Output;
        stmt->line = token.line;
        stmt->expr = parse_tuple(true, {});
        expect(TokenType::VariableEnd);
        body.push_back(std::move(stmt));
      } else if (token.type == TokenType::BlockBegin) {
        next();
        for (std::string_view end_name : end_names)
          if (at_name(end_name)) return body;
        body.push_back(parse_statement());
        expect(TokenType::BlockEnd);
      } else {
        fail_here(fmt::format("unexpected {}", describe(token)));
      }
    }
    return body;
  }

  // The body of a block statement: skips the rest of the opening tag, parses up to one of
  // end_names and, with drop_end, consumes that name.
  StmtList parse_body(std::initializer_list<std::string_view> end_names, bool drop_end) {
    skip_op(":");
    expect(TokenType::BlockEnd);
    int line = current().line;
    StmtList body = subparse(end_names);
    if (current().type == TokenType::End) {
      std::string names;
      for (std::string_view name : end_names) names += (names.empty() ? "'" : " or '") + std::string(name) + "'";
      template_fail("line {}: unexpected end of template, expected {} to close the block above line {}",
                    current().line, names, line);
    }
    if (drop_end) next();
    return body;
  }

  StmtPtr parse_statement() {
    if (current().type != TokenType::Name) fail_here("tag name expected");
    const std::string name = current().text;
    auto stmt = std::make_unique<Stmt>();
    stmt->line = current().line;
    if (name == "if") return parse_if(std::move(stmt));
    if (name == "for") return parse_for(std::move(stmt));
    if (name == "set") return parse_set(std::move(stmt));
    if (name == "macro") return parse_macro(std::move(stmt));
    if (name == "call") return parse_call_block(std::move(stmt));
    if (name == "filter") {
      next();
      stmt->kind = StmtKind::FilterBlock;
      stmt->expr = parse_filter_chain(nullptr, true);
      stmt->body = parse_body({"endfilter"}, true);
      return stmt;
    }
    if (name == "with") return parse_with(std::move(stmt));
    if (name == "generation") {  // transformers' AssistantTracker extension: renders its body
      next();
      stmt->kind = StmtKind::Scope;
      stmt->body = parse_body({"endgeneration"}, true);
      return stmt;
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail_here(fmt::format("'{}' outside of a loop", name));
      next();
      stmt->kind = name == "break" ? StmtKind::Break : StmtKind::Continue;
      return stmt;
    }
    fail_unknown_tag(name);
  }

  StmtPtr parse_if(StmtPtr stmt) {
    next();
    stmt->kind = StmtKind::If;
    while (true) {
      IfBranch branch;
      branch.condition = parse_tuple(false, {});
      branch.body = parse_body({"elif", "else", "endif"}, false);
      stmt->branches.push_back(std::move(branch));
      std::string end = next().text;
      if (end == "elif") continue;
      if (end == "else") {
        IfBranch otherwise;
        otherwise.body = parse_body({"endif"}, true);
        stmt->branches.push_back(std::move(otherwise));
      }
      return stmt;
    }
  }

  StmtPtr parse_for(StmtPtr stmt) {
    next();
    stmt->kind = StmtKind::For;
    stmt->target = parse_assign_target(false, {"in"});
    if (!skip_name("in")) fail_here(fmt::format("expected 'in', got {}", describe(current())));
    stmt->expr = parse_tuple(false, {"recursive"});
    if (skip_name("if")) stmt->loop_filter = parse_expression(true);
    if (at_name("recursive")) fail_here("recursive for loops are not supported");
    ++loop_depth_;
    int loop_reads_before = loop_reads_;
    stmt->body = parse_body({"endfor", "else"}, false);
    stmt->uses_loop = loop_reads_ != loop_reads_before;
    --loop_depth_;
    if (next().text == "else") stmt->else_body = parse_body({"endfor"}, true);
    return stmt;
  }

  StmtPtr parse_set(StmtPtr stmt) {
    next();
    stmt->target = parse_assign_target(true, {});
    if (skip_op("=")) {
      stmt->kind = StmtKind::Set;
      stmt->expr = parse_tuple(true, {});
      return stmt;
    }
    stmt->kind = StmtKind::SetBlock;
    if (at_op("|")) stmt->expr = parse_filter_chain(nullptr, false);
    stmt->body = parse_body({"endset"}, true);
    return stmt;
  }

  void parse_signature(std::vector<MacroParam>& params) {
    expect_op("(");
    while (!at_op(")")) {
      if (!params.empty()) expect_op(",");
      MacroParam param;
      param.name = expect_name();
      if (skip_op("=")) param.default_value = parse_expression(true);
      else if (!params.empty() && params.back().default_value) fail_here("non-default argument follows default argument");
      params.push_back(std::move(param));
    }
    expect_op(")");
  }

  // Parses a macro or call-block body, noting which special names it reads.
  void parse_callable_body(Stmt& stmt, std::string_view end_name) {
    int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    int varargs_before = varargs_reads_, kwargs_before = kwargs_reads_, caller_before = caller_reads_;
    stmt.body = parse_body({end_name}, true);
    stmt.uses_varargs = varargs_reads_ != varargs_before;
    stmt.uses_kwargs = kwargs_reads_ != kwargs_before;
    stmt.uses_caller = caller_reads_ != caller_before;
    loop_depth_ = saved_loop_depth;
  }

  StmtPtr parse_macro(StmtPtr stmt) {
    next();
    stmt->kind = StmtKind::Macro;
    stmt->name = expect_name();
    parse_signature(stmt->params);
    parse_callable_body(*stmt, "endmacro");
    return stmt;
  }

  StmtPtr parse_call_block(StmtPtr stmt) {
    next();
    stmt->kind = StmtKind::CallBlock;
    if (at_op("(")) parse_signature(stmt->params);
    stmt->expr = parse_expression(true);
    if (stmt->expr->kind != ExprKind::Call) fail_here("expected a call expression after 'call'");
    parse_callable_body(*stmt, "endcall");
    return stmt;
  }

  StmtPtr parse_with(StmtPtr stmt) {
    next();
    stmt->kind = StmtKind::With;
    while (current().type != TokenType::BlockEnd) {
      if (!stmt->params.empty()) expect_op(",");
      MacroParam binding;
      binding.name = expect_name();
      expect_op("=");
      binding.default_value = parse_expression(true);
      stmt->params.push_back(std::move(binding));
    }
    stmt->body = parse_body({"endwith"}, true);
    return stmt;
  }

  AssignTarget parse_assign_target(bool with_namespace, std::initializer_list<std::string_view> end_names) {
    auto parse_one = [&]() {
      AssignTarget target;
      target.name = expect_name();
      if (target.name == "true" || target.name == "false" || target.name == "none" || target.name == "True" ||
          target.name == "False" || target.name == "None")
        fail_here(fmt::format("can't assign to '{}'", target.name));
      if (with_namespace && skip_op(".")) {
        target.kind = AssignTarget::Kind::NamespaceAttribute;
        target.attribute = expect_name();
      }
      return target;
    };
    AssignTarget first = parse_one();
    if (!at_op(",")) return first;
    AssignTarget tuple;
    tuple.kind = AssignTarget::Kind::Tuple;
    tuple.items.push_back(std::move(first));
    while (skip_op(",")) {
      bool at_end = current().type == TokenType::BlockEnd || at_op("=") || at_op("|");
      for (std::string_view end_name : end_names) at_end |= at_name(end_name);
      if (at_end) break;
      tuple.items.push_back(parse_one());
    }
    for (const auto& item : tuple.items)
      if (item.kind != AssignTarget::Kind::Name) fail_here("can't assign to a namespace attribute inside a tuple");
    return tuple;
  }

  // ---- expressions ----

  // Expression or comma-separated tuple; stops at tag ends, ')' and the given names.
  ExprPtr parse_tuple(bool with_conditional, std::initializer_list<std::string_view> end_names,
                      bool explicit_parentheses = false) {
    int line = current().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      bool at_end = current().type == TokenType::VariableEnd || current().type == TokenType::BlockEnd || at_op(")");
      for (std::string_view end_name : end_names) at_end |= at_name(end_name);
      if (at_end) break;
      items.push_back(parse_expression(with_conditional));
      if (at_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parentheses) fail_here(fmt::format("expected an expression, got {}", describe(current())));
    }
    auto tuple = make(ExprKind::Tuple, line);
    tuple->operands = std::move(items);
    return tuple;
  }

  ExprPtr parse_expression(bool with_conditional) {
    DepthGuard guard(*this);
    return with_conditional ? parse_conditional() : parse_or();
  }

  ExprPtr parse_conditional() {
    ExprPtr value = parse_or();
    while (at_name("if")) {
      int line = next().line;
      auto conditional = make(ExprKind::Conditional, line);
      conditional->operands.push_back(std::move(value));
      conditional->operands.push_back(parse_or());
      conditional->operands.push_back(skip_name("else") ? parse_expression(true) : nullptr);
      value = std::move(conditional);
    }
    return value;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (at_name("or")) {
      auto node = make(ExprKind::Or, next().line);
      node->operands.push_back(std::move(left));
      node->operands.push_back(parse_and());
      left = std::move(node);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (at_name("and")) {
      auto node = make(ExprKind::And, next().line);
      node->operands.push_back(std::move(left));
      node->operands.push_back(parse_not());
      left = std::move(node);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (!at_name("not")) return parse_compare();
    DepthGuard guard(*this);
    auto node = make(ExprKind::Not, next().line);
    node->operands.push_back(parse_not());
    return node;
  }

  ExprPtr parse_compare() {
    int line = current().line;
    ExprPtr first = parse_math1();
    ExprPtr compare;
    while (true) {
      std::string op;
      const Token& token = current();
      if (token.type == TokenType::Operator &&
          (token.text == "==" || token.text == "!=" || token.text == "<" || token.text == "<=" || token.text == ">" ||
           token.text == ">=")) {
        op = token.text;
        next();
      } else if (at_name("in")) {
        op = "in";
        next();
      } else if (at_name("not") && peek().type == TokenType::Name && peek().text == "in") {
        op = "not in";
        next();
        next();
      } else {
        break;
      }
      if (!compare) {
        compare = make(ExprKind::Compare, line);
        compare->operands.push_back(std::move(first));
      }
      compare->compare_ops.push_back(op);
      compare->operands.push_back(parse_math1());
    }
    return compare ? std::move(compare) : std::move(first);
  }

  ExprPtr binary(std::string op, ExprPtr left, ExprPtr right, int line) {
    auto node = make(ExprKind::Binary, line);
    node->name = std::move(op);
    node->operands.push_back(std::move(left));
    node->operands.push_back(std::move(right));
    return node;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (at_op("+") || at_op("-")) {
      const Token& op = next();
      left = binary(op.text, std::move(left), parse_concat(), op.line);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr first = parse_math2();
    if (!at_op("~")) return first;
    auto concat = make(ExprKind::Concat, current().line);
    concat->operands.push_back(std::move(first));
    while (skip_op("~")) concat->operands.push_back(parse_math2());
    return concat;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      const Token& op = next();
      left = binary(op.text, std::move(left), parse_pow(), op.line);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (at_op("**")) {
      const Token& op = next();
      left = binary("**", std::move(left), parse_unary(true), op.line);
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr node;
    if (at_op("-") || at_op("+")) {
      const Token& op = next();
      node = make(op.text == "-" ? ExprKind::Negate : ExprKind::Plus, op.line);
      node->operands.push_back(parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& token = current();
    int line = token.line;
    if (token.type == TokenType::Name) {
      std::string name = next().text;
      auto node = make(ExprKind::Literal, line);
      if (name == "true" || name == "True") node->literal = Value(true);
      else if (name == "false" || name == "False") node->literal = Value(false);
      else if (name == "none" || name == "None") node->literal = Value::none();
      else {
        loop_reads_ += name == "loop";
        varargs_reads_ += name == "varargs";
        kwargs_reads_ += name == "kwargs";
        caller_reads_ += name == "caller";
        node->kind = ExprKind::Name;
        node->name = std::move(name);
      }
      return node;
    }
    if (token.type == TokenType::String) {
      std::string text;
      while (current().type == TokenType::String) text += next().text;  // adjacent literals concatenate
      auto node = make(ExprKind::Literal, line);
      node->literal = Value(std::move(text));
      return node;
    }
    if (token.type == TokenType::Integer || token.type == TokenType::Float) {
      auto node = make(ExprKind::Literal, line);
      node->literal = token.type == TokenType::Integer ? Value(token.int_value) : Value(token.float_value);
      next();
      return node;
    }
    if (skip_op("(")) {
      ExprPtr inner = parse_tuple(true, {}, true);
      expect_op(")");
      return inner;
    }
    if (skip_op("[")) {
      auto list = make(ExprKind::List, line);
      while (!at_op("]")) {
        if (!list->operands.empty()) expect_op(",");
        if (at_op("]")) break;
        list->operands.push_back(parse_expression(true));
      }
      expect_op("]");
      return list;
    }
    if (skip_op("{")) {
      auto dict = make(ExprKind::Dict, line);
      while (!at_op("}")) {
        if (!dict->operands.empty()) expect_op(",");
        if (at_op("}")) break;
        dict->operands.push_back(parse_expression(true));
        expect_op(":");
        dict->operands.push_back(parse_expression(true));
      }
      expect_op("}");
      return dict;
    }
    fail_here(fmt::format("unexpected {}", describe(token)));
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (at_op(".")) {
        int line = next().line;
        if (current().type == TokenType::Name) {
          auto attribute = make(ExprKind::Attribute, line);
          attribute->name = next().text;
          attribute->operands.push_back(std::move(node));
          node = std::move(attribute);
        } else if (current().type == TokenType::Integer) {
          auto item = make(ExprKind::Item, line);
          auto index = make(ExprKind::Literal, line);
          index->literal = Value(next().int_value);
          item->operands.push_back(std::move(node));
          item->operands.push_back(std::move(index));
          node = std::move(item);
        } else {
          fail_here("expected name or number after '.'");
        }
      } else if (at_op("[")) {
        int line = next().line;
        auto item = make(ExprKind::Item, line);
        item->operands.push_back(std::move(node));
        item->operands.push_back(parse_subscript());
        if (at_op(",")) fail_here("tuple subscripts are not supported");
        expect_op("]");
        node = std::move(item);
      } else if (at_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript() {
    int line = current().line;
    ExprPtr start;
    if (!at_op(":")) {
      start = parse_expression(true);
      if (!at_op(":")) return start;
    }
    next();  // ':'
    auto slice = make(ExprKind::Slice, line);
    slice->operands.push_back(std::move(start));
    slice->operands.push_back(at_op(":") || at_op("]") || at_op(",") ? nullptr : parse_expression(true));
    ExprPtr step;
    if (skip_op(":") && !at_op("]") && !at_op(",")) step = parse_expression(true);
    slice->operands.push_back(std::move(step));
    return slice;
  }

  // (positional..., name=value...) appended to node's operands and keywords.
  void parse_call_args(Expr& node) {
    expect_op("(");
    bool first = true;
    while (!at_op(")")) {
      if (!first) {
        expect_op(",");
        if (at_op(")")) break;  // trailing comma
      }
      first = false;
      if (at_op("*") || at_op("**")) fail_here("*args and **kwargs in calls are not supported");
      if (current().type == TokenType::Name && peek().type == TokenType::Operator && peek().text == "=") {
        Keyword keyword;
        keyword.name = next().text;
        next();
        keyword.value = parse_expression(true);
        node.keywords.push_back(std::move(keyword));
      } else {
        if (!node.keywords.empty()) fail_here("positional argument follows keyword argument");
        node.operands.push_back(parse_expression(true));
      }
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto call = make(ExprKind::Call, current().line);
    call->operands.push_back(std::move(callee));
    parse_call_args(*call);
    return call;
  }

  // `| name(args)` repeated; with start_inline the first filter has no leading pipe.
  ExprPtr parse_filter_chain(ExprPtr node, bool start_inline) {
    while (at_op("|") || start_inline) {
      if (!start_inline) next();
      start_inline = false;
      int line = current().line;
      std::string name = expect_name();
      if (!is_known_filter(name)) template_fail("line {}: no filter named '{}'", line, name);
      auto filter = make(ExprKind::Filter, line);
      filter->name = std::move(name);
      filter->operands.push_back(std::move(node));
      if (at_op("(")) parse_call_args(*filter);
      node = std::move(filter);
    }
    return node;
  }

  ExprPtr parse_test(ExprPtr subject) {
    int line = next().line;  // 'is'
    auto test = make(ExprKind::Test, line);
    test->negated = skip_name("not");
    test->name = expect_name();
    if (!is_known_test(test->name)) template_fail("line {}: no test named '{}'", line, test->name);
    test->operands.push_back(std::move(subject));
    const Token& token = current();
    if (at_op("(")) {
      parse_call_args(*test);
    } else if ((token.type == TokenType::Name || token.type == TokenType::String || token.type == TokenType::Integer ||
                token.type == TokenType::Float || at_op("[") || at_op("{")) &&
               !at_name("else") && !at_name("or") && !at_name("and")) {
      if (at_name("is")) fail_here("you cannot chain multiple tests with is");
      test->operands.push_back(parse_postfix(parse_primary()));
    }
    return test;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (at_op("|")) node = parse_filter_chain(std::move(node), false);
      else if (at_name("is")) node = parse_test(std::move(node));
      else if (at_op("(")) node = parse_call(std::move(node));
      else return node;
    }
  }
};

}  // namespace

StmtList parse_template(std::string_view source) { return Parser(tokenize_template(source)).parse_all(); }

}  // namespace tachyon::jinja
