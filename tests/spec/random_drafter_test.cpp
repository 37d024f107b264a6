// random_dflash_checkpoint (the speed-only drafter of `bench --verify-sweep --drafter-config
// qwen3-coder-30b-a3b-dflash`): its names, shapes and config are what the drafter loaders accept, and it drafts
// finite logits.
#include <cmath>

#include <gtest/gtest.h>

#include "core/error.h"
#include "spec/random_drafter.h"
#include "spec/target.h"
#include "spec_test_util.h"

namespace tachyon {
namespace {

TEST(RandomDrafter, LoadsAsADFlashDrafterAndDrafts) {
  test::LoadedTarget target = test::load_target(test::fixture_path("tiny/qwen3"));
  DecoderModel& model = target.decoder();
  const nlohmann::json& tc = target.checkpoint->config;
  nlohmann::json config = qwen3_coder_dflash_config(tc);
  config["num_hidden_layers"] = 2;  // the built-in's 8 layers and 6144 width, shrunk for a test
  config["intermediate_size"] = 64;
  config["dflash_config"]["target_layer_ids"] = {0, 1};  // the default spread needs more than 2 target layers
  const auto random = random_dflash_checkpoint(config, 7);
  DFlashDrafter drafter(random->checkpoint, drafter_target_info(model));
  EXPECT_EQ(drafter.block_size(), 16);
  EXPECT_EQ(drafter.mask_token_id(), model.vocab_size() - 1);
  EXPECT_EQ(drafter.target_layer_ids(), (std::vector<int>{0, 1}));
  KvCache cache = drafter.new_cache(64);
  std::vector<float> features(5 * drafter.feature_width(), 0.5f);
  drafter.add_context(features.data(), 5, cache);
  std::vector<int32_t> block(16, drafter.mask_token_id());
  block[0] = 3;
  const std::vector<float> logits = drafter.draft(block, cache);
  ASSERT_EQ(logits.size(), static_cast<size_t>(15) * model.vocab_size());
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  // The same seed gives the same weights.
  const auto again = random_dflash_checkpoint(config, 7);
  EXPECT_EQ(again->buffers, random->buffers);
  EXPECT_THROW(random_dflash_checkpoint(nlohmann::json{{"hidden_size", 8}}, 1), Error);
}

}  // namespace
}  // namespace tachyon
