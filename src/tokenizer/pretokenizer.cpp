#include "tokenizer/pretokenizer.h"

#include <array>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace tachyon {

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

// GPT-2's table: printable bytes stand for themselves, the other 68 are shifted to U+0100...
struct ByteLevelTables {
  std::array<std::string, 256> byte_to_text;
  std::array<int, 324> code_point_to_byte;
  ByteLevelTables() {
    code_point_to_byte.fill(-1);
    int shifted = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t cp = printable ? b : 256 + shifted++;
      unicode::append_utf8(byte_to_text[b], cp);
      code_point_to_byte[cp] = b;
    }
  }
};

const ByteLevelTables& byte_level_tables() {
  static const ByteLevelTables tables;
  return tables;
}

const std::shared_ptr<const Regex>& gpt2_regex() {
  static const auto regex = std::make_shared<const Regex>(kGpt2Pattern, "ByteLevel pre-tokenizer");
  return regex;
}

SplitBehavior parse_behavior(const nlohmann::json& value, const std::string& source) {
  std::string name = value.is_string() ? value.get<std::string>() : value.dump();
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  fail("{}: pre_tokenizer Split behavior '{}' is not supported", source, name);
}

struct Span {
  size_t start, end;
  bool is_match;
};

// The pieces of `text` that `tokenizers`' NormalizedString::split keeps, given the regex
// matches: the same merging rules, step for step, including their handling of empty matches.
std::vector<Span> split_spans(std::string_view text, const Regex& regex, SplitBehavior behavior, bool invert) {
  std::vector<Span> spans;
  if (text.empty()) return spans;
  size_t prev = 0;
  for (auto [start, end] : regex.find_all(text)) {
    if (prev != start) spans.push_back({prev, start, false});
    spans.push_back({start, end, true});
    prev = end;
  }
  if (prev != text.size()) spans.push_back({prev, text.size(), false});
  if (invert) {
    for (Span& s : spans) s.is_match = !s.is_match;
  }

  std::vector<Span> out;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      return spans;
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) out.push_back(s);
      }
      return out;
    case SplitBehavior::kContiguous:
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.is_match;
      }
      return out;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.is_match;
      }
      return out;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().start = it->start;
        } else {
          out.push_back(*it);
        }
        previous_match = it->is_match;
      }
      return {out.rbegin(), out.rend()};
  }
  return out;
}

}  // namespace

const std::string& byte_to_unicode(unsigned char byte) { return byte_level_tables().byte_to_text[byte]; }

int unicode_to_byte(char32_t code_point) {
  const auto& table = byte_level_tables().code_point_to_byte;
  return code_point < table.size() ? table[code_point] : -1;
}

void PreTokenizer::add_split(const std::string& pattern, SplitBehavior behavior, bool invert, const std::string& what) {
  steps_.push_back({Step::Kind::kSplit, std::make_shared<const Regex>(pattern, what), behavior, invert, false});
}

void PreTokenizer::add_digits(bool individual_digits) {
  // `tokenizers` tests char::is_numeric, i.e. general category N: the same set as \p{N}.
  static const auto digit = std::make_shared<const Regex>(R"(\p{N})", "Digits pre-tokenizer");
  steps_.push_back({Step::Kind::kSplit, digit,
                    individual_digits ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false, false});
}

void PreTokenizer::add_byte_level(bool add_prefix_space, bool use_regex) {
  steps_.push_back({Step::Kind::kByteLevel, use_regex ? gpt2_regex() : nullptr, SplitBehavior::kIsolated, false,
                    add_prefix_space});
}

PreTokenizer PreTokenizer::from_json(const nlohmann::json& spec, const std::string& source) {
  PreTokenizer result;
  result.add_from_json(spec, source);
  return result;
}

void PreTokenizer::add_from_json(const nlohmann::json& spec, const std::string& source) {
  if (spec.is_null()) return;
  std::string type = spec.is_object() && spec.contains("type") ? spec["type"].get<std::string>() : "";
  if (type == "Sequence") {
    for (const auto& inner : spec.at("pretokenizers")) add_from_json(inner, source);
  } else if (type == "ByteLevel") {
    add_byte_level(spec.value("add_prefix_space", true), spec.value("use_regex", true));
  } else if (type == "Digits") {
    add_digits(spec.value("individual_digits", false));
  } else if (type == "Split") {
    const auto& pattern = spec.at("pattern");
    std::string what = source + ": pre_tokenizer Split";
    SplitBehavior behavior = parse_behavior(spec.at("behavior"), source);
    bool invert = spec.value("invert", false);
    if (pattern.contains("Regex")) {
      add_split(pattern["Regex"].get<std::string>(), behavior, invert, what);
    } else if (pattern.contains("String")) {
      add_split(Regex::escape(pattern["String"].get<std::string>()), behavior, invert, what);
    } else {
      fail("{}: pre_tokenizer Split pattern {} is neither String nor Regex", source, pattern.dump());
    }
  } else {
    fail("{}: pre_tokenizer type '{}' is not supported (supported: ByteLevel, Split, Digits, Sequence)", source,
         type.empty() ? spec.dump() : type);
  }
}

void PreTokenizer::split(std::string_view text, std::vector<std::string>& words) const {
  std::vector<std::string> pieces, next;
  if (!text.empty()) pieces.emplace_back(text);
  for (const Step& step : steps_) {
    next.clear();
    for (std::string& piece : pieces) {
      if (step.kind == Step::Kind::kByteLevel && step.add_prefix_space && piece[0] != ' ') piece.insert(0, " ");
      if (step.regex == nullptr) {
        next.push_back(std::move(piece));
        continue;
      }
      for (const Span& s : split_spans(piece, *step.regex, step.behavior, step.invert)) {
        if (s.end > s.start) next.push_back(piece.substr(s.start, s.end - s.start));
      }
    }
    if (step.kind == Step::Kind::kByteLevel) {
      for (std::string& piece : next) {
        std::string mapped;
        mapped.reserve(piece.size() * 2);
        for (char c : piece) mapped += byte_to_unicode(static_cast<unsigned char>(c));
        piece = std::move(mapped);
      }
    }
    pieces.swap(next);
  }
  for (std::string& piece : pieces) words.push_back(std::move(piece));
}

}  // namespace tachyon
