// Tree-walking evaluator for parsed templates. Scoping follows jinja2: each for-loop
// iteration, macro call and with-block gets a fresh scope whose assignments do not leak out
// (templates use namespace() for state that must survive a loop), while if-blocks share the
// enclosing scope. Macros see the scope they were defined in, as it is when they are called.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/jinja_ast.h"

namespace tachyon::jinja {

struct Scope {
  std::shared_ptr<Scope> parent;
  std::vector<std::pair<std::string, Value>> variables;

  const Value* find(std::string_view name) const;
  void set(const std::string& name, Value value);
};

// Renders `program` with `context` as the template variables (they shadow the globals).
// Throws TemplateError / TemplateRaised with "line N: " prefixed to runtime problems.
std::string render_program(const StmtList& program, const DictData& context);

}  // namespace tachyon::jinja
