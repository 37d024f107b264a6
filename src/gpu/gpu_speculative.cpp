#ifdef TACHYON_HAS_CUDA
#include "gpu/gpu_speculative.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <tuple>

#include "core/error.h"
#include "cuda/pinned_buffer.h"
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

}  // namespace

// The device side of the speculative round: state, rings, scratch, sampling parameters, pinned snapshots and the
// graphs of the round, all kept from one request to the next (start() re-initializes what a request reads).
class GpuSpecSession::Round {
 public:
  Round(GpuModel& target, GpuDrafter& drafter)
      : target_(target),
        drafter_(drafter),
        vocab_(target.config().vocab),
        state_(S::kInts),
        rng_offset_(1),
        sampling_params_(1),
        ring_(kRingSize),
        round_ring_(kRoundRingSize),
        draft_logits_(static_cast<size_t>(S::kMaxBlock - 1) * target.config().vocab),
        features_(static_cast<size_t>(S::kMaxBlock) * target.feature_width()),
        snapshots_(2) {
    state_.fill_bytes(0, stream());
    rng_offset_.fill_bytes(0, stream());
    sampling_params_.fill_bytes(0, stream());
  }
  ~Round() {
    cudaStreamSynchronize(stream());  // queued replays still read the graphs and buffers
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  }
  Round(const Round&) = delete;
  Round& operator=(const Round&) = delete;

  cudaStream_t stream() const { return target_.stream(); }
  int graphs_captured() const { return captures_; }

  // The request's sampling parameters into device memory, then the prefill, the prompt rows' features into the
  // drafter, the first token on the device (ring[0]). The target must be empty (truncate(0)).
  void start(std::span<const int32_t> prompt, const SamplingParams& sampling) {
    sampled_ = sampling.temperature > 0;
    kernels::SamplingParams params;
    params.temperature = sampled_ ? sampling.temperature : 0.0f;
    params.top_k = sampling.top_k;
    params.top_p = sampling.top_p;
    params.seed = sampling.seed;
    params.consecutive_offsets = true;
    // A pageable source is staged before cudaMemcpyAsync returns, so a local will do (and the previous request
    // has finished reading the device copy: decode synchronizes before it returns).
    TACHYON_CUDA_CHECK(
        cudaMemcpyAsync(sampling_params_.data(), &params, sizeof params, cudaMemcpyHostToDevice, stream()));
    rng_offset_.fill_bytes(0, stream());  // the first token uses Philox offset 0
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
  // k with Philox offset k (as DecodeLoop does), so a seed gives the same tokens as plain sampling. The sampler
  // reads its parameters from device memory, so the graphs do not bake in this request's settings.
  void choose(const float* logits, int rows, int* out) {
    if (!sampled_) {
      kernels::argmax_rows(logits, rows, vocab_, out, stream());
      return;
    }
    kernels::sample_rows_from_device(logits, rows, vocab_, sampling_params_.data(), rng_offset_.data(), out,
                                     stream());
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

  // Everything a round's launches take by value besides pointers that live as long as this object: b, the
  // bucket, and argmax vs sampler (the mask token and vocab are the pair's).
  using GraphKey = std::tuple<int, int, bool>;

  cudaGraphExec_t graph_for(int b, int bucket) {
    const GraphKey key{b, bucket, sampled_};
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
    ++captures_;
    return exec;
  }

  GpuModel& target_;
  GpuDrafter& drafter_;
  int vocab_;
  bool sampled_ = false;                  // this request's target choice: sampler (T > 0) or argmax
  cuda::DeviceBuffer<int> state_;
  cuda::DeviceBuffer<uint64_t> rng_offset_;
  cuda::DeviceBuffer<kernels::SamplingParams> sampling_params_;  // [1], read by every sampled replay
  cuda::DeviceBuffer<int> ring_, round_ring_;
  cuda::DeviceBuffer<float> draft_logits_, features_;
  cuda::PinnedBuffer<HostSnapshot> snapshots_;  // [2]: double-buffered reads
  std::map<GraphKey, cudaGraphExec_t> graphs_;
  int captures_ = 0;
};

GpuSpecSession::GpuSpecSession(GpuModel& target, GpuDrafter& drafter)
    : target_(target), drafter_(drafter), round_(std::make_unique<Round>(target, drafter)) {}

GpuSpecSession::~GpuSpecSession() = default;

int GpuSpecSession::graphs_captured() const { return round_->graphs_captured(); }

SpecDecodeResult gpu_speculative_decode(GpuModel& target, GpuDrafter& drafter, std::span<const int32_t> prompt,
                                        const SpecDecodeParams& params, const TokenCallback& on_token,
                                        const GpuSpecRunOptions& options) {
  GpuSpecSession session(target, drafter);
  return session.decode(prompt, params, on_token, options);
}

SpecDecodeResult GpuSpecSession::decode(std::span<const int32_t> prompt, const SpecDecodeParams& params,
                                        const TokenCallback& on_token, const GpuSpecRunOptions& options) {
  GpuModel& target = target_;
  GpuDrafter& drafter = drafter_;
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
  Round& round = *round_;
  auto started = Clock::now();
  round.start(prompt, params.sampling);
  result.prefill_seconds = seconds_since(started);
  started = Clock::now();

  // The stop rules of spec/driver.cpp; false = generation ends with this token.
  const int64_t limit = std::min<int64_t>(params.max_tokens, max_context - prompt_tokens);
  auto commit = [&](int32_t token) { return commit_token(token, params, limit, on_token, result); };

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
