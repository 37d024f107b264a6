#ifdef TACHYON_HAS_CUDA
#include "gpu/gpu_speculative.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>

#include "core/error.h"
#include "cuda/stream.h"
#include "gpu/decode_loop.h"
#include "sampling/sampling.h"
#include "speculative/spec_round.h"

namespace tachyon::gpu {

namespace {

using S = kernels::SpecState;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void bump(std::vector<int64_t>& histogram, int64_t index) {
  if (static_cast<int64_t>(histogram.size()) <= index) histogram.resize(index + 1, 0);
  ++histogram[index];
}

constexpr int kRingSize = 4096;       // committed tokens; > 2 groups of rounds in flight (2 * 16 * 16)
constexpr int kRoundRingSize = 1024;  // tokens committed per round
constexpr int kMaxRoundsPerRead = 16;

// What one read of the device brings back: the state's counters and both rings.
struct HostSnapshot {
  int header[4];  // S::kLength, kBonus, kCount, kRounds
  int ring[kRingSize];
  int round_ring[kRoundRingSize];
};

// The device side of one speculative generation: state, rings, scratch, and the graphs of the round.
class SpecRound {
 public:
  SpecRound(GpuModel& target, GpuDrafter& drafter, const SamplingParams& sampling)
      : target_(target),
        drafter_(drafter),
        sampling_(sampling),
        vocab_(target.config().vocab),
        state_(S::kInts),
        rng_offset_(1),
        ring_(kRingSize),
        round_ring_(kRoundRingSize),
        draft_logits_(static_cast<size_t>(S::kMaxBlock - 1) * target.config().vocab),
        features_(static_cast<size_t>(S::kMaxBlock) * target.feature_width()) {
    TACHYON_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&snapshots_), 2 * sizeof(HostSnapshot)));
    state_.fill_bytes(0, stream());
    rng_offset_.fill_bytes(0, stream());
  }
  ~SpecRound() {
    cudaStreamSynchronize(stream());  // queued replays still read the graphs and buffers
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    if (snapshots_) cudaFreeHost(snapshots_);
  }
  SpecRound(const SpecRound&) = delete;
  SpecRound& operator=(const SpecRound&) = delete;

  cudaStream_t stream() const { return target_.stream(); }

  // Prefill, the prompt rows' features into the drafter, the first token on the device (ring[0]).
  void start(std::span<const int32_t> prompt) {
    const int64_t n = static_cast<int64_t>(prompt.size());
    cuda::DeviceBuffer<float> prompt_features(static_cast<size_t>(n) * target_.feature_width());
    const float* logits = target_.prefill(prompt, /*all_rows=*/false, prompt_features.data());
    drafter_.add_context(prompt_features.data(), n, 0, stream());
    choose(logits, 1, state_.data() + S::kBonus);
    kernels::spec_start(state_.data(), static_cast<int>(n), ring_.data(), stream());
    const uint64_t offset = 1;  // the first token used Philox offset 0
    TACHYON_CUDA_CHECK(cudaMemcpyAsync(rng_offset_.data(), &offset, sizeof offset, cudaMemcpyHostToDevice, stream()));
    TACHYON_CUDA_CHECK(cudaStreamSynchronize(stream()));  // prompt_features is freed on return
  }

  // Enqueues `rounds` rounds of block size b whose KV lengths stay below `bucket`. No host sync.
  void enqueue(int b, int rounds, int bucket, bool use_graph) {
    if (!use_graph) {
      for (int i = 0; i < rounds; ++i) enqueue_round(b, bucket);
      return;
    }
    cudaGraphExec_t exec = graph_for(b, bucket);
    for (int i = 0; i < rounds; ++i) TACHYON_CUDA_CHECK(cudaGraphLaunch(exec, stream()));
  }

  // Copies the counters and rings into pinned snapshot `slot` on the stream.
  void enqueue_read(int slot) {
    HostSnapshot& s = snapshots_[slot];
    TACHYON_CUDA_CHECK(cudaMemcpyAsync(s.header, state_.data(), sizeof s.header, cudaMemcpyDeviceToHost, stream()));
    TACHYON_CUDA_CHECK(cudaMemcpyAsync(s.ring, ring_.data(), sizeof s.ring, cudaMemcpyDeviceToHost, stream()));
    TACHYON_CUDA_CHECK(
        cudaMemcpyAsync(s.round_ring, round_ring_.data(), sizeof s.round_ring, cudaMemcpyDeviceToHost, stream()));
  }
  const HostSnapshot& snapshot(int slot) const { return snapshots_[slot]; }

 private:
  // The target's token for each of `rows` rows: argmax, or the plain sampler drawing the token at generated index
  // k with Philox offset k (as DecodeLoop does), so a seed gives the same tokens as plain sampling.
  void choose(const float* logits, int rows, int* out) {
    if (sampling_.temperature <= 0) {
      kernels::argmax_rows(logits, rows, vocab_, out, stream());
      return;
    }
    kernels::SamplingParams params;
    params.temperature = sampling_.temperature;
    params.top_k = sampling_.top_k;
    params.top_p = sampling_.top_p;
    params.seed = sampling_.seed;
    params.consecutive_offsets = true;
    kernels::sample_rows(logits, rows, vocab_, params, rng_offset_.data(), out, stream());
  }

  void enqueue_round(int b, int bucket) {
    int* state = state_.data();
    kernels::spec_round_begin(state, b, drafter_.mask_token_id(), stream());
    PassInputs block;
    block.tokens = state + S::kBlock;
    block.positions = state + S::kPositions;
    block.seq_lens = state + S::kSeqLen;
    block.query_start = state + S::kQueryStart;
    block.token_sequence = state + S::kTokenSequence;
    if (b >= 2) {
      drafter_.enqueue_draft(block, b, bucket, draft_logits_.data(), stream());
      kernels::argmax_rows(draft_logits_.data(), b - 1, vocab_, state + S::kBlock + 1, stream());
    }
    PassInputs verify = block;
    verify.features = features_.data();
    target_.enqueue_pass(verify, b, bucket, target_.pass_logits(), stream());
    choose(target_.pass_logits(), b, state + S::kChoice);
    kernels::spec_round_accept(state, b, ring_.data(), kRingSize, round_ring_.data(), kRoundRingSize,
                               rng_offset_.data(), stream());
    // Every verified row into the drafter's context at the round's positions; rows past the new L are hidden by
    // the next round's seq_len and overwritten by its block.
    drafter_.enqueue_context(features_.data(), block, b, bucket, stream());
  }

  cudaGraphExec_t graph_for(int b, int bucket) {
    const auto key = std::make_pair(b, bucket);
    if (auto found = graphs_.find(key); found != graphs_.end()) return found->second;
    // Relaxed: a kernel wrapper's first call may set function attributes, which the stricter modes refuse.
    TACHYON_CUDA_CHECK(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeRelaxed));
    cudaGraph_t graph = nullptr;
    try {
      enqueue_round(b, bucket);
    } catch (...) {
      cudaStreamEndCapture(stream(), &graph);  // leave the stream usable
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    TACHYON_CUDA_CHECK(cudaStreamEndCapture(stream(), &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    TACHYON_CUDA_CHECK(status);
    graphs_.emplace(key, exec);
    return exec;
  }

  GpuModel& target_;
  GpuDrafter& drafter_;
  SamplingParams sampling_;
  int vocab_;
  cuda::DeviceBuffer<int> state_;
  cuda::DeviceBuffer<uint64_t> rng_offset_;
  cuda::DeviceBuffer<int> ring_, round_ring_;
  cuda::DeviceBuffer<float> draft_logits_, features_;
  HostSnapshot* snapshots_ = nullptr;
  std::map<std::pair<int, int>, cudaGraphExec_t> graphs_;
};

}  // namespace

SpecDecodeResult gpu_speculative_decode(GpuModel& target, GpuDrafter& drafter, std::span<const int32_t> prompt,
                                        const SpecDecodeParams& params, const TokenCallback& on_token,
                                        const GpuSpecRunOptions& options) {
  if (prompt.empty()) fail("the prompt is empty (no tokens)");
  if (params.max_tokens < 0) fail("max_tokens must be >= 0, got {}", params.max_tokens);
  validate(params.sampling);
  if (params.sampling.min_p > 0) fail("--min-p is not supported on the GPU sampler yet (use top-k / top-p)");
  if (target.feature_width() != drafter.feature_width())
    fail("the GPU target captures {} feature values per row, the drafter reads {} (load the target with the "
         "drafter's target_layer_ids as feature_layers)",
         target.feature_width(), drafter.feature_width());
  const int64_t prompt_tokens = static_cast<int64_t>(prompt.size());
  const int64_t capacity = std::min(target.capacity(), drafter.capacity());
  const int64_t max_context = std::min<int64_t>(target.config().max_context, capacity);
  if (prompt_tokens >= max_context)
    fail("prompt of {} tokens does not fit the context length of {}", prompt_tokens, max_context);
  const int fixed_block = params.spec.block_size > 0 ? params.spec.block_size : drafter.block_size();
  if (fixed_block < 1 || fixed_block > S::kMaxBlock)
    fail("block size {} outside [1, {}] (the verify pass takes at most {} tokens)", fixed_block, S::kMaxBlock,
         S::kMaxBlock);
  const int rounds_per_read = std::clamp(options.rounds_per_read, 1, kMaxRoundsPerRead);

  SpecDecodeResult result;
  SpecStats& stats = result.stats;
  target.truncate(0);
  SpecRound round(target, drafter, params.sampling);
  auto started = Clock::now();
  round.start(prompt);
  result.prefill_seconds = seconds_since(started);
  started = Clock::now();

  // The stop rules of spec/driver.cpp; false = generation ends with this token.
  const int64_t limit = std::min<int64_t>(params.max_tokens, max_context - prompt_tokens);
  auto commit = [&](int32_t token) {
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
  };

  // Host view of the device: `read_length` = L at the last read, `in_flight` = block sizes of the rounds run
  // after it, so L never exceeds read_length + sum(in_flight). `unseen` = block sizes of rounds not in stats yet.
  int64_t read_length = prompt_tokens, read_rounds = 0;
  std::deque<int> in_flight, unseen;
  int64_t tokens_seen = 0;        // ring slots looked at (the first token included)
  int64_t round_token_start = 1;  // ring index of the next unseen round's first token
  int64_t rounds_seen = 0;
  bool going = limit > 0;
  struct Read {
    int slot = 0;
    int rounds = 0;
  };
  cuda::Event started_event[2], done_event[2];
  std::deque<Read> pending;
  int slot = 0;
  auto enqueue_read = [&](int rounds) {
    round.enqueue_read(slot);
    done_event[slot].record(round.stream());
    pending.push_back({slot, rounds});
    slot ^= 1;
  };
  // Enqueues up to rounds_per_read rounds and their read; false when none fits the cache as far as the host knows.
  auto enqueue_group = [&]() {
    int64_t upper = read_length;
    for (int b : in_flight) upper += b;
    int b = params.spec.policy ? std::clamp(params.spec.policy->next_block_size(), 1, S::kMaxBlock) : fixed_block;
    b = static_cast<int>(std::min<int64_t>(b, capacity - upper));
    if (b < 1) return false;
    const int rounds = static_cast<int>(std::min<int64_t>(rounds_per_read, (capacity - upper) / b));
    const int64_t end = upper + int64_t{rounds} * b;
    target.reserve(end);
    started_event[slot].record(round.stream());
    round.enqueue(b, rounds, attention_bucket(end, capacity), options.use_graph);
    for (int i = 0; i < rounds; ++i) {
      in_flight.push_back(b);
      unseen.push_back(b);
    }
    enqueue_read(rounds);
    return true;
  };

  enqueue_read(0);  // the first token is in the ring before any round runs
  while (!pending.empty()) {
    if (going && pending.size() < 2) enqueue_group();  // the GPU runs a group ahead of the host
    const Read current = pending.front();
    pending.pop_front();
    done_event[current.slot].synchronize();
    if (!going) continue;  // draining rounds queued past a stop
    const HostSnapshot& snap = round.snapshot(current.slot);
    const int64_t count = snap.header[S::kCount];
    const int64_t rounds_done = snap.header[S::kRounds];
    read_length = snap.header[S::kLength];
    for (; read_rounds < rounds_done; ++read_rounds) in_flight.pop_front();
    if (count - tokens_seen > kRingSize) fail("gpu_speculative_decode: {} tokens between two reads", count - tokens_seen);
    while (going && tokens_seen < count) going = commit(snap.ring[tokens_seen++ % kRingSize]);
    // Device time per round of this group, for a block-size policy.
    const double round_seconds =
        current.rounds ? done_event[current.slot].elapsed_ms_since(started_event[current.slot]) * 1e-3 / current.rounds
                       : 0.0;
    // Rounds whose first token was looked at (the round that ended generation included).
    for (; rounds_seen < rounds_done && round_token_start < tokens_seen + (going ? 1 : 0); ++rounds_seen) {
      const int committed = snap.round_ring[rounds_seen % kRoundRingSize];
      const int b = unseen.front();
      unseen.pop_front();
      round_token_start += committed;
      ++stats.rounds;
      if (b >= 2) ++stats.drafted_rounds;
      stats.committed += committed;
      stats.draft_tokens += b - 1;
      stats.accepted_tokens += committed - 1;
      bump(stats.histogram, committed);
      bump(stats.block_sizes, b);
      if (params.spec.policy && round_seconds > 0) params.spec.policy->observe(b, committed - 1, round_seconds);
    }
    if (going && pending.empty() && !enqueue_group()) break;  // every round read, none fits: the cache is full
  }
  TACHYON_CUDA_CHECK(cudaStreamSynchronize(round.stream()));
  result.decode_seconds = seconds_since(started);
  // The KV rows of the prompt and of every kept token but the last (which has no KV yet) are valid; rows past
  // them (rounds run after a stop) are dropped.
  const int64_t kept = static_cast<int64_t>(result.tokens.size());
  target.advance(std::max<int64_t>(kept - 1, 0));
  return result;
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
