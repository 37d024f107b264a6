#include "fp4/fp8_blocks.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "fp4/fp4_codec.h"

namespace tachyon::fp4 {

void dequantize_fp8_block(const uint8_t* codes, const float* scales, int64_t rows, int64_t cols, float* out) {
  const int64_t b = Fp8BlockMatrix::kBlock, col_blocks = Fp8BlockMatrix::blocks(cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r * cols + c] = e4m3_to_float(codes[r * cols + c]) * scales[r / b * col_blocks + c / b];
}

void Fp8BlockMatrix::to_float(float* out) const { dequantize_fp8_block(codes.data(), scales.data(), rows, cols, out); }

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

void Fp8Linear::to_float(float* out) const {
  dequantize_fp8_block(weight->data, scale->to_float().data(), rows(), cols(), out);
}

std::vector<Fp8Linear> find_fp8_linears(const WeightStore& store) {
  std::vector<Fp8Linear> linears;
  for (const auto& [name, tensor] : store.all()) {
    if (tensor.dtype != DType::F8_E4M3 || !name.ends_with(".weight")) continue;
    const std::string base = name.substr(0, name.size() - 7);
    const TensorView* scale = store.find(base + ".weight_scale_inv");
    if (!scale)
      fail("{}: tensor {} is F8_E4M3 but {}.weight_scale_inv is missing (block-scaled FP8 needs its scales)",
           tensor.file, name, base);
    if (tensor.shape.size() != 2)
      fail("{}: tensor {} has shape {}; FP8 linears are 2-D", tensor.file, name, tensor.shape_string());
    const std::vector<int64_t> tiles = {Fp8BlockMatrix::blocks(tensor.shape[0]), Fp8BlockMatrix::blocks(tensor.shape[1])};
    if (scale->shape != tiles)
      fail("{}: tensor {}.weight_scale_inv has shape {}; [{}, {}] 128 x 128 tiles of {} expected", scale->file, base,
           scale->shape_string(), tiles[0], tiles[1], tensor.shape_string());
    if (scale->dtype != DType::F32 && scale->dtype != DType::BF16)
      fail("{}: tensor {}.weight_scale_inv has dtype {}; F32 or BF16 expected", scale->file, base,
           dtype_name(scale->dtype));
    linears.push_back({base, &tensor, scale});
  }
  return linears;
}

}  // namespace tachyon::fp4
