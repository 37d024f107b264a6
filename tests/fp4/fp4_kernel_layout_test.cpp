// The kernel tile layout of kernels/fp4_moe, checked on the CPU: packing round-trips, and the GPU's register
// decoding, emulated here bit for bit, yields for every lane exactly the m16n8k16 A fragments (rows g / g + 8,
// columns 4t..4t+3 of each 16-column step) that the kernel pairs with its activation fragments. Plus the CPU
// reference of the fused MoE against a plain per-token computation.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
#include "fp4/fp4_codec.h"
#include "fp4/fp4_kernel_layout.h"
#include "models/layers.h"

namespace tachyon::fp4 {
namespace {

Fp4Matrix random_matrix(Fp4Format format, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> w(rows * cols);
  for (float& v : w) v = 0.05f * normal(rng);
  return quantize(format, w.data(), rows, cols, Mxfp4ScaleRule::RoundUp, 0.0f, "test");
}

TEST(Fp4KernelLayout, PackUnpackRoundTrips) {
  for (Fp4Format format : {Fp4Format::Nvfp4, Fp4Format::Mxfp4}) {
    const Fp4Matrix m = random_matrix(format, 48, 192, 3);
    const std::vector<uint8_t> tiles = pack_kernel_tiles(m.view());
    EXPECT_EQ(static_cast<int64_t>(tiles.size()), fp4_kernel_matrix_bytes(format, 48, 192));
    EXPECT_EQ(tiles.size(), size_t{3} * 3 * fp4_tile_bytes(format));
    const Fp4Matrix back = unpack_kernel_tiles(tiles.data(), format, 48, 192, m.global_scale);
    EXPECT_EQ(back.packed, m.packed);
    EXPECT_EQ(back.scales, m.scales);
  }
  const Fp4Matrix odd = random_matrix(Fp4Format::Nvfp4, 24, 64, 4);
  EXPECT_THROW(pack_kernel_tiles(odd.view()), Error);
}

// What the kernel computes from a lane's word: fp16 pair p = (q & 0x80008000) | ((q & 0x70007000) >> 3) with
// q = word << 4p, times 2^14 (mul.f16x2, subnormals kept).
std::pair<float, float> emulate_decode(uint32_t word, int p) {
  const uint32_t q = word << (4 * p);
  const uint32_t pair = (q & 0x80008000u) | ((q & 0x70007000u) >> 3);
  return {f16_to_float(static_cast<uint16_t>(pair & 0xffff)) * 16384.0f, f16_to_float(static_cast<uint16_t>(pair >> 16)) * 16384.0f};
}

TEST(Fp4KernelLayout, RegisterDecodingGivesTheMmaFragments) {
  for (Fp4Format format : {Fp4Format::Nvfp4, Fp4Format::Mxfp4}) {
    const Fp4Matrix m = random_matrix(format, 32, 128, 5);
    const std::vector<uint8_t> tiles = pack_kernel_tiles(m.view());
    auto code_value = [&](int64_t row, int64_t col) {
      const uint8_t byte = m.packed[row * (m.cols / 2) + col / 2];
      return e2m1_to_float((col & 1) ? byte >> 4 : byte & 0x0f);
    };
    const int tile_bytes = fp4_tile_bytes(format), blocks = 64 / block_size(format);
    for (int rt = 0; rt < 2; ++rt)
      for (int ct = 0; ct < 2; ++ct) {
        const uint8_t* tile = tiles.data() + (rt * 2 + ct) * tile_bytes;
        for (int lane = 0; lane < 32; ++lane) {
          const int g = lane / 4, t = lane % 4;
          for (int j = 0; j < 4; ++j) {
            uint32_t word;
            std::memcpy(&word, tile + 16 * lane + 4 * j, 4);
            const int64_t row_g = rt * 16 + g, row_g8 = row_g + 8, col = ct * 64 + 16 * j + 4 * t;
            // a[0] = (g, s0 s1), a[1] = (g+8, s0 s1), a[2] = (g, s2 s3), a[3] = (g+8, s2 s3)
            const std::pair<int64_t, int64_t> where[4] = {{row_g, col}, {row_g8, col}, {row_g, col + 2}, {row_g8, col + 2}};
            for (int p = 0; p < 4; ++p) {
              const auto [lo, hi] = emulate_decode(word, p);
              ASSERT_EQ(lo, code_value(where[p].first, where[p].second)) << "lane " << lane << " word " << j << " pair " << p;
              ASSERT_EQ(hi, code_value(where[p].first, where[p].second + 1)) << "lane " << lane << " word " << j << " pair " << p;
            }
          }
          // Scales of rows g and g + 8 where the kernel reads them.
          for (int b = 0; b < blocks; ++b) {
            EXPECT_EQ(tile[kFp4TileCodeBytes + blocks * g + b], m.scales[(rt * 16 + g) * (128 / block_size(format)) + ct * blocks + b]);
            EXPECT_EQ(tile[kFp4TileCodeBytes + blocks * (g + 8) + b],
                      m.scales[(rt * 16 + g + 8) * (128 / block_size(format)) + ct * blocks + b]);
          }
        }
      }
  }
}

TEST(Fp4KernelLayout, MoeReferenceIsTheWeightedSumOfSwigluExperts) {
  const int experts = 3, hidden = 64, width = 64, top_k = 2, n_tokens = 2;
  std::vector<Fp4Matrix> storage;
  Fp4ExpertSet set;
  for (int e = 0; e < experts; ++e) {
    storage.push_back(random_matrix(Fp4Format::Nvfp4, width, hidden, 10 + e));
    storage.push_back(random_matrix(Fp4Format::Nvfp4, width, hidden, 20 + e));
    storage.push_back(random_matrix(Fp4Format::Mxfp4, hidden, width, 30 + e));
  }
  for (int e = 0; e < experts; ++e) {
    set.gate.push_back(storage[3 * e].view());
    set.up.push_back(storage[3 * e + 1].view());
    set.down.push_back(storage[3 * e + 2].view());
  }
  std::vector<float> x(n_tokens * hidden);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
  const int ids[] = {2, 0, 1, 2};
  const float weights[] = {0.7f, 0.3f, 0.5f, 0.5f};
  std::vector<float> out(n_tokens * hidden);
  fp4_moe_reference(set, ids, weights, n_tokens, top_k, x.data(), out.data());
  for (int t = 0; t < n_tokens; ++t) {
    std::vector<double> want(hidden, 0.0);
    for (int j = 0; j < top_k; ++j) {
      const int e = ids[t * top_k + j];
      std::vector<float> g(width * hidden), u(width * hidden), d(hidden * width);
      set.gate[e].to_float(g.data());
      set.up[e].to_float(u.data());
      set.down[e].to_float(d.data());
      std::vector<double> h(width);
      for (int i = 0; i < width; ++i) {
        double gi = 0, ui = 0;
        for (int k = 0; k < hidden; ++k) {
          gi += double(g[i * hidden + k]) * x[t * hidden + k];
          ui += double(u[i * hidden + k]) * x[t * hidden + k];
        }
        h[i] = gi / (1 + std::exp(-gi)) * ui;
      }
      for (int r = 0; r < hidden; ++r) {
        double y = 0;
        for (int k = 0; k < width; ++k) y += double(d[r * width + k]) * h[k];
        want[r] += weights[t * top_k + j] * y;
      }
    }
    for (int r = 0; r < hidden; ++r) EXPECT_NEAR(out[t * hidden + r], want[r], 1e-5 + 1e-4 * std::fabs(want[r]));
  }
}

}  // namespace
}  // namespace tachyon::fp4
