// One engine step's tokens for several sequences in one pass over the weights (CPU reference path).
//
// DecoderModel::forward runs rows of ONE sequence: its linear layers dequantize each weight row once
// and apply it to every row. A step of B concurrent requests as B forward() calls therefore reads
// every weight B times. forward_batch stacks the rows of all items (a decode token, or a prompt
// chunk): norms, the feed-forward (dense or MoE) and the lm_head run once over all rows; only
// attention runs per item, against that item's own KvCache. Every row sees exactly the arithmetic
// of forward() (same kernels, same order, rows independent), so the logits are bitwise equal to
// running each item alone (tests/server/batched_forward_test.cpp).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "models/model.h"

namespace tachyon {

struct ForwardItem {
  std::span<const int32_t> tokens;  // run at positions [cache->length(), + tokens.size())
  KvCache* cache = nullptr;         // distinct for every item
};

// Appends every item's tokens to its cache and returns the logits of each item's last token,
// [items.size(), vocab]. Models that are not DecoderModels fall back to one forward() per item.
std::vector<float> forward_batch(Model& model, std::span<const ForwardItem> items);

}  // namespace tachyon
