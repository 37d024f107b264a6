#include "spec/target.h"

namespace tachyon {

DrafterTargetInfo drafter_target_info(const DecoderModel& model) {
  DrafterTargetInfo info;
  info.num_layers = model.num_layers();
  info.hidden_size = model.hidden_size();
  info.vocab_size = model.vocab_size();
  info.embed_tokens = &model.embedding_weights();
  info.lm_head = &model.lm_head_weights();
  return info;
}

CpuSpecTarget::CpuSpecTarget(DecoderModel& model, std::vector<int> feature_layers, int64_t max_positions)
    : model_(model), cache_(model.new_cache(max_positions)) {
  model_.set_feature_layers(std::move(feature_layers));
}

CpuSpecTarget::~CpuSpecTarget() { model_.set_feature_layers({}); }

TargetPass CpuSpecTarget::prefill(std::span<const int32_t> tokens) {
  TargetPass pass;
  pass.logits = model_.forward(tokens, cache_, /*all_rows=*/false);
  pass.features = model_.features();
  return pass;
}

TargetPass CpuSpecTarget::verify(std::span<const int32_t> tokens) {
  TargetPass pass;
  pass.logits = model_.forward(tokens, cache_, /*all_rows=*/true);
  pass.features = model_.features();
  return pass;
}

}  // namespace tachyon
