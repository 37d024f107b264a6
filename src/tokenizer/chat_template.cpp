#include "tokenizer/chat_template.h"

#include "tokenizer/jinja_builtins.h"
#include "tokenizer/jinja_interpreter.h"
#include "tokenizer/jinja_parser.h"

namespace tachyon {

std::string render_jinja_template_ordered(const std::string& template_source, const nlohmann::ordered_json& context) {
  if (!context.is_object()) fail("chat template: the context must be a JSON object");
  try {
    jinja::StmtList program = jinja::parse_template(template_source);
    jinja::Value variables = jinja::from_json(context);
    jinja::DictData dict = variables.as_dict();
    // transformers always passes these (tools=None, documents=None when absent), so
    // `tools is defined` is true there; match it.
    if (!dict.find(std::string_view("tools"))) dict.set(jinja::Value("tools"), jinja::Value::none());
    if (!dict.find(std::string_view("documents"))) dict.set(jinja::Value("documents"), jinja::Value::none());
    if (!dict.find(std::string_view("add_generation_prompt")))
      dict.set(jinja::Value("add_generation_prompt"), jinja::Value(false));
    return jinja::render_program(program, dict);
  } catch (const jinja::TemplateRaised& raised) {
    fail("chat template: raise_exception: {}", raised.what());
  } catch (const jinja::TemplateError& error) {
    fail("chat template: {}", error.what());
  }
}

std::string render_jinja_template(const std::string& template_source, const nlohmann::json& context) {
  // nlohmann::json and ordered_json are different types; the round trip through text keeps
  // every value exactly (keys end up sorted, which is all a sorted map can offer).
  return render_jinja_template_ordered(template_source, nlohmann::ordered_json::parse(context.dump()));
}

}  // namespace tachyon
