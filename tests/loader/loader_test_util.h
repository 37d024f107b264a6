// Tiny writers of safetensors and GGUF files for loader tests, plus a scratch directory.
// They write exactly what the format documents say, byte by byte, so that the loaders are
// checked against an independent encoding rather than against themselves.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace tachyon::test {

using Bytes = std::vector<uint8_t>;

// The message of the tachyon::Error that `action` throws, or "(no error)".
inline std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "tachyon-loader-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}
inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

template <typename T>
void append(Bytes& out, T value) {
  uint8_t raw[sizeof(T)];
  std::memcpy(raw, &value, sizeof(T));  // little-endian host, like the formats
  out.insert(out.end(), raw, raw + sizeof(T));
}
inline void append_bytes(Bytes& out, const Bytes& bytes) { out.insert(out.end(), bytes.begin(), bytes.end()); }

template <typename T>
Bytes bytes_of(const std::vector<T>& values) {
  Bytes out;
  for (const T& v : values) append(out, v);
  return out;
}

// --- safetensors ---
class SafetensorsWriter {
 public:
  // Tensors are laid out back to back in the order added.
  SafetensorsWriter& add(const std::string& name, const std::string& dtype, std::vector<int64_t> shape, Bytes data) {
    header_[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {data_.size(), data_.size() + data.size()}}};
    append_bytes(data_, data);
    return *this;
  }
  SafetensorsWriter& metadata(nlohmann::ordered_json value) {
    header_["__metadata__"] = std::move(value);
    return *this;
  }
  // Direct access, to break the header on purpose.
  nlohmann::ordered_json& header() { return header_; }
  Bytes build() const { return build_with_header(header_.dump()); }
  Bytes build_with_header(std::string header_text) const {
    while (header_text.size() % 8 != 0) header_text.push_back(' ');  // the spec pads with spaces
    Bytes out;
    append<uint64_t>(out, header_text.size());
    out.insert(out.end(), header_text.begin(), header_text.end());
    append_bytes(out, data_);
    return out;
  }

 private:
  nlohmann::ordered_json header_ = nlohmann::ordered_json::object();
  Bytes data_;
};

// --- GGUF ---
namespace gguf_type {
constexpr uint32_t U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
                   U64 = 10, I64 = 11, F64 = 12;
}
namespace ggml {
constexpr uint32_t F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, Q6_K = 14, I8 = 24, I16 = 25, I32 = 26, I64 = 27,
                   F64 = 28, BF16 = 30;
}

inline void append_gguf_string(Bytes& out, const std::string& text) {
  append<uint64_t>(out, text.size());
  out.insert(out.end(), text.begin(), text.end());
}

class GgufWriter {
 public:
  uint32_t version = 3;
  uint64_t alignment = 32;  // used for layout; write general.alignment yourself to change the file's

  // A key with an already encoded value (without the type tag).
  GgufWriter& raw(const std::string& key, uint32_t type, Bytes value) {
    append_gguf_string(kv_, key);
    append<uint32_t>(kv_, type);
    append_bytes(kv_, value);
    ++kv_count_;
    return *this;
  }
  GgufWriter& u32(const std::string& key, uint32_t v) { return raw(key, gguf_type::U32, bytes_of<uint32_t>({v})); }
  GgufWriter& i32(const std::string& key, int32_t v) { return raw(key, gguf_type::I32, bytes_of<int32_t>({v})); }
  GgufWriter& u64(const std::string& key, uint64_t v) { return raw(key, gguf_type::U64, bytes_of<uint64_t>({v})); }
  GgufWriter& f32(const std::string& key, float v) { return raw(key, gguf_type::F32, bytes_of<float>({v})); }
  GgufWriter& boolean(const std::string& key, bool v) { return raw(key, gguf_type::BOOL, Bytes{uint8_t(v ? 1 : 0)}); }
  GgufWriter& str(const std::string& key, const std::string& v) {
    Bytes value;
    append_gguf_string(value, v);
    return raw(key, gguf_type::STRING, value);
  }
  GgufWriter& strings(const std::string& key, const std::vector<std::string>& values) {
    Bytes value;
    append<uint32_t>(value, gguf_type::STRING);
    append<uint64_t>(value, values.size());
    for (const std::string& v : values) append_gguf_string(value, v);
    return raw(key, gguf_type::ARRAY, value);
  }
  GgufWriter& i32s(const std::string& key, const std::vector<int32_t>& values) {
    Bytes value;
    append<uint32_t>(value, gguf_type::I32);
    append<uint64_t>(value, values.size());
    append_bytes(value, bytes_of(values));
    return raw(key, gguf_type::ARRAY, value);
  }

  // `ne` in ggml order (innermost first). The offset is the next aligned one unless given.
  GgufWriter& tensor(const std::string& name, uint32_t ggml_type, std::vector<uint64_t> ne, Bytes data) {
    while (data_.size() % alignment != 0) data_.push_back(0);
    return tensor_at(name, ggml_type, ne, data_.size(), std::move(data));
  }
  // Writes the description with any offset (to break files) and appends `data` to the data section.
  GgufWriter& tensor_at(const std::string& name, uint32_t ggml_type, std::vector<uint64_t> ne, uint64_t offset, Bytes data) {
    append_gguf_string(infos_, name);
    append<uint32_t>(infos_, static_cast<uint32_t>(ne.size()));
    for (uint64_t n : ne) append<uint64_t>(infos_, n);
    append<uint32_t>(infos_, ggml_type);
    append<uint64_t>(infos_, offset);
    append_bytes(data_, data);
    ++tensor_count_;
    return *this;
  }
  // The counts in the header can be overridden (to break files).
  Bytes build(uint64_t tensor_count_value = ~uint64_t{0}, uint64_t kv_count_value = ~uint64_t{0}) const {
    Bytes out = {'G', 'G', 'U', 'F'};
    append<uint32_t>(out, version);
    append<uint64_t>(out, tensor_count_value == ~uint64_t{0} ? tensor_count_ : tensor_count_value);
    append<uint64_t>(out, kv_count_value == ~uint64_t{0} ? kv_count_ : kv_count_value);
    append_bytes(out, kv_);
    append_bytes(out, infos_);
    while (out.size() % alignment != 0) out.push_back(0);
    append_bytes(out, data_);
    return out;
  }

 private:
  Bytes kv_, infos_, data_;
  uint64_t kv_count_ = 0, tensor_count_ = 0;
};

// Zero-filled tensor data of `count` float32 values, or an increasing sequence.
inline Bytes f32_data(size_t count, float start = 0.0f, float step = 0.0f) {
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) values[i] = start + step * static_cast<float>(i);
  return bytes_of(values);
}

// Deterministic filler bytes (any bit pattern is a valid, if odd, tensor for loading tests).
inline Bytes pattern_bytes(size_t count, uint32_t seed) {
  Bytes out(count);
  for (size_t i = 0; i < count; ++i) {
    seed = seed * 1664525u + 1013904223u;
    out[i] = static_cast<uint8_t>(seed >> 24);
  }
  return out;
}

// A one-layer model of the given GGUF architecture with hidden 32, 2 heads of 16, 1 KV head,
// FFN 64, vocabulary 8; qwen2 gets q/k/v biases, qwen3* q/k norms, qwen3moe 4 experts of FFN 32.
inline GgufWriter tiny_model_gguf(const std::string& arch, bool with_output = false) {
  GgufWriter w;
  const std::string p = arch + ".";
  w.str("general.architecture", arch).str("general.name", "tiny " + arch);
  w.u32(p + "block_count", 1).u32(p + "context_length", 128).u32(p + "embedding_length", 32);
  w.u32(p + "feed_forward_length", 64).u32(p + "attention.head_count", 2).u32(p + "attention.head_count_kv", 1);
  w.f32(p + "attention.layer_norm_rms_epsilon", 1e-6f).f32(p + "rope.freq_base", 500000.0f);
  w.strings("tokenizer.ggml.tokens", {"<s>", "</s>", "a", "b", "c", "d", "e", "f"});
  w.u32("tokenizer.ggml.bos_token_id", 0).u32("tokenizer.ggml.eos_token_id", 1);
  w.str("tokenizer.chat_template", "{{ messages[0]['content'] }}");
  if (arch == "qwen3" || arch == "qwen3moe") w.u32(p + "attention.key_length", 16).u32(p + "attention.value_length", 16);
  if (arch == "qwen3moe") w.u32(p + "expert_count", 4).u32(p + "expert_used_count", 2).u32(p + "expert_feed_forward_length", 32);

  uint32_t seed = 1;
  auto q8 = [&](uint64_t cols, uint64_t rows) { return pattern_bytes(cols / 32 * 34 * rows, seed++); };
  w.tensor("token_embd.weight", ggml::Q8_0, {32, 8}, q8(32, 8));
  w.tensor("output_norm.weight", ggml::F32, {32}, f32_data(32, 1.0f));
  if (with_output) w.tensor("output.weight", ggml::Q8_0, {32, 8}, q8(32, 8));
  w.tensor("blk.0.attn_norm.weight", ggml::F32, {32}, f32_data(32, 1.0f, 0.5f));
  w.tensor("blk.0.attn_q.weight", ggml::F16, {32, 32}, pattern_bytes(32 * 32 * 2, seed++));
  w.tensor("blk.0.attn_k.weight", ggml::F16, {32, 16}, pattern_bytes(32 * 16 * 2, seed++));
  w.tensor("blk.0.attn_v.weight", ggml::Q4_0, {32, 16}, pattern_bytes(18 * 16, seed++));
  w.tensor("blk.0.attn_output.weight", ggml::Q4_1, {32, 32}, pattern_bytes(20 * 32, seed++));
  if (arch == "qwen2") {
    w.tensor("blk.0.attn_q.bias", ggml::F32, {32}, f32_data(32, 0.0f, 1.0f));
    w.tensor("blk.0.attn_k.bias", ggml::F32, {16}, f32_data(16));
    w.tensor("blk.0.attn_v.bias", ggml::F32, {16}, f32_data(16));
  }
  if (arch == "qwen3" || arch == "qwen3moe") {
    w.tensor("blk.0.attn_q_norm.weight", ggml::F32, {16}, f32_data(16, 1.0f));
    w.tensor("blk.0.attn_k_norm.weight", ggml::F32, {16}, f32_data(16, 1.0f));
  }
  w.tensor("blk.0.ffn_norm.weight", ggml::F32, {32}, f32_data(32, 1.0f));
  if (arch == "qwen3moe") {
    w.tensor("blk.0.ffn_gate_inp.weight", ggml::F32, {32, 4}, f32_data(32 * 4, 0.0f, 1.0f));
    // Stacked experts [E, out, in] in PyTorch order: element (e, o, i) = e*1000 + o*32 + i.
    for (const char* name : {"blk.0.ffn_gate_exps.weight", "blk.0.ffn_up_exps.weight"}) {
      std::vector<float> values;
      for (int e = 0; e < 4; ++e)
        for (int o = 0; o < 32; ++o)
          for (int i = 0; i < 32; ++i) values.push_back(static_cast<float>(e * 1000 + o * 32 + i));
      w.tensor(name, ggml::F32, {32, 32, 4}, bytes_of(values));
    }
    w.tensor("blk.0.ffn_down_exps.weight", ggml::Q8_0, {32, 32, 4}, pattern_bytes(34 * 32 * 4, seed++));
  } else {
    w.tensor("blk.0.ffn_gate.weight", ggml::Q8_0, {32, 64}, q8(32, 64));
    w.tensor("blk.0.ffn_up.weight", ggml::Q8_0, {32, 64}, q8(32, 64));
    w.tensor("blk.0.ffn_down.weight", ggml::Q4_1, {64, 32}, pattern_bytes(20 * 2 * 32, seed++));
  }
  return w;
}

// Where the real models live: TACHYON_MODELS_DIR, else <source dir>/models.
inline std::string models_dir() {
  if (const char* dir = std::getenv("TACHYON_MODELS_DIR")) return dir;
  if (const char* source = std::getenv("TACHYON_SOURCE_DIR")) return std::string(source) + "/models";
#ifdef TACHYON_SOURCE_DIR
  return std::string(TACHYON_SOURCE_DIR) + "/models";
#else
  return "models";
#endif
}
inline std::string source_dir() {
  if (const char* source = std::getenv("TACHYON_SOURCE_DIR")) return source;
#ifdef TACHYON_SOURCE_DIR
  return TACHYON_SOURCE_DIR;
#else
  return ".";
#endif
}

}  // namespace tachyon::test
