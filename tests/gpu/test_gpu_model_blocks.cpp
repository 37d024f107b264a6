// Host-side pieces of the GPU model runner, tested without a GPU: the KV page allocator and the config reader
// (padding for the kernels, MoE layer kinds, architectures that are not on the GPU yet).
#include <gtest/gtest.h>

#include <set>

#include "core/error.h"
#include "gpu/gpu_config.h"
#include "gpu/kv_block_allocator.h"
#include "loader/json_file.h"
#include "test_gpu_model_util.h"
#include "../support/paths.h"

namespace tachyon::gpu {
namespace {

TEST(GpuKvBlockAllocator, ReservesInPageUnitsAndTruncatesToAnyLength) {
  KvBlockAllocator allocator(/*n_pages=*/8, /*page_size=*/16, /*max_sequences=*/2, /*max_pages_per_sequence=*/6);
  const int a = allocator.add_sequence();
  EXPECT_TRUE(allocator.reserve(a, 1));
  EXPECT_EQ(allocator.reserved_positions(a), 16);
  EXPECT_TRUE(allocator.reserve(a, 40));
  EXPECT_EQ(allocator.pages(a).size(), 3u);
  EXPECT_EQ(allocator.free_pages(), 5);
  const uint64_t before = allocator.version(a);
  EXPECT_TRUE(allocator.reserve(a, 48));  // still three pages: nothing changes
  EXPECT_EQ(allocator.version(a), before);

  // Rollback to 17 keeps the pages of positions 0..16 (two), frees the third.
  allocator.truncate(a, 17);
  EXPECT_EQ(allocator.pages(a).size(), 2u);
  EXPECT_EQ(allocator.free_pages(), 6);
  EXPECT_NE(allocator.version(a), before);
  allocator.truncate(a, 32);  // growing is reserve's job: truncate never adds pages
  EXPECT_EQ(allocator.pages(a).size(), 2u);

  const std::vector<int> row = allocator.block_table_row(a);
  ASSERT_EQ(row.size(), 6u);
  EXPECT_EQ(row[0], allocator.pages(a)[0]);
  EXPECT_EQ(row[1], allocator.pages(a)[1]);
  for (size_t i = 2; i < row.size(); ++i) EXPECT_EQ(row[i], -1);
}

TEST(GpuKvBlockAllocator, SequencesNeverShareAPageAndLimitsHold) {
  KvBlockAllocator allocator(8, 4, 2, 5);
  const int a = allocator.add_sequence(), b = allocator.add_sequence();
  EXPECT_THROW(allocator.add_sequence(), Error);
  EXPECT_TRUE(allocator.reserve(a, 20));   // 5 pages: the row's width
  EXPECT_FALSE(allocator.reserve(a, 21));  // a sixth would not fit the block-table row
  EXPECT_FALSE(allocator.reserve(b, 13));  // 4 pages needed, 3 free: refused, nothing taken
  EXPECT_EQ(allocator.pages(b).size(), 0u);
  EXPECT_TRUE(allocator.reserve(b, 12));
  std::set<int> used(allocator.pages(a).begin(), allocator.pages(a).end());
  for (int page : allocator.pages(b)) EXPECT_TRUE(used.insert(page).second) << "page " << page << " shared";
  EXPECT_EQ(allocator.free_pages(), 0);
  allocator.remove_sequence(a);
  EXPECT_EQ(allocator.free_pages(), 5);
  EXPECT_THROW(allocator.pages(a), Error);
  EXPECT_TRUE(allocator.reserve(b, 20));  // pages freed by a are reused
  EXPECT_FALSE(allocator.reserve(b, 21));
  EXPECT_THROW(allocator.truncate(b, -1), Error);
}

// Padded widths: what the kernels take (head 64 / 128, widths multiples of 32), never below the model's.
void expect_padded_for_kernels(const GpuModelConfig& c) {
  EXPECT_TRUE(c.head_dim_padded == 64 || c.head_dim_padded == 128);
  EXPECT_GE(c.head_dim_padded, c.head_dim);
  EXPECT_EQ(c.hidden_padded % 32, 0);
  EXPECT_LT(c.hidden_padded - c.hidden, 32);
  EXPECT_GE(c.hidden_padded, c.hidden);
  EXPECT_EQ(c.intermediate_padded % 32, 0);
  EXPECT_EQ(c.moe_intermediate_padded % 32, 0);
  EXPECT_LE(c.hidden_norm_eps(), c.rms_eps);
}

GpuModelConfig fixture_config(const std::string& name) {
  const GpuModelConfig c =
      read_gpu_model_config(read_json_file(test::fixture_path("tiny/" + name + "/config.json")), name);
  expect_padded_for_kernels(c);
  return c;
}

TEST(GpuModelConfig, TinyFixturesArePaddedForTheKernels) {
  const auto qwen3_moe = fixture_config("qwen3_moe");
  EXPECT_EQ(qwen3_moe.family, GpuFamily::Qwen3Moe);
  EXPECT_GT(qwen3_moe.experts, 0);
  EXPECT_TRUE(qwen3_moe.norm_topk_prob);
  EXPECT_TRUE(qwen3_moe.qk_norm);
  ASSERT_EQ(qwen3_moe.sparse_layers.size(), 2u);
  EXPECT_FALSE(qwen3_moe.sparse_layers[0]);  // mlp_only_layers: [0]
  EXPECT_TRUE(qwen3_moe.sparse_layers[1]);
  EXPECT_EQ(qwen3_moe.qkv_width(), (qwen3_moe.heads + 2 * qwen3_moe.kv_heads) * qwen3_moe.head_dim_padded);

  const auto unnormalized = fixture_config("qwen3_moe_unnormalized");
  EXPECT_FALSE(unnormalized.norm_topk_prob);
  EXPECT_FALSE(unnormalized.sparse_layers[0]);  // decoder_sparse_step 2
  EXPECT_TRUE(unnormalized.sparse_layers[1]);

  const auto qwen2 = fixture_config("qwen2");
  EXPECT_TRUE(qwen2.qkv_bias);
  EXPECT_FALSE(qwen2.o_bias);
  EXPECT_EQ(qwen2.rope.type, RopeType::Yarn);

  const auto gpt_oss = fixture_config("gpt_oss");
  EXPECT_EQ(gpt_oss.family, GpuFamily::GptOss);
  EXPECT_EQ(gpt_oss.sliding_window(0), 8);
  EXPECT_EQ(gpt_oss.sliding_window(1), 0);
  EXPECT_EQ(gpt_oss.head_dim_padded, 64);
  EXPECT_FALSE(gpt_oss.gpt_oss_mxfp4);
  EXPECT_TRUE(fixture_config("gpt_oss_mxfp4").gpt_oss_mxfp4);

  EXPECT_TRUE(fixture_config("qwen3").tied_embeddings);
  EXPECT_EQ(fixture_config("llama").rope.type, RopeType::Llama3);
}

TEST(GpuModelConfig, BuiltinShapesParse) {
  const auto qwen = read_gpu_model_config(*builtin_model_config("qwen3-30b-a3b"), "qwen3-30b-a3b");
  EXPECT_EQ(qwen.layers, 48);
  EXPECT_EQ(qwen.experts, 128);
  EXPECT_EQ(qwen.top_k, 8);
  EXPECT_EQ(qwen.head_dim_padded, 128);
  EXPECT_EQ(qwen.moe_intermediate_padded, 768);
  EXPECT_FALSE(qwen.has_dense_layers());
  const auto smol = read_gpu_model_config(*builtin_model_config("smollm2-135m"), "smollm2-135m");
  EXPECT_EQ(smol.hidden_padded, 576);
  EXPECT_EQ(smol.head_dim_padded, 64);
  EXPECT_TRUE(smol.tied_embeddings);
  EXPECT_EQ(smol.intermediate_padded, 1536);
  EXPECT_FALSE(builtin_model_config("no-such-model").has_value());

  const auto oss = read_gpu_model_config(*builtin_model_config("gpt-oss-20b"), "gpt-oss-20b");
  EXPECT_EQ(oss.family, GpuFamily::GptOss);
  EXPECT_EQ(oss.layers, 24);
  EXPECT_EQ(oss.hidden_padded, 2880);
  EXPECT_EQ(oss.heads, 64);
  EXPECT_EQ(oss.kv_heads, 8);
  EXPECT_EQ(oss.head_dim_padded, 64);
  EXPECT_EQ(oss.experts, 32);
  EXPECT_EQ(oss.top_k, 4);
  EXPECT_EQ(oss.moe_intermediate_padded, 2880);
  EXPECT_EQ(oss.vocab, 201088);
  EXPECT_EQ(oss.rope.type, RopeType::Yarn);
  EXPECT_TRUE(oss.attention_sinks && oss.qkv_bias && oss.o_bias && oss.router_bias && oss.expert_biases);
  EXPECT_TRUE(oss.gpt_oss_mxfp4);
  EXPECT_FLOAT_EQ(oss.swiglu_limit, 7.0f);
  EXPECT_EQ(oss.sliding_window(0), 128);
  EXPECT_EQ(oss.sliding_window(1), 0);
  EXPECT_EQ(oss.sliding_window(22), 128);
  EXPECT_FALSE(oss.has_dense_layers());
}

TEST(GpuModelConfig, OtherArchitecturesAreNotOnTheGpuYet) {
  const nlohmann::json config = read_json_file(test::fixture_path("tiny/mixtral/config.json"));
  try {
    read_gpu_model_config(config, "mixtral config");
    FAIL() << "mixtral accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MixtralForCausalLM is not on the GPU yet"), std::string::npos) << e.what();
  }
  nlohmann::json odd = *builtin_model_config("smollm2-135m");
  odd["hidden_size"] = 580;  // padded to 608
  expect_padded_for_kernels(read_gpu_model_config(odd, "odd"));
  odd["head_dim"] = 256;
  EXPECT_THROW(read_gpu_model_config(odd, "odd"), Error);  // above the attention kernel's 128
}

// The GPU tests compare against the CPU reference on bf16-rounded weights; this checks that reference on the CPU
// alone: the rounding helper keeps the model working, and how far bf16 weights move the logits from
// transformers' float32 ones (the gap the GPU tests' transformers bound must allow).
TEST(GpuModelReference, Bf16RoundedCpuModelStaysCloseToTransformers) {
  for (const std::string name :
       {"llama", "qwen2", "qwen3", "qwen3_moe", "qwen3_moe_unnormalized", "gpt_oss", "gpt_oss_mxfp4"}) {
    const std::string dir = test::fixture_path("tiny/" + name);
    const Checkpoint checkpoint = open_checkpoint(dir);
    const auto rounded = gpu_model_test::round_matrices_to_bf16(checkpoint);
    const auto model = create_model(rounded->checkpoint);
    const nlohmann::json reference = read_json_file(dir + "/reference.json");
    const auto prompt = reference["prompt_ids"].get<std::vector<int32_t>>();
    const int vocab = reference["logits_shape"][1].get<int>();
    std::vector<float> expected(prompt.size() * vocab);
    std::ifstream file(dir + "/" + reference["logits_file"].get<std::string>(), std::ios::binary);
    file.read(reinterpret_cast<char*>(expected.data()), static_cast<std::streamsize>(expected.size() * sizeof(float)));
    KvCache cache = model->new_cache();
    const std::vector<float> logits = model->forward(prompt, cache, /*all_rows=*/true);
    const double error = gpu_model_test::max_relative_error(logits, expected, vocab);
    std::printf("[ %s ] CPU on bf16-rounded weights vs transformers: %.3g\n", name.c_str(), error);
    EXPECT_LE(error, 5e-2) << name;  // measured 0.009 .. 0.030 (transformers 5.17 fixtures)
    EXPECT_GT(error, 0.0) << name << ": nothing was rounded";
  }
}

}  // namespace
}  // namespace tachyon::gpu
