#include "runtime/batched_forward.h"

#include "core/error.h"
#include "models/decoder.h"
#include "models/layers.h"

namespace tachyon {

namespace {

// DecoderModel keeps the parts of its layer loop protected (architectures override them). A class
// derived from it may form pointers to those members, and pointers to members work on any
// DecoderModel: that is how this file reaches them without changing models/. The plain form is a
// DecoderModel::forward_batch member (or a friend declaration in decoder.h); see docs/server.md.
struct DecoderParts : DecoderModel {
  static constexpr auto embed_tokens = &DecoderParts::embed_tokens_;
  static constexpr auto lm_head = &DecoderParts::lm_head_;
  static constexpr auto final_norm = &DecoderParts::final_norm_;
  static constexpr auto input_norm = &DecoderParts::input_norm_;
  static constexpr auto post_attention_norm = &DecoderParts::post_attention_norm_;
  static constexpr auto rms_eps = &DecoderParts::rms_eps_;
  static constexpr auto attention_fn = &DecoderParts::attention;        // virtual: MLA overrides it
  static constexpr auto feed_forward_fn = &DecoderParts::feed_forward;  // virtual: dense MLP or MoE
};

std::vector<float> forward_batch_decoder(DecoderModel& model, std::span<const ForwardItem> items) {
  const int64_t d = model.hidden_size(), count = static_cast<int64_t>(items.size());
  const float eps = model.*DecoderParts::rms_eps;
  std::vector<int64_t> first_row(count + 1, 0);  // item i owns rows [first_row[i], first_row[i + 1])
  for (int64_t i = 0; i < count; ++i) first_row[i + 1] = first_row[i] + static_cast<int64_t>(items[i].tokens.size());
  const int64_t rows = first_row[count];
  for (const ForwardItem& item : items) item.cache->reserve_for(static_cast<int64_t>(item.tokens.size()));

  std::vector<float> x(rows * d), normed(rows * d), delta(rows * d);
  for (int64_t i = 0; i < count; ++i)
    for (int64_t t = 0; t < static_cast<int64_t>(items[i].tokens.size()); ++t)
      (model.*DecoderParts::embed_tokens)->row_to_float(items[i].tokens[t], x.data() + (first_row[i] + t) * d);
  for (int layer = 0; layer < model.num_layers(); ++layer) {
    rms_norm(x.data(), (model.*DecoderParts::input_norm)[layer].data(), eps, rows, d, normed.data());
    for (int64_t i = 0; i < count; ++i) {
      KvCache& cache = *items[i].cache;
      (model.*DecoderParts::attention_fn)(layer, normed.data() + first_row[i] * d, first_row[i + 1] - first_row[i],
                                       cache.length(), cache.layer(layer), delta.data() + first_row[i] * d);
    }
    for (int64_t j = 0; j < rows * d; ++j) x[j] += delta[j];
    rms_norm(x.data(), (model.*DecoderParts::post_attention_norm)[layer].data(), eps, rows, d, normed.data());
    (model.*DecoderParts::feed_forward_fn)(layer, normed.data(), rows, delta.data());
    for (int64_t j = 0; j < rows * d; ++j) x[j] += delta[j];
  }
  for (const ForwardItem& item : items) item.cache->advance(static_cast<int64_t>(item.tokens.size()));

  // The lm_head only for each item's last row.
  std::vector<float> last(count * d);
  for (int64_t i = 0; i < count; ++i) std::copy_n(x.data() + (first_row[i + 1] - 1) * d, d, last.data() + i * d);
  rms_norm(last.data(), (model.*DecoderParts::final_norm).data(), eps, count, d, normed.data());
  std::vector<float> logits(count * model.vocab_size());
  linear(*(model.*DecoderParts::lm_head), nullptr, normed.data(), count, logits.data());
  return logits;
}

}  // namespace

std::vector<float> forward_batch(Model& model, std::span<const ForwardItem> items) {
  if (items.empty()) return {};
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].tokens.empty()) fail("forward_batch: item {} has no tokens", i);
    if (items[i].cache == nullptr) fail("forward_batch: item {} has no KV cache", i);
    for (int32_t id : items[i].tokens)
      if (id < 0 || id >= model.vocab_size()) fail("token id {} is outside the vocabulary [0, {})", id, model.vocab_size());
    for (size_t j = 0; j < i; ++j)
      if (items[i].cache == items[j].cache) fail("forward_batch: items {} and {} share one KV cache", j, i);
  }

  if (auto* decoder = dynamic_cast<DecoderModel*>(&model)) return forward_batch_decoder(*decoder, items);

  std::vector<float> logits;
  logits.reserve(items.size() * model.vocab_size());
  for (const ForwardItem& item : items) {
    std::vector<float> row = model.forward(item.tokens, *item.cache);
    logits.insert(logits.end(), row.begin(), row.end());
  }
  return logits;
}

}  // namespace tachyon
