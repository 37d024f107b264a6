// References and bounds shared by the gemv tests (test_gemv.cpp: bf16 weights; test_gemv_fp8.cpp: FP8 weights).
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "models/layers.h"

namespace tachyon::gpu_test {

// |y - ref| <= 1e-4 * max|x| * ||w_row|| + 1e-5 per output (activations enter the MMAs as hi + lo halves: ~2^-17
// each); sqrt(sum_i (w_i x_i)^2) <= max_i |x_i| * ||w_o|| is the error scale of one output, computed in O(out * in).
inline std::vector<float> gemv_bound(const std::vector<float>& w, const std::vector<float>& x, int n, int out, int in) {
  std::vector<double> row_norm(out);
  for (int o = 0; o < out; ++o) {
    double s = 0;
    for (int i = 0; i < in; ++i) s += static_cast<double>(w[static_cast<size_t>(o) * in + i]) * w[static_cast<size_t>(o) * in + i];
    row_norm[o] = std::sqrt(s);
  }
  std::vector<float> bound(static_cast<size_t>(n) * out);
  for (int t = 0; t < n; ++t) {
    double x_max = 0;
    for (int i = 0; i < in; ++i) x_max = std::max(x_max, std::fabs(static_cast<double>(x[static_cast<size_t>(t) * in + i])));
    for (int o = 0; o < out; ++o)
      bound[static_cast<size_t>(t) * out + o] = static_cast<float>(1e-4 * x_max * row_norm[o] + 1e-5);
  }
  return bound;
}

// The gated SwiGLU product on the CPU, silu(gate . x) * (up . x), with its bound: silu'(g) <= 1.1, so the errors of
// the two products add up, scaled by |u| and |silu(g)|.
struct GatedReference {
  std::vector<float> h, bound;
};
inline GatedReference gated_reference(const std::vector<float>& gate, const std::vector<float>& up,
                                      const std::vector<float>& x, int n, int out, int in) {
  std::vector<float> g(static_cast<size_t>(n) * out), u(g.size());
  linear_f32(gate.data(), out, in, nullptr, x.data(), n, g.data());
  linear_f32(up.data(), out, in, nullptr, x.data(), n, u.data());
  GatedReference r{std::vector<float>(g.size()), std::vector<float>(g.size())};
  swiglu(g.data(), u.data(), static_cast<int64_t>(g.size()), r.h.data());
  const std::vector<float> bg = gemv_bound(gate, x, n, out, in), bu = gemv_bound(up, x, n, out, in);
  for (size_t i = 0; i < r.bound.size(); ++i)
    r.bound[i] = 1.1f * bg[i] * std::fabs(u[i]) + bu[i] * std::fabs(silu(g[i])) + 1e-5f;
  return r;
}

}  // namespace tachyon::gpu_test
