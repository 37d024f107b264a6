// What `tachyon generate --device cuda --draft` and `tachyon serve --device cuda --draft` run: the target GpuModel
// loaded with the drafter's feature layers, the GpuDrafter over it, and a spec/driver.h SpecDecodeFn calling
// gpu_speculative_decode on the pair, so generate_speculative and SpeculativeEngine drive the GPU round exactly as
// they drive the CPU driver (cpu_spec_decoder). The round's graphs, device state and pinned buffers live in
// `session` as long as the pair, so consecutive requests reuse them.
#pragma once
#ifdef TACHYON_HAS_CUDA
#include <memory>

#include "gpu/gpu_drafter.h"
#include "gpu/gpu_model.h"
#include "gpu/gpu_speculative.h"
#include "loader/checkpoint.h"
#include "spec/driver.h"

namespace tachyon::gpu {

struct GpuSpecDecoder {
  std::unique_ptr<GpuModel> target;
  std::unique_ptr<GpuDrafter> drafter;  // reads the target's embedding and lm_head: destroyed before it
  // The round kept across requests (graphs per block size / bucket / argmax-or-sampler); uses both: destroyed
  // first. load_gpu_spec_decoder creates it; decode_fn() does when it is still null.
  std::unique_ptr<GpuSpecSession> session;

  // The positions a request may use: the model's context length within the KV capacity of both.
  int64_t max_context() const;
  // One request at a time (each resets both caches) through `session`; target, drafter and session must outlive
  // the function (moving this struct is fine).
  SpecDecodeFn decode_fn();
};

// Reads the drafter's target_layer_ids with the CPU drafter's rules (read_dflash_drafter_config against the
// target's config), loads the target with them as options.feature_layers (options.kv_positions: KV capacity,
// 0 = GpuModel's default), then the GpuDrafter with the same capacity. Errors name the checkpoint and field.
GpuSpecDecoder load_gpu_spec_decoder(const Checkpoint& target, const Checkpoint& drafter, GpuModelOptions options);

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
