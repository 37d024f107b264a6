// The CPU reference path gives the same bits whether tokens arrive in one pass or one at a time
// (core/cpu_matmul.h: every output is one fixed 16-lane FMA sum, whatever the batch; attention aligns its key
// lanes to absolute positions). Checked on every tiny fixture (tests/fixtures/tiny: dense, MoE, MLA, sliding
// windows with sinks, MXFP4 experts): the logits of a 32-token prompt in one forward pass must EQUAL those of
// a 5-token prefill, then chunks of 1, 3 and 7 tokens, exactly, not within a tolerance.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "loader/checkpoint.h"
#include "models/model.h"
#include "../support/paths.h"

namespace tachyon {
namespace {

class BatchInvariance : public testing::TestWithParam<std::string> {};

TEST_P(BatchInvariance, ChunkedForwardEqualsOnePass) {
  const Checkpoint checkpoint = open_checkpoint(test::fixture_path("tiny/" + GetParam()));
  const std::unique_ptr<Model> model = create_model(checkpoint);
  const int vocab = model->vocab_size();
  std::vector<int32_t> prompt(32);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 7919 + 13) % vocab);

  KvCache one_cache = model->new_cache();
  const std::vector<float> one_pass = model->forward(prompt, one_cache, /*all_rows=*/true);

  KvCache cache = model->new_cache();
  std::vector<float> chunked;
  const std::vector<size_t> sizes = {5, 1, 3, 7, 1, 1, 7, 3, 4};  // sums to 32
  size_t at = 0;
  for (size_t size : sizes) {
    const std::vector<float> rows = model->forward(std::span(prompt).subspan(at, size), cache, true);
    chunked.insert(chunked.end(), rows.begin(), rows.end());
    at += size;
  }
  ASSERT_EQ(at, prompt.size());
  ASSERT_EQ(chunked.size(), one_pass.size());
  for (size_t t = 0; t < prompt.size(); ++t)
    for (int v = 0; v < vocab; ++v)
      ASSERT_EQ(chunked[t * vocab + v], one_pass[t * vocab + v]) << GetParam() << " position " << t << " token " << v;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BatchInvariance,
                         testing::Values("llama", "qwen2", "qwen3", "qwen3_moe", "qwen3_moe_unnormalized", "mixtral",
                                         "deepseek_v2", "deepseek_v3", "gpt_oss", "gpt_oss_mxfp4"));

}  // namespace
}  // namespace tachyon
