// The speculative decoding loop (batch 1). One round:
//   1. draft:   the proposer takes the features of the rows committed last round as new context and drafts
//               [x0, d_1, ..., d_{b-1}] in one pass (x0 = the last committed token, which has no target KV yet);
//   2. verify:  one target pass over the block at positions [start, start + b) gives logits and features;
//   3. accept:  the verifier keeps a drafts and picks the bonus (greedy, speculative or target-sampled rule);
//   4. rollback: the target keeps KV [0, start + a + 1); rows 0..a become the next round's context.
// Committed tokens go through the same stop rules as runtime/generate.cpp (stop ids, max_tokens, context
// length, and stop strings in generate_speculative), so at T = 0 the output is token-identical to plain
// greedy decoding, and at T > 0 it has the same distribution.
#pragma once
#include <functional>
#include <span>
#include <vector>

#include "runtime/generate.h"
#include "spec/block_size_policy.h"
#include "spec/proposer.h"
#include "spec/target.h"

namespace tachyon {

enum class SpecSampling {
  Speculative,    // T > 0: drafts sampled from the drafter, min(1, p/q) acceptance (default; most accepted)
  TargetSampled,  // T > 0: greedy drafts accepted while the target's own Sampler draws agree (seed-identical)
};

struct SpecOptions {
  int block_size = 0;                 // 0 = the proposer's default; ignored when policy is set
  BlockSizePolicy* policy = nullptr;  // chooses b per round (not owned)
  SpecSampling sampling = SpecSampling::Speculative;
};

struct SpecStats {
  int64_t rounds = 0;            // target passes after the prefill (one per round)
  int64_t drafted_rounds = 0;    // rounds with a drafted block (b >= 2)
  int64_t committed = 0;         // tokens those passes produced: sum of (a + 1), before any stop cut
  int64_t draft_tokens = 0;      // drafted slots offered (sum of b - 1)
  int64_t accepted_tokens = 0;   // drafted slots accepted (sum of a)
  std::vector<int64_t> histogram;       // [k] = rounds that committed k tokens
  std::vector<int64_t> block_sizes;     // [b] = rounds run at block size b
  double draft_seconds = 0, verify_seconds = 0;  // drafting (context + propose), target verify passes
  // Mean tokens committed per target pass, bonus included (the paper's acceptance length tau).
  double tau() const { return rounds ? static_cast<double>(committed) / rounds : 0.0; }
  void add(const SpecStats& other);
};

struct SpecDecodeParams {
  int max_tokens = 256;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;  // generation ends at any of these (not included in the output)
  SpecOptions spec;
};

struct SpecDecodeResult {
  std::vector<int32_t> tokens;
  bool stopped = false;  // by a stop id or by on_token returning false
  SpecStats stats;
  double prefill_seconds = 0, decode_seconds = 0;
};

// on_token is called for each committed token in order; returning false ends generation after it.
using TokenCallback = std::function<bool(int32_t token)>;

// The stop rules every decode function applies to each token it commits (this driver, the GPU round, the GPU
// resident loop): a stop id ends generation without the token; otherwise the token joins result.tokens, then
// on_token may end it (result.stopped set either way), and generation also ends once `limit` tokens exist.
// Returns whether generation goes on.
bool commit_token(int32_t token, const SpecDecodeParams& params, int64_t limit, const TokenCallback& on_token,
                  SpecDecodeResult& result);

// Token-level loop (no tokenizer). The target and proposer must be fresh (empty caches).
SpecDecodeResult speculative_decode(SpecTarget& target, DraftProposer& proposer, std::span<const int32_t> prompt,
                                    const SpecDecodeParams& params, const TokenCallback& on_token = {});

// One whole speculative generation with speculative_decode's contract (fresh state per call: prefill, rounds, stop
// rules, SpecStats). The CPU path (cpu_spec_decoder) and the GPU one (gpu::gpu_speculative_decode over a GpuModel
// and GpuDrafter) both come as this type, so generate_speculative and SpeculativeEngine serve either.
using SpecDecodeFn = std::function<SpecDecodeResult(std::span<const int32_t> prompt, const SpecDecodeParams& params,
                                                    const TokenCallback& on_token)>;

// The CPU path: each call makes a fresh CpuSpecTarget (recording the drafter's feature layers) and DFlashProposer
// with KV for max_positions (0 = the prompt and every token that may follow, max(max_tokens, 1), within the
// model's context length) and runs speculative_decode. model and drafter must outlive the function.
SpecDecodeFn cpu_spec_decoder(DecoderModel& model, const DFlashDrafter& drafter, int64_t max_positions = 0);

// generate() of runtime/generate.h with a drafter: same parameters, same result and streaming; the round
// statistics go to *stats when given. `options` goes to the decode function as SpecDecodeParams::spec.
GenerationResult generate_speculative(const SpecDecodeFn& decode, const Tokenizer& tokenizer,
                                      std::span<const int32_t> prompt, const GenerationParams& params,
                                      const SpecOptions& options, SpecStats* stats = nullptr,
                                      const TextCallback& on_text = {});
// The same on a given (fresh) target and proposer.
GenerationResult generate_speculative(SpecTarget& target, DraftProposer& proposer, const Tokenizer& tokenizer,
                                      std::span<const int32_t> prompt, const GenerationParams& params,
                                      const SpecOptions& options, SpecStats* stats = nullptr,
                                      const TextCallback& on_text = {});

// "tau 3.41 over 120 rounds; tokens per round: 1: 40, 2: 17, ...; draft 0.12 s, verify 1.30 s"
std::string format_spec_stats(const SpecStats& stats);

}  // namespace tachyon
