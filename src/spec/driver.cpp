#include "spec/driver.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "core/error.h"
#include "spec/verifier.h"

namespace tachyon {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void count(std::vector<int64_t>& histogram, int64_t index) {
  if (static_cast<int64_t>(histogram.size()) <= index) histogram.resize(index + 1, 0);
  ++histogram[index];
}
}  // namespace

void SpecStats::add(const SpecStats& o) {
  rounds += o.rounds;
  drafted_rounds += o.drafted_rounds;
  committed += o.committed;
  draft_tokens += o.draft_tokens;
  accepted_tokens += o.accepted_tokens;
  for (size_t i = 0; i < o.histogram.size(); ++i)
    if (o.histogram[i]) {
      if (histogram.size() <= i) histogram.resize(i + 1, 0);
      histogram[i] += o.histogram[i];
    }
  for (size_t i = 0; i < o.block_sizes.size(); ++i)
    if (o.block_sizes[i]) {
      if (block_sizes.size() <= i) block_sizes.resize(i + 1, 0);
      block_sizes[i] += o.block_sizes[i];
    }
  draft_seconds += o.draft_seconds;
  verify_seconds += o.verify_seconds;
}

bool commit_token(int32_t token, const SpecDecodeParams& params, int64_t limit, const TokenCallback& on_token,
                  SpecDecodeResult& result) {
  if (std::find(params.stop_ids.begin(), params.stop_ids.end(), token) != params.stop_ids.end()) {
    result.stopped = true;
    return false;
  }
  result.tokens.push_back(token);
  if (on_token && !on_token(token)) {
    result.stopped = true;
    return false;
  }
  return static_cast<int64_t>(result.tokens.size()) < limit;
}

SpecDecodeResult speculative_decode(SpecTarget& target, DraftProposer& proposer, std::span<const int32_t> prompt,
                                    const SpecDecodeParams& params, const TokenCallback& on_token) {
  if (prompt.empty()) fail("the prompt is empty (no tokens)");
  if (params.max_tokens < 0) fail("max_tokens must be >= 0, got {}", params.max_tokens);
  validate(params.sampling);
  if (target.length() != 0 || proposer.context_length() != 0)
    fail("speculative_decode: the target and the proposer must start empty");
  const int64_t prompt_tokens = static_cast<int64_t>(prompt.size());
  if (prompt_tokens >= target.max_context())
    fail("prompt of {} tokens does not fit the context length of {}", prompt_tokens, target.max_context());
  const int vocab = target.vocab_size();
  const int64_t feature_width = proposer.feature_width();
  const bool greedy = params.sampling.temperature == 0.0f;
  const bool speculative = !greedy && params.spec.sampling == SpecSampling::Speculative;
  Sampler sampler(params.sampling);
  // The speculative rule draws from its own generator (the first token still comes from the Sampler, as in
  // plain decoding).
  std::mt19937_64 rng(params.sampling.seed ^ 0x9e3779b97f4a7c15ull);
  FixedBlockSize fixed(params.spec.block_size > 0 ? params.spec.block_size : proposer.default_block_size());
  BlockSizePolicy& policy = params.spec.policy ? *params.spec.policy : fixed;

  SpecDecodeResult result;
  SpecStats& stats = result.stats;
  auto started = Clock::now();
  TargetPass pass = target.prefill(prompt);
  result.prefill_seconds = seconds_since(started);
  started = Clock::now();
  // Context rows the proposer has not seen yet (the prompt, then each round's accepted rows).
  std::vector<float> pending = std::move(pass.features);
  if (static_cast<int64_t>(pending.size()) != prompt_tokens * feature_width)
    fail("speculative_decode: the target returned {} feature values for {} rows of width {}", pending.size(),
         prompt_tokens, feature_width);

  // The stop rules of runtime/generate.cpp: max_tokens, and the context (token n sits at position prompt + n - 1,
  // which must lie below max_context); false = generation ends with this token.
  const int64_t limit = std::min<int64_t>(params.max_tokens, target.max_context() - prompt_tokens + 1);
  auto commit = [&](int32_t token) { return commit_token(token, params, limit, on_token, result); };

  bool going = params.max_tokens > 0;
  int32_t bonus = going ? sampler.sample(pass.logits) : -1;  // x0: the plain first token
  going = going && commit(bonus);
  std::vector<int32_t> block;
  std::vector<std::vector<double>> draft_probs;
  while (going) {
    const int64_t start = target.length();
    const int64_t tokens_left = params.max_tokens - static_cast<int64_t>(result.tokens.size());
    const int b = static_cast<int>(
        std::max<int64_t>(1, std::min<int64_t>({policy.next_block_size(), tokens_left, target.max_context() - start})));
    const auto round_started = Clock::now();

    block.assign(1, bonus);
    draft_probs.clear();
    if (b >= 2) {
      proposer.add_context(pending.data(), static_cast<int64_t>(pending.size()) / feature_width);
      pending.clear();
      if (proposer.context_length() != start)
        fail("speculative_decode: drafter context holds {} rows, the target {}", proposer.context_length(), start);
      const std::vector<float> draft_logits = proposer.propose(bonus, b);
      for (int j = 0; j + 1 < b; ++j) {
        std::span<const float> row(draft_logits.data() + int64_t{j} * vocab, vocab);
        if (speculative) {
          draft_probs.push_back(sampling_probabilities(row, params.sampling));
          block.push_back(sample_index(draft_probs.back(), rng));
        } else {
          block.push_back(argmax(row));
        }
      }
      stats.draft_seconds += seconds_since(round_started);
      ++stats.drafted_rounds;
    }

    const auto verify_started = Clock::now();
    TargetPass verified = target.verify(block);
    const std::span<const int32_t> drafts(block.data() + 1, block.size() - 1);
    Verdict verdict = greedy        ? verify_greedy(drafts, verified.logits.data(), vocab)
                      : speculative ? verify_speculative(drafts, draft_probs, verified.logits.data(), vocab,
                                                         params.sampling, rng)
                                    : verify_target_sampled(drafts, verified.logits.data(), vocab, sampler);
    const int accepted = verdict.accepted;
    target.truncate(start + accepted + 1);
    pending.insert(pending.end(), verified.features.begin(), verified.features.begin() + (accepted + 1) * feature_width);
    stats.verify_seconds += seconds_since(verify_started);

    ++stats.rounds;
    stats.committed += accepted + 1;
    stats.draft_tokens += b - 1;
    stats.accepted_tokens += accepted;
    count(stats.histogram, accepted + 1);
    count(stats.block_sizes, b);
    policy.observe(b, accepted, seconds_since(round_started));

    for (int j = 1; j <= accepted && going; ++j) going = commit(block[j]);
    if (going) going = commit(verdict.bonus);
    bonus = verdict.bonus;
  }
  result.decode_seconds = seconds_since(started);
  return result;
}

SpecDecodeFn cpu_spec_decoder(DecoderModel& model, const DFlashDrafter& drafter, int64_t max_positions) {
  return [&model, &drafter, max_positions](std::span<const int32_t> prompt, const SpecDecodeParams& params,
                                           const TokenCallback& on_token) {
    const int64_t positions =
        max_positions > 0 ? max_positions
                          : std::min<int64_t>(model.max_context(),
                                              static_cast<int64_t>(prompt.size()) + std::max(params.max_tokens, 1));
    CpuSpecTarget target(model, drafter.target_layer_ids(), positions);
    DFlashProposer proposer(drafter, positions);
    return speculative_decode(target, proposer, prompt, params, on_token);
  };
}

GenerationResult generate_speculative(SpecTarget& target, DraftProposer& proposer, const Tokenizer& tokenizer,
                                      std::span<const int32_t> prompt, const GenerationParams& params,
                                      const SpecOptions& options, SpecStats* stats, const TextCallback& on_text) {
  const SpecDecodeFn decode = [&](std::span<const int32_t> p, const SpecDecodeParams& decode_params,
                                  const TokenCallback& on_token) {
    return speculative_decode(target, proposer, p, decode_params, on_token);
  };
  return generate_speculative(decode, tokenizer, prompt, params, options, stats, on_text);
}

GenerationResult generate_speculative(const SpecDecodeFn& decode_fn, const Tokenizer& tokenizer,
                                      std::span<const int32_t> prompt, const GenerationParams& params,
                                      const SpecOptions& options, SpecStats* stats, const TextCallback& on_text) {
  GenerationResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  SpecDecodeParams decode;
  decode.max_tokens = params.max_tokens;
  decode.sampling = params.sampling;
  decode.stop_ids = stop_token_ids(params, tokenizer);
  decode.spec = options;

  IncrementalDecoder decoder(tokenizer);
  StopStringFilter stop_filter(params.stop_strings);
  auto emit = [&](const std::string& piece) {
    if (piece.empty()) return;
    result.text += piece;
    if (on_text) on_text(piece);
  };
  SpecDecodeResult decoded = decode_fn(prompt, decode, [&](int32_t token) {
    emit(stop_filter.push(decoder.push(token)));
    return !stop_filter.stopped();
  });
  if (!stop_filter.stopped()) emit(stop_filter.push(decoder.flush()));
  emit(stop_filter.flush());
  result.tokens = std::move(decoded.tokens);
  result.finish_reason = decoded.stopped ? "stop" : "length";
  result.prefill_seconds = decoded.prefill_seconds;
  result.decode_seconds = decoded.decode_seconds;
  if (stats) *stats = decoded.stats;
  return result;
}

std::string format_spec_stats(const SpecStats& s) {
  std::string text = fmt::format("tau {:.2f} over {} rounds ({} drafted); accepted {} of {} drafted tokens ({:.1f}%)",
                                 s.tau(), s.rounds, s.drafted_rounds, s.accepted_tokens, s.draft_tokens,
                                 s.draft_tokens ? 100.0 * s.accepted_tokens / s.draft_tokens : 0.0);
  text += "; tokens per round:";
  for (size_t k = 1; k < s.histogram.size(); ++k)
    if (s.histogram[k]) text += fmt::format(" {}:{}", k, s.histogram[k]);
  text += "; block sizes:";
  for (size_t b = 1; b < s.block_sizes.size(); ++b)
    if (s.block_sizes[b]) text += fmt::format(" {}:{}", b, s.block_sizes[b]);
  text += fmt::format("; draft {:.3f} s, verify {:.3f} s", s.draft_seconds, s.verify_seconds);
  return text;
}

}  // namespace tachyon
