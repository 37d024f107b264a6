// Turning a checkpoint that tachyon reads (a GGUF file or an HF directory) into a Hugging Face directory that
// tachyon and transformers both read: config.json without tachyon's private keys, q/k rows of GGUF llama
// weights back in the order HF's RoPE expects, and tokenizer.json / tokenizer_config.json synthesized from the
// GGUF tokenizer metadata (byte-level BPE families that tachyon's GGUF tokenizer supports).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/checkpoint.h"

namespace tachyon::fp4 {

struct HfExport {
  nlohmann::json config;             // config.json
  nlohmann::json generation_config;  // {} = none
  nlohmann::json tokenizer_json;     // null = none (an HF source's tokenizer files are copied instead)
  nlohmann::json tokenizer_config;   // {} = none
  // Source tensors whose rows are written in another order: output row r is source row order[r].
  std::map<std::string, std::vector<int64_t>> row_order;
};

// Fails (naming the field) for sources it cannot express as HF: GGUF llama with a rope_freqs tensor.
HfExport plan_hf_export(const Checkpoint& checkpoint);

// tokenizer.json of the GGUF tokenizer metadata (tokenizer.ggml.*), as the HF repository of the family has it.
nlohmann::json gguf_tokenizer_json(const nlohmann::json& metadata, const std::string& source);
nlohmann::json gguf_tokenizer_config(const nlohmann::json& metadata, const nlohmann::json& config, const std::string& source);

// llama.cpp's convert script permutes q/k rows so that ggml's adjacent-pair RoPE equals HF's rotate-half RoPE:
// GGUF row h*d + 2i + j holds HF row h*d + j*(d/2) + i. Returns, for each HF row, the GGUF row it comes from.
std::vector<int64_t> unpermute_rows_for_hf(int64_t rows, int64_t heads);

// Reads rows of `tensor` (any float-convertible dtype) in `order` (empty = as stored) as float32 [rows, cols].
std::vector<float> read_rows(const TensorView& tensor, const std::vector<int64_t>& order);

}  // namespace tachyon::fp4
