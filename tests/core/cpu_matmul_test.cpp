// The blocked CPU matmul (core/cpu_matmul.h) on fresh random inputs: against a float64 reference, with
// shapes that hit every edge (in not a multiple of 16, rows not a multiple of the tile or row block, token
// counts not a multiple of the tile, few rows so that tokens are split across tasks), for every kernel this
// CPU supports. Bound: |ours - ref| <= 1e-5 * sum_k |x_k w_k| + 1e-6 (float32 accumulation of in <= 1536 terms).
// Also exact properties: a token's row does not depend on how many tokens share the call, and the AVX2 and
// AVX-512 kernels agree bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/cpu_matmul.h"

namespace tachyon {
namespace {

struct Shape {
  int64_t out, in, n;
};

const std::vector<Shape> kShapes = {{1, 1, 1},       {7, 5, 3},       {48, 16, 1},    {49, 17, 9},
                                    {192, 576, 37},  {576, 1536, 13}, {100, 64, 64},  {3, 576, 130},
                                    {1536, 576, 5},  {8, 576, 257}};

struct Problem {
  std::vector<float> w, x, bias;
};

Problem random_problem(const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Problem p;
  p.w.resize(s.out * s.in);
  p.x.resize(s.n * s.in);
  p.bias.resize(s.out);
  for (float& v : p.w) v = normal(rng);
  for (float& v : p.x) v = normal(rng);
  for (float& v : p.bias) v = normal(rng);
  return p;
}

std::vector<float> run(const Problem& p, const Shape& s, bool with_bias) {
  std::vector<float> y(s.n * s.out, NAN);
  matmul_f32(p.w.data(), s.out, s.in, with_bias ? p.bias.data() : nullptr, p.x.data(), s.n, y.data());
  return y;
}

class IsaGuard {
 public:
  IsaGuard() : saved_(matmul_isa()) {}
  ~IsaGuard() { set_matmul_isa(saved_); }

 private:
  MatmulIsa saved_;
};

std::vector<MatmulIsa> supported_isas() {
  std::vector<MatmulIsa> isas;
  for (MatmulIsa isa : {MatmulIsa::Baseline, MatmulIsa::Avx2Fma, MatmulIsa::Avx512})
    if (matmul_isa_supported(isa)) isas.push_back(isa);
  return isas;
}

TEST(CpuMatmul, MatchesFloat64ReferenceOnEveryKernel) {
  IsaGuard guard;
  for (MatmulIsa isa : supported_isas()) {
    set_matmul_isa(isa);
    uint32_t seed = 1;
    for (const Shape& s : kShapes) {
      for (bool with_bias : {false, true}) {
        const Problem p = random_problem(s, seed++);
        const std::vector<float> y = run(p, s, with_bias);
        for (int64_t t = 0; t < s.n; ++t)
          for (int64_t o = 0; o < s.out; ++o) {
            double sum = with_bias ? p.bias[o] : 0.0, magnitude = 0;
            for (int64_t k = 0; k < s.in; ++k) {
              const double term = double{p.x[t * s.in + k]} * p.w[o * s.in + k];
              sum += term;
              magnitude += std::fabs(term);
            }
            ASSERT_NEAR(y[t * s.out + o], sum, 1e-5 * magnitude + 1e-6)
                << matmul_isa_name(isa) << " out " << s.out << " in " << s.in << " n " << s.n << " at token " << t
                << " row " << o;
          }
      }
    }
  }
}

TEST(CpuMatmul, TokenRowsDoNotDependOnTheBatch) {
  IsaGuard guard;
  for (MatmulIsa isa : supported_isas()) {
    set_matmul_isa(isa);
    uint32_t seed = 100;
    for (const Shape& s : kShapes) {
      const Problem p = random_problem(s, seed++);
      const std::vector<float> batched = run(p, s, true);
      for (int64_t t = 0; t < s.n; t += std::max<int64_t>(1, s.n / 7)) {
        std::vector<float> single(s.out);
        matmul_f32(p.w.data(), s.out, s.in, p.bias.data(), p.x.data() + t * s.in, 1, single.data());
        for (int64_t o = 0; o < s.out; ++o)
          ASSERT_EQ(single[o], batched[t * s.out + o])
              << matmul_isa_name(isa) << " out " << s.out << " in " << s.in << " n " << s.n << " token " << t;
      }
    }
  }
}

TEST(CpuMatmul, FmaKernelsAgreeBitForBit) {
  if (!matmul_isa_supported(MatmulIsa::Avx2Fma) || !matmul_isa_supported(MatmulIsa::Avx512))
    GTEST_SKIP() << "this CPU lacks AVX2+FMA or AVX-512";
  IsaGuard guard;
  uint32_t seed = 200;
  for (const Shape& s : kShapes) {
    const Problem p = random_problem(s, seed++);
    set_matmul_isa(MatmulIsa::Avx2Fma);
    const std::vector<float> avx2 = run(p, s, true);
    set_matmul_isa(MatmulIsa::Avx512);
    const std::vector<float> avx512 = run(p, s, true);
    ASSERT_EQ(avx2, avx512) << "out " << s.out << " in " << s.in << " n " << s.n;
  }
}

}  // namespace
}  // namespace tachyon
