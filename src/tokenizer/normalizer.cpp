#include "tokenizer/normalizer.h"

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace tachyon {
namespace {

void add_steps(const nlohmann::json& spec, const std::string& source, std::vector<Normalizer::Step>& steps) {
  if (spec.is_null()) return;
  std::string type = spec.is_object() ? spec.value("type", "") : "";
  if (type == "NFC") {
    steps.push_back(Normalizer::Step::kNfc);
  } else if (type == "NFD") {
    steps.push_back(Normalizer::Step::kNfd);
  } else if (type == "Sequence" && spec.contains("normalizers") && spec["normalizers"].is_array()) {
    for (const auto& inner : spec["normalizers"]) add_steps(inner, source, steps);
  } else {
    fail("{}: normalizer type '{}' is not supported (supported: NFC, NFD, Sequence)", source,
         type.empty() ? spec.dump() : type);
  }
}

}  // namespace

Normalizer Normalizer::from_json(const nlohmann::json& spec, const std::string& source) {
  std::vector<Step> steps;
  add_steps(spec, source, steps);
  return Normalizer(std::move(steps));
}

std::string Normalizer::normalize(std::string_view text) const {
  std::string current(text);
  for (Step step : steps_) current = step == Step::kNfc ? unicode::nfc(current) : unicode::nfd(current);
  return current;
}

}  // namespace tachyon
