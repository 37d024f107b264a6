// The C++ DFlash drafter against tools/dflash_reference.py (an independent PyTorch implementation of the
// published drafter, checked against z-lab's own model code when the fixture was made) on random drafters for
// the tiny targets, fixtures in tests/fixtures/dflash (made by `tools/dflash_reference.py make-fixture`).
//   - target features (HF hidden_states[l + 1]; the last layer's entry is after the final norm) from the
//     C++ target match transformers';
//   - draft logits of every round match the reference, which recomputes each round from scratch with all
//     context rows, while the C++ drafter keeps the projected context in its KV cache across rounds and
//     drops each round's block; both with the fixture's (HF) features and with the C++ target's own.
// Metric: max |ours - ref| / max |ref| per round (tolerance in reference.json).
#include <gtest/gtest.h>

#include "core/error.h"
#include "spec/proposer.h"
#include "spec_test_util.h"

namespace tachyon {
namespace {

using test::fixture_path;

struct Fixture {
  nlohmann::json reference;
  std::vector<int32_t> ids;
  std::vector<float> features, logits;
  int64_t feature_width = 0, vocab = 0;
};

Fixture load_fixture(const std::string& name) {
  Fixture f;
  const std::string dir = fixture_path("dflash/" + name);
  f.reference = test::read_json_file(dir + "/reference.json");
  f.ids = f.reference["ids"].get<std::vector<int32_t>>();
  const auto fs = f.reference["features_shape"].get<std::vector<int64_t>>();
  const auto ls = f.reference["draft_logits_shape"].get<std::vector<int64_t>>();
  f.feature_width = fs[1];
  f.vocab = ls[1];
  f.features = test::read_f32_file(dir + "/features.f32", fs[0] * fs[1]);
  f.logits = test::read_f32_file(dir + "/draft_logits.f32", ls[0] * ls[1]);
  return f;
}

double relative_error(const float* ours, const float* ref, int64_t n) {
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    max_diff = std::max(max_diff, static_cast<double>(std::abs(ours[i] - ref[i])));
    max_ref = std::max(max_ref, static_cast<double>(std::abs(ref[i])));
  }
  return max_diff / max_ref;
}

// Runs the fixture's rounds through a DFlashProposer fed with `features`; checks each round's logits.
void check_rounds(const Fixture& f, const DFlashDrafter& drafter, const std::vector<float>& features,
                  const std::string& what) {
  DFlashProposer proposer(drafter, 4096);
  const double tolerance = f.reference["tolerance"].get<double>();
  int64_t offset = 0;
  for (const auto& round : f.reference["rounds"]) {
    const int64_t start = round["start"].get<int64_t>();
    const int block = round["block_size"].get<int>();
    const int64_t have = proposer.context_length();
    proposer.add_context(features.data() + have * f.feature_width, start - have);
    ASSERT_EQ(proposer.context_length(), start);
    std::vector<float> logits = proposer.propose(f.ids[start], block);
    ASSERT_EQ(static_cast<int64_t>(logits.size()), (block - 1) * f.vocab);
    const double error = relative_error(logits.data(), f.logits.data() + offset, logits.size());
    EXPECT_LE(error, tolerance) << what << ": round at " << start << " block " << block;
    // The drafted tokens themselves (argmax) agree too.
    const auto expected_argmax = round["draft_argmax"].get<std::vector<int32_t>>();
    for (int j = 0; j + 1 < block; ++j)
      EXPECT_EQ(argmax(std::span<const float>(logits.data() + j * f.vocab, f.vocab)), expected_argmax[j])
          << what << ": round at " << start << " slot " << j + 1;
    offset += static_cast<int64_t>(logits.size());
  }
  EXPECT_EQ(offset, static_cast<int64_t>(f.logits.size()));
}

class DrafterReference : public ::testing::TestWithParam<std::string> {};

TEST_P(DrafterReference, MatchesPyTorchReference) {
  const Fixture f = load_fixture(GetParam());
  test::LoadedTarget target = test::load_target(fixture_path(f.reference["target"].get<std::string>()));
  Checkpoint drafter_checkpoint = open_checkpoint(fixture_path("dflash/" + GetParam() + "/drafter"));
  DFlashDrafter drafter(drafter_checkpoint, drafter_target_info(target.decoder()));
  EXPECT_EQ(drafter.target_layer_ids(), f.reference["target_layer_ids"].get<std::vector<int>>());
  ASSERT_EQ(drafter.feature_width(), f.feature_width);

  // Target features from the C++ target, all rows in one pass and as prompt + single steps.
  std::vector<float> ours;
  {
    CpuSpecTarget spec_target(target.decoder(), drafter.target_layer_ids());
    TargetPass pass = spec_target.verify(f.ids);
    ours = pass.features;
  }
  ASSERT_EQ(ours.size(), f.features.size());
  EXPECT_LE(relative_error(ours.data(), f.features.data(), ours.size()), f.reference["feature_tolerance"].get<double>());
  {
    CpuSpecTarget spec_target(target.decoder(), drafter.target_layer_ids());
    TargetPass pass = spec_target.prefill(std::span<const int32_t>(f.ids).first(5));
    std::vector<float> stepped = pass.features;
    for (size_t t = 5; t < f.ids.size(); ++t) {
      TargetPass step = spec_target.verify(std::span<const int32_t>(f.ids).subspan(t, 1));
      stepped.insert(stepped.end(), step.features.begin(), step.features.end());
    }
    ASSERT_EQ(stepped.size(), ours.size());
    EXPECT_EQ(stepped, ours) << "features of a one-pass block differ from single steps";
  }

  check_rounds(f, drafter, f.features, "HF features");
  check_rounds(f, drafter, ours, "C++ target features");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DrafterReference, ::testing::Values("qwen3", "llama_sliding"));

TEST(DrafterConfig, DefaultTargetLayersMatchZLab) {
  // round(1 + i * (n - 4) / (K - 1)) with Python's half-to-even rounding; n // 2 for one layer.
  EXPECT_EQ(default_dflash_target_layers(36, 5), (std::vector<int>{1, 9, 17, 25, 33}));   // Qwen3-8B
  EXPECT_EQ(default_dflash_target_layers(30, 5), (std::vector<int>{1, 8, 14, 20, 27}));   // SmolLM2: 7.5->8, 20.5->20
  EXPECT_EQ(default_dflash_target_layers(48, 8), (std::vector<int>{1, 7, 14, 20, 26, 32, 39, 45}));  // Qwen3-Coder-30B-A3B
  EXPECT_EQ(default_dflash_target_layers(30, 1), (std::vector<int>{15}));
}

TEST(DrafterConfig, ErrorsNameTheField) {
  test::LoadedTarget target = test::load_target(fixture_path("tiny/qwen3"));
  Checkpoint checkpoint = open_checkpoint(fixture_path("dflash/qwen3/drafter"));
  auto expect_error = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& needle) {
    Checkpoint copy;
    copy.path = checkpoint.path;
    copy.config = checkpoint.config;
    edit(copy.config);
    for (const auto& [name, tensor] : checkpoint.weights.all()) copy.weights.add(tensor);
    try {
      DFlashDrafter drafter(copy, drafter_target_info(target.decoder()));
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([](nlohmann::json& c) { c["architectures"] = {"DFlash2DraftModel"}; }, "architectures");
  expect_error([](nlohmann::json& c) { c["hidden_size"] = 64; }, "hidden_size");
  expect_error([](nlohmann::json& c) { c["dflash_config"]["target_layer_ids"] = {0, 2}; }, "target_layer_ids");
  expect_error([](nlohmann::json& c) { c["num_target_layers"] = 36; }, "num_target_layers");
  expect_error([](nlohmann::json& c) { c["dflash_config"].erase("mask_token_id"); }, "mask_token_id");
  expect_error([](nlohmann::json& c) {
    c["num_hidden_layers"] = 3;
    c.erase("layer_types");
  }, "layers.2");
}

}  // namespace
}  // namespace tachyon
