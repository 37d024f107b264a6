// gemv_fp8 / gated_gemv_fp8 (block-scaled FP8 weights, kernels/gemv/gemv_bf16.cu) against the CPU linear_f32 on
// the matrix the CPU quantizer (fp4/fp8_blocks.h) defines, dequantized; and the GPU quantizer
// (kernels/fp8/fp8_quantize.h) against that CPU quantizer, bit for bit.
// Bound as the bf16 gemv's: |y - ref| <= 1e-4 * max|x| * ||w_row|| + 1e-5 (activations enter as fp16 hi + lo of x / 16).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "fp4/fp4_codec.h"
#include "fp4/fp8_blocks.h"
#include "fp8/fp8_quantize.h"
#include "gemv/gemv_bf16.h"
#include "gemv_test_util.h"
#include "gpu_test_util.h"
#include "models/layers.h"
#include "norm/rms_norm.h"

namespace tachyon {
namespace {

using namespace gpu_test;

// A matrix quantized on the CPU, in the gemv's layout: codes, scales repeated per 16-row group, and the values.
struct Fp8Host {
  std::vector<uint8_t> codes;
  std::vector<float> scales;  // [ceil(rows / 16), ceil(cols / 128)]
  std::vector<float> values;  // code * scale
};

// Parts: row counts of checkpoint tensors stacked in the matrix (each with its own tiles), multiples of 16.
Fp8Host quantize_on_cpu(const std::vector<float>& w, std::vector<int64_t> parts, int64_t cols) {
  int64_t rows = 0;
  for (int64_t p : parts) rows += p;
  const int64_t col_blocks = (cols + 127) / 128;
  Fp8Host h;
  h.codes.resize(static_cast<size_t>(rows * cols));
  h.values.resize(h.codes.size());
  h.scales.resize(static_cast<size_t>((rows + 15) / 16 * col_blocks));
  int64_t row0 = 0;
  for (int64_t part : parts) {
    const fp4::Fp8BlockMatrix q = fp4::quantize_fp8_block(w.data() + row0 * cols, part, cols, "test");
    std::copy(q.codes.begin(), q.codes.end(), h.codes.begin() + row0 * cols);
    q.to_float(h.values.data() + row0 * cols);
    for (int64_t r = 0; r < part; r += 16)
      for (int64_t c = 0; c < col_blocks; ++c) h.scales[static_cast<size_t>((row0 + r) / 16 * col_blocks + c)] = q.scale_of(r, c * 128);
    row0 += part;
  }
  return h;
}

struct Fp8Device {
  cuda::DeviceBuffer<uint8_t> codes;
  cuda::DeviceBuffer<float> scales;
  explicit Fp8Device(const Fp8Host& h) : codes(h.codes), scales(h.scales) {}
  kernels::Fp8Matrix matrix() const { return {codes.data(), scales.data()}; }
};

void run_case(int n, int out, int in, bool with_bias, kernels::GemvTuning tuning = {}) {
  // Weights spread over several binades (a uniform in [-1, 1] times 2^(0..-8)), so codes use many exponents.
  std::vector<float> w = random_floats(static_cast<size_t>(out) * in);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::ldexp(w[i], -static_cast<int>(i * 2654435761u % 9));
  const Fp8Host q = quantize_on_cpu(w, {out}, in);
  const std::vector<float> x = random_normal(static_cast<size_t>(n) * in, 3.0f), bias = random_floats(out);
  std::vector<float> want(static_cast<size_t>(n) * out);
  linear_f32(q.values.data(), out, in, with_bias ? bias.data() : nullptr, x.data(), n, want.data());

  const Fp8Device w_dev(q);
  cuda::DeviceBuffer<float> x_dev(x), bias_dev(bias);
  auto y_dev = poisoned(want.size());
  kernels::gemv_fp8(w_dev.matrix(), with_bias ? bias_dev.data() : nullptr, x_dev.data(), y_dev.data(), n, out, in,
                    nullptr, tuning);
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  expect_within(y_dev.to_host(), want, gemv_bound(q.values, x, n, out, in),
                "gemv_fp8 n=" + std::to_string(n) + " " + std::to_string(out) + "x" + std::to_string(in) +
                    " k_split=" + std::to_string(tuning.k_split) + " row_tiles=" + std::to_string(tuning.row_tiles) +
                    " cluster=" + std::to_string(tuning.cluster));
}

TEST(GpuGemvFp8, EngineShapesAllTokenCounts) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  // SmolLM2 QKV / o / MLP (576 = 4.5 scale blocks), Qwen3-30B-A3B QKV and o, gpt-oss (2880 = 22.5 blocks).
  const std::pair<int, int> cases[] = {{960, 576}, {576, 576}, {1536, 576}, {576, 1536},
                                       {5120, 2048}, {2048, 4096}, {5120, 2880}, {2880, 4096}};
  for (auto [out, in] : cases)
    for (int n : {1, 2, 3, 8, 9, 16}) run_case(n, out, in, false);
}

TEST(GpuGemvFp8, EveryKSplitAndRowTileAndRaggedShapes) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  for (int k_split : {1, 2, 4})
    for (int n : {1, 16}) run_case(n, 4096, 2048, true, {k_split, 0});
  for (int row_tiles : {1, 2})
    for (int n : {1, 9, 16}) {
      run_case(n, 2048, 4096, false, {4, row_tiles});
      run_case(n, 1000, 192, true, {4, row_tiles});  // rows not a multiple of 16; 1.5 scale blocks
      run_case(n, 17, 64, true, {4, row_tiles});
    }
  for (int cluster : {1, 2})  // 16-row blocks alone or in clusters of two splitting the scale blocks
    for (int n : {1, 9, 16}) {
      run_case(n, 576, 1536, false, {4, 1, cluster});
      run_case(n, 576, 576, true, {4, 1, cluster});  // 4.5 scale blocks over eight warps
      run_case(n, 17, 64, true, {4, 1, cluster});
    }
  for (int n : {1, 2, 16}) run_case(n, 49152, 576, false);  // SmolLM2 lm_head
  run_case(1, 151936, 2048, false);                          // Qwen3 lm_head
}

TEST(GpuGemvFp8, GatedSwigluMatchesTwoLinearsAndSilu) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  for (auto [out, in] : {std::pair{1536, 576}, std::pair{768, 2048}, std::pair{112, 64}}) {
    for (int n : {1, 6, 16}) {
      const std::vector<float> gate_w = random_floats(static_cast<size_t>(out) * in), up_w = random_floats(gate_w.size());
      const Fp8Host gate = quantize_on_cpu(gate_w, {out}, in), up = quantize_on_cpu(up_w, {out}, in);
      const std::vector<float> x = random_floats(static_cast<size_t>(n) * in);
      const GatedReference want = gated_reference(gate.values, up.values, x, n, out, in);
      const Fp8Device gate_dev(gate), up_dev(up);
      cuda::DeviceBuffer<float> x_dev(x);
      auto h_dev = poisoned(want.h.size());
      kernels::gated_gemv_fp8(gate_dev.matrix(), up_dev.matrix(), x_dev.data(), h_dev.data(), n, out, in, nullptr);
      TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
      expect_within(h_dev.to_host(), want.h, want.bound, "gated gemv_fp8 n=" + std::to_string(n) + " " + std::to_string(out));
    }
  }
}

// The fused pre-norm with FP8 weights: the bits of add_rms_norm_to + the plain FP8 product (fused at 1..2 tokens).
TEST(GpuGemvFp8, FusedResidualNormGivesTheBitsOfNormThenGemv) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  struct Case {
    int out, in;
    bool gated;
  };
  for (const Case& c : {Case{960, 576, false}, Case{1536, 576, true}, Case{5120, 2048, false}, Case{49152, 576, false}}) {
    for (int n : {1, 2, 3}) {
      const std::string what = std::to_string(c.out) + "x" + std::to_string(c.in) + (c.gated ? " gated" : "") +
                               " n=" + std::to_string(n);
      const size_t rows = static_cast<size_t>(n) * c.in;
      const std::vector<float> residual = random_normal(rows, 2.0f), delta = random_normal(rows, 0.5f);
      const std::vector<float> weight = random_floats(c.in);
      const Fp8Host w = quantize_on_cpu(random_floats(static_cast<size_t>(c.out) * c.in), {c.out}, c.in);
      const Fp8Host up = quantize_on_cpu(random_floats(static_cast<size_t>(c.out) * c.in), {c.out}, c.in);
      const Fp8Device w_dev(w), up_dev(up);
      cuda::DeviceBuffer<float> residual_dev(residual), delta_dev(delta), weight_dev(weight);
      const size_t out_size = static_cast<size_t>(n) * c.out;
      auto ref_residual = poisoned(rows), ref_normed = poisoned(rows), ref_y = poisoned(out_size);
      kernels::add_rms_norm_to(residual_dev.data(), delta_dev.data(), weight_dev.data(), ref_normed.data(), n, c.in,
                               1e-5f, ref_residual.data(), nullptr);
      if (c.gated)
        kernels::gated_gemv_fp8(w_dev.matrix(), up_dev.matrix(), ref_normed.data(), ref_y.data(), n, c.out, c.in, nullptr);
      else
        kernels::gemv_fp8(w_dev.matrix(), nullptr, ref_normed.data(), ref_y.data(), n, c.out, c.in, nullptr);
      auto fused_residual = poisoned(rows), fused_normed = poisoned(rows), fused_y = poisoned(out_size);
      const kernels::ResidualNorm norm{residual_dev.data(), delta_dev.data(), weight_dev.data(), 1e-5f,
                                       fused_residual.data(), fused_normed.data()};
      if (c.gated)
        kernels::gated_gemv_fp8(norm, w_dev.matrix(), up_dev.matrix(), fused_y.data(), n, c.out, c.in, nullptr);
      else
        kernels::gemv_fp8(norm, w_dev.matrix(), nullptr, fused_y.data(), n, c.out, c.in, nullptr);
      TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
      expect_same_bits(fused_residual.to_host(), ref_residual.to_host(), what + " residual_out");
      expect_same_bits(fused_normed.to_host(), ref_normed.to_host(), what + " normed");
      expect_same_bits(fused_y.to_host(), ref_y.to_host(), what + " product");
    }
  }
}

// The loader's quantizer on the GPU gives the CPU quantizer's codes and scales, and rounds the bf16 weights to
// bf16(code * scale) when asked; each part of a stacked matrix keeps its own tiles.
TEST(GpuGemvFp8, GpuQuantizerMatchesTheCpuQuantizerBitForBit) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  struct Case {
    std::vector<int64_t> parts;
    int64_t cols;
  };
  for (const Case& c : {Case{{576, 192, 192}, 576}, Case{{4096, 512, 512}, 2048}, Case{{768, 768}, 576},
                        Case{{49152}, 576}, Case{{16}, 64}}) {
    int64_t rows = 0;
    for (int64_t p : c.parts) rows += p;
    std::vector<float> w = random_normal(static_cast<size_t>(rows * c.cols), 0.02f);
    for (size_t i = 0; i < w.size(); i += 977) w[i] *= 40.0f;  // outliers set some tiles' scales
    for (size_t i = 5; i < w.size(); i += 1361) w[i] = 0.0f;
    const Bf16Tensor bf = to_bf16(w);
    const Fp8Host want = quantize_on_cpu(bf.values, c.parts, c.cols);
    cuda::DeviceBuffer<uint16_t> w_dev(bf.bits);
    cuda::DeviceBuffer<uint8_t> codes(want.codes.size());
    cuda::DeviceBuffer<float> scales(want.scales.size());
    int64_t row0 = 0;
    for (int64_t part : c.parts) {
      kernels::quantize_fp8_rows(as_bf16(w_dev), row0, part, c.cols, codes.data(), scales.data(), true, nullptr);
      row0 += part;
    }
    TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
    const std::string what = std::to_string(rows) + "x" + std::to_string(c.cols);
    EXPECT_EQ(codes.to_host(), want.codes) << what << " codes";
    expect_same_bits(scales.to_host(), want.scales, what + " scales");
    const std::vector<uint16_t> rounded = w_dev.to_host();
    size_t differ = 0;
    for (size_t i = 0; i < rounded.size(); ++i) differ += rounded[i] != float_to_bf16(want.values[i]);
    EXPECT_EQ(differ, 0u) << what << ": bf16 write-back differs from bf16(code * scale) at " << differ << " elements";
  }
}

TEST(GpuGemvFp8, RejectsBadShapesWithAMessage) {
  SKIP_WITHOUT_GPU();
  cuda::DeviceBuffer<uint8_t> codes(64 * 96);
  cuda::DeviceBuffer<float> scales(64), x(96), y(64);
  try {
    kernels::gemv_fp8({codes.data(), scales.data()}, nullptr, x.data(), y.data(), 1, 64, 96, nullptr);
    FAIL() << "in_features 96 accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of 64"), std::string::npos) << e.what();
  }
  EXPECT_THROW(kernels::gemv_fp8({codes.data(), nullptr}, nullptr, x.data(), y.data(), 1, 64, 64, nullptr),
               std::exception);
  cuda::DeviceBuffer<uint16_t> w(64 * 64);
  EXPECT_THROW(kernels::quantize_fp8_rows(as_bf16(w), 8, 16, 64, codes.data(), scales.data(), false, nullptr),
               std::exception);
}

}  // namespace
}  // namespace tachyon
