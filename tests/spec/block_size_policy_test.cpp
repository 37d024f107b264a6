// Block size chosen against cost: expected tokens per round from per-slot acceptance, the best b for dense-like
// and MoE-like verify costs, and the online policy learning acceptance (and cost) from observed rounds.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "spec/block_size_policy.h"

namespace tachyon {
namespace {

TEST(BlockSizePolicy, ExpectedTokensPerRound) {
  EXPECT_DOUBLE_EQ(expected_tokens_per_round({0.5, 0.5}, 1), 1.0);
  EXPECT_DOUBLE_EQ(expected_tokens_per_round({0.5, 0.5}, 3), 1.75);
  EXPECT_DOUBLE_EQ(expected_tokens_per_round({0.5, 0.5}, 8), 1.75);  // slots past the estimates never accepted
  EXPECT_DOUBLE_EQ(expected_tokens_per_round({1, 1, 1}, 4), 4.0);
}

std::vector<double> costs(int max_block, double base, double per_token) {
  std::vector<double> c(max_block + 1, 0);
  for (int b = 1; b <= max_block; ++b) c[b] = base + per_token * (b - 1);
  return c;
}

TEST(BlockSizePolicy, BestBlockSizeFollowsCost) {
  const std::vector<double> alpha(15, 0.9);
  // Dense target: verifying 16 rows costs little more than 1 (memory bound): take the whole block.
  EXPECT_EQ(best_block_size(alpha, costs(16, 1.0, 0.02), 2, 16), 16);
  // MoE target where every extra row pulls in new experts (+30% of a decode pass each):
  // E(b) / cost(b) = 1.46, 1.69, 1.81, 1.86, 1.876, 1.864 for b = 2..7.
  EXPECT_EQ(best_block_size(alpha, costs(16, 1.0, 0.3), 2, 16), 6);
  // A drafter that is rarely right: the smallest block.
  EXPECT_EQ(best_block_size(std::vector<double>(15, 0.05), costs(16, 1.0, 0.3), 2, 16), 2);
  EXPECT_THROW(best_block_size(alpha, costs(8, 1.0, 0.1), 2, 16), Error);
}

// Rounds of a simulated drafter whose slot k is accepted with probability alpha (given slots < k were).
int simulate_accepted(int block, double alpha, std::mt19937_64& rng) {
  std::bernoulli_distribution accept(alpha);
  int a = 0;
  while (a < block - 1 && accept(rng)) ++a;
  return a;
}

TEST(BlockSizePolicy, LearnsAcceptanceWithMeasuredCosts) {
  const std::vector<double> cost = costs(16, 1.0, 0.3);
  for (double alpha : {0.5, 0.8, 0.95}) {
    CostAwareBlockSize policy(16, cost, 2, 0.7, 2.0);
    std::mt19937_64 rng(42);
    for (int round = 0; round < 3000; ++round) {
      const int b = policy.next_block_size();
      policy.observe(b, simulate_accepted(b, alpha, rng), cost[b]);
    }
    const int expected = best_block_size(std::vector<double>(15, alpha), cost, 2, 16);
    EXPECT_NEAR(policy.next_block_size(), expected, 1) << "alpha " << alpha;
    EXPECT_NEAR(policy.slot_acceptance()[0], alpha, 0.05) << "alpha " << alpha;
  }
}

TEST(BlockSizePolicy, LearnsCostsFromObservedRounds) {
  // No cost table: round times come from observation (interpolated between observed sizes).
  const std::vector<double> true_cost = costs(16, 1.0, 0.3);
  CostAwareBlockSize policy(16, {}, 2, 0.9, 2.0);
  std::mt19937_64 rng(3);
  for (int round = 0; round < 3000; ++round) {
    const int b = policy.next_block_size();
    policy.observe(b, simulate_accepted(b, 0.9, rng), true_cost[b]);
  }
  const int expected = best_block_size(std::vector<double>(15, 0.9), true_cost, 2, 16);
  EXPECT_NEAR(policy.next_block_size(), expected, 2);
  const std::vector<double> learned = policy.cost_estimate();
  EXPECT_NEAR(learned[expected], true_cost[expected], 1e-9);
}

}  // namespace
}  // namespace tachyon
