// Norms, embedding, SwiGLU, bf16 conversion and RoPE against the CPU reference (models/layers, models/rope).
#include <cmath>

#include "activation/swiglu.h"
#include "embedding/embedding.h"
#include "gpu_test_util.h"
#include "models/layers.h"
#include "models/rope.h"
#include "norm/rms_norm.h"
#include "rope/rope.h"

namespace tachyon {
namespace {

using namespace gpu_test;

TEST(GpuNorm, AddRmsNormUpdatesResidualAndNormalizes) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  for (int dim : {576, 2048, 2880, 4096, 6144, 8192, 12288, 1000, 33}) {  // register widths 1, 2, 4, 8; scalar
    for (int rows : {1, 7, 16}) {
      const std::vector<float> residual = random_floats(static_cast<size_t>(rows) * dim, -3, 3);
      const std::vector<float> delta = random_floats(residual.size());
      const std::vector<float> weight = random_floats(dim, 0.5f, 1.5f);
      std::vector<float> summed(residual.size()), want(residual.size());
      for (size_t i = 0; i < summed.size(); ++i) summed[i] = residual[i] + delta[i];
      rms_norm(summed.data(), weight.data(), 1e-6f, rows, dim, want.data());

      cuda::DeviceBuffer<float> residual_dev(residual), delta_dev(delta), weight_dev(weight);
      auto y_dev = poisoned(residual.size());
      kernels::add_rms_norm(residual_dev.data(), delta_dev.data(), weight_dev.data(), y_dev.data(), rows, dim, 1e-6f,
                            nullptr);
      TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
      const std::string what = "add_rms_norm dim=" + std::to_string(dim) + " rows=" + std::to_string(rows);
      expect_within(residual_dev.to_host(), summed, 0.0f, 0.0f, what + " residual");
      expect_within(y_dev.to_host(), want, 1e-5f, 1e-6f, what);

      // Plain rms_norm of the updated residual: same numbers.
      auto y2_dev = poisoned(residual.size());
      kernels::rms_norm(residual_dev.data(), weight_dev.data(), y2_dev.data(), rows, dim, 1e-6f, nullptr);
      TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
      expect_within(y2_dev.to_host(), want, 1e-5f, 1e-6f, "rms_norm dim=" + std::to_string(dim));
    }
  }
}

TEST(GpuNorm, PerHeadRmsNormOnAStridedProjection) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  const int n_tokens = 5, n_heads = 32, head_dim = 128, stride = 32 * 128 + 2 * 4 * 128;  // Qwen3 fused qkv row
  std::vector<float> x = random_floats(static_cast<size_t>(n_tokens) * stride, -2, 2);
  const std::vector<float> weight = random_floats(head_dim, 0.5f, 1.5f);
  std::vector<float> want = x;
  for (int t = 0; t < n_tokens; ++t)
    for (int h = 0; h < n_heads; ++h) {
      float* head = want.data() + static_cast<size_t>(t) * stride + h * head_dim;
      std::vector<float> tmp(head, head + head_dim);
      rms_norm(tmp.data(), weight.data(), 1e-6f, 1, head_dim, head);
    }
  cuda::DeviceBuffer<float> x_dev(x), weight_dev(weight);
  kernels::per_head_rms_norm(x_dev.data(), stride, n_tokens, n_heads, head_dim, weight_dev.data(), 1e-6f, nullptr);
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  expect_within(x_dev.to_host(), want, 1e-5f, 1e-6f, "per_head_rms_norm (k/v columns must stay untouched)");
}

TEST(GpuEmbedding, GathersRowsAndMarksBadIds) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  const int vocab = 49152, dim = 576;
  const Bf16Tensor table = to_bf16(random_floats(static_cast<size_t>(vocab) * dim));
  const std::vector<int> ids = {0, 49151, 17, 17, 30000, -1, 49152, 5};
  cuda::DeviceBuffer<uint16_t> table_dev(table.bits);
  cuda::DeviceBuffer<int> ids_dev(ids);
  auto x_dev = poisoned(ids.size() * dim);
  kernels::embedding_gather_bf16(as_bf16(table_dev), ids_dev.data(), x_dev.data(), static_cast<int>(ids.size()), vocab,
                                 dim, 1.0f, nullptr);
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> x = x_dev.to_host();
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int i = 0; i < dim; ++i) {
      const float got = x[t * dim + i];
      if (ids[t] < 0 || ids[t] >= vocab) {
        ASSERT_TRUE(std::isnan(got)) << "bad id " << ids[t] << " must give NaN";
      } else {
        ASSERT_EQ(got, table.values[static_cast<size_t>(ids[t]) * dim + i]) << "token " << t << " element " << i;
      }
    }
  }
}

TEST(GpuActivation, SwigluWithStridesAndBf16Conversion) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  const int rows = 9, cols = 1536;
  const std::vector<float> fused = random_floats(static_cast<size_t>(rows) * 2 * cols, -6, 6);  // [gate | up] rows
  std::vector<float> want(static_cast<size_t>(rows) * cols);
  for (int r = 0; r < rows; ++r)
    swiglu(fused.data() + static_cast<size_t>(r) * 2 * cols, fused.data() + static_cast<size_t>(r) * 2 * cols + cols,
           cols, want.data() + static_cast<size_t>(r) * cols);
  cuda::DeviceBuffer<float> fused_dev(fused);
  auto h_dev = poisoned(want.size());
  kernels::swiglu(fused_dev.data(), 2 * cols, fused_dev.data() + cols, 2 * cols, h_dev.data(), rows, cols, nullptr);
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  expect_within(h_dev.to_host(), want, 2e-6f, 1e-7f, "swiglu");

  cuda::DeviceBuffer<uint16_t> bf_dev(fused.size());
  kernels::convert_f32_to_bf16(fused_dev.data(), as_bf16(bf_dev), static_cast<int64_t>(fused.size()), nullptr);
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<uint16_t> bits = bf_dev.to_host();
  for (size_t i = 0; i < fused.size(); ++i) ASSERT_EQ(bits[i], float_to_bf16(fused[i])) << "element " << i;
}

TEST(GpuActivation, LogitSoftcap) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  const float cap = 30.0f;
  const std::vector<float> logits = random_floats(3 * 50257, -200, 200);  // well past the cap both ways
  std::vector<float> want(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) want[i] = std::tanh(logits[i] / cap) * cap;
  cuda::DeviceBuffer<float> x_dev(logits);
  kernels::logit_softcap(x_dev.data(), static_cast<int64_t>(logits.size()), cap, nullptr);
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  expect_within(x_dev.to_host(), want, 2e-6f, 2e-6f * cap, "logit_softcap");
}

RopeConfig rope_config(RopeType type, int rotary_dim, bool interleaved) {
  RopeConfig c;
  c.type = type;
  c.rotary_dim = rotary_dim;
  c.interleaved = interleaved;
  c.theta = 1000000.0;
  if (type == RopeType::Yarn) {
    c.factor = 4.0;
    c.original_max_position = 32768;
  } else if (type == RopeType::Llama3) {
    c.theta = 500000.0;
    c.factor = 8.0;
    c.low_freq_factor = 1.0;
    c.high_freq_factor = 4.0;
    c.original_max_position = 8192;
  } else if (type == RopeType::Linear) {
    c.factor = 2.0;
  }
  return c;
}

TEST(GpuRope, MatchesCpuRopeForEveryVariantAndPairing) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  struct Case {
    RopeType type;
    int head_dim, rotary_dim;
    bool interleaved;
  };
  const Case cases[] = {{RopeType::Default, 64, 64, false},  {RopeType::Default, 128, 128, true},
                        {RopeType::Llama3, 128, 128, false}, {RopeType::Yarn, 64, 64, false},
                        {RopeType::Linear, 128, 64, false},  {RopeType::Yarn, 128, 32, true}};
  for (const Case& c : cases) {
    const Rope rope(rope_config(c.type, c.rotary_dim, c.interleaved));
    const int n_tokens = 16, n_heads = 6, stride = n_heads * c.head_dim + 64;
    std::vector<float> x = random_floats(static_cast<size_t>(n_tokens) * stride, -2, 2);
    std::vector<int> positions(n_tokens);
    for (int t = 0; t < n_tokens; ++t) positions[t] = t < 8 ? t : 30000 + 977 * t;  // near 0 and large angles
    std::vector<float> want = x;
    for (int t = 0; t < n_tokens; ++t)
      for (int h = 0; h < n_heads; ++h) rope.apply(want.data() + static_cast<size_t>(t) * stride + h * c.head_dim, positions[t]);

    cuda::DeviceBuffer<float> x_dev(x), inv_freq_dev(rope.inverse_frequencies());
    cuda::DeviceBuffer<int> positions_dev(positions);
    kernels::RopeTable table{inv_freq_dev.data(), c.rotary_dim, rope.attention_factor(), c.interleaved};
    kernels::rope_apply(x_dev.data(), stride, n_tokens, n_heads, c.head_dim, positions_dev.data(), table, nullptr);
    TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
    expect_within(x_dev.to_host(), want, 2e-5f, 2e-5f,
                  "rope type=" + std::to_string(static_cast<int>(c.type)) + " dim=" + std::to_string(c.head_dim) +
                      " rotary=" + std::to_string(c.rotary_dim) + (c.interleaved ? " interleaved" : " half"));
  }
}

}  // namespace
}  // namespace tachyon
