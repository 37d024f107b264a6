// Token selection on the GPU: logits never leave the device; the chosen ids are written to device memory.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace tachyon::kernels {

// token_out[r] = argmax_i logits[r, i] (ties -> lower id). logits: float [rows, vocab].
void argmax_rows(const float* logits, int rows, int vocab, int* token_out, cudaStream_t stream);

struct SamplingParams {
  float temperature = 1.0f;  // <= 0: greedy (argmax)
  int top_k = 0;             // 0 = no limit
  float top_p = 1.0f;        // 1 = no limit; applied after top_k, to the top_k tokens' renormalized mass
  uint64_t seed = 0;
  // false: row r draws with Philox (seed, row r, *rng_offset) (rows of different sequences).
  // true:  row r draws as row 0 at offset *rng_offset + r: the rows are consecutive positions of ONE sequence, so
  //        a speculative verify block samples each position exactly as plain decoding (one token per offset)
  //        samples it, and a seed gives the same tokens with or without a drafter.
  bool consecutive_offsets = false;
};

// Samples one token per row from softmax(logits / temperature) restricted to the top_k tokens, then to the
// smallest set of most likely tokens whose mass reaches top_p (transformers' order and semantics; tokens
// tied with the last kept one are kept too). Random numbers: Philox4x32-10 keyed by seed, counter =
// (token id, row, rng_offset): the same (seed, offset) gives the same tokens. rng_offset: device uint64
// (so a captured graph can advance it) or nullptr for 0.
void sample_rows(const float* logits, int rows, int vocab, const SamplingParams& params, const uint64_t* rng_offset,
                 int* token_out, cudaStream_t stream);

// sample_rows with the parameters read from device memory when the kernel runs (*params: one SamplingParams), not
// baked into the launch: a CUDA graph captured once serves every temperature / top_k / top_p / seed written there
// before a replay (the speculative round keeps its graphs across requests this way). The caller validates the
// values (top_k >= 0, top_p in (0, 1]); temperature <= 0 or top_k == 1 picks the argmax, as in sample_rows.
void sample_rows_from_device(const float* logits, int rows, int vocab, const SamplingParams* params,
                             const uint64_t* rng_offset, int* token_out, cudaStream_t stream);

// The uniform (0, 1) number the sampler draws for (seed, row, offset, token id); exposed for tests.
float philox_uniform_host(uint64_t seed, uint32_t token, uint32_t row, uint64_t offset);

}  // namespace tachyon::kernels
