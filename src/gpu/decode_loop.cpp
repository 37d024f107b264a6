#ifdef TACHYON_HAS_CUDA
#include "gpu/decode_loop.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "core/error.h"
#include "model_runtime/model_runtime.h"
#include "sampling/sampling.h"

namespace tachyon::gpu {

namespace {
// Slots of DecodeLoop::state_.
constexpr int kNextToken = 0, kPosition = 1, kSeqLen = 2, kQueryStart = 3, kTokenSequence = 5, kStepCount = 6;
constexpr int kStateInts = 7;
}  // namespace

DecodeLoop::DecodeLoop(GpuModel& model, const DecodeSampling& sampling, int ring_size)
    : model_(model), sampling_(sampling), ring_size_(ring_size), state_(kStateInts), rng_offset_(1), ring_(ring_size) {
  if (ring_size < 2) fail("DecodeLoop: ring_size must be at least 2, got {}", ring_size);
  pinned_ = cuda::PinnedBuffer<int>(size_t{2} * ring_size);
  state_.fill_bytes(0, model_.stream());
  rng_offset_.fill_bytes(0, model_.stream());
  if (sampling.temperature > 0) {
    sampling_params_ = cuda::DeviceBuffer<kernels::SamplingParams>(1);
    set_sampling(sampling);
  }
}

void DecodeLoop::set_sampling(const DecodeSampling& sampling) {
  if (sampling_params_.size() == 0 || sampling.temperature <= 0)
    fail("DecodeLoop::set_sampling: only a sampling loop takes sampling settings (temperature > 0)");
  if (!(sampling.top_p > 0.0f && sampling.top_p <= 1.0f))
    fail("DecodeLoop: top_p must be in (0, 1], got {}", sampling.top_p);
  if (sampling.top_k < 0) fail("DecodeLoop: top_k must be >= 0, got {}", sampling.top_k);
  const int vocab_limit = sampling_.vocab_limit;  // (the constructor's: baked into the graphs)
  sampling_ = sampling;
  sampling_.vocab_limit = vocab_limit;
  kernels::SamplingParams params;
  params.temperature = sampling.temperature;
  params.top_k = sampling.top_k;
  params.top_p = sampling.top_p;
  params.seed = sampling.seed;
  // A pageable copy is staged before the call returns, so `params` may go out of scope.
  TACHYON_CUDA_CHECK(cudaMemcpyAsync(sampling_params_.data(), &params, sizeof params, cudaMemcpyHostToDevice,
                                     model_.stream()));
}

DecodeLoop::~DecodeLoop() {
  cudaStreamSynchronize(model_.stream());  // queued replays still read the graphs and buffers
  for (auto& [bucket, exec] : graphs_) cudaGraphExecDestroy(exec);
}

int attention_bucket(int64_t length, int64_t capacity) {
  int64_t granularity = 256;
  while (granularity * 8 <= length) granularity *= 2;
  const int64_t bucket = (length + granularity - 1) / granularity * granularity;
  return static_cast<int>(std::min(bucket, capacity));
}

void DecodeLoop::set_device_state(int64_t length, const int32_t* next_token, bool reset_ring) {
  // Pageable copies are staged before the call returns, so the local array may go out of scope.
  int state[kStateInts] = {};
  state[kNextToken] = next_token ? *next_token : 0;
  state[kPosition] = static_cast<int>(length);
  state[kSeqLen] = static_cast<int>(length + 1);
  state[kQueryStart] = 0;
  state[kQueryStart + 1] = 1;
  state[kTokenSequence] = 0;
  state[kStepCount] = 0;
  const int first = next_token ? kNextToken : kPosition;
  const int last = reset_ring ? kStepCount : kTokenSequence;
  TACHYON_CUDA_CHECK(cudaMemcpyAsync(state_.data() + first, state + first, (last - first + 1) * sizeof(int),
                                     cudaMemcpyHostToDevice, model_.stream()));
}

void DecodeLoop::select_token(const float* logits, cudaStream_t stream) {
  int* next_token = state_.data() + kNextToken;
  const int vocab = sampling_.vocab_limit > 0 ? std::min(sampling_.vocab_limit, model_.config().vocab)
                                             : model_.config().vocab;  // (one row: its width is all that changes)
  if (sampling_.temperature <= 0) {
    kernels::argmax_rows(logits, 1, vocab, next_token, stream);
  } else {
    kernels::sample_rows_from_device(logits, 1, vocab, sampling_params_.data(), rng_offset_.data(), next_token, stream);
  }
}

void DecodeLoop::start(std::span<const int32_t> prompt) {
  if (prompt.empty()) fail("DecodeLoop::start: the prompt is empty");
  const float* logits = model_.prefill(prompt);
  cudaStream_t stream = model_.stream();
  set_device_state(model_.length(), nullptr, true);
  rng_offset_.fill_bytes(0, stream);
  select_token(logits, stream);
  int* state = state_.data();
  kernels::decode_step_advance(state + kNextToken, ring_.data(), ring_size_, state + kStepCount, rng_offset_.data(),
                               state + kPosition, state + kSeqLen, /*advance_position=*/false, stream);
  generated_ = 1;
}

void DecodeLoop::rewind(int64_t length, int32_t next_token) {
  if (next_token < 0 || next_token >= model_.config().vocab)
    fail("DecodeLoop::rewind: token id {} is outside the vocabulary", next_token);
  model_.truncate(length);
  set_device_state(length, &next_token, true);
  generated_ = 0;
}

void DecodeLoop::enqueue_step(int bucket, cudaStream_t stream) {
  int* state = state_.data();
  PassInputs inputs;
  inputs.tokens = state + kNextToken;
  inputs.positions = state + kPosition;
  inputs.seq_lens = state + kSeqLen;
  inputs.query_start = state + kQueryStart;
  inputs.token_sequence = state + kTokenSequence;
  model_.enqueue_pass(inputs, 1, bucket, model_.pass_logits(), stream);
  select_token(model_.pass_logits(), stream);
  kernels::decode_step_advance(state + kNextToken, ring_.data(), ring_size_, state + kStepCount, rng_offset_.data(),
                               state + kPosition, state + kSeqLen, /*advance_position=*/true, stream);
}

cudaGraphExec_t DecodeLoop::graph_for(int bucket) {
  auto found = graphs_.find(bucket);
  if (found != graphs_.end()) return found->second;
  cudaStream_t stream = model_.stream();
  // Relaxed: a kernel wrapper's first call may set function attributes, which the stricter modes refuse.
  TACHYON_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  cudaGraph_t graph = nullptr;
  try {
    enqueue_step(bucket, stream);
  } catch (...) {
    cudaStreamEndCapture(stream, &graph);  // leave the stream usable
    if (graph) cudaGraphDestroy(graph);
    throw;
  }
  TACHYON_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  TACHYON_CUDA_CHECK(status);
  graphs_.emplace(bucket, exec);
  return exec;
}

void DecodeLoop::enqueue(int steps, bool use_graph) {
  if (steps <= 0) return;
  const int64_t end = model_.length() + steps;
  model_.reserve(end);  // pages for every position these steps write; throws when the cache is full
  const int bucket = bucket_for(end);
  cudaStream_t stream = model_.stream();
  if (use_graph) {
    cudaGraphExec_t exec = graph_for(bucket);
    for (int i = 0; i < steps; ++i) TACHYON_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  } else {
    for (int i = 0; i < steps; ++i) enqueue_step(bucket, stream);
  }
  model_.advance(steps);
  generated_ += steps;
}

void DecodeLoop::enqueue_ring_read(int64_t first, int64_t count, int* host) {
  if (count > ring_size_) fail("DecodeLoop: {} tokens between two reads exceed the ring of {}", count, ring_size_);
  const int64_t slot = first % ring_size_;
  const int64_t head = std::min<int64_t>(count, ring_size_ - slot);
  cudaStream_t stream = model_.stream();
  if (head > 0)
    TACHYON_CUDA_CHECK(cudaMemcpyAsync(host, ring_.data() + slot, head * sizeof(int), cudaMemcpyDeviceToHost, stream));
  if (count > head)
    TACHYON_CUDA_CHECK(
        cudaMemcpyAsync(host + head, ring_.data(), (count - head) * sizeof(int), cudaMemcpyDeviceToHost, stream));
}

std::vector<int32_t> DecodeLoop::tokens() {
  if (generated_ > ring_size_) fail("DecodeLoop::tokens: {} tokens exceed the ring of {}", generated_, ring_size_);
  std::vector<int32_t> out(generated_);
  enqueue_ring_read(0, generated_, pinned_.data());
  TACHYON_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
  std::copy(pinned_.data(), pinned_.data() + generated_, out.begin());
  return out;
}

void DecodeLoop::run(int64_t max_tokens, int read_every, const TokenSink& on_tokens, bool use_graph) {
  const bool adaptive = read_every <= 0;
  read_every = std::clamp(read_every, 1, ring_size_ / 2);  // (adaptive: from 1 step)
  auto last_read = std::chrono::steady_clock::now();
  bool first_read = true;
  struct Chunk {
    int64_t count = 0;
    int buffer = 0;
  };
  cuda::Event done[2];
  int next_buffer = 0;
  auto read = [&](int64_t first, int64_t count) {
    Chunk chunk{count, next_buffer};
    enqueue_ring_read(first, count, pinned_.data() + static_cast<size_t>(next_buffer) * ring_size_);
    done[next_buffer].record(model_.stream());
    next_buffer ^= 1;
    return chunk;
  };
  int64_t requested = generated_;
  Chunk current = read(0, generated_);
  while (true) {
    // Queue the next steps and their ring read before waiting for the previous chunk: the GPU never idles
    // while the host looks at tokens.
    std::optional<Chunk> next;
    const int64_t room = model_.capacity() - model_.length();
    const int64_t steps = std::min<int64_t>({read_every, max_tokens - generated_, room});
    if (steps > 0) {
      enqueue(static_cast<int>(steps), use_graph);
      next = read(requested, generated_ - requested);
      requested = generated_;
    }
    done[current.buffer].synchronize();
    if (adaptive) {
      // Decode chunks ran back to back on the GPU, so the time between two reads is the later chunk's; the first
      // chunk (the prefill's token) says nothing. Growth at most 4x per read.
      const auto now = std::chrono::steady_clock::now();
      if (!first_read && current.count > 0) {
        const double per_token = std::chrono::duration<double>(now - last_read).count() / current.count;
        read_every = static_cast<int>(std::clamp(kAdaptiveReadSeconds / std::max(per_token, 1e-7), 1.0,
                                                 std::min(4.0 * read_every, ring_size_ / 2.0)));
      }
      last_read = now;
      first_read = false;
    }
    const int* host = pinned_.data() + static_cast<size_t>(current.buffer) * ring_size_;
    if (!on_tokens(std::span<const int32_t>(host, current.count)) || !next) break;
    current = *next;
  }
  TACHYON_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
