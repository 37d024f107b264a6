// Several sequences in one GpuModel (serving): a forward_batch pass whose rows belong to different sequences
// must give each row the logits that the single-sequence passes give. Both run in the same model (same weights,
// same KV pool): "batch" sequences advance together through forward_batch, "alone" sequences advance one at a
// time through select_sequence + prefill / forward. Models: SmolLM2-135M (the real GGUF when found, else random
// weights of its shape) and a 2-layer Qwen3-30B-A3B shape with random weights (MoE rows of several sequences in
// one expert pass). Bound: max |batch - alone| <= 2e-3 x max |alone| per row, same argmax (but at a near-tie):
// the passes differ in float32 summation order only (the attention kernel's split over the keys depends on the
// batch shape, the gemv kernels' on the row count), which can move a bf16 rounding of the KV cache by one ulp.
#include <cmath>
#include <cstdio>
#include <random>

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "gpu/gpu_config.h"
#include "gpu/gpu_model.h"
#include "gpu_test_util.h"
#include "runtime/gpu_model_runner.h"
#include "../support/paths.h"

namespace tachyon::gpu {
namespace {

std::unique_ptr<GpuModel> make_model(const std::string& which, int max_sequences) {
  GpuModelOptions options;
  options.kv_positions = 4096;
  options.max_sequences = max_sequences;
  options.progress = false;
  if (which == "smollm2") {
    const std::string path = test::smollm2_gguf_path();
    if (!path.empty()) {
      static Checkpoint checkpoint = open_checkpoint(path);
      return GpuModel::load(checkpoint, options);
    }
    return GpuModel::random(*builtin_model_config("smollm2-135m"), "smollm2-135m", 7, options);
  }
  nlohmann::json config = *builtin_model_config("qwen3-30b-a3b");
  config["num_hidden_layers"] = 2;
  return GpuModel::random(config, "qwen3-30b-a3b, 2 layers", 7, options);
}

std::vector<float> to_host(const float* device, size_t count, cudaStream_t stream) {
  std::vector<float> host(count);
  TACHYON_CUDA_CHECK(cudaMemcpyAsync(host.data(), device, count * sizeof(float), cudaMemcpyDeviceToHost, stream));
  TACHYON_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

// max |a - b| / max |b| over one row; same_argmax is also true when the argmax differs at a near-tie of b (its
// top-2 gap below twice the largest difference).
double relative_error(const float* a, const float* b, int vocab, bool& same_argmax) {
  double diff = 0, scale = 0;
  int arg_a = 0, arg_b = 0;
  for (int i = 0; i < vocab; ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
    if (a[i] > a[arg_a]) arg_a = i;
    if (b[i] > b[arg_b]) arg_b = i;
  }
  float second = -INFINITY;
  for (int i = 0; i < vocab; ++i)
    if (i != arg_b) second = std::max(second, b[i]);
  same_argmax = arg_a == arg_b || b[arg_b] - second < 2 * diff;
  return diff / std::max(scale, 1e-30);
}

void check_batch_equals_alone(const std::string& which) {
  SKIP_WITHOUT_GPU();
  constexpr int S = 6;  // sequences advanced together
  auto model = make_model(which, 2 * S + 1);
  const int vocab = model->config().vocab;
  const int token_limit = std::min(vocab, 49152);
  std::mt19937 random(1234);
  auto draw = [&](int n) {
    std::vector<int32_t> t(n);
    for (int32_t& id : t) id = static_cast<int32_t>(random() % token_limit);
    return t;
  };

  // Prompts of 5..90 tokens (gemv pass and GEMM prefill), page boundaries crossed (64 positions per page).
  const int prompt_lengths[S] = {5, 16, 17, 40, 63, 90};
  std::vector<int> batch_seq(S), alone_seq(S);
  std::vector<std::vector<int32_t>> prompts(S);
  for (int s = 0; s < S; ++s) {
    prompts[s] = draw(prompt_lengths[s]);
    batch_seq[s] = model->add_sequence();
    alone_seq[s] = model->add_sequence();
    for (int seq : {batch_seq[s], alone_seq[s]}) {
      model->select_sequence(seq);
      model->prefill(prompts[s]);
    }
  }
  model->select_sequence(0);

  // Steps: one decode token per sequence (6 rows), then uneven rows (a verify-like block of 4, 1, 3, 2, 5, 1
  // = 16 rows), then single tokens again, enough to cross a page boundary for the 63-token prompt.
  std::vector<std::vector<int>> step_rows = {{1, 1, 1, 1, 1, 1}, {4, 1, 3, 2, 5, 1}, {1, 1, 1, 1, 1, 1},
                                             {1, 1, 1, 1, 1, 1}, {2, 2, 2, 2, 2, 2}, {1, 1, 1, 1, 1, 1}};
  double worst = 0;
  int rows_checked = 0;
  for (const std::vector<int>& rows : step_rows) {
    std::vector<std::vector<int32_t>> tokens(S);
    std::vector<SequenceTokens> items;
    int total = 0;
    for (int s = 0; s < S; ++s) {
      tokens[s] = draw(rows[s]);
      items.push_back({batch_seq[s], tokens[s]});
      total += rows[s];
    }
    const std::vector<float> batch = to_host(model->forward_batch(items), size_t(total) * vocab, model->stream());
    int row = 0;
    for (int s = 0; s < S; ++s) {
      model->select_sequence(alone_seq[s]);
      const std::vector<float> alone = model->forward_to_host(tokens[s]);
      for (int t = 0; t < rows[s]; ++t, ++row) {
        bool same_argmax = false;
        const double error = relative_error(batch.data() + size_t(row) * vocab, alone.data() + size_t(t) * vocab,
                                            vocab, same_argmax);
        worst = std::max(worst, error);
        ++rows_checked;
        EXPECT_LE(error, 2e-3) << which << ": sequence " << s << " row " << t;
        EXPECT_TRUE(same_argmax) << which << ": sequence " << s << " row " << t;
      }
      EXPECT_EQ(model->sequence_length(batch_seq[s]), model->sequence_length(alone_seq[s]));
    }
    model->select_sequence(0);
  }
  std::printf("%s: %d rows, max relative difference batch vs alone %.3g\n", which.c_str(), rows_checked, worst);

  // Removing sequences returns their pages; a sequence can be added again and starts empty.
  for (int s = 0; s < S; ++s) model->remove_sequence(batch_seq[s]);
  const int again = model->add_sequence();
  EXPECT_EQ(model->sequence_length(again), 0);
}

TEST(GpuModelBatch, SmolLM2BatchPassEqualsSingleSequencePasses) { check_batch_equals_alone("smollm2"); }
TEST(GpuModelBatch, MoeBatchPassEqualsSingleSequencePasses) { check_batch_equals_alone("qwen3-moe"); }

TEST(GpuModelBatch, FullKvPoolFailsWithoutChangingLengths) {
  SKIP_WITHOUT_GPU();
  GpuModelOptions options;
  options.kv_positions = 128;  // two pages of 64
  options.max_sequences = 3;
  options.progress = false;
  auto model = GpuModel::random(*builtin_model_config("smollm2-135m"), "smollm2-135m", 7, options);
  const int a = model->add_sequence(), b = model->add_sequence();
  std::vector<int32_t> prompt(60, 5), one = {7};
  model->select_sequence(a);
  model->prefill(prompt);
  model->select_sequence(b);
  model->prefill(prompt);
  model->select_sequence(0);
  std::vector<int32_t> five(5, 9);
  std::vector<SequenceTokens> items = {{a, one}, {b, five}};  // b needs a third page
  EXPECT_THROW(model->forward_batch(items), Error);
  EXPECT_EQ(model->sequence_length(a), 60);
  EXPECT_EQ(model->sequence_length(b), 60);
  items = {{a, one}, {b, one}};
  model->forward_batch(items);
  EXPECT_EQ(model->sequence_length(a), 61);
}

// The serving runner: a step mixing a long prompt chunk (GEMM prefill) with decode rows of other sequences,
// more than 16 rows in all (two passes), against the same requests one at a time.
TEST(GpuModelBatch, RunnerStepEqualsRequestsAlone) {
  SKIP_WITHOUT_GPU();
  constexpr int S = 20;
  GpuModelRunner runner(make_model("smollm2", 2 * S + 2), 2 * S, "test");
  const int vocab = runner.vocab_size();
  std::mt19937 random(99);
  std::vector<std::vector<int32_t>> prompts(S + 1);
  for (auto& p : prompts) {
    p.resize(3 + random() % 40);
    for (int32_t& id : p) id = static_cast<int32_t>(random() % 49152);
  }
  // Sequences 1..S: prompts, one per step (the runner's prefill path); S + 1: a 200-token chunk in the big step.
  for (uint64_t s = 1; s <= S; ++s) {
    runner.add_sequence(s, 512);
    RunItem item{s, prompts[s - 1]};
    runner.run({&item, 1});
  }
  std::vector<int32_t> long_prompt(200);
  for (int32_t& id : long_prompt) id = static_cast<int32_t>(random() % 49152);
  runner.add_sequence(S + 1, 512);
  std::vector<int32_t> next(S);
  std::vector<RunItem> step;
  for (uint64_t s = 1; s <= S; ++s) {
    next[s - 1] = static_cast<int32_t>(random() % 49152);
    step.push_back({s, {&next[s - 1], 1}});
  }
  step.insert(step.begin() + 7, RunItem{S + 1, long_prompt});
  const std::vector<float> batched = runner.run(step);

  // The same, alone: fresh sequences, one request per run() call.
  for (size_t i = 0; i < step.size(); ++i) {
    const uint64_t id = 1000 + i;
    runner.add_sequence(id, 512);
    std::vector<float> alone;
    if (step[i].sequence == S + 1) {
      RunItem item{id, long_prompt};
      alone = runner.run({&item, 1});
    } else {
      RunItem prompt{id, prompts[step[i].sequence - 1]};
      runner.run({&prompt, 1});
      RunItem token{id, step[i].tokens};
      alone = runner.run({&token, 1});
    }
    bool same_argmax = false;
    const double error = relative_error(batched.data() + i * vocab, alone.data(), vocab, same_argmax);
    EXPECT_LE(error, 2e-3) << "item " << i;
    EXPECT_TRUE(same_argmax) << "item " << i;
    runner.remove_sequence(id);
  }
}

}  // namespace
}  // namespace tachyon::gpu
