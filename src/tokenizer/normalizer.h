// The normalizer stage of a Hugging Face tokenizer.json: what runs on the text (outside added
// tokens that are not "normalized") before pre-tokenization. Byte-level BPE families use none,
// or NFC (Qwen2); a Sequence of the supported steps works too.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace tachyon {

class Normalizer {
 public:
  enum class Step { kNfc, kNfd };

  Normalizer() = default;
  explicit Normalizer(std::vector<Step> steps) : steps_(std::move(steps)) {}
  // tokenizer.json's "normalizer" value (null, NFC, NFD or Sequence of them); other types
  // throw Error naming the type and `source`.
  static Normalizer from_json(const nlohmann::json& spec, const std::string& source);

  bool empty() const { return steps_.empty(); }
  std::string normalize(std::string_view text) const;

 private:
  std::vector<Step> steps_;
};

}  // namespace tachyon
