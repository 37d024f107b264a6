// Renders a model's chat template (Jinja source from tokenizer_config.json or GGUF metadata)
// the way transformers' apply_chat_template does. Implements the subset of Jinja that the
// templates of supported families use; anything else raises Error naming the construct.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace tachyon {

// context: {"messages": [{"role":..., "content":...}, ...], "add_generation_prompt": bool,
//           "bos_token": "...", "eos_token": "...", plus anything a template reads (tools, ...)}.
std::string render_jinja_template(const std::string& template_source, const nlohmann::json& context);

}  // namespace tachyon
