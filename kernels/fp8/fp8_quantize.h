// Block-scaled FP8 weights made on the GPU from the bf16 matrices already there (the `--fp8` load option of the
// GPU runner): the same numbers as the CPU quantizer fp4/fp8_blocks.h (128 x 128 tiles, scale amax / 448, codes
// round to nearest even, saturating), written in the gemv's layout kernels::Fp8Matrix (a scale per 16 rows x 128
// columns, each tile's scale repeated over its row groups).
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace tachyon::kernels {

// Quantizes rows [row0, row0 + rows) of `weight` (bf16 [*, cols] row-major) with tiles anchored at row0 (a part of
// a fused matrix keeps the tiles of its own checkpoint tensor), into codes / scales of the whole matrix
// (Fp8Matrix layout: codes [*, cols], scales [*, ceil(cols / 128)] by 16-row group). row0 and rows must be multiples
// of 16 (a row group never straddles two parts). write_back: the bf16 weights are replaced by bf16(code * scale),
// so that the bf16 GEMMs of prefill compute with the FP8 model (to bf16's rounding, 2^-9 relative).
void quantize_fp8_rows(__nv_bfloat16* weight, int64_t row0, int64_t rows, int64_t cols, uint8_t* codes, float* scales,
                       bool write_back, cudaStream_t stream);

}  // namespace tachyon::kernels
