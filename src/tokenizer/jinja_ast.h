// Syntax tree of a parsed Jinja template. One generic node type per category (expression,
// statement) keeps the parser and interpreter small; each kind documents which fields it uses.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace tachyon::jinja {

enum class ExprKind {
  Literal,      // literal
  Name,         // name
  Attribute,    // operands[0] . name
  Item,         // operands[0] [ operands[1] ]
  Slice,        // operands: start, stop, step (nullptr where omitted); only inside Item
  Call,         // operands[0] ( operands[1..], keywords )
  Filter,       // operands[0] | name(operands[1..], keywords); operands[0] is nullptr in {% filter %}
  Test,         // operands[0] is [not] name(operands[1..], keywords); `negated`
  Not,          // not operands[0]
  Negate,       // -operands[0]
  Plus,         // +operands[0]
  Binary,       // operands[0] name operands[1], name in + - * / // % **
  Concat,       // operands joined with ~
  Compare,      // operands[0] compare_ops[0] operands[1] compare_ops[1] operands[2] ... (chained)
  And,
  Or,
  Conditional,  // operands: then-value, condition, else-value (nullptr: undefined), as `a if c else b`
  List,
  Tuple,
  Dict,         // operands alternate key, value
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Keyword {
  std::string name;
  ExprPtr value;
};

struct Expr {
  ExprKind kind = ExprKind::Literal;
  int line = 0;
  Value literal;
  std::string name;
  std::vector<ExprPtr> operands;
  std::vector<Keyword> keywords;
  std::vector<std::string> compare_ops;  // "==", "!=", "<", "<=", ">", ">=", "in", "not in"
  bool negated = false;
};

// Left-hand side of set / for: a name, a namespace attribute (ns.x), or a tuple of names.
struct AssignTarget {
  enum class Kind { Name, NamespaceAttribute, Tuple };
  Kind kind = Kind::Name;
  std::string name;
  std::string attribute;
  std::vector<AssignTarget> items;
};

enum class StmtKind {
  Text,         // text
  Output,       // {{ expr }}
  If,           // branches (the else branch has a null condition)
  For,          // for target in expr [if loop_filter]: body, else: else_body
  Set,          // set target = expr
  SetBlock,     // set target [| expr as a filter chain] ... endset: body
  Macro,        // macro name(params): body
  CallBlock,    // call(params) expr: body  (body becomes `caller`)
  FilterBlock,  // filter expr: body
  With,         // with target_list = values (params hold the names and values): body
  Scope,        // a body rendered as is ({% generation %} from transformers)
  Break,
  Continue,
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using StmtList = std::vector<StmtPtr>;

struct IfBranch {
  ExprPtr condition;
  StmtList body;
};

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // nullptr: required
};

struct Stmt {
  StmtKind kind = StmtKind::Text;
  int line = 0;
  std::string text;
  ExprPtr expr;
  std::vector<IfBranch> branches;
  AssignTarget target;
  ExprPtr loop_filter;
  StmtList body;
  StmtList else_body;
  std::string name;
  std::vector<MacroParam> params;
  // For: whether the body reads `loop` (the loop object is only built when it does).
  bool uses_loop = true;
  // Macro / CallBlock: whether the body reads varargs, kwargs or caller. As in jinja2, only
  // then does a call accept surplus positional arguments, unknown keywords or a call block.
  bool uses_varargs = false;
  bool uses_kwargs = false;
  bool uses_caller = false;
};

}  // namespace tachyon::jinja
