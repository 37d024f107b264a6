// FP4 routed experts on the GPU: format names, padding, stored bytes, the load-time quantization, and the
// per-layer dequantization for prefill (fp4_experts.h).
#include "gpu/fp4_experts.h"

#include <algorithm>

#include "core/error.h"
#include "fp4/fp4_kernel_layout.h"

#ifdef TACHYON_HAS_CUDA
#include "fp4_moe/fp4_tiles.h"
#endif

namespace tachyon::gpu {

std::string_view expert_format_name(ExpertFormat format) {
  switch (format) {
    case ExpertFormat::Nvfp4: return "nvfp4";
    case ExpertFormat::Mxfp4: return "mxfp4";
    default: return "bf16";
  }
}

ExpertFormat parse_expert_format(std::string_view name, const std::string& what) {
  for (ExpertFormat f : {ExpertFormat::Bf16, ExpertFormat::Nvfp4, ExpertFormat::Mxfp4})
    if (name == expert_format_name(f)) return f;
  fail("{}: expert format '{}' is not one of bf16, nvfp4, mxfp4", what, name);
}

fp4::Fp4Format fp4_format_of(ExpertFormat format) {
  if (format == ExpertFormat::Bf16) fail("fp4_format_of: bf16 experts are not FP4");
  return format == ExpertFormat::Nvfp4 ? fp4::Fp4Format::Nvfp4 : fp4::Fp4Format::Mxfp4;
}

void set_expert_format(GpuModelConfig& c, ExpertFormat format, const std::string& source) {
  c.expert_format = format;
  if (format == ExpertFormat::Bf16) return;
  if (c.experts == 0)
    fail("{}: {} experts need a model with routed experts ({} has none)", source, expert_format_name(format),
         c.architecture);
  // The FP4 tile layout: rows % 16, columns % 64 (gate/up [Ip, Hp], down [Hp, Ip]).
  c.hidden_padded = round_up(c.hidden, 64);
  c.moe_intermediate_padded = round_up(c.moe_intermediate, 64);
}

double stored_expert_bytes(const GpuModelConfig& c) {
  const int64_t Hp = c.hidden_padded, Ip = c.moe_intermediate_padded;
  if (c.expert_format == ExpertFormat::Bf16) return 2.0 * 3.0 * static_cast<double>(Ip) * Hp;
  const fp4::Fp4Format f = fp4_format_of(c.expert_format);
  return 2.0 * fp4::fp4_kernel_matrix_bytes(f, Ip, Hp) + fp4::fp4_kernel_matrix_bytes(f, Hp, Ip) +
         (f == fp4::Fp4Format::Nvfp4 ? 3.0 * sizeof(float) : 0.0);
}

fp4::Fp4Matrix quantize_expert_matrix(ExpertFormat format, const std::vector<float>& values, int64_t rows, int64_t cols,
                                      int64_t padded_rows, int64_t padded_cols, const std::string& name) {
  if (static_cast<int64_t>(values.size()) != rows * cols || padded_rows < rows || padded_cols < cols)
    fail("{}: {} values for [{}, {}] padded to [{}, {}]", name, values.size(), rows, cols, padded_rows, padded_cols);
  std::vector<float> padded(static_cast<size_t>(padded_rows * padded_cols), 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    std::copy(values.begin() + r * cols, values.begin() + (r + 1) * cols, padded.begin() + r * padded_cols);
  return fp4::quantize(fp4_format_of(format), padded.data(), padded_rows, padded_cols, fp4::Mxfp4ScaleRule::RoundUp,
                       0.0f, name);
}

fp4::Fp4Matrix pad_fp4_matrix(const fp4::Fp4MatrixView& m, int64_t padded_rows, int64_t padded_cols,
                              const std::string& name) {
  const int block = fp4::block_size(m.format);
  if (padded_rows < m.rows || padded_cols < m.cols || m.cols % block != 0 || padded_cols % block != 0)
    fail("{}: FP4 matrix [{}, {}] cannot be padded to [{}, {}]", name, m.rows, m.cols, padded_rows, padded_cols);
  fp4::Fp4Matrix out;
  out.format = m.format;
  out.rows = padded_rows;
  out.cols = padded_cols;
  out.global_scale = m.global_scale;
  out.packed.assign(static_cast<size_t>(padded_rows * padded_cols / 2), 0);
  out.scales.assign(static_cast<size_t>(padded_rows * (padded_cols / block)), 0);
  for (int64_t r = 0; r < m.rows; ++r) {
    std::copy(m.packed + r * (m.cols / 2), m.packed + (r + 1) * (m.cols / 2), out.packed.begin() + r * (padded_cols / 2));
    std::copy(m.scales + r * m.blocks_per_row(), m.scales + (r + 1) * m.blocks_per_row(),
              out.scales.begin() + r * (padded_cols / block));
  }
  return out;
}

#ifdef TACHYON_HAS_CUDA

int64_t fp4_prefill_scratch_elements(const GpuModelConfig& c) {
  return int64_t{c.experts} * 3 * c.moe_intermediate_padded * c.hidden_padded;
}

Bf16ExpertPointers dequantize_layer_experts(const GpuLayerWeights& L, const GpuModelConfig& c, bf16* scratch,
                                            cudaStream_t stream) {
  const int64_t Hp = c.hidden_padded, Ip = c.moe_intermediate_padded;
  kernels::fp4_tiles_to_bf16(L.fp4_gate, c.experts, scratch, 2 * Ip * Hp, stream);
  kernels::fp4_tiles_to_bf16(L.fp4_up, c.experts, scratch + Ip * Hp, 2 * Ip * Hp, stream);
  bf16* down = scratch + int64_t{c.experts} * 2 * Ip * Hp;
  kernels::fp4_tiles_to_bf16(L.fp4_down, c.experts, down, Hp * Ip, stream);
  return {scratch, down};
}

#endif  // TACHYON_HAS_CUDA

}  // namespace tachyon::gpu
