#include "spec/block_size_policy.h"

#include <algorithm>

#include "core/error.h"

namespace tachyon {

double expected_tokens_per_round(const std::vector<double>& alpha, int block_size) {
  double expected = 1, reach = 1;
  for (int k = 1; k < block_size && k <= static_cast<int>(alpha.size()); ++k) {
    reach *= alpha[k - 1];
    expected += reach;
  }
  return expected;
}

int best_block_size(const std::vector<double>& alpha, const std::vector<double>& cost, int min_block, int max_block) {
  if (min_block < 1 || max_block < min_block || static_cast<int>(cost.size()) <= max_block)
    fail("best_block_size: need costs for block sizes {}..{}, have {}", min_block, max_block, cost.size());
  int best = min_block;
  double best_rate = -1;
  for (int b = min_block; b <= max_block; ++b) {
    if (!(cost[b] > 0)) fail("best_block_size: cost of block size {} is {}", b, cost[b]);
    const double rate = expected_tokens_per_round(alpha, b) / cost[b];
    if (rate > best_rate * (1 + 1e-12)) {
      best_rate = rate;
      best = b;
    }
  }
  return best;
}

CostAwareBlockSize::CostAwareBlockSize(int max_block, std::vector<double> measured_cost, int min_block,
                                       double prior_acceptance, double prior_weight, int explore_period)
    : max_block_(max_block), min_block_(min_block), measured_cost_(std::move(measured_cost)),
      prior_acceptance_(prior_acceptance), prior_weight_(prior_weight), explore_period_(explore_period) {
  if (min_block < 1 || max_block < min_block) fail("block size policy: need 1 <= min {} <= max {}", min_block, max_block);
  if (!measured_cost_.empty() && static_cast<int>(measured_cost_.size()) <= max_block)
    fail("block size policy: measured costs cover block sizes up to {}, need {}", measured_cost_.size() - 1, max_block);
  reached_.assign(max_block, 0);
  accepted_.assign(max_block, 0);
  seconds_sum_.assign(max_block + 1, 0);
  rounds_at_.assign(max_block + 1, 0);
}

std::vector<double> CostAwareBlockSize::slot_acceptance() const {
  std::vector<double> alpha(max_block_ - 1);
  double previous = prior_acceptance_;
  for (int k = 1; k < max_block_; ++k) {
    alpha[k - 1] = (accepted_[k - 1] + previous * prior_weight_) / (reached_[k - 1] + prior_weight_);
    previous = alpha[k - 1];
  }
  return alpha;
}

std::vector<double> CostAwareBlockSize::cost_estimate() const {
  std::vector<double> cost(max_block_ + 1, 0);
  if (!measured_cost_.empty()) {
    for (int b = 1; b <= max_block_; ++b) cost[b] = measured_cost_[b];
    return cost;
  }
  // Least-squares line through the observed sizes' mean round times; observed sizes keep their own mean.
  double n = 0, sum_b = 0, sum_c = 0, sum_bb = 0, sum_bc = 0;
  for (int b = 1; b <= max_block_; ++b) {
    if (rounds_at_[b] == 0) continue;
    const double c = seconds_sum_[b] / rounds_at_[b];
    n += 1, sum_b += b, sum_c += c, sum_bb += double(b) * b, sum_bc += b * c;
  }
  const double denominator = n * sum_bb - sum_b * sum_b;
  const double slope = n >= 2 && denominator > 0 ? (n * sum_bc - sum_b * sum_c) / denominator : 0.0;
  const double intercept = n > 0 ? (sum_c - slope * sum_b) / n : 1.0;
  const double floor = n > 0 ? 1e-3 * sum_c / n : 1e-3;
  for (int b = 1; b <= max_block_; ++b)
    cost[b] = rounds_at_[b] > 0 ? seconds_sum_[b] / rounds_at_[b] : std::max(floor, intercept + slope * b);
  return cost;
}

int CostAwareBlockSize::next_block_size() {
  ++decisions_;
  if (measured_cost_.empty()) {
    // Two distinct sizes are needed before a cost line can be fitted: probe the ends first.
    if (rounds_at_[max_block_] == 0) return max_block_;
    if (rounds_at_[min_block_] == 0) return min_block_;
  }
  const int best = best_block_size(slot_acceptance(), cost_estimate(), min_block_, max_block_);
  if (explore_period_ > 0 && decisions_ % explore_period_ == 0 && best < max_block_) return best + 1;
  return best;
}

void CostAwareBlockSize::observe(int block_size, int accepted, double seconds) {
  if (block_size < 1 || block_size > max_block_) return;
  // Slots 1..accepted were reached and accepted; slot accepted + 1 (if it existed) was reached and rejected.
  for (int k = 1; k < block_size && k <= accepted + 1; ++k) {
    reached_[k - 1] += 1;
    if (k <= accepted) accepted_[k - 1] += 1;
  }
  seconds_sum_[block_size] += seconds;
  rounds_at_[block_size] += 1;
}

}  // namespace tachyon
