// cuBLASLt prefill GEMM against the CPU linear_f32 (bf16-rounded activations on both sides), and the
// streaming-read kernel's checksum against the CPU.
#include <algorithm>
#include <cmath>

#include "bandwidth/stream_read.h"
#include "gemm/cublaslt_gemm.h"
#include "gpu_test_util.h"
#include "models/layers.h"

namespace tachyon {
namespace {

using namespace gpu_test;

TEST(GpuGemm, CublasLtLinearMatchesCpu) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  kernels::CublasLtGemm gemm;
  for (auto [n, out, in] : {std::tuple{17, 576, 576}, std::tuple{128, 1536, 576}, std::tuple{1000, 768, 2048},
                            std::tuple{64, 2048, 768}}) {
    for (bool with_bias : {false, true}) {
      const Bf16Tensor w = to_bf16(random_floats(static_cast<size_t>(out) * in));
      const Bf16Tensor x = to_bf16(random_floats(static_cast<size_t>(n) * in));
      const std::vector<float> bias = random_floats(out);
      std::vector<float> want(static_cast<size_t>(n) * out);
      linear_f32(w.values.data(), out, in, with_bias ? bias.data() : nullptr, x.values.data(), n, want.data());
      cuda::DeviceBuffer<uint16_t> w_dev(w.bits), x_dev(x.bits);
      cuda::DeviceBuffer<float> bias_dev(bias);
      auto y_dev = poisoned(want.size());
      gemm.linear_bf16(as_bf16(w_dev), as_bf16(x_dev), with_bias ? bias_dev.data() : nullptr, y_dev.data(), n, out, in,
                       nullptr);
      TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
      // Exact products of bf16 values, float32 accumulation in another order: 1e-5 of sqrt(in) * |w||x| scale.
      expect_within(y_dev.to_host(), want, 0.0f, 1e-5f * std::sqrt(static_cast<float>(in)) + 1e-5f,
                    "cublasLt " + std::to_string(n) + "x" + std::to_string(out) + "x" + std::to_string(in));
    }
  }
}

TEST(GpuBandwidth, StreamReadFoldsEveryWord) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  for (size_t words : {size_t{4}, size_t{1} << 20, (size_t{1} << 22) + 12}) {
    std::vector<uint32_t> data(words);
    std::uniform_int_distribution<uint32_t> dist;
    uint32_t want = 0;
    for (uint32_t& w : data) want ^= (w = dist(rng()));
    cuda::DeviceBuffer<uint32_t> data_dev(data), checksum(1);
    checksum.fill_bytes(0);
    kernels::stream_read(data_dev.data(), words * 4, checksum.data(), nullptr);
    TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(checksum.to_host()[0], want) << words << " words";
  }
}

}  // namespace
}  // namespace tachyon
