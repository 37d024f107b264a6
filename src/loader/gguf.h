// GGUF (v2/v3) reading: a header, typed key/value metadata, tensor descriptions, then an aligned
// data section. Every count, length and offset in the file is untrusted: each is checked against
// the bytes that remain before anything is allocated or read from it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/checkpoint.h"
#include "loader/weights.h"

namespace tachyon {

struct GgufContents {
  uint32_t version = 0;
  uint64_t alignment = 32;
  uint64_t data_offset = 0;   // start of the tensor data section within the file
  nlohmann::json metadata;    // key -> value; arrays (also nested) become JSON arrays, strings keep raw bytes
  // Views into the parsed buffer, in file order, with GGUF names ("blk.0.attn_q.weight") and
  // shapes already reversed to PyTorch order (outermost first).
  std::vector<TensorView> tensors;
};

// Parses a whole GGUF file image; views point into `data`, which must outlive them.
GgufContents parse_gguf(const uint8_t* data, size_t size, const std::string& file_name);

// "Q6_K (14)" for error messages; unknown numbers read "unknown (99)".
std::string ggml_type_name(uint32_t ggml_type);

// --- the Hugging Face view of a GGUF file (gguf_hf.cpp) ---

// An HF config.json for the model described by the metadata. `tensors` are the GGUF-named tensors
// (some fields, such as tie_word_embeddings, follow from which tensors exist).
nlohmann::json gguf_hf_config(const nlohmann::json& metadata, const std::vector<TensorView>& tensors,
                              const std::string& file_name);

// "blk.3.ffn_up.weight" -> "model.layers.3.mlp.up_proj.weight"; names it does not know are returned as they are.
std::string gguf_to_hf_tensor_name(const std::string& gguf_name);

// Renames every tensor to its HF name and splits stacked expert tensors ([experts, out, in]) into
// per-expert views model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight that share the stacked data.
std::vector<TensorView> gguf_tensors_to_hf(const std::vector<TensorView>& tensors);

// Fills everything but the weight mappings' lifetime: config, generation_config, tokenizer_config,
// gguf_metadata and the HF-named weights. The buffer must outlive the checkpoint's views.
void fill_checkpoint_from_gguf(GgufContents contents, const std::string& file_name, Checkpoint& checkpoint);

// Maps a .gguf file and fills the checkpoint (which keeps the mapping alive).
void load_gguf_checkpoint(const std::string& path, Checkpoint& checkpoint);

}  // namespace tachyon
