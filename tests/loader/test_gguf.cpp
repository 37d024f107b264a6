#include <cmath>

#include <gtest/gtest.h>

#include "loader/gguf.h"
#include "loader_test_util.h"

namespace tachyon {
namespace {

using test::Bytes;
using test::bytes_of;
using test::error_of;
using test::GgufWriter;
namespace vt = test::gguf_type;
namespace ggml = test::ggml;
using nlohmann::json;

const char* kName = "models/bad.gguf";

std::string parse_error(const Bytes& file) {
  return error_of([&] { parse_gguf(file.data(), file.size(), kName); });
}

// Parses and builds the whole HF view, as open_checkpoint does for a file. The views point into
// `file`, so it must outlive the checkpoint (temporaries are refused).
Checkpoint hf_view(Bytes&& file, const std::string& name = "tiny.gguf") = delete;
Checkpoint hf_view(const Bytes& file, const std::string& name = "tiny.gguf") {
  Checkpoint checkpoint;
  fill_checkpoint_from_gguf(parse_gguf(file.data(), file.size(), name), name, checkpoint);
  return checkpoint;
}

TEST(LoaderGguf, MetadataOfEveryValueType) {
  GgufWriter w;
  w.raw("u8", vt::U8, bytes_of<uint8_t>({200}));
  w.raw("i8", vt::I8, bytes_of<int8_t>({-5}));
  w.raw("u16", vt::U16, bytes_of<uint16_t>({60000}));
  w.raw("i16", vt::I16, bytes_of<int16_t>({-30000}));
  w.u32("u32", 4000000000u).i32("i32", -2000000000);
  w.raw("u64", vt::U64, bytes_of<uint64_t>({(uint64_t{1} << 63) + 1}));
  w.raw("i64", vt::I64, bytes_of<int64_t>({-(int64_t{1} << 40)}));
  w.f32("f32", 0.5f);
  w.raw("f64", vt::F64, bytes_of<double>({2.25}));
  w.boolean("yes", true).boolean("no", false);
  w.str("text", "h\xc3\xa9llo").str("empty", "");
  w.i32s("ints", {1, -2, 3});
  w.strings("words", {"a", "bc", ""});
  Bytes nested;  // [[1, 2], [3]] as an array of arrays of int32
  test::append<uint32_t>(nested, vt::ARRAY);
  test::append<uint64_t>(nested, 2);
  for (const std::vector<int32_t>& inner : std::vector<std::vector<int32_t>>{{1, 2}, {3}}) {
    test::append<uint32_t>(nested, vt::I32);
    test::append<uint64_t>(nested, inner.size());
    test::append_bytes(nested, bytes_of(inner));
  }
  w.raw("nested", vt::ARRAY, nested);
  Bytes empty_array;
  test::append<uint32_t>(empty_array, vt::U8);
  test::append<uint64_t>(empty_array, 0);
  w.raw("none", vt::ARRAY, empty_array);
  w.version = 2;
  Bytes file = w.build();

  GgufContents contents = parse_gguf(file.data(), file.size(), "m.gguf");
  const json& md = contents.metadata;
  EXPECT_EQ(contents.version, 2u);
  EXPECT_EQ(md.size(), 18u);
  EXPECT_EQ(md["u8"], 200);
  EXPECT_EQ(md["i8"], -5);
  EXPECT_EQ(md["u16"], 60000);
  EXPECT_EQ(md["i16"], -30000);
  EXPECT_EQ(md["u32"], 4000000000u);
  EXPECT_EQ(md["i32"], -2000000000);
  EXPECT_EQ(md["u64"].get<uint64_t>(), (uint64_t{1} << 63) + 1);
  EXPECT_EQ(md["i64"], -(int64_t{1} << 40));
  EXPECT_EQ(md["f32"], 0.5);
  EXPECT_EQ(md["f64"], 2.25);
  EXPECT_EQ(md["yes"], true);
  EXPECT_EQ(md["no"], false);
  EXPECT_EQ(md["text"], "h\xc3\xa9llo");
  EXPECT_EQ(md["empty"], "");
  EXPECT_EQ(md["ints"], json({1, -2, 3}));
  EXPECT_EQ(md["words"], json({"a", "bc", ""}));
  EXPECT_EQ(md["nested"], json({{1, 2}, {3}}));
  EXPECT_EQ(md["none"], json::array());
  EXPECT_TRUE(contents.tensors.empty());
}

TEST(LoaderGguf, TensorShapesAreReversedAndDataAligned) {
  GgufWriter w;
  w.alignment = 64;
  w.u32("general.alignment", 64);
  w.tensor("a", ggml::F32, {3}, test::f32_data(3, 1.0f, 1.0f));
  w.tensor("b", ggml::F32, {2, 3, 1}, test::f32_data(6, 10.0f, 1.0f));  // ne = [2, 3, 1]
  Bytes file = w.build();
  GgufContents contents = parse_gguf(file.data(), file.size(), "m.gguf");
  EXPECT_EQ(contents.alignment, 64u);
  EXPECT_EQ(contents.data_offset % 64, 0u);
  ASSERT_EQ(contents.tensors.size(), 2u);
  EXPECT_EQ(contents.tensors[1].shape, (std::vector<int64_t>{1, 3, 2}));
  EXPECT_EQ(contents.tensors[1].data, file.data() + contents.data_offset + 64);
  EXPECT_EQ(contents.tensors[1].to_float(), (std::vector<float>{10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(contents.tensors[0].to_float(), (std::vector<float>{1, 2, 3}));
}

TEST(LoaderGguf, EveryTruncationIsAnErrorNamingTheFile) {
  const Bytes file = test::tiny_model_gguf("llama").build();
  hf_view(file);  // the whole file is fine
  for (size_t length = 0; length < file.size(); ++length) {
    Bytes prefix(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(length));
    std::string message = error_of([&] { hf_view(prefix, kName); });
    ASSERT_NE(message.find(kName), std::string::npos) << "length " << length << ": " << message;
  }
}

TEST(LoaderGguf, BadHeaders) {
  Bytes file = GgufWriter().build();
  EXPECT_EQ(parse_gguf(file.data(), file.size(), "empty.gguf").tensors.size(), 0u);
  Bytes bad_magic = file;
  bad_magic[0] = 'X';
  EXPECT_EQ(parse_error(bad_magic), std::string(kName) + ": not a GGUF file (bad magic)");
  GgufWriter old;
  old.version = 1;
  EXPECT_NE(parse_error(old.build()).find("version 1"), std::string::npos);
  GgufWriter future;
  future.version = 4;
  EXPECT_NE(parse_error(future.build()).find("unsupported GGUF version 4"), std::string::npos);
  EXPECT_NE(parse_error(GgufWriter().build(uint64_t{1} << 60, 0)).find("tensor count"), std::string::npos);
  EXPECT_NE(parse_error(GgufWriter().build(0, uint64_t{1} << 60)).find("metadata count"), std::string::npos);
  EXPECT_NE(parse_error(GgufWriter().build(0, 1)).find("metadata count 1 is impossible"), std::string::npos);
}

TEST(LoaderGguf, BadMetadata) {
  auto error_with = [](const std::string& key, uint32_t type, const Bytes& value) {
    return parse_error(GgufWriter().raw(key, type, value).build());
  };
  // A string whose length runs past the end must fail before any allocation of that size.
  EXPECT_NE(error_with("s", vt::STRING, bytes_of<uint64_t>({uint64_t{1} << 63})).find("truncated"), std::string::npos);
  Bytes huge_array;
  test::append<uint32_t>(huge_array, vt::U64);
  test::append<uint64_t>(huge_array, uint64_t{1} << 61);
  EXPECT_NE(error_with("a", vt::ARRAY, huge_array).find("claims"), std::string::npos);
  Bytes huge_string_array;
  test::append<uint32_t>(huge_string_array, vt::STRING);
  test::append<uint64_t>(huge_string_array, ~uint64_t{0});
  EXPECT_NE(error_with("a", vt::ARRAY, huge_string_array).find("claims"), std::string::npos);
  EXPECT_NE(error_with("k", 13, bytes_of<uint32_t>({0})).find("unknown value type 13"), std::string::npos);
  Bytes bad_element;
  test::append<uint32_t>(bad_element, 77);
  test::append<uint64_t>(bad_element, 1);
  EXPECT_NE(error_with("a", vt::ARRAY, bad_element).find("unknown value type 77"), std::string::npos);
  Bytes deep;  // arrays nested 20 deep
  for (int i = 0; i < 20; ++i) {
    test::append<uint32_t>(deep, vt::ARRAY);
    test::append<uint64_t>(deep, 1);
  }
  test::append<uint32_t>(deep, vt::U8);
  test::append<uint64_t>(deep, 0);
  EXPECT_NE(error_with("a", vt::ARRAY, deep).find("nests arrays"), std::string::npos);
  EXPECT_NE(parse_error(GgufWriter().u32("k", 1).u32("k", 2).build()).find("metadata key k appears twice"),
            std::string::npos);
}

TEST(LoaderGguf, BadAlignment) {
  auto with_alignment = [](GgufWriter w) {
    w.tensor("t", ggml::F32, {4}, test::f32_data(4));
    return parse_error(w.build());
  };
  EXPECT_NE(with_alignment(GgufWriter().u32("general.alignment", 3)).find("power of two"), std::string::npos);
  EXPECT_NE(with_alignment(GgufWriter().u32("general.alignment", 0)).find("general.alignment"), std::string::npos);
  EXPECT_NE(with_alignment(GgufWriter().str("general.alignment", "32")).find("general.alignment"), std::string::npos);
  EXPECT_NE(with_alignment(GgufWriter().i32("general.alignment", -32)).find("general.alignment"), std::string::npos);
}

TEST(LoaderGguf, BadTensorDescriptions) {
  auto error_with = [](const std::string& name, uint32_t type, std::vector<uint64_t> ne, Bytes data) {
    return parse_error(GgufWriter().tensor(name, type, std::move(ne), std::move(data)).build());
  };
  EXPECT_NE(error_with("t", ggml::F32, {}, {}).find("tensor t has 0 dimensions"), std::string::npos);
  EXPECT_NE(error_with("t", ggml::F32, {1, 1, 1, 1, 1}, test::f32_data(1)).find("5 dimensions"), std::string::npos);
  EXPECT_NE(error_with("t", ggml::F32, {4, 0}, {}).find("zero dimension"), std::string::npos);
  const uint64_t huge = uint64_t{1} << 62;
  EXPECT_NE(error_with("t", ggml::F32, {huge, huge}, test::f32_data(1)).find("overflows"), std::string::npos);
  EXPECT_NE(error_with("t", ggml::F32, {huge}, test::f32_data(1)).find("too large"), std::string::npos);
  EXPECT_NE(error_with("t", ggml::F32, {huge / 4}, test::f32_data(1)).find("needs"), std::string::npos);
  EXPECT_EQ(error_with("blk.0.ffn_down.weight", ggml::Q6_K, {256}, Bytes(210)),
            std::string(kName) + ": tensor blk.0.ffn_down.weight: ggml type Q6_K (14) is not supported");
  EXPECT_NE(error_with("t", 99, {4}, Bytes(16)).find("ggml type unknown (99) is not supported"), std::string::npos);
  EXPECT_NE(error_with("t", 4, {32}, Bytes(20)).find("ggml type unknown (4) is not supported"), std::string::npos);
  EXPECT_NE(error_with("t", ggml::Q8_0, {33}, Bytes(68)).find("not a multiple of the Q8_0 block size 32"), std::string::npos);
  EXPECT_NE(error_with("t", ggml::F32, {4}, test::f32_data(3)).find("tensor t needs 16 bytes"), std::string::npos);

  GgufWriter misaligned;
  misaligned.tensor_at("t", ggml::F32, {1}, 4, test::f32_data(2));
  EXPECT_NE(parse_error(misaligned.build()).find("not a multiple of the alignment 32"), std::string::npos);
  GgufWriter past_end;
  past_end.tensor_at("t", ggml::F32, {1}, uint64_t{1} << 63, test::f32_data(1));
  EXPECT_NE(parse_error(past_end.build()).find("needs 4 bytes"), std::string::npos);
  GgufWriter duplicate;
  duplicate.tensor("t", ggml::F32, {1}, test::f32_data(1)).tensor("t", ggml::F32, {1}, test::f32_data(1));
  EXPECT_NE(parse_error(duplicate.build()).find("tensor t appears twice"), std::string::npos);
  EXPECT_NE(parse_error(GgufWriter().tensor("t", ggml::F32, {1}, test::f32_data(1)).build(5, 0)).find(kName),
            std::string::npos);
}

TEST(LoaderGguf, LlamaConfig) {
  const Bytes file = test::tiny_model_gguf("llama").build();
  Checkpoint checkpoint = hf_view(file);
  const json& c = checkpoint.config;
  EXPECT_EQ(checkpoint.format, "gguf");
  EXPECT_EQ(c["architectures"], json({"LlamaForCausalLM"}));
  EXPECT_EQ(c["model_type"], "llama");
  EXPECT_EQ(c["hidden_size"], 32);
  EXPECT_EQ(c["intermediate_size"], 64);
  EXPECT_EQ(c["num_hidden_layers"], 1);
  EXPECT_EQ(c["num_attention_heads"], 2);
  EXPECT_EQ(c["num_key_value_heads"], 1);
  EXPECT_EQ(c["head_dim"], 16);
  EXPECT_FLOAT_EQ(c["rms_norm_eps"].get<float>(), 1e-6f);
  EXPECT_EQ(c["rope_theta"], 500000.0);
  EXPECT_TRUE(c["rope_scaling"].is_null());
  EXPECT_EQ(c["max_position_embeddings"], 128);
  EXPECT_EQ(c["vocab_size"], 8);
  EXPECT_EQ(c["tie_word_embeddings"], true);
  EXPECT_EQ(c["attention_bias"], false);
  EXPECT_EQ(c["bos_token_id"], 0);
  EXPECT_EQ(c["eos_token_id"], 1);
  EXPECT_EQ(c["tachyon_rope_interleaved"], true);
  EXPECT_EQ(checkpoint.generation_config, json({{"bos_token_id", 0}, {"eos_token_id", 1}}));
  EXPECT_EQ(checkpoint.tokenizer_config, json({{"chat_template", "{{ messages[0]['content'] }}"}}));
  EXPECT_TRUE(checkpoint.tokenizer_json.is_null());
  EXPECT_EQ(checkpoint.gguf_metadata["tokenizer.ggml.tokens"].size(), 8u);

  const WeightStore& w = checkpoint.weights;
  EXPECT_EQ(w.all().size(), 11u);
  EXPECT_EQ(w.get("model.embed_tokens.weight", {8, 32}).dtype, DType::Q8_0);
  w.get("model.norm.weight", {32});
  w.get("model.layers.0.input_layernorm.weight", {32});
  EXPECT_EQ(w.get("model.layers.0.self_attn.q_proj.weight", {32, 32}).dtype, DType::F16);
  w.get("model.layers.0.self_attn.k_proj.weight", {16, 32});
  EXPECT_EQ(w.get("model.layers.0.self_attn.v_proj.weight", {16, 32}).dtype, DType::Q4_0);
  EXPECT_EQ(w.get("model.layers.0.self_attn.o_proj.weight", {32, 32}).dtype, DType::Q4_1);
  w.get("model.layers.0.post_attention_layernorm.weight", {32});
  w.get("model.layers.0.mlp.gate_proj.weight", {64, 32});
  w.get("model.layers.0.mlp.up_proj.weight", {64, 32});
  w.get("model.layers.0.mlp.down_proj.weight", {32, 64});
  EXPECT_EQ(w.get("model.layers.0.input_layernorm.weight").to_float()[2], 2.0f);
  EXPECT_FALSE(w.has("lm_head.weight"));

  const Bytes untied_file = test::tiny_model_gguf("llama", true).build();
  Checkpoint untied = hf_view(untied_file);
  EXPECT_EQ(untied.config["tie_word_embeddings"], false);
  untied.weights.get("lm_head.weight", {8, 32});
}

TEST(LoaderGguf, QwenConfigs) {
  const Bytes qwen2_file = test::tiny_model_gguf("qwen2").build();
  Checkpoint qwen2 = hf_view(qwen2_file);
  EXPECT_EQ(qwen2.config["architectures"], json({"Qwen2ForCausalLM"}));
  EXPECT_EQ(qwen2.config["model_type"], "qwen2");
  EXPECT_EQ(qwen2.config["attention_bias"], true);
  EXPECT_FALSE(qwen2.config.contains("tachyon_rope_interleaved"));
  EXPECT_EQ(qwen2.weights.get("model.layers.0.self_attn.q_proj.bias", {32}).to_float()[5], 5.0f);
  qwen2.weights.get("model.layers.0.self_attn.k_proj.bias", {16});
  qwen2.weights.get("model.layers.0.self_attn.v_proj.bias", {16});

  const Bytes qwen3_file = test::tiny_model_gguf("qwen3").build();
  Checkpoint qwen3 = hf_view(qwen3_file);
  EXPECT_EQ(qwen3.config["architectures"], json({"Qwen3ForCausalLM"}));
  EXPECT_EQ(qwen3.config["model_type"], "qwen3");
  EXPECT_EQ(qwen3.config["head_dim"], 16);
  EXPECT_EQ(qwen3.config["attention_bias"], false);
  qwen3.weights.get("model.layers.0.self_attn.q_norm.weight", {16});
  qwen3.weights.get("model.layers.0.self_attn.k_norm.weight", {16});
}

TEST(LoaderGguf, Qwen3MoeConfigAndExpertViews) {
  Bytes file = test::tiny_model_gguf("qwen3moe").build();
  Checkpoint moe = hf_view(file);
  const json& c = moe.config;
  EXPECT_EQ(c["architectures"], json({"Qwen3MoeForCausalLM"}));
  EXPECT_EQ(c["model_type"], "qwen3_moe");
  EXPECT_EQ(c["num_experts"], 4);
  EXPECT_EQ(c["num_experts_per_tok"], 2);
  EXPECT_EQ(c["moe_intermediate_size"], 32);
  EXPECT_EQ(c["norm_topk_prob"], true);
  EXPECT_EQ(c["intermediate_size"], 64);
  moe.weights.get("model.layers.0.mlp.gate.weight", {4, 32});
  EXPECT_FALSE(moe.weights.has("blk.0.ffn_gate_exps.weight"));
  for (int e = 0; e < 4; ++e) {
    for (const char* proj : {"gate_proj", "up_proj"}) {
      const TensorView& view = moe.weights.get(fmt::format("model.layers.0.mlp.experts.{}.{}.weight", e, proj), {32, 32});
      std::vector<float> values = view.to_float();
      EXPECT_EQ(values[0], e * 1000.0f);
      EXPECT_EQ(values[1 * 32 + 2], e * 1000.0f + 34.0f);  // (out 1, in 2)
      EXPECT_EQ(view.nbytes, 32u * 32u * 4u);
      EXPECT_GE(view.data, file.data());  // a view into the file, not a copy
      EXPECT_LT(view.data, file.data() + file.size());
    }
    const TensorView& down = moe.weights.get(fmt::format("model.layers.0.mlp.experts.{}.down_proj.weight", e), {32, 32});
    EXPECT_EQ(down.dtype, DType::Q8_0);
    EXPECT_EQ(down.nbytes, 34u * 32u);
  }
  const TensorView& first = moe.weights.get("model.layers.0.mlp.experts.0.down_proj.weight");
  const TensorView& last = moe.weights.get("model.layers.0.mlp.experts.3.down_proj.weight");
  EXPECT_EQ(last.data - first.data, 3 * 34 * 32);
}

TEST(LoaderGguf, ConfigErrors) {
  auto config_error = [](GgufWriter w) {
    const Bytes file = w.build();
    return error_of([&] { hf_view(file, kName); });
  };
  EXPECT_EQ(config_error(GgufWriter().str("general.architecture", "gemma3")),
            std::string(kName) + ": GGUF architecture 'gemma3' is not supported (supported: llama, qwen2, qwen3, qwen3moe)");
  EXPECT_EQ(config_error(GgufWriter()), std::string(kName) + ": metadata key general.architecture is missing");
  EXPECT_EQ(config_error(GgufWriter().str("general.architecture", "llama")),
            std::string(kName) + ": metadata key llama.embedding_length is missing");
  EXPECT_NE(config_error(GgufWriter().str("general.architecture", "llama").str("llama.embedding_length", "x"))
                .find("llama.embedding_length is a string, expected an integer"),
            std::string::npos);
  EXPECT_NE(config_error(GgufWriter().str("general.architecture", "llama").u32("llama.embedding_length", 8).u32("llama.attention.head_count", 0))
                .find("expected a positive integer"),
            std::string::npos);
  EXPECT_NE(config_error(GgufWriter().u32("general.architecture", 1)).find("expected a string"), std::string::npos);
}

json config_of(const GgufWriter& writer) {
  const Bytes file = writer.build();
  return hf_view(file).config;
}

TEST(LoaderGguf, RopeScaling) {
  GgufWriter yarn = test::tiny_model_gguf("qwen3");
  yarn.str("qwen3.rope.scaling.type", "yarn").f32("qwen3.rope.scaling.factor", 4.0f);
  yarn.u32("qwen3.rope.scaling.original_context_length", 32768);
  EXPECT_EQ(config_of(yarn)["rope_scaling"],
            json({{"rope_type", "yarn"}, {"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}}));
  GgufWriter linear = test::tiny_model_gguf("llama");
  linear.str("llama.rope.scaling.type", "linear").f32("llama.rope.scaling.factor", 2.0f);
  EXPECT_EQ(config_of(linear)["rope_scaling"], json({{"rope_type", "linear"}, {"type", "linear"}, {"factor", 2.0}}));
  GgufWriter old_linear = test::tiny_model_gguf("llama");
  old_linear.f32("llama.rope.scale_linear", 8.0f);
  EXPECT_EQ(config_of(old_linear)["rope_scaling"]["factor"], 8.0);
  GgufWriter none = test::tiny_model_gguf("llama");
  none.str("llama.rope.scaling.type", "none");
  EXPECT_TRUE(config_of(none)["rope_scaling"].is_null());
}

TEST(LoaderGguf, TensorNameMapping) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
      {"blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"},
      {"blk.7.attn_q.weight", "model.layers.7.self_attn.q_proj.weight"},
      {"blk.7.attn_q.bias", "model.layers.7.self_attn.q_proj.bias"},
      {"blk.12.attn_k.weight", "model.layers.12.self_attn.k_proj.weight"},
      {"blk.12.attn_k.bias", "model.layers.12.self_attn.k_proj.bias"},
      {"blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"},
      {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"},
      {"blk.3.attn_q_norm.weight", "model.layers.3.self_attn.q_norm.weight"},
      {"blk.3.attn_k_norm.weight", "model.layers.3.self_attn.k_norm.weight"},
      {"blk.29.ffn_norm.weight", "model.layers.29.post_attention_layernorm.weight"},
      {"blk.29.ffn_gate.weight", "model.layers.29.mlp.gate_proj.weight"},
      {"blk.29.ffn_up.weight", "model.layers.29.mlp.up_proj.weight"},
      {"blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight"},
      {"blk.5.ffn_gate_inp.weight", "model.layers.5.mlp.gate.weight"},
      // Unknown names stay as they are.
      {"rope_freqs.weight", "rope_freqs.weight"},
      {"blk.5.attn_qkv.weight", "blk.5.attn_qkv.weight"},
      {"blk.x.attn_q.weight", "blk.x.attn_q.weight"},
      {"blk..attn_q.weight", "blk..attn_q.weight"},
      {"blk.1.attn_q.scale", "blk.1.attn_q.scale"},
      {"blk.1", "blk.1"},
      {"", ""},
  };
  for (const auto& [gguf, hf] : cases) EXPECT_EQ(gguf_to_hf_tensor_name(gguf), hf) << gguf;
}

TEST(LoaderGguf, GgmlTypeNames) {
  EXPECT_EQ(ggml_type_name(14), "Q6_K (14)");
  EXPECT_EQ(ggml_type_name(0), "F32 (0)");
  EXPECT_EQ(ggml_type_name(30), "BF16 (30)");
  EXPECT_EQ(ggml_type_name(1000), "unknown (1000)");
}

}  // namespace
}  // namespace tachyon
