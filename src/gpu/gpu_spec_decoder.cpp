#ifdef TACHYON_HAS_CUDA
#include "gpu/gpu_spec_decoder.h"

#include <algorithm>

#include "gpu/gpu_config.h"
#include "models/dflash_drafter.h"

namespace tachyon::gpu {

int64_t GpuSpecDecoder::max_context() const {
  return std::min({target->config().max_context, target->capacity(), drafter->capacity()});
}

SpecDecodeFn GpuSpecDecoder::decode_fn() {
  if (!session) session = std::make_unique<GpuSpecSession>(*target, *drafter);
  return [round = session.get()](std::span<const int32_t> prompt, const SpecDecodeParams& params,
                                 const TokenCallback& on_token) { return round->decode(prompt, params, on_token); };
}

GpuSpecDecoder load_gpu_spec_decoder(const Checkpoint& target, const Checkpoint& drafter, GpuModelOptions options) {
  // The feature layers are fixed when the target is loaded, so the drafter's config is read first, against the
  // target's sizes as config.json states them (the real hidden width, not the padded one).
  const GpuModelConfig config = read_gpu_model_config(target.config, target.path + " config");
  DrafterTargetInfo info;
  info.num_layers = config.layers;
  info.hidden_size = config.hidden;
  info.vocab_size = config.vocab;
  options.feature_layers = read_dflash_drafter_config(drafter, info).target_layer_ids;
  GpuSpecDecoder decoder;
  decoder.target = GpuModel::load(target, options);
  decoder.drafter = std::make_unique<GpuDrafter>(drafter, *decoder.target, decoder.target->capacity());
  decoder.session = std::make_unique<GpuSpecSession>(*decoder.target, *decoder.drafter);
  return decoder;
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
