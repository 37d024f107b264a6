// The bookkeeping kernels of the on-device speculative round (src/gpu/gpu_speculative.cpp). Everything a round
// varies (committed length, bonus token, block tokens, positions) sits in one small device int array, so the
// round's kernels can be captured once per block size as a CUDA graph and replayed with no host involvement.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace tachyon::kernels {

// Layout of the round state (device int32 array of kSpecStateInts).
struct SpecState {
  static constexpr int kLength = 0;         // L: target KV positions that hold committed tokens (block start)
  static constexpr int kBonus = 1;          // the last committed token (no KV yet): block slot 0 of the next round
  static constexpr int kCount = 2;          // tokens written to the token ring so far
  static constexpr int kRounds = 3;         // rounds run so far (slots written to the round ring)
  static constexpr int kSeqLen = 4;         // L + b during a round (the verify pass's KV length)
  static constexpr int kQueryStart = 5;     // {0, b}
  static constexpr int kBlock = 8;          // [16]: bonus, then drafts
  static constexpr int kPositions = 24;     // [16]: L + i
  static constexpr int kTokenSequence = 40; // [16]: zeros (one sequence)
  static constexpr int kChoice = 56;        // [16]: the target's token for the slot after each block row
  static constexpr int kInts = 72;
  static constexpr int kMaxBlock = 16;
};

// After the prefill, whose first token is already at state[kBonus]: L = length, the ring gets that token
// (ring[0]), count = 1, rounds = 0, token_sequence = 0, query_start[0] = 0.
void spec_start(int* state, int length, int* ring, cudaStream_t stream);

// Round begin: block = [bonus, mask * (b - 1)], positions[i] = L + i, seq_len = L + b, query_start[1] = b.
void spec_round_begin(int* state, int b, int mask_token, cudaStream_t stream);

// Round end (greedy / target-sampled rule): a = longest prefix with block[j + 1] == choice[j] (j < b - 1);
// the committed tokens block[1..a], choice[a] go to ring[count % ring_size ...]; count += a + 1; bonus =
// choice[a]; L += a + 1; round_ring[rounds % round_ring_size] = a + 1; ++rounds; *rng_offset = count (the sampler
// draws generated token k at Philox offset k, with or without a drafter: sampling.h consecutive_offsets).
// Positions / seq_len keep the round's values (the drafter's context pass after it reads them).
void spec_round_accept(int* state, int b, int* ring, int ring_size, int* round_ring, int round_ring_size,
                       uint64_t* rng_offset, cudaStream_t stream);

}  // namespace tachyon::kernels
