// gemv_bf16 / gated_gemv_bf16 against the CPU linear_f32 on bf16-rounded weights, over the engine's shapes.
// Bound: |y - ref| <= 1e-4 * max|x| * ||w_row|| + 1e-5 (activations enter as bf16 hi + lo: ~2^-17 each).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "gemv/gemv_bf16.h"
#include "gemv_test_util.h"
#include "gpu_test_util.h"
#include "models/layers.h"
#include "norm/rms_norm.h"

namespace tachyon {
namespace {

using namespace gpu_test;

struct GemvCase {
  int out, in;
};

void run_gemv_case(int n, int out, int in, bool with_bias, int k_split, int row_tiles = 0, int cluster = 0) {
  const Bf16Tensor w = to_bf16(random_floats(static_cast<size_t>(out) * in));
  const std::vector<float> x = random_floats(static_cast<size_t>(n) * in);
  const std::vector<float> bias = random_floats(out);
  std::vector<float> want(static_cast<size_t>(n) * out);
  linear_f32(w.values.data(), out, in, with_bias ? bias.data() : nullptr, x.data(), n, want.data());

  cuda::DeviceBuffer<uint16_t> w_dev(w.bits);
  cuda::DeviceBuffer<float> x_dev(x), bias_dev(bias);
  auto y_dev = poisoned(static_cast<size_t>(n) * out);
  kernels::gemv_bf16(as_bf16(w_dev), with_bias ? bias_dev.data() : nullptr, x_dev.data(), y_dev.data(), n, out, in,
                     nullptr, kernels::GemvTuning{k_split, row_tiles, cluster});
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  expect_within(y_dev.to_host(), want, gemv_bound(w.values, x, n, out, in),
                "gemv n=" + std::to_string(n) + " " + std::to_string(out) + "x" + std::to_string(in) +
                    " k_split=" + std::to_string(k_split) + " row_tiles=" + std::to_string(row_tiles) +
                    " cluster=" + std::to_string(cluster));
}

TEST(GpuGemv, EngineShapesAllTokenCounts) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  // SmolLM2 (576 hidden, 192 kv width, 1536 MLP), Qwen3-30B-A3B attention / router / expert shapes, 6144x4096.
  const GemvCase cases[] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}, {4096, 2048},
                            {512, 2048}, {2048, 4096}, {128, 2048}, {768, 2048}, {2048, 768}};
  for (const GemvCase& c : cases)
    for (int n : {1, 2, 3, 7, 8, 9, 13, 16}) run_gemv_case(n, c.out, c.in, false, 0);
}

TEST(GpuGemv, LargeShapesAndEveryKSplit) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  for (int k_split : {1, 2, 4})
    for (int n : {1, 16}) run_gemv_case(n, 6144, 4096, false, k_split);
  for (int n : {1, 4, 16}) run_gemv_case(n, 49152, 576, false, 0);  // SmolLM2 lm_head
  run_gemv_case(1, 151936, 2048, false, 0);                           // Qwen3 lm_head
  run_gemv_case(16, 151936, 2048, false, 0);
}

TEST(GpuGemv, OneAndTwoRowTilesPerWarp) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  // Both warp shapes forced (16 rows per warp with 6 ring stages, 32 rows with 3), ragged rows and short K included.
  for (int row_tiles : {1, 2})
    for (int n : {1, 9, 16}) {
      run_gemv_case(n, 2048, 4096, false, 4, row_tiles);
      run_gemv_case(n, 1000, 96, true, 4, row_tiles);
      run_gemv_case(n, 17, 32, true, 4, row_tiles);
      run_gemv_case(n, 2880, 4096, true, 4, row_tiles);
    }
}

TEST(GpuGemv, OneRowTileWithAndWithoutClusters) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  // 16-row blocks, alone or in clusters of two splitting the columns (GemvTuning::cluster): SmolLM2's down and
  // o_proj, ragged rows, columns too few for eight warps (empty column ranges), more blocks than one wave.
  for (int cluster : {1, 2})
    for (int n : {1, 2, 9, 16}) {
      run_gemv_case(n, 576, 1536, false, 4, 1, cluster);
      run_gemv_case(n, 576, 576, true, 4, 1, cluster);
      run_gemv_case(n, 1000, 96, true, 4, 1, cluster);
      run_gemv_case(n, 17, 32, true, 4, 1, cluster);
      run_gemv_case(n, 2880, 4096, true, 4, 1, cluster);
    }
}

TEST(GpuGemv, BiasAndRaggedRowsAndShortK) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  for (int n : {1, 5, 16}) {
    run_gemv_case(n, 1000, 96, true, 0);  // rows not a multiple of 32, in_features not a multiple of 128
    run_gemv_case(n, 17, 32, true, 0);
    run_gemv_case(n, 896, 224, true, 0);  // Qwen2-0.5B-like with bias
  }
}

TEST(GpuGemv, GatedSwigluMatchesTwoLinearsAndSilu) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  for (auto [out, in] : {std::pair{1536, 576}, std::pair{768, 2048}, std::pair{100, 64}}) {
    for (int n : {1, 6, 16}) {
      const Bf16Tensor gate = to_bf16(random_floats(static_cast<size_t>(out) * in));
      const Bf16Tensor up = to_bf16(random_floats(static_cast<size_t>(out) * in));
      const std::vector<float> x = random_floats(static_cast<size_t>(n) * in);
      const GatedReference want = gated_reference(gate.values, up.values, x, n, out, in);

      cuda::DeviceBuffer<uint16_t> gate_dev(gate.bits), up_dev(up.bits);
      cuda::DeviceBuffer<float> x_dev(x);
      auto h_dev = poisoned(want.h.size());
      kernels::gated_gemv_bf16(as_bf16(gate_dev), as_bf16(up_dev), x_dev.data(), h_dev.data(), n, out, in, nullptr);
      TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
      expect_within(h_dev.to_host(), want.h, want.bound, "gated gemv n=" + std::to_string(n) + " " + std::to_string(out));
    }
  }
}

// The fused pre-norm (kernels::ResidualNorm) must give exactly the bits of add_rms_norm_to + the plain product,
// fused (1..2 tokens, one-wave grids) or not (3 tokens, a vocabulary-sized grid): speculative verification runs
// the unfused path at more tokens and must agree with plain decoding. The unfused parts have their own CPU tests.
TEST(GpuGemv, FusedResidualNormGivesTheBitsOfNormThenGemv) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  struct Case {
    int out, in;
    bool gated, bias;
  };
  // SmolLM2 QKV (16-row warps) and MLP gate/up, Qwen3 QKV and router, gpt-oss QKV (hidden 2880), and a
  // vocabulary-sized product (never fused: many waves).
  const Case cases[] = {{960, 576, false, true}, {1536, 576, true, false}, {5120, 2048, false, false},
                        {128, 2048, false, false}, {5120, 2880, false, true}, {49152, 576, false, false}};
  for (const Case& c : cases) {
    for (int n : {1, 2, 3}) {
      for (bool with_delta : {true, false}) {
        const std::string what = std::to_string(c.out) + "x" + std::to_string(c.in) + (c.gated ? " gated" : "") +
                                 " n=" + std::to_string(n) + (with_delta ? "" : " no delta");
        const size_t rows = static_cast<size_t>(n) * c.in;
        const std::vector<float> residual = random_normal(rows, 2.0f), delta = random_normal(rows, 0.5f);
        const std::vector<float> weight = random_floats(c.in), bias = random_floats(c.out);
        const Bf16Tensor w = to_bf16(random_floats(static_cast<size_t>(c.out) * c.in));
        const Bf16Tensor up = to_bf16(random_floats(c.gated ? static_cast<size_t>(c.out) * c.in : 1));
        cuda::DeviceBuffer<uint16_t> w_dev(w.bits), up_dev(up.bits);
        cuda::DeviceBuffer<float> residual_dev(residual), delta_dev(delta), weight_dev(weight), bias_dev(bias);
        const float* delta_ptr = with_delta ? delta_dev.data() : nullptr;
        const float* bias_ptr = c.bias ? bias_dev.data() : nullptr;
        const size_t out_size = static_cast<size_t>(n) * c.out;
        const float eps = 1e-5f;

        // Reference: the two launches.
        auto ref_residual = poisoned(rows), ref_normed = poisoned(rows), ref_y = poisoned(out_size);
        kernels::add_rms_norm_to(residual_dev.data(), delta_ptr, weight_dev.data(), ref_normed.data(), n, c.in, eps,
                                 ref_residual.data(), nullptr);
        if (c.gated)
          kernels::gated_gemv_bf16(as_bf16(w_dev), as_bf16(up_dev), ref_normed.data(), ref_y.data(), n, c.out, c.in,
                                   nullptr);
        else
          kernels::gemv_bf16(as_bf16(w_dev), bias_ptr, ref_normed.data(), ref_y.data(), n, c.out, c.in, nullptr);

        auto fused_residual = poisoned(rows), fused_normed = poisoned(rows), fused_y = poisoned(out_size);
        const kernels::ResidualNorm norm{residual_dev.data(), delta_ptr, weight_dev.data(), eps,
                                         fused_residual.data(), fused_normed.data()};
        if (c.gated)
          kernels::gated_gemv_bf16(norm, as_bf16(w_dev), as_bf16(up_dev), fused_y.data(), n, c.out, c.in, nullptr);
        else
          kernels::gemv_bf16(norm, as_bf16(w_dev), bias_ptr, fused_y.data(), n, c.out, c.in, nullptr);
        TACHYON_CUDA_CHECK(cudaDeviceSynchronize());

        std::vector<float> sum(rows);
        for (size_t i = 0; i < rows; ++i) sum[i] = with_delta ? residual[i] + delta[i] : residual[i];
        expect_same_bits(ref_residual.to_host(), sum, what + " residual_out (two launches)");
        expect_same_bits(fused_residual.to_host(), sum, what + " residual_out");
        expect_same_bits(fused_normed.to_host(), ref_normed.to_host(), what + " normed");
        expect_same_bits(fused_y.to_host(), ref_y.to_host(), what + " product");
      }
    }
  }
}

TEST(GpuGemv, FusedResidualNormRefusesAnOverlappingResidual) {
  SKIP_WITHOUT_GPU();
  cuda::DeviceBuffer<uint16_t> w(64 * 64);
  cuda::DeviceBuffer<float> residual(64), weight(64), normed(64), y(64);
  const kernels::ResidualNorm in_place{residual.data(), nullptr, weight.data(), 1e-5f, residual.data(), normed.data()};
  try {
    kernels::gemv_bf16(in_place, as_bf16(w), nullptr, y.data(), 1, 64, 64, nullptr);
    FAIL() << "an in-place residual was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("overlap"), std::string::npos) << e.what();
  }
}

TEST(GpuGemv, RejectsBadShapesWithAMessage) {
  SKIP_WITHOUT_GPU();
  cuda::DeviceBuffer<uint16_t> w(64 * 40);
  cuda::DeviceBuffer<float> x(40), y(64);
  try {
    kernels::gemv_bf16(as_bf16(w), nullptr, x.data(), y.data(), 1, 64, 40, nullptr);
    FAIL() << "in_features 40 accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("gemv_bf16"), std::string::npos) << e.what();
  }
  EXPECT_THROW(kernels::gemv_bf16(as_bf16(w), nullptr, x.data(), y.data(), 17, 64, 32, nullptr), std::exception);
}

}  // namespace
}  // namespace tachyon
