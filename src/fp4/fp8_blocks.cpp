#include "fp4/fp8_blocks.h"

#include <algorithm>
#include <cmath>

#include "fp4/fp4_codec.h"

namespace tachyon::fp4 {

void Fp8BlockMatrix::to_float(float* out) const {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = e4m3_to_float(codes[r * cols + c]) * scale_of(r, c);
}

Fp8BlockMatrix quantize_fp8_block(const float* w, int64_t rows, int64_t cols, const std::string& what) {
  max_magnitude(w, rows * cols, what);  // rejects NaN / infinity with the tensor's name
  Fp8BlockMatrix q;
  q.rows = rows;
  q.cols = cols;
  q.codes.resize(static_cast<size_t>(rows * cols));
  q.scales.resize(static_cast<size_t>(q.row_blocks() * q.col_blocks()));
  for (int64_t rb = 0; rb < q.row_blocks(); ++rb)
    for (int64_t cb = 0; cb < q.col_blocks(); ++cb) {
      const int64_t r0 = rb * Fp8BlockMatrix::kBlock, r1 = std::min(rows, r0 + Fp8BlockMatrix::kBlock);
      const int64_t c0 = cb * Fp8BlockMatrix::kBlock, c1 = std::min(cols, c0 + Fp8BlockMatrix::kBlock);
      float amax = 0;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
      const float scale = amax > 0 ? amax / kE4M3Max : 1.0f;
      q.scales[static_cast<size_t>(rb * q.col_blocks() + cb)] = scale;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) q.codes[static_cast<size_t>(r * cols + c)] = float_to_e4m3(w[r * cols + c] / scale);
    }
  return q;
}

}  // namespace tachyon::fp4
