// gpt-oss experts: the one conversion from the checkpoint layout to the runner's (gpt_oss_experts.h), and random
// experts made in that checkpoint layout.
#ifdef TACHYON_HAS_CUDA
#include "gpu/gpt_oss_experts.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/parallel.h"
#include "cuda/cuda_check.h"
#include "fp4/fp4_kernel_layout.h"
#include "fp4/fp4_layouts.h"
#include "gpu/fp4_experts.h"

namespace tachyon::gpu {

namespace {

// Rows first, first + step, ... of an FP4 matrix (gate = even rows, up = odd rows of gpt-oss gate_up), codes and
// scales copied as they are.
fp4::Fp4Matrix every_other_row(const fp4::Fp4MatrixView& m, int64_t first, int64_t step) {
  fp4::Fp4Matrix out;
  out.format = m.format;
  out.rows = m.rows / step;
  out.cols = m.cols;
  out.global_scale = m.global_scale;
  const int64_t row_bytes = m.cols / 2, row_scales = m.blocks_per_row();
  out.packed.resize(static_cast<size_t>(out.rows * row_bytes));
  out.scales.resize(static_cast<size_t>(out.rows * row_scales));
  for (int64_t r = 0; r < out.rows; ++r) {
    std::memcpy(out.packed.data() + r * row_bytes, m.packed + (first + r * step) * row_bytes, row_bytes);
    std::memcpy(out.scales.data() + r * row_scales, m.scales + (first + r * step) * row_scales, row_scales);
  }
  return out;
}

// One expert matrix on its way to the device: exact MXFP4 (from *_blocks) or float values (dense checkpoints).
struct ExpertMatrix {
  bool is_fp4 = false;
  fp4::Fp4Matrix fp4;
  std::vector<float> values;  // [rows, cols] when !is_fp4
  int64_t rows = 0, cols = 0;
  std::vector<float> to_float() const {
    if (!is_fp4) return values;
    std::vector<float> out(static_cast<size_t>(rows * cols));
    fp4.view().to_float(out.data());
    return out;
  }
};

// gate (part 0), up (part 1) [I, H] and down (part 2) [H, I] of expert e.
ExpertMatrix expert_matrix(const GptOssExpertTensors& t, int e, int part, int64_t H, int64_t I) {
  ExpertMatrix m;
  m.rows = part == 2 ? H : I;
  m.cols = part == 2 ? I : H;
  if (t.gate_up_blocks) {
    m.is_fp4 = true;
    if (part == 2) {
      const fp4::Fp4MatrixView v = fp4::gpt_oss_expert_matrix(*t.down_blocks, *t.down_scales, e);
      m.fp4 = every_other_row(v, 0, 1);
    } else {
      m.fp4 = every_other_row(fp4::gpt_oss_expert_matrix(*t.gate_up_blocks, *t.gate_up_scales, e), part, 2);
    }
    return m;
  }
  m.values.resize(static_cast<size_t>(m.rows * m.cols));
  if (part == 2) {  // down_proj [E, I, H]: y = h @ W, so the output row h is column h
    std::vector<float> slice(static_cast<size_t>(I * H));
    t.down->to_float(int64_t{e} * I * H, I * H, slice.data());
    for (int64_t i = 0; i < I; ++i)
      for (int64_t h = 0; h < H; ++h) m.values[h * I + i] = slice[i * H + h];
  } else {  // gate_up_proj [E, H, 2I]: gate = even columns, up = odd
    std::vector<float> slice(static_cast<size_t>(H * 2 * I));
    t.gate_up->to_float(int64_t{e} * H * 2 * I, H * 2 * I, slice.data());
    for (int64_t i = 0; i < I; ++i)
      for (int64_t h = 0; h < H; ++h) m.values[i * H + h] = slice[h * 2 * I + 2 * i + part];
  }
  return m;
}

void check_shapes(const GptOssExpertTensors& t, const GpuModelConfig& c, const std::string& prefix) {
  const int64_t E = c.experts, H = c.hidden, I = c.moe_intermediate;
  auto expect = [&](const TensorView* v, const std::vector<int64_t>& shape, const char* what) {
    if (!v) fail("{}{}: missing", prefix, what);
    if (v->shape != shape) {
      std::string want;
      for (int64_t d : shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
      fail("{}: tensor {} has shape {}, gpt-oss with this config needs [{}]", v->file, v->name, v->shape_string(), want);
    }
  };
  if (t.gate_up_blocks) {
    if (H % 32 != 0 || I % 32 != 0)
      fail("{}: MXFP4 experts need hidden_size and intermediate_size multiples of 32 (got {}, {})", prefix, H, I);
    expect(t.gate_up_blocks, {E, 2 * I, H / 32, 16}, "gate_up_proj_blocks");
    expect(t.gate_up_scales, {E, 2 * I, H / 32}, "gate_up_proj_scales");
    expect(t.down_blocks, {E, H, I / 32, 16}, "down_proj_blocks");
    expect(t.down_scales, {E, H, I / 32}, "down_proj_scales");
  } else {
    expect(t.gate_up, {E, H, 2 * I}, "gate_up_proj");
    expect(t.down, {E, I, H}, "down_proj");
  }
  expect(t.gate_up_bias, {E, 2 * I}, "gate_up_proj_bias");
  expect(t.down_bias, {E, H}, "down_proj_bias");
}

uint64_t mix(uint64_t x) {  // splitmix64's finalizer
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void fill_random_bytes(std::vector<uint8_t>& bytes, uint64_t seed) {
  const int64_t words = static_cast<int64_t>(bytes.size() + 7) / 8;
  parallel_for(words, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      const uint64_t value = mix(seed ^ mix(static_cast<uint64_t>(w)));
      const size_t at = static_cast<size_t>(w) * 8, n = std::min<size_t>(8, bytes.size() - at);
      std::memcpy(bytes.data() + at, &value, n);
    }
  });
}

}  // namespace

size_t upload_gpt_oss_experts(const GptOssExpertTensors& t, const GpuModelConfig& c, const GptOssExpertTargets& d,
                              const std::string& prefix) {
  check_shapes(t, c, prefix);
  const int E = c.experts;
  const int64_t H = c.hidden, Hp = c.hidden_padded, I = c.moe_intermediate, Ip = c.moe_intermediate_padded;
  size_t uploaded = 0;

  // Biases: gate = even, up = odd entries of gate_up_proj_bias, like the rows.
  {
    const std::vector<float> gate_up = t.gate_up_bias->to_float(), down = t.down_bias->to_float();
    std::vector<float> gate_up_out(static_cast<size_t>(E * 2 * Ip), 0.0f), down_out(static_cast<size_t>(E * Hp), 0.0f);
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t i = 0; i < I; ++i) {
        gate_up_out[(e * 2 + 0) * Ip + i] = gate_up[e * 2 * I + 2 * i];
        gate_up_out[(e * 2 + 1) * Ip + i] = gate_up[e * 2 * I + 2 * i + 1];
      }
      for (int64_t h = 0; h < H; ++h) down_out[e * Hp + h] = down[e * H + h];
    }
    TACHYON_CUDA_CHECK(cudaMemcpy(d.gate_up_bias, gate_up_out.data(), gate_up_out.size() * sizeof(float),
                                  cudaMemcpyHostToDevice));
    TACHYON_CUDA_CHECK(
        cudaMemcpy(d.down_bias, down_out.data(), down_out.size() * sizeof(float), cudaMemcpyHostToDevice));
    uploaded += (gate_up_out.size() + down_out.size()) * sizeof(float);
  }

  if (c.expert_format == ExpertFormat::Bf16) {
    // [E][2][Ip][Hp] and [E][Hp][Ip], zero padding.
    std::vector<uint16_t> gate_up(static_cast<size_t>(E * 2 * Ip * Hp), 0), down(static_cast<size_t>(E * Hp * Ip), 0);
    parallel_for(E, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e)
        for (int part = 0; part < 3; ++part) {
          const ExpertMatrix m = expert_matrix(t, static_cast<int>(e), part, H, I);
          const std::vector<float> values = m.to_float();
          uint16_t* dst = part == 2 ? down.data() + e * Hp * Ip : gate_up.data() + (e * 2 + part) * Ip * Hp;
          const int64_t padded_cols = part == 2 ? Ip : Hp;
          for (int64_t r = 0; r < m.rows; ++r)
            for (int64_t col = 0; col < m.cols; ++col)
              dst[r * padded_cols + col] = float_to_bf16(values[r * m.cols + col]);
        }
    });
    TACHYON_CUDA_CHECK(cudaMemcpy(d.gate_up, gate_up.data(), gate_up.size() * 2, cudaMemcpyHostToDevice));
    TACHYON_CUDA_CHECK(cudaMemcpy(d.down, down.data(), down.size() * 2, cudaMemcpyHostToDevice));
    return uploaded + (gate_up.size() + down.size()) * 2;
  }

  // FP4 experts: MXFP4 codes and scales kept as they are when MXFP4 is asked for, else requantized (NVFP4).
  const kernels::Fp4ExpertMatrices* stacks[3] = {&d.gate, &d.up, &d.down_fp4};
  std::vector<std::vector<uint8_t>> tiles(3);
  std::vector<std::vector<float>> global_scales(3, std::vector<float>(E, 1.0f));
  for (int part = 0; part < 3; ++part) tiles[part].resize(static_cast<size_t>(stacks[part]->expert_stride * E));
  parallel_for(E, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e)
      for (int part = 0; part < 3; ++part) {
        const kernels::Fp4ExpertMatrices& s = *stacks[part];
        const ExpertMatrix m = expert_matrix(t, static_cast<int>(e), part, H, I);
        const std::string name = prefix + (part == 2 ? "down_proj" : "gate_up_proj") + fmt::format("[{}]", e);
        const fp4::Fp4Matrix q = m.is_fp4 && c.expert_format == ExpertFormat::Mxfp4
                                     ? pad_fp4_matrix(m.fp4.view(), s.rows, s.cols, name)
                                     : quantize_expert_matrix(c.expert_format, m.to_float(), m.rows, m.cols, s.rows,
                                                              s.cols, name);
        fp4::pack_kernel_tiles(q.view(), tiles[part].data() + e * s.expert_stride);
        global_scales[part][e] = q.global_scale;
      }
  });
  for (int part = 0; part < 3; ++part) {
    const kernels::Fp4ExpertMatrices& s = *stacks[part];
    TACHYON_CUDA_CHECK(cudaMemcpy(const_cast<uint8_t*>(s.tiles), tiles[part].data(), tiles[part].size(),
                                  cudaMemcpyHostToDevice));
    if (s.global_scales)
      TACHYON_CUDA_CHECK(cudaMemcpy(const_cast<float*>(s.global_scales), global_scales[part].data(),
                                    E * sizeof(float), cudaMemcpyHostToDevice));
    uploaded += tiles[part].size();
  }
  return uploaded;
}

GptOssExpertTensors RandomGptOssExperts::tensors() const {
  GptOssExpertTensors t;
  t.gate_up_blocks = &views[0];
  t.gate_up_scales = &views[1];
  t.down_blocks = &views[2];
  t.down_scales = &views[3];
  t.gate_up_bias = &views[4];
  t.down_bias = &views[5];
  return t;
}

void make_random_gpt_oss_experts(const GpuModelConfig& c, int layer, uint64_t seed, RandomGptOssExperts& r) {
  const int64_t E = c.experts, H = c.hidden, I = c.moe_intermediate;
  if (H % 32 != 0 || I % 32 != 0)
    fail("random gpt-oss MXFP4 experts need hidden_size and intermediate_size multiples of 32 (got {}, {})", H, I);
  const std::string prefix = fmt::format("model.layers.{}.mlp.experts.", layer);
  const uint64_t layer_seed = mix(seed ^ mix(0x6770746f7373ull + static_cast<uint64_t>(layer)));
  r.gate_up_blocks.resize(static_cast<size_t>(E * 2 * I * (H / 32) * 16));
  r.gate_up_scales.resize(static_cast<size_t>(E * 2 * I * (H / 32)));
  r.down_blocks.resize(static_cast<size_t>(E * H * (I / 32) * 16));
  r.down_scales.resize(static_cast<size_t>(E * H * (I / 32)));
  r.gate_up_bias.resize(static_cast<size_t>(E * 2 * I * 2));
  r.down_bias.resize(static_cast<size_t>(E * H * 2));
  fill_random_bytes(r.gate_up_blocks, mix(layer_seed + 1));  // uniform bytes = uniform e2m1 codes in both nibbles
  fill_random_bytes(r.down_blocks, mix(layer_seed + 2));
  // e8m0 scales 2^-8 or 2^-7: uniform codes have RMS 2.93, so weights have standard deviation ~0.017.
  fill_random_bytes(r.gate_up_scales, mix(layer_seed + 3));
  fill_random_bytes(r.down_scales, mix(layer_seed + 4));
  for (uint8_t& s : r.gate_up_scales) s = static_cast<uint8_t>(119 + (s & 1));
  for (uint8_t& s : r.down_scales) s = static_cast<uint8_t>(119 + (s & 1));
  // Biases: bf16 uniform in [-0.0346, 0.0346] (standard deviation 0.02).
  for (int which = 0; which < 2; ++which) {
    std::vector<uint8_t>& bytes = which == 0 ? r.gate_up_bias : r.down_bias;
    for (size_t i = 0; i < bytes.size() / 2; ++i) {
      const double u = static_cast<double>(mix(layer_seed + 5 + which) ^ mix(i)) / 18446744073709551616.0;
      const uint16_t bits = float_to_bf16(static_cast<float>((u - 0.5) * 0.02 * std::sqrt(12.0)));
      std::memcpy(bytes.data() + 2 * i, &bits, 2);
    }
  }
  auto view = [&](TensorView& v, const char* name, DType dtype, std::vector<int64_t> shape,
                  const std::vector<uint8_t>& bytes) {
    v.name = prefix + name;
    v.dtype = dtype;
    v.shape = std::move(shape);
    v.data = bytes.data();
    v.nbytes = bytes.size();
    v.file = "random gpt-oss experts";
  };
  view(r.views[0], "gate_up_proj_blocks", DType::U8, {E, 2 * I, H / 32, 16}, r.gate_up_blocks);
  view(r.views[1], "gate_up_proj_scales", DType::U8, {E, 2 * I, H / 32}, r.gate_up_scales);
  view(r.views[2], "down_proj_blocks", DType::U8, {E, H, I / 32, 16}, r.down_blocks);
  view(r.views[3], "down_proj_scales", DType::U8, {E, H, I / 32}, r.down_scales);
  view(r.views[4], "gate_up_proj_bias", DType::BF16, {E, 2 * I}, r.gate_up_bias);
  view(r.views[5], "down_proj_bias", DType::BF16, {E, H}, r.down_bias);
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
