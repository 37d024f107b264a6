// Internal: the parts a Tokenizer is made of, shared by tokenizer.cpp (encode/decode) and the
// two loaders (tokenizer_hf_json.cpp, tokenizer_gguf.cpp).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/added_vocabulary.h"
#include "tokenizer/bpe.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace tachyon {

struct Tokenizer::Impl {
  std::string source;  // file the tokenizer came from, for messages

  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  BpeModel model;
  AddedTokenMatcher raw_added;         // added tokens with normalized=false
  AddedTokenMatcher normalized_added;  // added tokens with normalized=true (normalized form)

  // Per id (size = vocab_size()); ids no entry names are left empty.
  std::vector<std::string> id_to_text;     // vocabulary string or added token content
  std::vector<std::string> id_to_decoded;  // bytes the decoder produces for the id
  std::vector<bool> id_is_special;
  std::vector<bool> id_is_known;
  TokenIdMap added_ids;  // added token content -> id (looked up before the vocabulary)

  bool byte_level_decoder = true;  // false: tokenizer.json has decoder null (tokens joined by " ")
  bool add_bos = false;
  int32_t bos_id = -1;
  std::vector<int32_t> eos_ids;
  std::string chat_template;

  // Fills id_to_*, added_ids and both matchers from the model vocabulary (set `model` and
  // `normalizer` first) and the added tokens, whose ids must already be assigned.
  void finish(const std::vector<AddedToken>& added_tokens);
  void add_eos(int32_t id);
};

// "bos_token" / "eos_token" in tokenizer_config.json: a string, or {"content": ...}.
std::optional<std::string> special_token_content(const nlohmann::json& value);

}  // namespace tachyon
