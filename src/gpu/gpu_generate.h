// Text generation on the GPU: the CPU loop's contract (runtime/generate.h: same parameters, stop tokens, stop
// strings, streamed UTF-8 pieces, result) on top of the resident decode loop. Tokens are chosen on the device
// (argmax, or temperature / top-k / top-p sampling with a seeded Philox stream); the host only reads them back
// every few steps to detokenize and check for stops, while the next steps already run.
#pragma once
#ifdef TACHYON_HAS_CUDA
#include <span>

#include "gpu/decode_loop.h"
#include "gpu/gpu_model.h"
#include "runtime/generate.h"
#include "spec/driver.h"

namespace tachyon::gpu {

// Starts from an empty cache. min_p is not available on the GPU sampler (an error if set).
// `read_every`: decode steps between two reads of the token ring.
GenerationResult generate_on_gpu(GpuModel& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                                 const GenerationParams& params, const TextCallback& on_text = {},
                                 bool use_graph = true, int read_every = 8);

// One request at a time through the resident decode loop, token level (no tokenizer: the caller applies stop ids
// and strings through on_token), as spec/driver.h's decode-function type, so that SpeculativeEngine serves it
// (`tachyon serve --device cuda --max-batch 1`: one stream at the speed of `generate`, the CUDA graph and the
// persistent kernel where the model has them, instead of the batched pass). Each call starts from an empty cache.
// The stats count one round per decode step (tau 1). Two decode loops (their graphs, pinned ring and state) are
// kept across requests: a greedy one, and a sampling one whose settings are rewritten per request (the sampler reads
// them from device memory). `model` must outlive the function.
// vocab_limit > 0: tokens are chosen among the first vocab_limit ids (random weights served with a smaller tokenizer).
// read_every: DecodeLoop::run's (0: adaptive, the ring read about every 4 ms).
SpecDecodeFn resident_decode_fn(GpuModel& model, int read_every = 0, int vocab_limit = 0);

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
