// Block-scaled FP8 (fp4/fp8_blocks.h): tile scales, codes against a brute-force nearest-value search over all
// e4m3 codes, the E4M3 error bound, edge tiles, zeros and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "core/error.h"
#include "fp4/fp4_codec.h"
#include "fp4/fp8_blocks.h"

namespace tachyon::fp4 {
namespace {

// The finite e4m3 code nearest to x (|x| <= 448), ties to the even code: written without the encoder.
uint8_t nearest_e4m3(float x) {
  int best = -1;
  double best_distance = std::numeric_limits<double>::infinity();
  for (int code = 0; code < 256; ++code) {
    const float value = e4m3_to_float(static_cast<uint8_t>(code));
    if (std::isnan(value) || std::signbit(value) != std::signbit(x)) continue;  // keep the sign, as the encoder
    const double distance = std::fabs(static_cast<double>(x) - value);
    if (distance < best_distance || (distance == best_distance && (code & 1) == 0)) {
      best = code;
      best_distance = distance;
    }
  }
  return static_cast<uint8_t>(best);
}

std::vector<float> random_weights(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(static_cast<size_t>(count));
  for (float& x : w) x = normal(rng);
  w[17] = 0.5f;   // an outlier in the first tile
  w[300] = 0.0f;  // exact zeros stay zero
  return w;
}

TEST(Fp8Blocks, TileScalesCodesAndErrorBound) {
  const int64_t rows = 300, cols = 260;  // 3 x 3 tiles, the last ones partial
  const std::vector<float> w = random_weights(rows * cols, 7);
  const Fp8BlockMatrix q = quantize_fp8_block(w.data(), rows, cols, "test.weight");
  ASSERT_EQ(q.row_blocks(), 3);
  ASSERT_EQ(q.col_blocks(), 3);
  ASSERT_EQ(q.scales.size(), 9u);
  std::vector<float> back(w.size());
  q.to_float(back.data());
  for (int64_t rb = 0; rb < 3; ++rb)
    for (int64_t cb = 0; cb < 3; ++cb) {
      float amax = 0;
      for (int64_t r = rb * 128; r < std::min(rows, rb * 128 + 128); ++r)
        for (int64_t c = cb * 128; c < std::min(cols, cb * 128 + 128); ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
      EXPECT_EQ(q.scales[rb * 3 + cb], amax / 448.0f) << "tile " << rb << "," << cb;
    }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r * cols + c);
      const float scale = q.scale_of(r, c);
      ASSERT_EQ(q.codes[i], nearest_e4m3(w[i] / scale)) << "element " << r << "," << c;
      // Half a unit in the last place: 2^-4 relative for normal e4m3 values, 2^-10 x scale below 2^-6.
      const double bound = std::max(std::fabs(w[i]) * 0.0625, scale * std::ldexp(1.0, -10)) * (1 + 1e-6);
      ASSERT_LE(std::fabs(back[i] - w[i]), bound) << "element " << r << "," << c;
    }
  EXPECT_EQ(back[300], 0.0f);
  EXPECT_NEAR(back[17], 0.5f, 0.5f * 1e-6);  // a tile's largest weight lands on 448 x scale
  const QuantizationError error = quantization_error(w.data(), back.data(), rows * cols);
  EXPECT_GT(error.relative_l2, 0.0);
  EXPECT_LT(error.relative_l2, 0.0625);
}

TEST(Fp8Blocks, ZeroTileAndBadInput) {
  const std::vector<float> zeros(64 * 64, 0.0f);
  const Fp8BlockMatrix q = quantize_fp8_block(zeros.data(), 64, 64, "zeros");
  EXPECT_EQ(q.scales, std::vector<float>{1.0f});
  for (uint8_t code : q.codes) EXPECT_EQ(code, 0);

  std::vector<float> bad(16, 1.0f);
  bad[5] = std::nanf("");
  try {
    quantize_fp8_block(bad.data(), 4, 4, "model.layers.2.self_attn.q_proj.weight");
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.2.self_attn.q_proj.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tachyon::fp4
