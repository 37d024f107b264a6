// Shared helpers of the GPU tests: skip without a device, fresh random inputs (never zeros), bf16 rounding,
// NaN-poisoned outputs, and error reports that name the worst element.
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include "core/dtype.h"
#include "cuda/device_buffer.h"
#include "cuda/stream.h"
#include "gemv/gemv_bf16.h"

namespace tachyon::gpu_test {

#define SKIP_WITHOUT_GPU()                                                        \
  do {                                                                            \
    if (!::tachyon::cuda::cuda_device_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

// A generator seeded from the test's name and a per-call counter: every run draws the same fresh inputs, and
// no two tensors of a test share values.
inline std::mt19937& rng() {
  static std::mt19937 generator(12345);
  return generator;
}
inline void reseed_for_current_test() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  rng().seed(static_cast<uint32_t>(std::hash<std::string>{}(std::string(info->test_suite_name()) + info->name())));
}

inline std::vector<float> random_floats(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) {
    do x = dist(rng());
    while (x == 0.0f);
  }
  return v;
}
inline std::vector<float> random_normal(size_t n, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng());
  return v;
}

// Rounds to bf16: `bits` for the device, the float values of those bits for the CPU reference.
struct Bf16Tensor {
  std::vector<uint16_t> bits;
  std::vector<float> values;
};
inline Bf16Tensor to_bf16(const std::vector<float>& v) {
  Bf16Tensor t;
  t.bits.resize(v.size());
  t.values.resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    t.bits[i] = float_to_bf16(v[i]);
    t.values[i] = bf16_to_float(t.bits[i]);
  }
  return t;
}
inline const __nv_bfloat16* as_bf16(const cuda::DeviceBuffer<uint16_t>& b) {
  return reinterpret_cast<const __nv_bfloat16*>(b.data());
}
inline __nv_bfloat16* as_bf16(cuda::DeviceBuffer<uint16_t>& b) { return reinterpret_cast<__nv_bfloat16*>(b.data()); }

// A float buffer whose every element is NaN: a kernel that leaves one unwritten fails the comparison.
inline cuda::DeviceBuffer<float> poisoned(size_t n) {
  cuda::DeviceBuffer<float> b(n);
  b.fill_bytes(0xff);
  return b;
}

// Checks |got - want| <= bound[i] element by element (NaN never passes) and reports the worst offender.
inline void expect_within(const std::vector<float>& got, const std::vector<float>& want,
                          const std::vector<float>& bound, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t failures = 0, worst = 0;
  double worst_ratio = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double error = std::fabs(static_cast<double>(got[i]) - want[i]);
    const bool ok = error <= bound[i];  // false for NaN
    const double ratio = !std::isfinite(got[i]) ? INFINITY : (bound[i] > 0 ? error / bound[i] : (ok ? 0.0 : INFINITY));
    if (!ok) ++failures;
    if (!(ratio <= worst_ratio)) worst_ratio = ratio, worst = i;
  }
  // The margin actually used, for docs/gpu-kernels.md ("worst 0.02 of bound" = 50x headroom).
  std::printf("[ margin   ] %s: worst error %.3g of the bound\n", what.c_str(), worst_ratio);
  EXPECT_EQ(failures, 0u) << what << ": " << failures << " of " << got.size() << " elements outside the bound; worst ["
                          << worst << "] got " << got[worst] << " want " << want[worst] << " bound " << bound[worst];
}

// Bit-for-bit equality (a fused kernel against the launches it replaces).
inline void expect_same_bits(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t differ = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0 && differ++ == 0) first = i;
  EXPECT_EQ(differ, 0u) << what << ": " << differ << " of " << got.size() << " differ, first at " << first << " ("
                        << got[first] << " vs " << want[first] << ")";
}

inline void expect_within(const std::vector<float>& got, const std::vector<float>& want, float relative, float absolute,
                          const std::string& what) {
  std::vector<float> bound(want.size());
  for (size_t i = 0; i < want.size(); ++i) bound[i] = relative * std::fabs(want[i]) + absolute;
  expect_within(got, want, bound, what);
}

// gpt-oss's expert epilogue (biases + clamped SwiGLU) over device biases laid out as the runner stores them:
// gate/up [E][2][width] (gate, then up), down [E][hidden].
inline kernels::ExpertEpilogue gpt_oss_epilogue(const float* gate_up_bias, const float* down_bias, int width, int hidden,
                                                float limit, float alpha) {
  kernels::ExpertEpilogue epilogue;
  epilogue.gate_bias = gate_up_bias;
  epilogue.up_bias = gate_up_bias + width;
  epilogue.gate_up_bias_stride = 2 * width;
  epilogue.down_bias = down_bias;
  epilogue.down_bias_stride = hidden;
  epilogue.swiglu_limit = limit;
  epilogue.swiglu_alpha = alpha;
  return epilogue;
}

}  // namespace tachyon::gpu_test
