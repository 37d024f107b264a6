// The host side of FP8 dense weights on the GPU (src/gpu/fp8_weights.h), checked without a GPU: the --fp8 list,
// the padding the FP8 gemv needs, the refusals, and the bytes a decode step counts.
#include <gtest/gtest.h>

#include "core/error.h"
#include "gpu/fp8_weights.h"

namespace tachyon::gpu {
namespace {

GpuModelConfig smollm2_like() {
  GpuModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden = 576;
  c.hidden_padded = 576;
  c.intermediate = 1536;
  c.intermediate_padded = 1536;
  c.vocab = 49152;
  c.sparse_layers = {false, false};
  return c;
}

TEST(Fp8GpuWeights, ListsParseAndNameBack) {
  const Fp8Weights all = parse_fp8_weights("attention,mlp,lm_head", "--fp8");
  EXPECT_TRUE(all.attention && all.mlp && all.lm_head);
  EXPECT_EQ(fp8_weights_name(all), "attention,mlp,lm_head");
  const Fp8Weights head = parse_fp8_weights("lm_head", "--fp8");
  EXPECT_FALSE(head.attention || head.mlp);
  EXPECT_EQ(fp8_weights_name(head), "lm_head");
  EXPECT_FALSE(parse_fp8_weights("none", "--fp8").any());
  EXPECT_FALSE(parse_fp8_weights("", "--fp8").any());
  EXPECT_EQ(fp8_weights_name(Fp8Weights{}), "none");
  try {
    parse_fp8_weights("attention,experts", "--fp8");
    FAIL() << "experts accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'experts'"), std::string::npos) << e.what();
  }
}

TEST(Fp8GpuWeights, PadsToTheGemvChunkAndRefusesWhatCannotBeFp8) {
  GpuModelConfig c = smollm2_like();
  c.hidden = 560;  // padded to 576 for bf16 (a multiple of 32): the FP8 gemv needs 64
  c.hidden_padded = 576;
  c.intermediate = 1500;
  c.intermediate_padded = 1504;
  set_fp8_weights(c, parse_fp8_weights("attention,mlp", "t"), "t");
  EXPECT_EQ(c.hidden_padded, 576);
  EXPECT_EQ(c.intermediate_padded, 1536);
  GpuModelConfig moe = smollm2_like();
  moe.sparse_layers = {true, true};
  EXPECT_THROW(set_fp8_weights(moe, parse_fp8_weights("mlp", "t"), "t"), Error);  // no dense MLP to make FP8
  GpuModelConfig odd = smollm2_like();
  odd.vocab = 1001;
  EXPECT_THROW(set_fp8_weights(odd, parse_fp8_weights("lm_head", "t"), "t"), Error);
  set_fp8_weights(odd, parse_fp8_weights("attention", "t"), "t");  // the lm_head stays bf16: fine
}

TEST(Fp8GpuWeights, BytesAreCodesPlusAScalePer16RowsAnd128Columns) {
  EXPECT_DOUBLE_EQ(fp8_matrix_bytes(4096, 2048), 4096.0 * 2048 + 256.0 * 16 * 4);
  EXPECT_DOUBLE_EQ(fp8_matrix_bytes(960, 576), 960.0 * 576 + 60.0 * 5 * 4);  // 576 = 4.5 blocks: 5 scale columns
  EXPECT_DOUBLE_EQ(fp8_matrix_bytes(17, 64), 17.0 * 64 + 2.0 * 1 * 4);
}

}  // namespace
}  // namespace tachyon::gpu
