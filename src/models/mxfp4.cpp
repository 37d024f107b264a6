#include "models/mxfp4.h"

#include "core/error.h"

namespace tachyon {

void mxfp4_decode(const uint8_t* blocks, const uint8_t* scales, int64_t count, float* out) {
  for (int64_t b = 0; b < count / kMxfp4BlockSize; ++b) {
    const float scale = e8m0_to_float(scales[b]);
    const uint8_t* bytes = blocks + b * (kMxfp4BlockSize / 2);
    float* values = out + b * kMxfp4BlockSize;
    for (int i = 0; i < kMxfp4BlockSize / 2; ++i) {
      values[2 * i] = kE2M1Values[bytes[i] & 0x0f] * scale;
      values[2 * i + 1] = kE2M1Values[bytes[i] >> 4] * scale;
    }
  }
}

Mxfp4Matrices::Mxfp4Matrices(const TensorView& blocks, const TensorView& scales, int64_t experts, int64_t rows,
                             int64_t cols)
    : experts_(experts), rows_(rows), cols_(cols) {
  if (cols % kMxfp4BlockSize != 0)
    fail("{}: tensor {}: MXFP4 rows of {} values are not whole blocks of {}", blocks.file, blocks.name, cols,
         kMxfp4BlockSize);
  for (const TensorView* t : {&blocks, &scales})
    if (t->dtype != DType::U8)
      fail("{}: tensor {} has dtype {}, MXFP4 needs U8", t->file, t->name, dtype_name(t->dtype));
  const int64_t groups = cols / kMxfp4BlockSize;
  const std::vector<int64_t> block_shape{experts, rows, groups, kMxfp4BlockSize / 2}, scale_shape{experts, rows, groups};
  if (blocks.shape != block_shape)
    fail("{}: tensor {} has shape {}, config implies [{}, {}, {}, {}]", blocks.file, blocks.name,
         blocks.shape_string(), experts, rows, groups, kMxfp4BlockSize / 2);
  if (scales.shape != scale_shape)
    fail("{}: tensor {} has shape {}, config implies [{}, {}, {}]", scales.file, scales.name, scales.shape_string(),
         experts, rows, groups);
  blocks_ = blocks.data;
  scales_ = scales.data;
}

void Mxfp4Matrices::row_to_float(int64_t expert, int64_t row, float* out) const {
  const int64_t index = expert * rows_ + row;  // row index over all experts
  mxfp4_decode(blocks_ + index * (cols_ / 2), scales_ + index * (cols_ / kMxfp4BlockSize), cols_, out);
}

}  // namespace tachyon
