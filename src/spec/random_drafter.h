// A DFlash drafter checkpoint with random bf16 weights in host memory (z-lab's tensor names and config), for speed
// runs of a drafter of a published size where the checkpoint is not at hand (`tachyon bench --verify-sweep
// --drafter-config qwen3-coder-30b-a3b-dflash`). Speed only: never for acceptance or quality.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/checkpoint.h"

namespace tachyon {

struct RandomDrafterCheckpoint {
  std::vector<std::vector<uint16_t>> buffers;  // bf16 bits the checkpoint's tensors point into
  Checkpoint checkpoint;
};

// `config`: a DFlashDraftModel config.json (hidden_size, num_hidden_layers, num_attention_heads,
// num_key_value_heads, head_dim, intermediate_size, num_target_layers, block_size, dflash_config). Weights are
// uniform with the standard deviation of a typical initializer (0.02); norms are 1.
std::unique_ptr<RandomDrafterCheckpoint> random_dflash_checkpoint(const nlohmann::json& config, uint64_t seed);

// The DFlashDraftModel config of the drafter published for Qwen3-Coder-30B-A3B (z-lab/Qwen3-Coder-30B-A3B-DFlash):
// 8 layers on the target's hidden size, heads and vocabulary; intermediate 6144 (assumed: its config.json was not
// at hand; 6144 gives the ~0.5B parameters reported for it); block 16; the default feature layers (one per drafter
// layer, spread over the target's). `target`: the target's config.json.
nlohmann::json qwen3_coder_dflash_config(const nlohmann::json& target);

}  // namespace tachyon
