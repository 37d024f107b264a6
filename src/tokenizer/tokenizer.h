// Byte-level BPE tokenizer (GPT-2 / Llama-3 / Qwen / SmolLM2 family), built either from a
// Hugging Face tokenizer.json or from the tokenizer stored in GGUF metadata. Ids must equal
// Hugging Face `tokenizers` exactly; tests/tokenizer checks that on a committed corpus.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

namespace tachyon {

struct Checkpoint;

class Tokenizer {
 public:
  // Uses checkpoint.tokenizer_json when present, else the GGUF metadata; throws Error otherwise.
  static Tokenizer from_checkpoint(const Checkpoint& checkpoint);
  static Tokenizer from_hf_json(const nlohmann::json& tokenizer_json, const nlohmann::json& tokenizer_config,
                                const std::string& source_name);
  static Tokenizer from_gguf_metadata(const nlohmann::json& metadata, const std::string& source_name);

  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Text -> ids. With parse_special, added/special tokens written literally in the text
  // ("<|im_start|>") become their ids. Never adds BOS: see add_bos(). Ill-formed UTF-8 never
  // throws: its bytes are encoded as byte tokens like any other (docs/tokenizer.md).
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  // Ids -> text (byte-level decoding; may contain broken UTF-8 if ids end mid-character).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The raw bytes that one token stands for.
  std::string token_bytes(int32_t id) const;
  // The token's string as stored in the vocabulary ("Ġthe").
  const std::string& token_text(int32_t id) const;
  std::optional<int32_t> token_id(std::string_view token_text) const;
  bool is_special(int32_t id) const;

  int vocab_size() const;
  bool add_bos() const;           // prepend bos_id() when encoding a prompt
  int32_t bos_id() const;         // -1 if none
  std::vector<int32_t> eos_ids() const;  // generation stops on any of these
  const std::string& chat_template() const;  // "" if none
  std::string bos_text() const;   // for chat templates ("" if none)
  std::string eos_text() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of ids into text pieces that are always complete UTF-8: bytes of a character
// split across tokens are held back until the character is whole. flush() returns what is left
// (invalid sequences become U+FFFD).
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special = true);
  std::string push(int32_t id);
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace tachyon
