// Text generation on the GPU: the CPU loop's contract (runtime/generate.h: same parameters, stop tokens, stop
// strings, streamed UTF-8 pieces, result) on top of the resident decode loop. Tokens are chosen on the device
// (argmax, or temperature / top-k / top-p sampling with a seeded Philox stream); the host only reads them back
// every few steps to detokenize and check for stops, while the next steps already run.
#pragma once
#ifdef TACHYON_HAS_CUDA
#include <span>

#include "gpu/gpu_model.h"
#include "runtime/generate.h"

namespace tachyon::gpu {

// Starts from an empty cache. min_p is not available on the GPU sampler (an error if set).
// `read_every`: decode steps between two reads of the token ring.
GenerationResult generate_on_gpu(GpuModel& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                                 const GenerationParams& params, const TextCallback& on_text = {},
                                 bool use_graph = true, int read_every = 8);

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
