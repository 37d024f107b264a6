// Tokenizer::from_hf_json: builds a tokenizer from a Hugging Face tokenizer.json (+ config).
#include <map>

#include "core/error.h"
#include "tokenizer/tokenizer_impl.h"

namespace tachyon {
namespace {

using nlohmann::json;

std::string type_of(const json& spec) {
  if (spec.is_object() && spec.contains("type") && spec["type"].is_string()) return spec["type"].get<std::string>();
  return spec.dump();
}

std::vector<std::pair<std::string, std::string>> parse_merges(const json& merges, const std::string& source) {
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (const json& merge : merges) {
    if (merge.is_array() && merge.size() == 2) {
      out.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
      continue;
    }
    // The legacy form "left right"; `tokenizers` skips "#version" lines and wants one space.
    std::string text = merge.get<std::string>();
    if (text.starts_with("#version")) continue;
    size_t space = text.find(' ');
    if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
      fail("{}: merge #{} '{}' is not two tokens separated by one space", source, out.size() + 1, text);
    }
    out.emplace_back(text.substr(0, space), text.substr(space + 1));
  }
  return out;
}

BpeModel parse_model(const json& model, const std::string& source) {
  std::string type = model.is_object() ? model.value("type", "BPE") : type_of(model);
  if (type != "BPE") fail("{}: model type '{}' is not supported (only BPE)", source, type);
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].get<double>() > 0) {
    fail("{}: BPE dropout is not supported (it makes encoding random)", source);
  }
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(field) && model[field].is_string() && !model[field].get<std::string>().empty()) {
      fail("{}: BPE {} is not supported", source, field);
    }
  }
  TokenIdMap vocab;
  for (const auto& [text, id] : model.at("vocab").items()) vocab[text] = id.get<int32_t>();
  BpeOptions options;
  if (model.contains("unk_token") && model["unk_token"].is_string()) options.unk_token = model["unk_token"].get<std::string>();
  options.fuse_unk = model.value("fuse_unk", false);
  options.byte_fallback = model.value("byte_fallback", false);
  options.ignore_merges = model.value("ignore_merges", false);
  return BpeModel(std::move(vocab), parse_merges(model.at("merges"), source), std::move(options), source);
}

// Ids as `tokenizers` gives them when it loads the list (it ignores the stored "id"): the
// vocabulary's id if the content is in it, else the next id after the vocabulary.
std::vector<AddedToken> parse_added_tokens(const json& list, const BpeModel& model) {
  std::map<int32_t, AddedToken> by_id;  // a later entry for an id replaces the earlier one
  TokenIdMap assigned;
  int32_t next_id = static_cast<int32_t>(model.vocab().size());
  for (const json& item : list) {
    AddedToken token;
    token.content = item.at("content").get<std::string>();
    token.special = item.value("special", false);
    token.single_word = item.value("single_word", false);
    token.lstrip = item.value("lstrip", false);
    token.rstrip = item.value("rstrip", false);
    token.normalized = item.value("normalized", !token.special);
    if (token.content.empty()) continue;
    if (auto it = assigned.find(token.content); it != assigned.end()) {
      token.id = it->second;
    } else if (auto v = model.vocab().find(token.content); v != model.vocab().end()) {
      token.id = v->second;
    } else {
      token.id = next_id++;
    }
    assigned[token.content] = token.id;
    by_id[token.id] = std::move(token);
  }
  std::vector<AddedToken> tokens;
  for (auto& [id, token] : by_id) tokens.push_back(std::move(token));
  return tokens;
}

// The special token a post-processor puts before the text ($A), if any: that is add_bos().
void parse_post_processor(const json& spec, const std::string& source, std::optional<int32_t>& prefix_id) {
  if (spec.is_null()) return;
  std::string type = type_of(spec);
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    for (const json& inner : spec.at("processors")) parse_post_processor(inner, source, prefix_id);
    return;
  }
  if (type != "TemplateProcessing") {
    fail("{}: post_processor type '{}' is not supported (supported: TemplateProcessing, ByteLevel, Sequence)",
         source, type);
  }
  // "single" is a list of {"SpecialToken": {"id": name}} / {"Sequence": {"id": "A"}} pieces,
  // or the string form "<bos> $A". Special tokens after $A (an EOS suffix) are not applied.
  std::optional<std::string> first_special;
  const json& single = spec.at("single");
  if (single.is_string()) {
    std::string text = single.get<std::string>();
    std::string first = text.substr(0, text.find(' '));
    if (!first.empty() && first[0] != '$') first_special = first.substr(0, first.rfind(':'));
  } else if (!single.empty() && single[0].contains("SpecialToken")) {
    first_special = single[0]["SpecialToken"].at("id").get<std::string>();
  }
  if (!first_special) return;
  const json& entry = spec.at("special_tokens").at(*first_special);
  if (entry.at("ids").empty()) fail("{}: post_processor special token '{}' has no ids", source, *first_special);
  prefix_id = entry["ids"][0].get<int32_t>();
}

std::string parse_chat_template(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  // A list of named templates: the "default" one, else the first.
  if (value.is_array() && !value.empty()) {
    for (const json& item : value) {
      if (item.value("name", "") == "default") return item.at("template").get<std::string>();
    }
    return value[0].at("template").get<std::string>();
  }
  return {};
}

}  // namespace

Tokenizer Tokenizer::from_hf_json(const nlohmann::json& tokenizer_json, const nlohmann::json& tokenizer_config,
                                  const std::string& source_name) {
  Tokenizer tokenizer;
  Impl& im = *tokenizer.impl_;
  im.source = source_name;
  try {
    if (!tokenizer_json.is_object()) fail("{}: tokenizer.json is not a JSON object", source_name);
    im.model = parse_model(tokenizer_json.at("model"), source_name);
    im.normalizer = Normalizer::from_json(tokenizer_json.value("normalizer", json()), source_name);
    im.pre_tokenizer = PreTokenizer::from_json(tokenizer_json.value("pre_tokenizer", json()), source_name);

    const json decoder = tokenizer_json.value("decoder", json());
    if (!decoder.is_null() && type_of(decoder) != "ByteLevel") {
      fail("{}: decoder type '{}' is not supported (supported: ByteLevel)", source_name, type_of(decoder));
    }
    im.byte_level_decoder = !decoder.is_null();

    std::optional<int32_t> prefix_id;
    parse_post_processor(tokenizer_json.value("post_processor", json()), source_name, prefix_id);

    im.finish(parse_added_tokens(tokenizer_json.value("added_tokens", json::array()), im.model));

    const json& config = tokenizer_config.is_object() ? tokenizer_config : json::object();
    auto id_of = [&](const char* key) -> std::optional<int32_t> {
      if (!config.contains(key)) return std::nullopt;
      auto content = special_token_content(config[key]);
      return content ? tokenizer.token_id(*content) : std::nullopt;
    };
    im.add_bos = prefix_id.has_value();
    im.bos_id = prefix_id ? *prefix_id : id_of("bos_token").value_or(-1);
    if (auto eos = id_of("eos_token")) im.add_eos(*eos);
    if (config.contains("chat_template")) im.chat_template = parse_chat_template(config["chat_template"]);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: unexpected tokenizer.json structure: {}", source_name, e.what());
  }
  return tokenizer;
}

}  // namespace tachyon
