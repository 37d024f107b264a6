#ifdef TACHYON_HAS_CUDA
#include "gpu/gpu_generate.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "gpu/decode_loop.h"

namespace tachyon::gpu {

GenerationResult generate_on_gpu(GpuModel& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                                 const GenerationParams& params, const TextCallback& on_text, bool use_graph,
                                 int read_every) {
  if (prompt.empty()) fail("the prompt is empty (no tokens)");
  if (params.max_tokens < 0) fail("max_tokens must be >= 0, got {}", params.max_tokens);
  validate(params.sampling);
  if (params.sampling.min_p > 0) fail("--min-p is not supported on the GPU sampler yet (use top-k / top-p)");
  GenerationResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  if (result.prompt_tokens >= model.config().max_context)
    fail("prompt of {} tokens does not fit the context length of {}", prompt.size(), model.config().max_context);
  if (result.prompt_tokens >= model.capacity())
    fail("prompt of {} tokens does not fit the GPU KV cache of {} positions", prompt.size(), model.capacity());

  const std::vector<int32_t> stop_ids = stop_token_ids(params, tokenizer);
  IncrementalDecoder decoder(tokenizer);
  StopStringFilter stop_filter(params.stop_strings);
  auto emit = [&](const std::string& piece) {
    if (piece.empty()) return;
    result.text += piece;
    if (on_text) on_text(piece);
  };

  model.truncate(0);
  DecodeSampling sampling;
  sampling.temperature = params.sampling.temperature;
  sampling.top_k = params.sampling.top_k;
  sampling.top_p = params.sampling.top_p;
  sampling.seed = params.sampling.seed;
  DecodeLoop loop(model, sampling);

  auto clock = std::chrono::steady_clock::now;
  auto started = clock();
  loop.start(prompt);  // prefill, and the first token chosen on the device
  TACHYON_CUDA_CHECK(cudaStreamSynchronize(model.stream()));
  result.prefill_seconds = std::chrono::duration<double>(clock() - started).count();
  started = clock();
  result.finish_reason = "length";
  if (params.max_tokens > 0) {
    // The context length bounds the tokens too (as the CPU loop's cache does).
    const int64_t limit = std::min<int64_t>(params.max_tokens, model.config().max_context - result.prompt_tokens);
    loop.run(
        limit, read_every,
        [&](std::span<const int32_t> tokens) {
          for (int32_t token : tokens) {
            if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
              result.finish_reason = "stop";
              return false;
            }
            result.tokens.push_back(token);
            emit(stop_filter.push(decoder.push(token)));
            if (stop_filter.stopped()) {
              result.finish_reason = "stop";
              return false;
            }
            if (static_cast<int64_t>(result.tokens.size()) >= limit) return false;
          }
          return true;
        },
        use_graph);
  }
  if (!stop_filter.stopped()) emit(stop_filter.push(decoder.flush()));
  emit(stop_filter.flush());
  result.decode_seconds = std::chrono::duration<double>(clock() - started).count();
  return result;
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
