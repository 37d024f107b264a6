#ifdef TACHYON_HAS_CUDA
#include "gpu/gpu_generate.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "core/error.h"

namespace tachyon::gpu {

namespace {
// A request's sampler settings as the decode loop takes them (min_p refused: the GPU sampler has none).
DecodeSampling decode_sampling(const SamplingParams& sampling) {
  if (sampling.min_p > 0) fail("min_p (--min-p) is not supported on the GPU sampler yet (use top_k / top_p)");
  return DecodeSampling{sampling.temperature, sampling.top_k, sampling.top_p, sampling.seed};
}
}  // namespace

GenerationResult generate_on_gpu(GpuModel& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                                 const GenerationParams& params, const TextCallback& on_text, bool use_graph,
                                 int read_every) {
  if (prompt.empty()) fail("the prompt is empty (no tokens)");
  if (params.max_tokens < 0) fail("max_tokens must be >= 0, got {}", params.max_tokens);
  validate(params.sampling);
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
  DecodeLoop loop(model, decode_sampling(params.sampling));

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

SpecDecodeFn resident_decode_fn(GpuModel& model, int read_every, int vocab_limit) {
  struct Loops {  // kept between requests (their graphs, pinned ring and device state)
    std::unique_ptr<DecodeLoop> greedy, sampled;
  };
  auto loops = std::make_shared<Loops>();
  return [&model, read_every, vocab_limit, loops](std::span<const int32_t> prompt, const SpecDecodeParams& params,
                                                  const TokenCallback& on_token) {
    if (prompt.empty()) fail("the prompt is empty (no tokens)");
    if (params.max_tokens < 0) fail("max_tokens must be >= 0, got {}", params.max_tokens);
    validate(params.sampling);
    DecodeSampling sampling = decode_sampling(params.sampling);
    sampling.vocab_limit = vocab_limit;
    const int64_t context = std::min(model.config().max_context, model.capacity());
    if (static_cast<int64_t>(prompt.size()) >= context)
      fail("prompt of {} tokens does not fit the context of {} positions", prompt.size(), context);
    SpecDecodeResult result;
    auto clock = std::chrono::steady_clock::now;
    auto started = clock();
    model.truncate(0);
    std::unique_ptr<DecodeLoop>& loop = sampling.temperature > 0 ? loops->sampled : loops->greedy;
    if (!loop)
      loop = std::make_unique<DecodeLoop>(model, sampling);
    else if (sampling.temperature > 0)
      loop->set_sampling(sampling);  // (read from device memory at each step: the graphs stay)
    loop->start(prompt);  // prefill, and the first token chosen on the device
    TACHYON_CUDA_CHECK(cudaStreamSynchronize(model.stream()));
    result.prefill_seconds = std::chrono::duration<double>(clock() - started).count();
    started = clock();
    const int64_t limit = std::min<int64_t>(params.max_tokens, context - static_cast<int64_t>(prompt.size()));
    if (limit > 0) {
      loop->run(limit, read_every, [&](std::span<const int32_t> tokens) {
        for (int32_t token : tokens)
          if (!commit_token(token, params, limit, on_token, result)) return false;
        return true;
      });
    }
    // Every token after the first is one decode step: a "round" committing one token.
    SpecStats& s = result.stats;
    s.rounds = s.committed = std::max<int64_t>(0, static_cast<int64_t>(result.tokens.size()) - 1);
    s.histogram = {0, s.rounds};
    result.decode_seconds = std::chrono::duration<double>(clock() - started).count();
    return result;
  };
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
