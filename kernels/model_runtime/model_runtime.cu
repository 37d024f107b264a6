// fill_random_bf16, fill_f32_periodic, decode_step_advance, gather_rows_to_bf16 (semantics in model_runtime.h).
// Grid-stride loops; the random fill writes at close to copy bandwidth (60 GB of Qwen3-30B-A3B weights in a
// few tens of milliseconds), so random-weight benchmarks start in seconds. decode_step_advance, a node of every
// decode-step graph, is launched programmatically (common/launch.cuh) and waits for the previous kernel first thing.
#include "model_runtime/model_runtime.h"

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"

namespace tachyon::kernels {

namespace {

// splitmix64's finalizer: a bijective mix, so distinct (seed, index) pairs give independent-looking values.
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int grid_for(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return static_cast<int>(blocks < 8192 ? (blocks > 0 ? blocks : 1) : 8192);
}

__global__ void fill_random_bf16_kernel(__nv_bfloat16* out, PaddedMatrixLayout layout, float bound, uint64_t seed) {
  const int64_t total = layout.outer * layout.rows * layout.cols;
  const uint64_t key = mix64(seed + 0x9e3779b97f4a7c15ull);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % layout.cols, r = (i / layout.cols) % layout.rows;
    float value = 0.0f;
    if (r % layout.row_period < layout.row_valid && c % layout.col_period < layout.col_valid) {
      const uint64_t bits = mix64(key ^ (static_cast<uint64_t>(i) * 0xd1b54a32d192ed03ull));
      const float unit = static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);  // [0, 1), 24 bits
      value = (2.0f * unit - 1.0f) * bound;
    }
    out[i] = __float2bfloat16_rn(value);
  }
}

__global__ void fill_f32_periodic_kernel(float* out, int64_t count, float value, int64_t period, int64_t valid) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = i % period < valid ? value : 0.0f;
}

__global__ void decode_step_advance_kernel(const int* next_token, int* ring, int ring_size, int* step_count,
                                           uint64_t* rng_offset, int* positions, int* seq_lens, bool advance_position) {
  wait_for_previous_kernel();  // launched programmatically: next_token comes from the sampling kernel
  allow_next_kernel_to_start();
  const int step = *step_count;
  ring[step % ring_size] = *next_token;
  *step_count = step + 1;
  *rng_offset += 1;
  if (advance_position) {
    positions[0] += 1;
    seq_lens[0] += 1;
  }
}

__global__ void gather_rows_to_bf16_kernel(const float* x, int64_t x_stride, const int* source, int divisor, int cols,
                                           __nv_bfloat16* out) {
  const int row = blockIdx.x;
  const float* src = x + static_cast<int64_t>(source[row] / divisor) * x_stride;
  __nv_bfloat16* dst = out + static_cast<int64_t>(row) * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = __float2bfloat16_rn(src[c]);
}

}  // namespace

void fill_random_bf16(__nv_bfloat16* out, const PaddedMatrixLayout& layout, float stddev, uint64_t seed,
                      cudaStream_t stream) {
  TACHYON_REQUIRE(layout.rows > 0 && layout.cols > 0 && layout.outer > 0, "fill_random_bf16", "empty layout");
  TACHYON_REQUIRE(layout.row_period > 0 && layout.col_period > 0, "fill_random_bf16", "periods must be positive");
  const int64_t total = layout.outer * layout.rows * layout.cols;
  // uniform(-b, b) has standard deviation b / sqrt(3).
  fill_random_bf16_kernel<<<grid_for(total, 256), 256, 0, stream>>>(out, layout, stddev * 1.7320508f, seed);
  TACHYON_CUDA_CHECK_LAUNCH("fill_random_bf16_kernel");
}

void fill_f32_periodic(float* out, int64_t count, float value, int64_t period, int64_t valid, cudaStream_t stream) {
  TACHYON_REQUIRE(period > 0, "fill_f32_periodic", "period must be positive");
  if (count <= 0) return;
  fill_f32_periodic_kernel<<<grid_for(count, 256), 256, 0, stream>>>(out, count, value, period, valid);
  TACHYON_CUDA_CHECK_LAUNCH("fill_f32_periodic_kernel");
}

void decode_step_advance(const int* next_token, int* ring, int ring_size, int* step_count, uint64_t* rng_offset,
                         int* positions, int* seq_lens, bool advance_position, cudaStream_t stream) {
  TACHYON_REQUIRE(ring_size > 0, "decode_step_advance", "ring_size must be positive");
  launch_programmatic("decode_step_advance_kernel", decode_step_advance_kernel, dim3(1), dim3(1), 0, stream, next_token,
                      ring, ring_size, step_count, rng_offset, positions, seq_lens, advance_position);
}

void gather_rows_to_bf16(const float* x, int64_t x_stride, const int* source, int divisor, int rows, int cols,
                         __nv_bfloat16* out, cudaStream_t stream) {
  TACHYON_REQUIRE(divisor > 0 && cols > 0, "gather_rows_to_bf16", "divisor and cols must be positive");
  if (rows <= 0) return;
  gather_rows_to_bf16_kernel<<<rows, 256, 0, stream>>>(x, x_stride, source, divisor, cols, out);
  TACHYON_CUDA_CHECK_LAUNCH("gather_rows_to_bf16_kernel");
}

}  // namespace tachyon::kernels
