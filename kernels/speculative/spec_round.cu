// spec_start, spec_round_begin, spec_round_accept: the speculative round's bookkeeping over the SpecState int array
// (spec_round.h). One block of at most 16 threads each; they cost their launch, which is programmatic
// (common/launch.cuh): each waits for the previous kernel first thing.
#include "speculative/spec_round.h"

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"

namespace tachyon::kernels {

namespace {

using S = SpecState;

__global__ void spec_start_kernel(int* state, int length, int* ring) {
  wait_for_previous_kernel();  // launched programmatically: the state comes from earlier kernels
  allow_next_kernel_to_start();
  const int i = threadIdx.x;
  if (i < S::kMaxBlock) state[S::kTokenSequence + i] = 0;
  if (i == 0) {
    state[S::kLength] = length;
    state[S::kCount] = 1;
    state[S::kRounds] = 0;
    state[S::kQueryStart] = 0;
    ring[0] = state[S::kBonus];
  }
}

__global__ void spec_round_begin_kernel(int* state, int b, int mask_token) {
  wait_for_previous_kernel();  // launched programmatically: the state comes from earlier kernels
  allow_next_kernel_to_start();
  const int i = threadIdx.x;
  const int length = state[S::kLength];
  if (i < b) {
    state[S::kBlock + i] = i == 0 ? state[S::kBonus] : mask_token;
    state[S::kPositions + i] = length + i;
  }
  if (i == 0) {
    state[S::kSeqLen] = length + b;
    state[S::kQueryStart + 1] = b;
  }
}

// One thread: b <= 16, a handful of reads and writes.
__global__ void spec_round_accept_kernel(int* state, int b, int* ring, int ring_size, int* round_ring,
                                         int round_ring_size, uint64_t* rng_offset) {
  wait_for_previous_kernel();  // launched programmatically: the state comes from earlier kernels
  allow_next_kernel_to_start();
  const int* block = state + S::kBlock;
  const int* choice = state + S::kChoice;
  int accepted = 0;
  while (accepted < b - 1 && block[accepted + 1] == choice[accepted]) ++accepted;
  int count = state[S::kCount];
  for (int j = 1; j <= accepted; ++j) ring[count++ % ring_size] = block[j];
  const int bonus = choice[accepted];
  ring[count++ % ring_size] = bonus;
  state[S::kCount] = count;
  state[S::kBonus] = bonus;
  state[S::kLength] += accepted + 1;
  const int rounds = state[S::kRounds];
  round_ring[rounds % round_ring_size] = accepted + 1;
  state[S::kRounds] = rounds + 1;
  *rng_offset = count;  // the next round's row j samples token `count + j` at offset count + j, as plain decoding
}

}  // namespace

void spec_start(int* state, int length, int* ring, cudaStream_t stream) {
  TACHYON_REQUIRE(length > 0, "spec_start", "length must be positive");
  launch_programmatic("spec_start_kernel", spec_start_kernel, dim3(1), dim3(S::kMaxBlock), 0, stream, state, length,
                      ring);
}

void spec_round_begin(int* state, int b, int mask_token, cudaStream_t stream) {
  TACHYON_REQUIRE(b >= 1 && b <= S::kMaxBlock, "spec_round_begin", "block size must be in [1, 16]");
  launch_programmatic("spec_round_begin_kernel", spec_round_begin_kernel, dim3(1), dim3(S::kMaxBlock), 0, stream,
                      state, b, mask_token);
}

void spec_round_accept(int* state, int b, int* ring, int ring_size, int* round_ring, int round_ring_size,
                       uint64_t* rng_offset, cudaStream_t stream) {
  TACHYON_REQUIRE(b >= 1 && b <= S::kMaxBlock, "spec_round_accept", "block size must be in [1, 16]");
  TACHYON_REQUIRE(ring_size >= S::kMaxBlock && round_ring_size > 0, "spec_round_accept", "rings too small");
  launch_programmatic("spec_round_accept_kernel", spec_round_accept_kernel, dim3(1), dim3(1), 0, stream, state, b, ring,
                      ring_size, round_ring, round_ring_size, rng_offset);
}

}  // namespace tachyon::kernels
