// How many slots the next round drafts and verifies. A longer block can commit more tokens per target pass,
// but a verify pass of b rows costs more than a decode pass, and on MoE models much more: the b rows route
// to the union of their experts (for 256 experts top-8, ~8 distinct experts per layer for 1 token, ~100 for
// 16). So b is chosen against measured cost:
//     expected tokens per round  E(b) = 1 + sum_{j=1}^{b-1} prod_{k=1}^{j} alpha_k
//     tokens per second          E(b) / cost(b)
// where alpha_k = P(slot k accepted | slots 1..k-1 accepted), estimated from the rounds seen so far, each
// slot's estimate shrunk toward the previous slot's (so slots a short block never reaches inherit the last
// estimate instead of a fixed prior), and cost(b) = seconds of one round (draft + verify) at block size b, from
// a measured table (tachyon bench's sweep) or fitted to the rounds seen so far.
#pragma once
#include <cstdint>
#include <vector>

namespace tachyon {

class BlockSizePolicy {
 public:
  virtual ~BlockSizePolicy() = default;
  virtual int next_block_size() = 0;
  // A finished round: its block size, draft tokens accepted, and its time (draft + verify).
  virtual void observe(int block_size, int accepted, double seconds) {}
};

class FixedBlockSize : public BlockSizePolicy {
 public:
  explicit FixedBlockSize(int block_size) : block_size_(block_size) {}
  int next_block_size() override { return block_size_; }

 private:
  int block_size_;
};

// Expected tokens committed by a round of block size b (bonus included) for per-slot conditional acceptance
// rates alpha[k - 1] = alpha_k, k = 1..; slots past alpha.size() count as never accepted.
double expected_tokens_per_round(const std::vector<double>& alpha, int block_size);
// The b in [min_block, max_block] maximizing E(b) / cost[b] (cost indexed by b; cost[0] unused). Ties go to
// the smaller b.
int best_block_size(const std::vector<double>& alpha, const std::vector<double>& cost, int min_block, int max_block);

class CostAwareBlockSize : public BlockSizePolicy {
 public:
  // measured_cost[b] = seconds of a round at block size b for b in [1, max_block] (cost[0] unused); empty =
  // learn costs from observed rounds: the first rounds probe max_block and min_block, then sizes not observed
  // get a least-squares line through the observed means, and every explore_period-th round tries the
  // next larger size than the best. prior_acceptance / prior_weight: slot 1's acceptance before any round is
  // seen, worth prior_weight rounds (slot k's prior is slot k-1's estimate, with the same weight).
  CostAwareBlockSize(int max_block, std::vector<double> measured_cost = {}, int min_block = 2,
                     double prior_acceptance = 0.7, double prior_weight = 2.0, int explore_period = 32);
  int next_block_size() override;
  void observe(int block_size, int accepted, double seconds) override;

  std::vector<double> slot_acceptance() const;  // alpha_1..alpha_{max_block - 1}
  std::vector<double> cost_estimate() const;    // [max_block + 1]

 private:
  int max_block_, min_block_;
  std::vector<double> measured_cost_;
  double prior_acceptance_, prior_weight_;
  int explore_period_, decisions_ = 0;
  std::vector<double> reached_, accepted_;         // per slot k (index k - 1)
  std::vector<double> seconds_sum_, rounds_at_;    // per block size
};

}  // namespace tachyon
