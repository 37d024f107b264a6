// Small kernels of the GPU model runner (src/gpu): seeded random weights generated on the device, the
// per-step bookkeeping of the replayed decode graph, and the row gather of the MoE prefill. None of them is
// on the bandwidth-critical path except fill_random_bf16 at load time.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace tachyon::kernels {

// Where the real values of a padded [outer, rows, cols] matrix stack sit: row r holds a value when
// r % row_period < row_valid, column c when c % col_period < col_valid; everything else is zero. (Heads padded
// from head_dim to the attention kernel's 64/128, MLP widths padded to a multiple of 32.)
struct PaddedMatrixLayout {
  int64_t outer = 1;  // matrices stacked (experts)
  int64_t rows = 0, cols = 0;
  int64_t row_period = 1, row_valid = 1;
  int64_t col_period = 1, col_valid = 1;
};

// Fills a bf16 matrix stack with uniform(-sqrt(3) stddev, sqrt(3) stddev) values (standard deviation
// `stddev`, like a real initializer) from a counter hash of (seed, element index): the same seed gives the
// same weights on any device, and no host memory or checkpoint is needed. Padding stays zero.
void fill_random_bf16(__nv_bfloat16* out, const PaddedMatrixLayout& layout, float stddev, uint64_t seed,
                      cudaStream_t stream);

// out[i] = value where i % period < valid, else 0 (norm weights, padded per-head norm weights).
void fill_f32_periodic(float* out, int64_t count, float value, int64_t period, int64_t valid, cudaStream_t stream);

// The end of one decode step, inside the captured graph (one thread):
//   ring[*step_count % ring_size] = *next_token; ++*step_count; ++*rng_offset;
//   if advance_position: ++positions[0]; ++seq_lens[0]   (the next step's input sits one position further).
// So the graph can be replayed back to back with no host involvement; the host reads the ring now and then.
void decode_step_advance(const int* next_token, int* ring, int ring_size, int* step_count, uint64_t* rng_offset,
                         int* positions, int* seq_lens, bool advance_position, cudaStream_t stream);

// out[r, :] = bf16(x[source[r] / divisor, :]) for r < rows (x float [*, cols] with row stride x_stride).
// The MoE prefill gathers each expert's tokens into one contiguous GEMM operand this way.
void gather_rows_to_bf16(const float* x, int64_t x_stride, const int* source, int divisor, int rows, int cols,
                         __nv_bfloat16* out, cudaStream_t stream);

}  // namespace tachyon::kernels
