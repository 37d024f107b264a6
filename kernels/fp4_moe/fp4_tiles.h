// Device-side helpers for FP4 expert matrices in the kernel tile layout (src/fp4/fp4_kernel_layout.h): random
// weights made on the GPU (benchmarks and random-weight models, no host memory), and dequantization to bf16
// row-major (the MoE prefill's cuBLASLt GEMMs, which have no FP4 input on Hopper).
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "fp4_moe/fp4_moe.h"

namespace tachyon::kernels {

// A stack of n_matrices FP4 matrices [rows, cols] (tile layout), `stride` bytes apart, whose real values sit in
// rows r % row_period < row_valid and columns c % col_period < col_valid (the rest is zero padding).
struct Fp4StackLayout {
  Fp4Kind kind = Fp4Kind::Nvfp4;
  int64_t n_matrices = 1;
  int rows = 0, cols = 0;
  int64_t stride = 0;
  int row_period = 1, row_valid = 1;
  int col_period = 1, col_valid = 1;
};

// Random weights with standard deviation ~stddev: every code uniform over the 16 e2m1 values (rms 2.93) from a
// counter hash of (seed, byte index), block scales from a narrow range (NVFP4: e4m3 0.75 .. 1.5, times the global
// scale fp4_random_global_scale(stddev) that the caller stores; MXFP4: 2^e and 2^(e+1) with
// e = floor(log2(stddev / 2.93))). Padded rows / columns get code 0. Deterministic in `seed`.
void fill_random_fp4_tiles(uint8_t* tiles, const Fp4StackLayout& layout, float stddev, uint64_t seed,
                           cudaStream_t stream);
float fp4_random_global_scale(float stddev);

// out + m * out_stride (elements) = bf16 row-major [rows, cols] of matrix m, for m < n_matrices: code x block
// scale x global scale computed in float32, rounded once to bf16.
void fp4_tiles_to_bf16(const Fp4ExpertMatrices& matrices, int n_matrices, __nv_bfloat16* out, int64_t out_stride,
                       cudaStream_t stream);

}  // namespace tachyon::kernels
