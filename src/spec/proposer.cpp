#include "spec/proposer.h"

namespace tachyon {

DFlashProposer::DFlashProposer(const DFlashDrafter& drafter, int64_t max_positions)
    : drafter_(drafter), cache_(drafter.new_cache(max_positions)) {}

std::vector<float> DFlashProposer::propose(int32_t bonus, int block_size) {
  block_.assign(block_size, drafter_.mask_token_id());
  block_[0] = bonus;
  return drafter_.draft(block_, cache_);
}

}  // namespace tachyon
