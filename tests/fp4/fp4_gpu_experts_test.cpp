// The host side of FP4 experts on the GPU (src/gpu/fp4_experts.h), checked without a GPU: format names, the
// padding FP4 tiles need, the bytes a decode step counts per expert, and the load-time quantization's padding.
#include <gtest/gtest.h>

#include "core/error.h"
#include "fp4/fp4_kernel_layout.h"
#include "gpu/fp4_experts.h"

namespace tachyon::gpu {
namespace {

GpuModelConfig moe_config(int hidden, int width) {
  GpuModelConfig c;
  c.architecture = "Qwen3MoeForCausalLM";
  c.hidden = hidden;
  c.hidden_padded = round_up(hidden, 32);
  c.experts = 128;
  c.top_k = 8;
  c.moe_intermediate = width;
  c.moe_intermediate_padded = round_up(width, 32);
  return c;
}

TEST(Fp4GpuExperts, FormatsParseAndDenseModelsRefuseThem) {
  EXPECT_EQ(parse_expert_format("nvfp4", "t"), ExpertFormat::Nvfp4);
  EXPECT_EQ(parse_expert_format("mxfp4", "t"), ExpertFormat::Mxfp4);
  EXPECT_EQ(parse_expert_format("bf16", "t"), ExpertFormat::Bf16);
  EXPECT_THROW(parse_expert_format("int4", "t"), Error);
  GpuModelConfig dense;
  EXPECT_THROW(set_expert_format(dense, ExpertFormat::Mxfp4, "t"), Error);
}

TEST(Fp4GpuExperts, PaddingAndStoredBytesAtQwen3Shapes) {
  GpuModelConfig c = moe_config(2048, 768);
  EXPECT_DOUBLE_EQ(stored_expert_bytes(c), 2.0 * 3 * 768 * 2048);
  set_expert_format(c, ExpertFormat::Nvfp4, "t");
  EXPECT_EQ(c.hidden_padded, 2048);
  EXPECT_EQ(c.moe_intermediate_padded, 768);
  // 48 x 32 tiles of 576 bytes per matrix (512 of codes, 64 of e4m3 scales), plus 3 float global scales.
  EXPECT_DOUBLE_EQ(stored_expert_bytes(c), 3.0 * 48 * 32 * 576 + 12);
  set_expert_format(c, ExpertFormat::Mxfp4, "t");
  EXPECT_DOUBLE_EQ(stored_expert_bytes(c), 3.0 * 48 * 32 * 544);
  GpuModelConfig tiny = moe_config(48, 16);
  set_expert_format(tiny, ExpertFormat::Mxfp4, "t");
  EXPECT_EQ(tiny.hidden_padded, 64);
  EXPECT_EQ(tiny.moe_intermediate_padded, 64);
}

TEST(Fp4GpuExperts, QuantizationPadsWithZeroCodes) {
  const int64_t rows = 5, cols = 40, padded_rows = 16, padded_cols = 64;
  std::vector<float> w(rows * cols);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * static_cast<float>((i * 7) % 13) - 0.06f;
  for (ExpertFormat format : {ExpertFormat::Nvfp4, ExpertFormat::Mxfp4}) {
    const fp4::Fp4Matrix q = quantize_expert_matrix(format, w, rows, cols, padded_rows, padded_cols, "t");
    ASSERT_EQ(q.rows, padded_rows);
    ASSERT_EQ(q.cols, padded_cols);
    std::vector<float> back(padded_rows * padded_cols);
    q.view().to_float(back.data());
    for (int64_t r = 0; r < padded_rows; ++r)
      for (int64_t c = 0; c < padded_cols; ++c) {
        if (r < rows && c < cols)
          EXPECT_NEAR(back[r * padded_cols + c], w[r * cols + c], 0.02f);
        else
          EXPECT_EQ(back[r * padded_cols + c], 0.0f) << r << ", " << c;
      }
    EXPECT_NO_THROW(fp4::pack_kernel_tiles(q.view()));
  }
  EXPECT_THROW(quantize_expert_matrix(ExpertFormat::Nvfp4, w, rows, cols, 4, padded_cols, "t"), Error);
}

}  // namespace
}  // namespace tachyon::gpu
