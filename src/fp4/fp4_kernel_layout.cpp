#include "fp4/fp4_kernel_layout.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "models/layers.h"

namespace tachyon::fp4 {

namespace {

// Nibble position (0 = least significant) of (row offset 0 / 8, slot 0..3) inside a lane's word.
constexpr int kNibble[2][4] = {{3, 7, 1, 5}, {2, 6, 0, 4}};

uint8_t code_at(const Fp4MatrixView& m, int64_t row, int64_t col) {
  const uint8_t byte = m.packed[row * (m.cols / 2) + col / 2];
  return (col & 1) ? byte >> 4 : byte & 0x0f;
}

void check_shape(Fp4Format format, int64_t rows, int64_t cols) {
  if (rows % kFp4TileRows != 0 || cols % kFp4TileCols != 0)
    fail("FP4 kernel tiles need rows % 16 == 0 and cols % 64 == 0, got [{}, {}] ({})", rows, cols, format_name(format));
}

}  // namespace

int64_t fp4_kernel_matrix_bytes(Fp4Format format, int64_t rows, int64_t cols) {
  check_shape(format, rows, cols);
  return rows / kFp4TileRows * (cols / kFp4TileCols) * fp4_tile_bytes(format);
}

void pack_kernel_tiles(const Fp4MatrixView& m, uint8_t* out) {
  check_shape(m.format, m.rows, m.cols);
  const int64_t col_tiles = m.cols / kFp4TileCols, blocks_per_tile = kFp4TileCols / block_size(m.format);
  const int tile_bytes = fp4_tile_bytes(m.format);
  for (int64_t rt = 0; rt < m.rows / kFp4TileRows; ++rt) {
    for (int64_t ct = 0; ct < col_tiles; ++ct) {
      uint8_t* tile = out + (rt * col_tiles + ct) * tile_bytes;
      std::memset(tile, 0, tile_bytes);
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        for (int j = 0; j < 4; ++j) {
          uint32_t word = 0;
          for (int half = 0; half < 2; ++half)
            for (int s = 0; s < 4; ++s) {
              const int64_t row = rt * kFp4TileRows + g + 8 * half, col = ct * kFp4TileCols + 16 * j + 4 * t + s;
              word |= static_cast<uint32_t>(code_at(m, row, col)) << (4 * kNibble[half][s]);
            }
          std::memcpy(tile + 16 * lane + 4 * j, &word, 4);  // little-endian, as the GPU reads it
        }
      }
      for (int r = 0; r < kFp4TileRows; ++r)
        for (int b = 0; b < blocks_per_tile; ++b)
          tile[kFp4TileCodeBytes + r * blocks_per_tile + b] =
              m.scales[(rt * kFp4TileRows + r) * m.blocks_per_row() + ct * blocks_per_tile + b];
    }
  }
}

std::vector<uint8_t> pack_kernel_tiles(const Fp4MatrixView& m) {
  std::vector<uint8_t> out(fp4_kernel_matrix_bytes(m.format, m.rows, m.cols));
  pack_kernel_tiles(m, out.data());
  return out;
}

Fp4Matrix unpack_kernel_tiles(const uint8_t* tiles, Fp4Format format, int64_t rows, int64_t cols, float global_scale) {
  check_shape(format, rows, cols);
  Fp4Matrix m;
  m.format = format;
  m.rows = rows;
  m.cols = cols;
  m.global_scale = global_scale;
  m.packed.assign(rows * cols / 2, 0);
  m.scales.assign(rows * cols / block_size(format), 0);
  const int64_t col_tiles = cols / kFp4TileCols, blocks_per_tile = kFp4TileCols / block_size(format);
  const int tile_bytes = fp4_tile_bytes(format);
  for (int64_t rt = 0; rt < rows / kFp4TileRows; ++rt)
    for (int64_t ct = 0; ct < col_tiles; ++ct) {
      const uint8_t* tile = tiles + (rt * col_tiles + ct) * tile_bytes;
      for (int lane = 0; lane < 32; ++lane)
        for (int j = 0; j < 4; ++j) {
          uint32_t word;
          std::memcpy(&word, tile + 16 * lane + 4 * j, 4);
          for (int half = 0; half < 2; ++half)
            for (int s = 0; s < 4; ++s) {
              const int64_t row = rt * kFp4TileRows + lane / 4 + 8 * half, col = ct * kFp4TileCols + 16 * j + 4 * (lane % 4) + s;
              const uint8_t code = (word >> (4 * kNibble[half][s])) & 0x0f;
              uint8_t& byte = m.packed[row * (cols / 2) + col / 2];
              byte = static_cast<uint8_t>((col & 1) ? (byte & 0x0f) | (code << 4) : (byte & 0xf0) | code);
            }
        }
      for (int r = 0; r < kFp4TileRows; ++r)
        for (int b = 0; b < blocks_per_tile; ++b)
          m.scales[(rt * kFp4TileRows + r) * (cols / block_size(format)) + ct * blocks_per_tile + b] =
              tile[kFp4TileCodeBytes + r * blocks_per_tile + b];
    }
  return m;
}

void fp4_moe_reference(const Fp4ExpertSet& experts, const int* expert_ids, const float* weights, int n_tokens, int top_k,
                       const float* x, float* out, const Fp4MoeReferenceEpilogue& epilogue) {
  const int64_t inter = experts.gate.at(0).rows, hidden = experts.gate.at(0).cols;
  std::vector<float> row(std::max(inter, hidden)), g(inter), u(inter), h(inter);
  for (int t = 0; t < n_tokens; ++t) {
    float* o = out + t * hidden;
    std::fill(o, o + hidden, 0.0f);
    for (int j = 0; j < top_k; ++j) {
      const int e = expert_ids[t * top_k + j];
      for (int64_t r = 0; r < inter; ++r) {
        experts.gate[e].row_to_float(r, row.data());
        g[r] = dot(row.data(), x + t * hidden, hidden);
        experts.up[e].row_to_float(r, row.data());
        u[r] = dot(row.data(), x + t * hidden, hidden);
        if (epilogue.swiglu_limit > 0) {  // gpt-oss (models/gpt_oss.cpp)
          const float limit = epilogue.swiglu_limit;
          const float gate = std::min(g[r] + (epilogue.gate_bias ? epilogue.gate_bias[e * inter + r] : 0.0f), limit);
          const float up =
              std::clamp(u[r] + (epilogue.up_bias ? epilogue.up_bias[e * inter + r] : 0.0f), -limit, limit);
          h[r] = (up + 1.0f) * gate * sigmoid(epilogue.swiglu_alpha * gate);
        } else {
          h[r] = silu(g[r]) * u[r];
        }
      }
      for (int64_t r = 0; r < hidden; ++r) {
        experts.down[e].row_to_float(r, row.data());
        const float bias = epilogue.down_bias ? epilogue.down_bias[e * hidden + r] : 0.0f;
        o[r] += weights[t * top_k + j] * (dot(row.data(), h.data(), inter) + bias);
      }
    }
  }
}

}  // namespace tachyon::fp4
