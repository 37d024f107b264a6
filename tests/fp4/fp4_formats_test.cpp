// FP4 formats against values computed by tests/fp4/make_fp4_reference.py, an implementation written
// independently in Python (brute-force nearest-value searches, frexp exponents, transformers' gpt-oss
// decoder): e2m1 and e4m3 encoders, MXFP4 (three scale rules) and NVFP4 (three global scales) quantization,
// byte for byte, and their dequantization, bit for bit. Then error bounds of the quantizers on random data.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
#include "fp4/fp4_blocks.h"
#include "fp4/fp4_codec.h"
#include "fp4/fp4_layouts.h"
#include "fp4_test_util.h"

namespace tachyon::fp4 {
namespace {

using test::floats_from_bits;
using test::to_bits;

const nlohmann::json& reference() {
  static const nlohmann::json ref = test::read_json(test::fp4_fixture("fp4_reference.json"));
  return ref;
}

TEST(Fp4Codec, E2M1DecodeTable) {
  const float expected[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0f, -0.5, -1, -1.5, -2, -3, -4, -6};
  for (int code = 0; code < 16; ++code) {
    EXPECT_EQ(to_bits(e2m1_to_float(static_cast<uint8_t>(code))), to_bits(expected[code])) << code;
    EXPECT_EQ(float_to_e2m1(expected[code]), code) << "every value encodes back to its code";
  }
}

TEST(Fp4Codec, E2M1EncodeMatchesPythonReference) {
  const auto& e = reference()["e2m1"];
  const std::vector<float> inputs = floats_from_bits(e["input_bits"]);
  for (size_t i = 0; i < inputs.size(); ++i)
    EXPECT_EQ(float_to_e2m1(inputs[i]), e["codes"][i].get<int>()) << "input " << inputs[i];
}

TEST(Fp4Codec, E4M3EncodeMatchesPythonReference) {
  const auto& e = reference()["e4m3"];
  const std::vector<float> inputs = floats_from_bits(e["input_bits"]);
  for (size_t i = 0; i < inputs.size(); ++i)
    EXPECT_EQ(float_to_e4m3(inputs[i]), e["codes"][i].get<int>()) << "input " << inputs[i];
}

TEST(Fp4Codec, E4M3RoundTripsEveryFiniteCodeAndAgreesWithCoreDecoder) {
  for (int byte = 0; byte < 256; ++byte) {
    const uint8_t b = static_cast<uint8_t>(byte);
    const float value = e4m3_to_float(b);
    if (std::isnan(value)) {
      EXPECT_TRUE((b & 0x7f) == 0x7f);
      continue;
    }
    EXPECT_EQ(to_bits(value), to_bits(fp8_e4m3_to_float(b))) << byte;
    EXPECT_EQ(float_to_e4m3(value), b) << byte;
  }
  EXPECT_EQ(float_to_e4m3(NAN), 0x7f);
  EXPECT_EQ(float_to_e4m3(1e30f), 0x7e);
  EXPECT_EQ(float_to_e4m3(-INFINITY), 0xfe);
}

TEST(Fp4Codec, E8M0) {
  EXPECT_EQ(e8m0_to_float(127), 1.0f);
  EXPECT_EQ(e8m0_to_float(0), std::ldexp(1.0f, -127));
  EXPECT_EQ(e8m0_to_float(254), std::ldexp(1.0f, 127));
  EXPECT_TRUE(std::isnan(e8m0_to_float(255)));
}

TEST(Fp4Blocks, QuantizationMatchesPythonReferenceByteForByte) {
  for (const auto& c : reference()["matrices"]) {
    const int64_t rows = c["rows"], cols = c["cols"];
    const std::vector<float> w = floats_from_bits(c["input_bits"]);
    Fp4Matrix q;
    std::string label;
    if (c["format"] == "mxfp4") {
      Mxfp4ScaleRule rule;
      ASSERT_TRUE(parse_scale_rule(c["rule"].get<std::string>(), &rule));
      q = quantize_mxfp4(w.data(), rows, cols, rule, "test");
      label = "mxfp4 " + c["rule"].get<std::string>();
    } else {
      const float global = test::from_bits(c["global_scale_bits"].get<uint32_t>());
      q = quantize_nvfp4(w.data(), rows, cols, global, "test");
      label = "nvfp4 " + c["global_scale_kind"].get<std::string>();
    }
    SCOPED_TRACE(label);
    ASSERT_EQ(q.packed.size(), c["packed"].size());
    ASSERT_EQ(q.scales.size(), c["scales"].size());
    for (size_t i = 0; i < q.packed.size(); ++i) ASSERT_EQ(q.packed[i], c["packed"][i].get<int>()) << "byte " << i;
    for (size_t i = 0; i < q.scales.size(); ++i) ASSERT_EQ(q.scales[i], c["scales"][i].get<int>()) << "scale " << i;
    std::vector<float> back(rows * cols);
    q.view().to_float(back.data());
    const std::vector<float> expected = floats_from_bits(c["dequantized_bits"]);
    for (size_t i = 0; i < back.size(); ++i) ASSERT_EQ(to_bits(back[i]), to_bits(expected[i])) << "element " << i;
  }
}

TEST(Fp4Blocks, Nvfp4DefaultGlobalScaleIsModelOpts) {
  const auto& c = reference()["matrices"][3];
  ASSERT_EQ(c["global_scale_kind"], "modelopt");
  const std::vector<float> w = floats_from_bits(c["input_bits"]);
  const Fp4Matrix q = quantize_nvfp4(w.data(), c["rows"], c["cols"], 0.0f, "test");
  EXPECT_EQ(to_bits(q.global_scale), c["global_scale_bits"].get<uint32_t>());
}

TEST(Fp4Blocks, GptOssBlocksDecodeAsTransformersDoes) {
  const auto& g = reference()["gpt_oss"];
  const int64_t experts = g["experts"], rows = g["rows"], cols = g["cols"];
  std::vector<uint8_t> blocks = g["blocks"].get<std::vector<uint8_t>>(), scales = g["scales"].get<std::vector<uint8_t>>();
  TensorView b{"blocks", DType::U8, {experts, rows, cols / 32, 16}, blocks.data(), blocks.size(), "memory"};
  TensorView s{"scales", DType::U8, {experts, rows, cols / 32}, scales.data(), scales.size(), "memory"};
  const std::vector<float> expected = floats_from_bits(g["dequantized_bits"]);
  for (int64_t e = 0; e < experts; ++e) {
    const Fp4MatrixView view = gpt_oss_expert_matrix(b, s, e);
    std::vector<float> out(rows * cols);
    view.to_float(out.data());
    for (int64_t i = 0; i < rows * cols; ++i)
      ASSERT_EQ(to_bits(out[i]), to_bits(expected[e * rows * cols + i])) << "expert " << e << " element " << i;
  }
}

// Random rows with block magnitudes spread over several orders, as real weights have.
std::vector<float> random_weights(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> w(rows * cols);
  for (int64_t b = 0; b < rows * cols / 16; ++b) {
    const float block_scale = 0.02f * std::exp(normal(rng));
    for (int i = 0; i < 16; ++i) w[b * 16 + i] = block_scale * normal(rng);
  }
  return w;
}

TEST(Fp4Blocks, Mxfp4ErrorBounds) {
  const int64_t rows = 64, cols = 256;
  const std::vector<float> w = random_weights(rows, cols, 1);
  double previous_round_up = 0;
  for (Mxfp4ScaleRule rule : {Mxfp4ScaleRule::RoundUp, Mxfp4ScaleRule::BestOfTwo, Mxfp4ScaleRule::Ocp}) {
    const Fp4Matrix q = quantize_mxfp4(w.data(), rows, cols, rule, "test");
    std::vector<float> back(rows * cols);
    q.view().to_float(back.data());
    double error2 = 0, norm2 = 0;
    for (int64_t b = 0; b < rows * cols / 32; ++b) {
      const float scale = e8m0_to_float(q.scales[b]);
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(w[b * 32 + i]));
      for (int i = 0; i < 32; ++i) {
        const float x = w[b * 32 + i], e = std::fabs(x - back[b * 32 + i]);
        error2 += double(e) * e;
        norm2 += double(x) * x;
        if (rule == Mxfp4ScaleRule::RoundUp) {
          // No clipping: the error is at most half the widest code spacing (2) times the scale, and the
          // scale is below amax / 3 (the next power of two above amax / 6).
          ASSERT_LE(e, scale * 1.0f) << b;
          ASSERT_LE(scale, amax / 3.0f) << b;
        } else if (rule == Mxfp4ScaleRule::Ocp) {
          // Clipping at 6 * scale, scale <= amax / 4: the error is below amax / 4 * 2.
          ASSERT_LE(e, std::max(scale * 1.0f, std::fabs(x) - 6.0f * scale) + 1e-12f) << b;
        }
      }
    }
    const double relative = std::sqrt(error2 / norm2);
    // E2M1 with power-of-two block scales: about 0.1 to 0.13 on Gaussian blocks.
    EXPECT_LT(relative, 0.16) << scale_rule_name(rule);
    EXPECT_GT(relative, 0.05) << scale_rule_name(rule);
    const QuantizationError measured = quantization_error(w.data(), q.view());
    EXPECT_NEAR(measured.relative_l2, relative, 1e-9);
    if (rule == Mxfp4ScaleRule::RoundUp) previous_round_up = relative;
    if (rule == Mxfp4ScaleRule::BestOfTwo) {
      EXPECT_LE(relative, previous_round_up) << "mse never loses to round-up";
    }
  }
}

TEST(Fp4Blocks, Nvfp4ErrorBounds) {
  const int64_t rows = 64, cols = 256;
  const std::vector<float> w = random_weights(rows, cols, 2);
  const Fp4Matrix q = quantize_nvfp4(w.data(), rows, cols, 0.0f, "test");
  std::vector<float> back(rows * cols);
  q.view().to_float(back.data());
  for (int64_t b = 0; b < rows * cols / 16; ++b) {
    float amax = 0;
    for (int i = 0; i < 16; ++i) amax = std::max(amax, std::fabs(w[b * 16 + i]));
    const float scale = e4m3_to_float(q.scales[b]) * q.global_scale;
    // The e4m3 block scale is within 1/16 (half its mantissa step) of amax / 6, so clipping of the
    // block's largest element costs at most amax / 16; elsewhere half a code step (<= scale).
    for (int i = 0; i < 16; ++i) ASSERT_LE(std::fabs(w[b * 16 + i] - back[b * 16 + i]), std::max(scale, amax / 16.0f) * 1.0001f);
  }
  const QuantizationError error = quantization_error(w.data(), q.view());
  EXPECT_LT(error.relative_l2, 0.12);  // published: about 0.095 on real weights
  const QuantizationError mx = quantization_error(w.data(), quantize_mxfp4(w.data(), rows, cols, Mxfp4ScaleRule::RoundUp, "t").view());
  EXPECT_LT(error.relative_l2, mx.relative_l2) << "NVFP4's finer scales beat MXFP4";
}

TEST(Fp4Blocks, ZeroAndTinyBlocks) {
  std::vector<float> w(64, 0.0f);
  w[40] = 1e-30f;  // a block whose NVFP4 scale underflows against the tensor's amax
  w[63] = 1000.0f;
  const Fp4Matrix nv = quantize_nvfp4(w.data(), 1, 64, 0.0f, "test");
  std::vector<float> back(64);
  nv.view().to_float(back.data());
  EXPECT_EQ(back[0], 0.0f);
  EXPECT_EQ(back[40], 0.0f);
  EXPECT_NEAR(back[63], 1000.0f, 1e-3f);  // the tensor's amax maps to code 6 times a block scale of 448
  const Fp4Matrix mx = quantize_mxfp4(w.data(), 1, 64, Mxfp4ScaleRule::RoundUp, "test");
  EXPECT_EQ(mx.scales[0], 0) << "an all-zero block gets the smallest scale";
  mx.view().to_float(back.data());
  EXPECT_EQ(back[0], 0.0f);
}

TEST(Fp4Blocks, BadInputIsAnErrorNamingTheTensor) {
  std::vector<float> w(32, 1.0f);
  w[5] = NAN;
  try {
    quantize_nvfp4(w.data(), 1, 32, 0.0f, "model.layers.3.mlp.up_proj.weight");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.3.mlp.up_proj.weight"), std::string::npos);
  }
  std::vector<float> odd(48, 1.0f);
  EXPECT_THROW(quantize_mxfp4(odd.data(), 1, 48, Mxfp4ScaleRule::RoundUp, "w"), Error);
  EXPECT_NO_THROW(quantize_nvfp4(odd.data(), 1, 48, 0.0f, "w"));
}

}  // namespace
}  // namespace tachyon::fp4
