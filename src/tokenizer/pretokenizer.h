// The pre-tokenizer stage: splits normalized text into the words that BPE encodes one by one,
// as Hugging Face `tokenizers` does it for byte-level BPE families (ByteLevel, Split, Digits and
// Sequence of them), and maps each byte of a word to its printable "byte-level" character.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/regex.h"

namespace tachyon {

// What Split does with the regex matches (names as in tokenizer.json's "behavior").
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// GPT-2's word regex: the one a ByteLevel pre-tokenizer with use_regex=true applies.
extern const char* const kGpt2Pattern;
extern const char* const kLlama3Pattern;
extern const char* const kQwen2Pattern;

class PreTokenizer {
 public:
  PreTokenizer() = default;

  // tokenizer.json's "pre_tokenizer" value; unsupported types throw Error naming the type and `source`.
  static PreTokenizer from_json(const nlohmann::json& spec, const std::string& source);

  void add_split(const std::string& pattern, SplitBehavior behavior, bool invert, const std::string& what);
  void add_digits(bool individual_digits);
  void add_byte_level(bool add_prefix_space, bool use_regex);

  // Appends the words of `text` (in byte-level form after a ByteLevel step) to `words`.
  void split(std::string_view text, std::vector<std::string>& words) const;

 private:
  struct Step {
    enum class Kind { kSplit, kByteLevel } kind;
    std::shared_ptr<const Regex> regex;  // kSplit, and kByteLevel with use_regex
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;
  };
  void add_from_json(const nlohmann::json& spec, const std::string& source);

  std::vector<Step> steps_;
};

// The printable character that byte-level BPE uses for each byte ("Ġ" for ' '), as UTF-8.
const std::string& byte_to_unicode(unsigned char byte);
// The inverse: the byte for a byte-level character, or -1 if `code_point` is not one.
int unicode_to_byte(char32_t code_point);

}  // namespace tachyon
