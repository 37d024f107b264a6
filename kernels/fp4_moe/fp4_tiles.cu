// fill_random_fp4_tiles and fp4_tiles_to_bf16 (semantics in fp4_tiles.h). Grid-stride loops over bytes / code
// words; neither is on a decode path (load time, and once per MoE layer and prefill chunk).
#include "fp4_moe/fp4_tiles.h"

#include <cmath>

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "cuda/cuda_check.h"

namespace tachyon::kernels {

namespace {

constexpr int kTileRows = 16, kTileCols = 64, kTileCodeBytes = 512;

// Where nibble n (0 = least significant) of a lane's code word sits (fp4_kernel_layout.h): row g + 8 for even n,
// row g for odd n; column slot kSlot[n / 2] of the lane's four columns.
__device__ __forceinline__ int nibble_row_half(int n) { return (n & 1) ? 0 : 1; }
__device__ __forceinline__ int nibble_slot(int n) {
  constexpr int kSlot[4] = {2, 0, 3, 1};
  return kSlot[n >> 1];
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int grid_for(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return static_cast<int>(blocks < 8192 ? (blocks > 0 ? blocks : 1) : 8192);
}

__host__ __device__ int scale_bytes_per_tile(Fp4Kind kind) { return kind == Fp4Kind::Nvfp4 ? 64 : 32; }

__global__ void fill_random_fp4_kernel(uint8_t* tiles, Fp4StackLayout layout, int mx_scale_base, uint64_t seed) {
  const int tile_bytes = kTileCodeBytes + scale_bytes_per_tile(layout.kind);
  const int col_tiles = layout.cols / kTileCols;
  const int64_t matrix_bytes = static_cast<int64_t>(layout.rows / kTileRows) * col_tiles * tile_bytes;
  const int64_t total = layout.n_matrices * matrix_bytes;
  const uint64_t key = mix64(seed + 0x9e3779b97f4a7c15ull);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t matrix = i / matrix_bytes, offset = i % matrix_bytes;
    const int64_t tile = offset / tile_bytes;
    const int in_tile = static_cast<int>(offset % tile_bytes);
    const int row_tile = static_cast<int>(tile / col_tiles), col_tile = static_cast<int>(tile % col_tiles);
    const uint64_t bits = mix64(key ^ (static_cast<uint64_t>(i) * 0xd1b54a32d192ed03ull));
    uint8_t byte = 0;
    if (in_tile < kTileCodeBytes) {
      const int lane = in_tile / 16, word = (in_tile % 16) / 4, byte_in_word = in_tile % 4;
      for (int k = 0; k < 2; ++k) {
        const int nibble = 2 * byte_in_word + k;
        const int row = row_tile * kTileRows + lane / 4 + 8 * nibble_row_half(nibble);
        const int col = col_tile * kTileCols + 16 * word + 4 * (lane % 4) + nibble_slot(nibble);
        const bool real = row % layout.row_period < layout.row_valid && col % layout.col_period < layout.col_valid;
        if (real) byte |= static_cast<uint8_t>(((bits >> (8 * k)) & 0x0f) << (4 * k));
      }
    } else if (layout.kind == Fp4Kind::Nvfp4) {
      byte = static_cast<uint8_t>(0x34 + (bits >> 32) % 9);  // e4m3 0.75 .. 1.5
    } else {
      byte = static_cast<uint8_t>(mx_scale_base + ((bits >> 32) & 1));  // e8m0 2^e or 2^(e+1)
    }
    tiles[matrix * layout.stride + offset] = byte;
  }
}

__device__ __forceinline__ float e2m1_value(uint32_t code) {
  const float magnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float v = magnitude[code & 7];
  return (code & 8) ? -v : v;
}

__device__ __forceinline__ float scale_value(Fp4Kind kind, uint8_t byte) {
  if (kind == Fp4Kind::Nvfp4) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(byte), __NV_E4M3);
    return __half2float(__half(h));
  }
  return byte == 0 ? __uint_as_float(0x00400000u) : __uint_as_float(static_cast<uint32_t>(byte) << 23);
}

__global__ void fp4_tiles_to_bf16_kernel(Fp4ExpertMatrices m, int n_matrices, __nv_bfloat16* out, int64_t out_stride) {
  const bool nv = m.kind == Fp4Kind::Nvfp4;
  const int tile_bytes = kTileCodeBytes + scale_bytes_per_tile(m.kind), blocks_per_tile = nv ? 4 : 2;
  const int col_tiles = m.cols / kTileCols;
  const int64_t words_per_matrix = static_cast<int64_t>(m.rows / kTileRows) * col_tiles * 128;
  const int64_t total = n_matrices * words_per_matrix;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t matrix = i / words_per_matrix, w = i % words_per_matrix;
    const int64_t tile = w / 128;
    const int lane = static_cast<int>(w % 128) / 4, word = static_cast<int>(w % 4);
    const uint8_t* tile_base = m.tiles + matrix * m.expert_stride + tile * tile_bytes;
    const uint32_t codes = *reinterpret_cast<const uint32_t*>(tile_base + 16 * lane + 4 * word);
    const int g = lane / 4, t = lane % 4, block = nv ? word : word / 2;
    const float global = m.global_scales ? m.global_scales[matrix] : 1.0f;
    const float scale[2] = {scale_value(m.kind, tile_base[kTileCodeBytes + g * blocks_per_tile + block]) * global,
                            scale_value(m.kind, tile_base[kTileCodeBytes + (g + 8) * blocks_per_tile + block]) * global};
    float values[2][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const int half = nibble_row_half(n);
      values[half][nibble_slot(n)] = e2m1_value(codes >> (4 * n)) * scale[half];
    }
    const int64_t row = (tile / col_tiles) * kTileRows + g, col = (tile % col_tiles) * kTileCols + 16 * word + 4 * t;
    __nv_bfloat16* dst = out + matrix * out_stride + row * m.cols + col;
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int s = 0; s < 4; ++s) dst[8 * half * m.cols + s] = __float2bfloat16_rn(values[half][s]);
  }
}

}  // namespace

float fp4_random_global_scale(float stddev) {
  // rms of a uniform e2m1 code: sqrt(mean of 0, .25, 1, 2.25, 4, 9, 16, 36) = 2.926; of the e4m3 scales 0.75..1.5
  // (9 values): 1.097.
  return stddev / (2.926f * 1.097f);
}

void fill_random_fp4_tiles(uint8_t* tiles, const Fp4StackLayout& layout, float stddev, uint64_t seed,
                           cudaStream_t stream) {
  TACHYON_REQUIRE(layout.rows > 0 && layout.rows % kTileRows == 0 && layout.cols > 0 && layout.cols % kTileCols == 0,
                  "fill_random_fp4_tiles", "rows % 16 == 0 and cols % 64 == 0");
  TACHYON_REQUIRE(layout.stride >= fp4_tile_matrix_bytes(layout.kind, layout.rows, layout.cols) && stddev > 0,
                  "fill_random_fp4_tiles", "stride of at least one matrix, stddev > 0");
  const int mx_scale_base = 127 + static_cast<int>(std::floor(std::log2(stddev / 2.926f)));
  const int64_t total = layout.n_matrices * fp4_tile_matrix_bytes(layout.kind, layout.rows, layout.cols);
  fill_random_fp4_kernel<<<grid_for(total, 256), 256, 0, stream>>>(tiles, layout, mx_scale_base, seed);
  TACHYON_CUDA_CHECK_LAUNCH("fill_random_fp4_kernel");
}

void fp4_tiles_to_bf16(const Fp4ExpertMatrices& matrices, int n_matrices, __nv_bfloat16* out, int64_t out_stride,
                       cudaStream_t stream) {
  TACHYON_REQUIRE(matrices.rows % kTileRows == 0 && matrices.cols % kTileCols == 0 && matrices.tiles != nullptr,
                  "fp4_tiles_to_bf16", "rows % 16 == 0, cols % 64 == 0, tiles given");
  TACHYON_REQUIRE(out_stride >= static_cast<int64_t>(matrices.rows) * matrices.cols, "fp4_tiles_to_bf16",
                  "out_stride must hold one matrix");
  const int64_t words = static_cast<int64_t>(n_matrices) * (matrices.rows / kTileRows) * (matrices.cols / kTileCols) * 128;
  fp4_tiles_to_bf16_kernel<<<grid_for(words, 256), 256, 0, stream>>>(matrices, n_matrices, out, out_stride);
  TACHYON_CUDA_CHECK_LAUNCH("fp4_tiles_to_bf16_kernel");
}

}  // namespace tachyon::kernels
