// One block per 128 x 128 tile: the tile's largest magnitude (a block reduction), then every element's code. The
// codes match fp4/fp8_blocks.cpp bit for bit (tests/gpu/test_gemv.cpp): the scale is the same float division,
// the quotient w / scale is IEEE-rounded (__fdiv_rn) and the conversion rounds to nearest even with saturation
// at 448, as float_to_e4m3 does.
#include "fp8/fp8_quantize.h"

#include <cuda_fp8.h>

#include "common/device_helpers.cuh"
#include "cuda/cuda_check.h"

namespace tachyon::kernels {

namespace {

constexpr int kTile = 128, kRowGroup = 16, kThreads = 256;
constexpr float kE4M3Max = 448.0f;

__global__ void __launch_bounds__(kThreads)
    quantize_fp8_tile_kernel(__nv_bfloat16* weight, int64_t row0, int64_t rows, int64_t cols, uint8_t* codes,
                             float* scales, bool write_back) {
  __shared__ float warp_amax[kThreads / 32];
  const int64_t r0 = row0 + int64_t{blockIdx.y} * kTile, c0 = int64_t{blockIdx.x} * kTile;
  const int tile_rows = static_cast<int>(row0 + rows - r0 < kTile ? row0 + rows - r0 : kTile);
  const int tile_cols = static_cast<int>(cols - c0 < kTile ? cols - c0 : kTile);
  const int n = tile_rows * tile_cols;
  auto at = [&](int i) { return (r0 + i / tile_cols) * cols + c0 + i % tile_cols; };
  float amax = 0;
  for (int i = threadIdx.x; i < n; i += kThreads) amax = fmaxf(amax, fabsf(__bfloat162float(weight[at(i)])));
  amax = warp_max(amax);
  if ((threadIdx.x & 31) == 0) warp_amax[threadIdx.x >> 5] = amax;
  __syncthreads();
  amax = 0;
  for (int w = 0; w < kThreads / 32; ++w) amax = fmaxf(amax, warp_amax[w]);
  const float scale = amax > 0 ? __fdiv_rn(amax, kE4M3Max) : 1.0f;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const int64_t index = at(i);
    const float w = __bfloat162float(weight[index]);
    const __nv_fp8_storage_t code = __nv_cvt_float_to_fp8(__fdiv_rn(w, scale), __NV_SATFINITE, __NV_E4M3);
    codes[index] = code;
    if (write_back) {
      const __half_raw h = __nv_cvt_fp8_to_halfraw(code, __NV_E4M3);
      weight[index] = __float2bfloat16_rn(__half2float(__half(h)) * scale);
    }
  }
  const int64_t scale_cols = (cols + kTile - 1) / kTile;
  if (threadIdx.x < (tile_rows + kRowGroup - 1) / kRowGroup)
    scales[(r0 / kRowGroup + threadIdx.x) * scale_cols + blockIdx.x] = scale;
}

}  // namespace

void quantize_fp8_rows(__nv_bfloat16* weight, int64_t row0, int64_t rows, int64_t cols, uint8_t* codes, float* scales,
                       bool write_back, cudaStream_t stream) {
  TACHYON_REQUIRE(row0 >= 0 && rows > 0 && cols > 0 && row0 % kRowGroup == 0 && rows % kRowGroup == 0,
                  "quantize_fp8_rows", "rows and their first row must be positive multiples of 16 (row groups)");
  const dim3 grid(static_cast<unsigned>((cols + kTile - 1) / kTile), static_cast<unsigned>((rows + kTile - 1) / kTile));
  quantize_fp8_tile_kernel<<<grid, kThreads, 0, stream>>>(weight, row0, rows, cols, codes, scales, write_back);
  TACHYON_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tachyon::kernels
