// argmax_rows and sample_rows: greedy equals the CPU argmax; sampled ids stay inside the CPU's top-k / top-p set;
// frequencies follow the renormalized distribution (chi-square style bound); same seed and offset -> same ids.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "gpu_test_util.h"
#include "models/layers.h"
#include "sampling/sampling.h"

namespace tachyon {
namespace {

using namespace gpu_test;

int cpu_argmax(const float* row, int vocab) { return static_cast<int>(std::max_element(row, row + vocab) - row); }

// transformers' order: temperature, top-k, then top-p over the renormalized top-k mass. Returns the kept ids
// and their renormalized probabilities.
std::vector<std::pair<int, double>> cpu_kept_set(const float* row, int vocab, const kernels::SamplingParams& p) {
  std::vector<int> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return row[a] > row[b]; });
  const int k = p.top_k > 0 ? std::min(p.top_k, vocab) : vocab;
  const double max = row[order[0]];
  std::vector<double> w(k);
  double total = 0;
  for (int i = 0; i < k; ++i) total += (w[i] = std::exp((row[order[i]] - max) / p.temperature));
  std::vector<std::pair<int, double>> kept;
  double cumulative = 0;
  for (int i = 0; i < k; ++i) {
    kept.emplace_back(order[i], w[i]);
    cumulative += w[i];
    if (cumulative >= p.top_p * total) break;
  }
  double kept_total = 0;
  for (auto& [id, weight] : kept) kept_total += weight;
  for (auto& [id, weight] : kept) weight /= kept_total;
  return kept;
}

TEST(GpuSampling, ArgmaxMatchesCpuOnLargeVocab) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  for (int vocab : {151936, 49152, 1000, 7}) {
    const int rows = 16;
    const std::vector<float> logits = random_normal(static_cast<size_t>(rows) * vocab, 3.0f);
    cuda::DeviceBuffer<float> logits_dev(logits);
    cuda::DeviceBuffer<int> out_dev(rows), greedy_dev(rows);
    out_dev.fill_bytes(0xff);
    greedy_dev.fill_bytes(0xff);
    kernels::argmax_rows(logits_dev.data(), rows, vocab, out_dev.data(), nullptr);
    kernels::sample_rows(logits_dev.data(), rows, vocab, kernels::SamplingParams{0.0f, 0, 1.0f, 7}, nullptr,
                         greedy_dev.data(), nullptr);
    TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<int> got = out_dev.to_host(), greedy = greedy_dev.to_host();
    for (int r = 0; r < rows; ++r) {
      const int want = cpu_argmax(logits.data() + static_cast<size_t>(r) * vocab, vocab);
      EXPECT_EQ(got[r], want) << "vocab " << vocab << " row " << r;
      EXPECT_EQ(greedy[r], want) << "temperature 0, vocab " << vocab << " row " << r;
    }
  }
}

// argmax_rows splits a row among the blocks of a cluster: a tie across slices must still go to the lower id, and
// rows that are not 16-byte aligned (odd vocab) take the scalar path.
TEST(GpuSampling, ArgmaxTiesGoToTheLowerIdAcrossSlices) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  for (int vocab : {151937, 151936, 33}) {
    const int rows = 4;
    std::vector<float> logits = random_normal(static_cast<size_t>(rows) * vocab, 1.0f);
    auto row = [&](int r) { return logits.data() + static_cast<size_t>(r) * vocab; };
    row(0)[vocab - 3] = 50.0f, row(0)[5] = 50.0f;           // first and last slices: 5
    row(1)[vocab - 1] = 50.0f;                               // the very last id
    std::fill(row(2), row(2) + vocab, -2.0f);                // all equal: 0
    row(3)[vocab / 2 - 1] = 50.0f, row(3)[vocab / 2] = 50.0f;  // neighbours (two slices at vocab 151936)
    cuda::DeviceBuffer<float> logits_dev(logits);
    cuda::DeviceBuffer<int> out_dev(rows);
    out_dev.fill_bytes(0xff);
    kernels::argmax_rows(logits_dev.data(), rows, vocab, out_dev.data(), nullptr);
    TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<int> got = out_dev.to_host();
    const int want[rows] = {5, vocab - 1, 0, vocab / 2 - 1};
    for (int r = 0; r < rows; ++r) EXPECT_EQ(got[r], want[r]) << "vocab " << vocab << " row " << r;
  }
}

TEST(GpuSampling, SamplesStayInsideTopKTopPSet) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  const int vocab = 151936, rows = 16;
  const std::vector<float> logits = random_normal(static_cast<size_t>(rows) * vocab, 4.0f);
  cuda::DeviceBuffer<float> logits_dev(logits);
  cuda::DeviceBuffer<uint64_t> offset_dev(1);
  for (const kernels::SamplingParams& p : {kernels::SamplingParams{0.7f, 50, 1.0f, 1}, kernels::SamplingParams{1.0f, 0, 0.5f, 2},
                                           kernels::SamplingParams{0.8f, 40, 0.9f, 3}, kernels::SamplingParams{1.3f, 1, 1.0f, 4}}) {
    for (uint64_t offset = 0; offset < 8; ++offset) {
      TACHYON_CUDA_CHECK(cudaMemcpy(offset_dev.data(), &offset, sizeof(offset), cudaMemcpyHostToDevice));
      cuda::DeviceBuffer<int> out_dev(rows);
      out_dev.fill_bytes(0xff);
      kernels::sample_rows(logits_dev.data(), rows, vocab, p, offset_dev.data(), out_dev.data(), nullptr);
      TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
      const std::vector<int> got = out_dev.to_host();
      for (int r = 0; r < rows; ++r) {
        const auto kept = cpu_kept_set(logits.data() + static_cast<size_t>(r) * vocab, vocab, p);
        const bool inside = std::any_of(kept.begin(), kept.end(), [&](auto& e) { return e.first == got[r]; });
        EXPECT_TRUE(inside) << "top_k " << p.top_k << " top_p " << p.top_p << " row " << r << " sampled " << got[r]
                            << " outside the kept set of " << kept.size();
      }
    }
  }
}

TEST(GpuSampling, FrequenciesFollowTheRenormalizedDistributionAndSeedsRepeat) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  // One row repeated many times: rows are independent draws (the row index is part of the Philox counter).
  const int vocab = 64, rows = 20000;
  const std::vector<float> one_row = random_normal(vocab, 1.5f);
  std::vector<float> logits;
  for (int r = 0; r < rows; ++r) logits.insert(logits.end(), one_row.begin(), one_row.end());
  cuda::DeviceBuffer<float> logits_dev(logits);
  for (const kernels::SamplingParams& p : {kernels::SamplingParams{1.0f, 0, 1.0f, 11}, kernels::SamplingParams{0.7f, 10, 1.0f, 12},
                                           kernels::SamplingParams{1.0f, 0, 0.8f, 13}, kernels::SamplingParams{1.2f, 20, 0.9f, 14}}) {
    cuda::DeviceBuffer<int> out_dev(rows), again_dev(rows);
    kernels::sample_rows(logits_dev.data(), rows, vocab, p, nullptr, out_dev.data(), nullptr);
    kernels::sample_rows(logits_dev.data(), rows, vocab, p, nullptr, again_dev.data(), nullptr);
    TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<int> got = out_dev.to_host();
    EXPECT_EQ(got, again_dev.to_host()) << "same seed and offset must give the same tokens";
    const auto kept = cpu_kept_set(one_row.data(), vocab, p);
    std::vector<int> counts(vocab, 0);
    for (int id : got) ++counts[id];
    std::vector<double> expected(vocab, 0.0);
    for (auto& [id, prob] : kept) expected[id] = prob;
    for (int id = 0; id < vocab; ++id) {
      const double mean = expected[id] * rows, sigma = std::sqrt(std::max(mean * (1 - expected[id]), 1.0));
      EXPECT_LE(std::fabs(counts[id] - mean), 5 * sigma + 1)
          << "token " << id << " drawn " << counts[id] << " times, expected " << mean << " (top_k " << p.top_k
          << ", top_p " << p.top_p << ", T " << p.temperature << ")";
    }
  }
}

}  // namespace
}  // namespace tachyon
