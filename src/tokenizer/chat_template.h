// Renders a model's chat template (Jinja source from tokenizer_config.json or GGUF metadata)
// the way transformers' apply_chat_template does. Implements the subset of Jinja that the
// templates of supported families use; anything else raises Error naming the construct.
// See docs/chat_template.md for the subset, the jinja2 behaviours matched and the limits.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace tachyon {

// context: {"messages": [{"role":..., "content":...}, ...], "add_generation_prompt": bool,
//           "bos_token": "...", "eos_token": "...", plus anything a template reads (tools, ...)}.
// Like transformers, "tools" and "documents" are defined (as none) and add_generation_prompt
// is false when the context leaves them out.
// Errors (syntax, unknown filter/test/tag, runtime type errors, raise_exception, limits)
// throw Error whose message starts "chat template: " and names the problem and line.
std::string render_jinja_template(const std::string& template_source, const nlohmann::json& context);

// Same, keeping the context's object key order. Python dicts keep insertion order and
// templates print them (tools | tojson), so callers that have the original key order (tool
// schemas from a request) should use this one; nlohmann::json sorts keys. (A distinct name,
// so that braced-initializer contexts stay unambiguous.)
std::string render_jinja_template_ordered(const std::string& template_source,
                                          const nlohmann::ordered_json& context);

}  // namespace tachyon
