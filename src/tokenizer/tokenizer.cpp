// Encoding and decoding. Loading lives in tokenizer_hf_json.cpp and tokenizer_gguf.cpp.
#include <algorithm>
#include <unordered_set>

#include "core/error.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace tachyon {

std::optional<std::string> special_token_content(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  return std::nullopt;
}

void Tokenizer::Impl::add_eos(int32_t id) {
  if (id >= 0 && std::find(eos_ids.begin(), eos_ids.end(), id) == eos_ids.end()) eos_ids.push_back(id);
}

void Tokenizer::Impl::finish(const std::vector<AddedToken>& added_tokens) {
  int32_t max_id = -1;
  for (const auto& [text, id] : model.vocab()) max_id = std::max(max_id, id);
  for (const AddedToken& token : added_tokens) max_id = std::max(max_id, token.id);
  // Real vocabularies stay far below this; a larger id means a broken file, not a big model.
  constexpr int32_t kMaxTokenId = 1 << 24;
  if (max_id >= kMaxTokenId) fail("{}: token id {} is implausibly large", source, max_id);
  size_t size = static_cast<size_t>(max_id + 1);
  id_to_text.assign(size, {});
  id_is_known.assign(size, false);
  for (const auto& [text, id] : model.vocab()) {
    if (id < 0) continue;
    id_to_text[id] = text;
    id_is_known[id] = true;
  }

  // What `tokenizers` decodes an id from: the vocabulary string, or for added tokens the
  // content, normalized if the token is matched in normalized form.
  std::vector<std::string> decode_text = id_to_text;
  std::unordered_set<std::string> special_contents;
  for (const AddedToken& token : added_tokens) {
    if (token.id < 0 || token.content.empty()) continue;
    std::string pattern = token.content;
    if (token.normalized && !normalizer.empty()) pattern = normalizer.normalize(token.content);
    (token.normalized ? normalized_added : raw_added).add(token, pattern);
    id_to_text[token.id] = token.content;
    decode_text[token.id] = pattern;
    id_is_known[token.id] = true;
    added_ids[token.content] = token.id;
    if (token.special) special_contents.insert(token.content);
  }

  id_to_decoded.assign(size, {});
  id_is_special.assign(size, false);
  for (size_t id = 0; id < size; ++id) {
    const std::string& text = decode_text[id];
    id_is_special[id] = special_contents.count(text) > 0;
    if (!byte_level_decoder) {
      id_to_decoded[id] = text;
      continue;
    }
    // ByteLevel decoding maps each character back to its byte; a token holding any other
    // character (e.g. an added token with a real space) decodes to its own UTF-8 instead.
    std::string bytes;
    bool all_mapped = true;
    for (size_t pos = 0; pos < text.size() && all_mapped;) {
      unicode::Utf8Step step = unicode::next_utf8(text, pos);
      int byte = step.status == unicode::Utf8Status::kValid ? unicode_to_byte(step.code_point) : -1;
      if (byte < 0) all_mapped = false;
      bytes.push_back(static_cast<char>(byte));
      pos += step.length;
    }
    id_to_decoded[id] = all_mapped ? bytes : text;
  }
}

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  const Impl& im = *impl_;
  std::vector<int32_t> ids;
  std::vector<std::string> words;
  auto encode_words = [&](std::string_view piece) {
    words.clear();
    im.pre_tokenizer.split(piece, words);
    for (const std::string& word : words) im.model.tokenize(word, ids);
  };
  // As `tokenizers`: added tokens in the raw text first; the rest is normalized piece by
  // piece, searched for normalized added tokens, pre-tokenized and run through BPE.
  for (const TextSegment& raw : im.raw_added.split(text, parse_special)) {
    if (raw.token_id >= 0) {
      ids.push_back(raw.token_id);
      continue;
    }
    if (raw.end <= raw.start) continue;
    std::string_view piece = text.substr(raw.start, raw.end - raw.start);
    if (im.normalizer.empty() && im.normalized_added.empty()) {
      encode_words(piece);
      continue;
    }
    std::string normalized = im.normalizer.normalize(piece);
    for (const TextSegment& seg : im.normalized_added.split(normalized, parse_special)) {
      if (seg.token_id >= 0) {
        ids.push_back(seg.token_id);
      } else if (seg.end > seg.start) {
        encode_words(std::string_view(normalized).substr(seg.start, seg.end - seg.start));
      }
    }
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& im = *impl_;
  std::string out;
  bool first = true;
  for (int32_t id : ids) {
    // Unknown ids are skipped, as `tokenizers` skips ids it has no token for.
    if (id < 0 || static_cast<size_t>(id) >= im.id_is_known.size() || !im.id_is_known[id]) continue;
    if (skip_special && im.id_is_special[id]) continue;
    if (!im.byte_level_decoder && !first) out.push_back(' ');
    out += im.id_to_decoded[id];
    first = false;
  }
  return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  const Impl& im = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= im.id_to_decoded.size()) return {};
  return im.id_to_decoded[id];
}

const std::string& Tokenizer::token_text(int32_t id) const {
  const Impl& im = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= im.id_to_text.size()) {
    fail("{}: token id {} is out of range (vocabulary size {})", im.source, id, im.id_to_text.size());
  }
  return im.id_to_text[id];
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token_text) const {
  const Impl& im = *impl_;
  if (auto it = im.added_ids.find(token_text); it != im.added_ids.end()) return it->second;
  if (auto it = im.model.vocab().find(token_text); it != im.model.vocab().end()) return it->second;
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  const Impl& im = *impl_;
  return id >= 0 && static_cast<size_t>(id) < im.id_is_special.size() && im.id_is_special[id];
}

int Tokenizer::vocab_size() const { return static_cast<int>(impl_->id_to_text.size()); }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
int32_t Tokenizer::bos_id() const { return impl_->bos_id; }
std::vector<int32_t> Tokenizer::eos_ids() const { return impl_->eos_ids; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }

std::string Tokenizer::bos_text() const {
  int32_t id = impl_->bos_id;
  return id >= 0 && id < vocab_size() ? impl_->id_to_text[id] : std::string();
}

std::string Tokenizer::eos_text() const {
  if (impl_->eos_ids.empty() || impl_->eos_ids[0] >= vocab_size()) return {};
  return impl_->id_to_text[impl_->eos_ids[0]];
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string IncrementalDecoder::push(int32_t id) {
  if (skip_special_ && tokenizer_.is_special(id)) return {};
  pending_ += tokenizer_.token_bytes(id);
  // Emit every whole character; bytes that can never become one are U+FFFD right away, and
  // only a tail that may still be completed by the next token waits.
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    unicode::Utf8Step step = unicode::next_utf8(pending_, pos);
    if (step.status == unicode::Utf8Status::kTruncated) break;
    if (step.status == unicode::Utf8Status::kValid) {
      out.append(pending_, pos, step.length);
    } else {
      unicode::append_utf8(out, 0xFFFD);
    }
    pos += step.length;
  }
  pending_.erase(0, pos);
  return out;
}

std::string IncrementalDecoder::flush() {
  std::string out = unicode::to_valid_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace tachyon
