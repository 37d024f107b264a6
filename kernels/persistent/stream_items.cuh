// The streamed persistent kernel's work items (kernels/persistent/persistent_stream.cu; design in persistent_stream.h):
// a warp's share of a row-by-vector product, whose loads are issued one item ahead of its arithmetic.
// - bf16 items: a row's part of up to kPartColumns columns, kLoads 16-byte loads per lane, FMAs on the CUDA cores;
// - FP8 items (attention projections under `--fp8 attention`): a row's part of block-scaled E4M3 codes, FMAs on the
//   CUDA cores;
// - FP4 items (routed experts in NVFP4 / MXFP4): a run of up to kLoads 64-column tiles of one 16-row strip of the
//   per-op kernels' tile layout (src/fp4/fp4_kernel_layout.h), one m16n8k16 MMA per 16-column block.
// Separate from the kernel so that its file stays under 1,000 lines; everything here is inlined into it.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>

#include "common/device_helpers.cuh"
#include "fp4_moe/fp4_moe_device.cuh"
#include "gemv/gemv_bf16.h"  // Fp8Matrix

namespace tachyon::kernels::stream_items {

using bf16 = __nv_bfloat16;

constexpr int kWarps = 16;  // the kernel's 512 threads
// A work item is a warp's kLoads 16-byte loads per lane: a row's part of up to kPartColumns columns.
constexpr int kLoads = 4, kPartColumns = 32 * kLoads * 8;

__host__ __device__ constexpr int parts_of(int columns) { return (columns + kPartColumns - 1) / kPartColumns; }
__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// FP4 items: a warp's run of `per_item` (<= kLoads) consecutive 64-column tiles of one 16-row strip (`tiles` per
// strip, `runs` runs). per_item is chosen per phase so that the busiest warp's tiles are fewest when each block has
// `strips` strips (ties: longer runs); Qwen3-30B-A3B: gate / up 4 (6 strips per block, 32 tiles each), down 3 (8
// strips of 12 tiles: 2 runs per warp instead of 1 or 2 runs of 4).
struct Fp4Run {  // (no default initializers: the kernel keeps one in a __shared__ variable)
  int tiles, per_item, runs;
};
__host__ __device__ inline Fp4Run fp4_run(int columns, int strips) {
  Fp4Run best{0, 1, 0};
  int best_cost = 0;
  for (int k = kLoads; k >= 1; --k) {
    const int tiles = columns / 64, runs = ceil_div(tiles, k), cost = ceil_div(strips * runs, kWarps) * k;
    if (k == kLoads || cost < best_cost) best = {tiles, k, runs}, best_cost = cost;
  }
  return best;
}

// ---- bf16 items -----------------------------------------------------------------------------------------------------

struct ItemWeights {
  uint4 w[kLoads];
  uint32_t scales[2];  // FP4 items: lane 4g + t holds tile t's block-scale words of rows g and g + 8 (kLoads == 4)
};

__device__ __forceinline__ void load_item(ItemWeights& r, const bf16* row, int part, int columns, int lane) {
  const int first = part * (kPartColumns / 8);
#pragma unroll
  for (int j = 0; j < kLoads; ++j) {
    const int c = first + lane + 32 * j;
    r.w[j] = c < columns / 8 ? load_streaming_16B(row + 8 * c) : make_uint4(0, 0, 0, 0);
  }
}

// The item's dot with vec (shared; columns of the whole row), summed over the warp.
__device__ __forceinline__ float dot_item(const ItemWeights& r, const float* vec, int part, int columns, int lane) {
  const int first = part * (kPartColumns / 8);
  float sum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int j = 0; j < kLoads; ++j) {
    const int c = first + lane + 32 * j;
    if (c < columns / 8) {
      const float4 a = *reinterpret_cast<const float4*>(vec + 8 * c);
      const float4 b = *reinterpret_cast<const float4*>(vec + 8 * c + 4);
      const float2 w0 = unpack_bf16x2(r.w[j].x), w1 = unpack_bf16x2(r.w[j].y);
      const float2 w2 = unpack_bf16x2(r.w[j].z), w3 = unpack_bf16x2(r.w[j].w);
      float& s = sum[j & 1];
      s = fmaf(w0.x, a.x, fmaf(w0.y, a.y, fmaf(w1.x, a.z, fmaf(w1.y, a.w, s))));
      s = fmaf(w2.x, b.x, fmaf(w2.y, b.y, fmaf(w3.x, b.z, fmaf(w3.y, b.w, s))));
    }
  }
  return warp_sum(sum[0] + sum[1]);
}

// The warp loop of both item kinds: items [0, n_items) of a phase, warp w taking items w, w + kWarps, ...; each
// item's loads (load(weights, item)) are issued before the previous item's products (use(weights, item)). `first`
// holds the warp's first item when `preloaded` (by preload_first / preload_first_fp4 before the phase's barrier;
// those call their loaders directly: routed through a lambda, the kernel's SASS changed).
template <typename Load, typename Use>
__device__ __forceinline__ void warp_items(int n_items, Load&& load, Use&& use, ItemWeights& first, bool preloaded) {
  const int warp = threadIdx.x >> 5;
  if (warp >= n_items) return;
  if (!preloaded) load(first, warp);
#pragma unroll 1
  for (int item = warp;; item += kWarps) {
    const int next = item + kWarps;
    ItemWeights upcoming;
    if (next < n_items) load(upcoming, next);
    use(first, item);
    if (next >= n_items) break;
    first = upcoming;
  }
}

// bf16 items: item i is part i % parts of virtual row i / parts, whose weights start at row_of(vrow) and whose
// vector is vec_of(vrow) (shared). part_sums[i] = the item's dot.
template <typename RowOf>
__device__ __forceinline__ void preload_first(int n_items, int parts, int columns, RowOf&& row_of, ItemWeights& first) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (warp < n_items) load_item(first, row_of(warp / parts), warp % parts, columns, lane);
}
template <typename RowOf, typename VecOf>
__device__ __forceinline__ void item_dots(int n_items, int parts, int columns, RowOf&& row_of, VecOf&& vec_of,
                                          float* part_sums, ItemWeights& first, bool preloaded) {
  const int lane = threadIdx.x & 31;
  warp_items(
      n_items, [&](ItemWeights& r, int item) { load_item(r, row_of(item / parts), item % parts, columns, lane); },
      [&](const ItemWeights& r, int item) {
        const float d = dot_item(r, vec_of(item / parts), item % parts, columns, lane);
        if (lane == 0) part_sums[item] = d;
      },
      first, preloaded);
}
// A virtual row's dot: its parts' sums in order.
__device__ __forceinline__ float row_sum(const float* part_sums, int vrow, int parts) {
  float s = 0.0f;
#pragma unroll 1
  for (int k = 0; k < parts; ++k) s += part_sums[vrow * parts + k];
  return s;
}

// ---- FP8 items (P1, P3 under `--fp8 attention`) ------------------------------------------------------------------

// Rows of a block-scaled E4M3 matrix (kernels::Fp8Matrix: codes row-major, one float scale per 16 rows x 128
// columns): an item is a row's part of kFp8PartColumns columns, the same kLoads 16-byte loads per lane as a bf16
// item (twice its columns). Lane l's load j covers columns 16 (first + l + 32 j).., in the part's 128-column block
// l / 8 + 4 j; lane l < 16 loads block l's scale with the codes (scales[0]), shuffled to the lanes at use.
constexpr int kFp8PartColumns = 32 * kLoads * 16, kFp8ScaleColumns = 128;
__host__ __device__ constexpr int fp8_parts_of(int columns) { return ceil_div(columns, kFp8PartColumns); }

__device__ __forceinline__ void load_fp8_item(ItemWeights& r, const uint8_t* row, const float* row_scales, int part,
                                              int columns, int lane) {
  const int first = part * (kFp8PartColumns / 16);
#pragma unroll
  for (int j = 0; j < kLoads; ++j) {
    const int c = first + lane + 32 * j;
    r.w[j] = c < columns / 16 ? load_streaming_16B(row + 16 * c) : make_uint4(0, 0, 0, 0);
  }
  const int block = part * (kFp8PartColumns / kFp8ScaleColumns) + lane;
  r.scales[0] = lane < kFp8PartColumns / kFp8ScaleColumns && block < ceil_div(columns, kFp8ScaleColumns)
                    ? __float_as_uint(__ldg(row_scales + block))
                    : 0u;
}

// The item's dot with vec (shared; columns of the whole row), summed over the warp: codes to exact floats
// (cvt e4m3x2 -> f16x2), float FMAs, each 16-column piece's sum times its block's scale.
__device__ __forceinline__ float dot_fp8_item(const ItemWeights& r, const float* vec, int part, int columns,
                                              int lane) {
  const int first = part * (kFp8PartColumns / 16);
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kLoads; ++j) {
    const float scale = __uint_as_float(__shfl_sync(0xffffffffu, r.scales[0], lane / 8 + 4 * j));
    const int c = first + lane + 32 * j;
    if (c < columns / 16) {
      const uint32_t words[4] = {r.w[j].x, r.w[j].y, r.w[j].z, r.w[j].w};
      float piece[2] = {0.0f, 0.0f};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float4 a = *reinterpret_cast<const float4*>(vec + 16 * c + 4 * k);
        const float2 w01 = fp4_moe_detail::e4m3x2_to_float2(words[k] & 0xffffu);
        const float2 w23 = fp4_moe_detail::e4m3x2_to_float2(words[k] >> 16);
        float& s = piece[k & 1];
        s = fmaf(w01.x, a.x, fmaf(w01.y, a.y, fmaf(w23.x, a.z, fmaf(w23.y, a.w, s))));
      }
      sum = fmaf(scale, piece[0] + piece[1], sum);
    }
  }
  return warp_sum(sum);
}

// FP8 items: item i is part i % parts of row first_row + i / parts of m (`columns` wide), against vec (shared).
// part_sums[i] = the item's dot.
__device__ __forceinline__ void load_fp8_row_item(ItemWeights& r, const Fp8Matrix& m, int first_row, int parts,
                                                  int columns, int item, int lane) {
  const int row = first_row + item / parts;
  load_fp8_item(r, m.codes + size_t(row) * columns,
                m.scales + size_t(row / Fp8Matrix::kRowGroup) * ceil_div(columns, kFp8ScaleColumns), item % parts,
                columns, lane);
}
__device__ __forceinline__ void preload_first_fp8(int n_items, int parts, int columns, const Fp8Matrix& m,
                                                  int first_row, ItemWeights& first) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (warp < n_items) load_fp8_row_item(first, m, first_row, parts, columns, warp, lane);
}
__device__ __forceinline__ void fp8_item_dots(int n_items, int parts, int columns, const Fp8Matrix& m, int first_row,
                                              const float* vec, float* part_sums, ItemWeights& first,
                                              bool preloaded) {
  const int lane = threadIdx.x & 31;
  warp_items(
      n_items, [&](ItemWeights& r, int item) { load_fp8_row_item(r, m, first_row, parts, columns, item, lane); },
      [&](const ItemWeights& r, int item) {
        const float d = dot_fp8_item(r, vec, item % parts, columns, lane);
        if (lane == 0) part_sums[item] = d;
      },
      first, preloaded);
}

// ---- FP4 items (P5, P6 of routed layers with FP4 experts) ----------------------------------------------------------

// Bytes of one tile: 512 of codes, then the block scales (NVFP4 64, MXFP4 32).
__host__ __device__ constexpr int fp4_tile_bytes(bool nv) {
  return nv ? fp4_moe_detail::Tile<true>::kBytes : fp4_moe_detail::Tile<false>::kBytes;
}

// Lane 4g + t of a tile (16 rows x 64 columns, 512 code bytes then the block scales) holds the 16-byte code piece of
// rows g and g + 8 (src/fp4/fp4_kernel_layout.h). The scale words of rows g and g + 8 (NVFP4: 4 e4m3 bytes per row
// at 512 + 4 row; MXFP4: 2 e8m0 bytes at 512 + 2 row) of the item's tile t are loaded by lane 4g + t and shuffled
// to the group's lanes at use (8 registers per item instead of 2 would spill). Tiles past the strip's end are zero.
static_assert(kLoads == 4, "an FP4 item's tiles are one per lane of a row group (scale words)");
__device__ __forceinline__ void load_fp4_item(ItemWeights& r, const uint8_t* strip, int run, const Fp4Run& f, bool nv,
                                              int lane) {
  const int g = lane >> 2, t = lane & 3, tile_bytes = fp4_tile_bytes(nv);
#pragma unroll
  for (int j = 0; j < kLoads; ++j) {
    const int tile = run * f.per_item + j;
    r.w[j] = j < f.per_item && tile < f.tiles ? load_streaming_16B(strip + size_t(tile) * tile_bytes + 16 * lane)
                                              : make_uint4(0, 0, 0, 0);
  }
  const int mine = run * f.per_item + t;
  r.scales[0] = r.scales[1] = 0;
  if (t < f.per_item && mine < f.tiles) {
    const uint8_t* scales = strip + size_t(mine) * tile_bytes + fp4_moe_detail::kTileCodeBytes;
    if (nv) {
      r.scales[0] = __ldg(reinterpret_cast<const uint32_t*>(scales + 4 * g));
      r.scales[1] = __ldg(reinterpret_cast<const uint32_t*>(scales + 4 * (g + 8)));
    } else {
      r.scales[0] = __ldg(reinterpret_cast<const uint16_t*>(scales + 2 * g));
      r.scales[1] = __ldg(reinterpret_cast<const uint16_t*>(scales + 2 * (g + 8)));
    }
  }
}

// The item's rows g and g + 8 dotted with `vec` (shared: the strip's vector as pack_hi_lo words, columns of the whole
// row), as the per-op FP4 kernels compute them: each 16-column block one m16n8k16 MMA of the decoded codes (fp16
// pairs times 2^-14) against hi (even MMA columns) and lo (odd) of the vector / 16, from zero, then times its block
// scale. Every lane of a row group ends with its rows' sums (all MMA columns hold the same vector): no shuffles.
// Results are kOutputScale and the global scale short of the dot.
__device__ __forceinline__ float2 dot_fp4_item(const ItemWeights& r, const uint32_t* vec, int run, const Fp4Run& f,
                                               bool nv, int lane) {
  using namespace fp4_moe_detail;
  const int g = lane >> 2, t = lane & 3;
  const uint32_t selector = (g & 1) ? 0x7632u : 0x5410u;
  float row_g = 0.0f, row_g8 = 0.0f;
#pragma unroll
  for (int j = 0; j < kLoads; ++j) {
    const int tile = run * f.per_item + j;
    if (j < f.per_item && tile < f.tiles) {
      const uint32_t words_g = __shfl_sync(0xffffffffu, r.scales[0], (lane & ~3) | j);
      const uint32_t words_g8 = __shfl_sync(0xffffffffu, r.scales[1], (lane & ~3) | j);
      float scale_g[4], scale_g8[4];
      if (nv)
        scales_from_words<true>(words_g, words_g8, scale_g, scale_g8);
      else
        scales_from_words<false>(words_g, words_g8, scale_g, scale_g8);
      const uint32_t words[4] = {r.w[j].x, r.w[j].y, r.w[j].z, r.w[j].w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {  // k16 step k = the 16-column block k (MXFP4: half of block k / 2)
        const uint4 v = *reinterpret_cast<const uint4*>(vec + 64 * tile + 16 * k + 4 * t);
        const uint32_t a[4] = {decode_pair(words[k], 0), decode_pair(words[k], 1), decode_pair(words[k], 2),
                               decode_pair(words[k], 3)};
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        mma_f16_16x8x16(d, a, __byte_perm(v.x, v.y, selector), __byte_perm(v.z, v.w, selector));
        const float s_g = nv ? scale_g[k] : scale_g[k / 2], s_g8 = nv ? scale_g8[k] : scale_g8[k / 2];
        row_g = fmaf(s_g, d[0] + d[1], row_g);
        row_g8 = fmaf(s_g8, d[2] + d[3], row_g8);
      }
    }
  }
  return make_float2(row_g, row_g8);
}

// FP4 items: item i is run i % runs of virtual strip i / runs (tiles from strip_of(vstrip), vector vec_of(vstrip));
// part_sums[16 i + row] = the item's sum for the strip's row.
template <typename StripOf>
__device__ __forceinline__ void preload_first_fp4(int n_items, const Fp4Run& f, bool nv, StripOf&& strip_of,
                                                  ItemWeights& first) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (warp < n_items) load_fp4_item(first, strip_of(warp / f.runs), warp % f.runs, f, nv, lane);
}
template <typename StripOf, typename VecOf>
__device__ __forceinline__ void fp4_item_dots(int n_items, const Fp4Run& f, bool nv, StripOf&& strip_of,
                                              VecOf&& vec_of, float* part_sums, ItemWeights& first, bool preloaded) {
  const int lane = threadIdx.x & 31;
  warp_items(
      n_items, [&](ItemWeights& r, int item) { load_fp4_item(r, strip_of(item / f.runs), item % f.runs, f, nv, lane); },
      [&](const ItemWeights& r, int item) {
        const float2 d = dot_fp4_item(r, vec_of(item / f.runs), item % f.runs, f, nv, lane);
        if ((lane & 3) == 0) part_sums[16 * item + (lane >> 2)] = d.x, part_sums[16 * item + (lane >> 2) + 8] = d.y;
      },
      first, preloaded);
}
// Row `row` of a virtual strip: its runs' sums in order.
__device__ __forceinline__ float strip_row_sum(const float* part_sums, int vstrip, int row, int runs) {
  float s = 0.0f;
#pragma unroll 1
  for (int k = 0; k < runs; ++k) s += part_sums[16 * (vstrip * runs + k) + row];
  return s;
}

}  // namespace tachyon::kernels::stream_items
