#include "gpu/fp8_weights.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.h"
#ifdef TACHYON_HAS_CUDA
#include "cuda/cuda_check.h"
#include "fp8/fp8_quantize.h"
#endif

namespace tachyon::gpu {

Fp8Weights parse_fp8_weights(std::string_view list, const std::string& what) {
  Fp8Weights fp8;
  if (list == "none") return fp8;
  size_t start = 0;
  while (start < list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    const std::string_view item = list.substr(start, comma - start);
    if (item == "attention") fp8.attention = true;
    else if (item == "mlp") fp8.mlp = true;
    else if (item == "lm_head") fp8.lm_head = true;
    else fail("{}: '{}' is not a weight group; use attention, mlp, lm_head (comma-separated) or none", what, item);
    start = comma + 1;
  }
  return fp8;
}

std::string fp8_weights_name(const Fp8Weights& fp8) {
  std::string out;
  for (auto [on, name] : {std::pair{fp8.attention, "attention"}, {fp8.mlp, "mlp"}, {fp8.lm_head, "lm_head"}})
    if (on) out += (out.empty() ? "" : ",") + std::string(name);
  return out.empty() ? "none" : out;
}

void set_fp8_weights(GpuModelConfig& c, const Fp8Weights& fp8, const std::string& source) {
  c.fp8 = fp8;
  if (!fp8.any()) return;
  if (fp8.mlp && !c.has_dense_layers())
    fail("{}: --fp8 mlp: {} has no dense MLP layer (its routed experts take --experts)", source, c.architecture);
  // The FP8 gemv reads 64 columns per 4-lane chunk; rows come in 16-row scale groups (vocab, head widths: below).
  c.hidden_padded = round_up(c.hidden, 64);
  if (fp8.mlp) c.intermediate_padded = round_up(c.intermediate, 64);
  if (fp8.lm_head && c.vocab % 16 != 0)
    fail("{}: --fp8 lm_head needs a vocabulary that is a multiple of 16 ({} is not)", source, c.vocab);
}

namespace {
// Scales of a [rows, cols] matrix in kernels::Fp8Matrix's layout: one per 16 rows x 128 columns (as
// Fp8Matrix::scale_count, which this file's CPU part cannot include: fp8_matrix_bytes is built without CUDA too).
int64_t scale_count(int64_t rows, int64_t cols) { return (rows + 15) / 16 * ((cols + 127) / 128); }
}  // namespace

double fp8_matrix_bytes(int64_t rows, int64_t cols) {
  return static_cast<double>(rows) * cols + static_cast<double>(scale_count(rows, cols)) * sizeof(float);
}

#ifdef TACHYON_HAS_CUDA
void dense_gemv(const kernels::Fp8Matrix& fp8, const bf16* weight, const float* bias, const float* x, float* y,
                int n_tokens, int out_features, int in_features, cudaStream_t stream) {
  if (fp8.codes) kernels::gemv_fp8(fp8, bias, x, y, n_tokens, out_features, in_features, stream);
  else kernels::gemv_bf16(weight, bias, x, y, n_tokens, out_features, in_features, stream);
}

void dense_gemv(const kernels::ResidualNorm& norm, const kernels::Fp8Matrix& fp8, const bf16* weight, const float* bias,
                float* y, int n_tokens, int out_features, int in_features, cudaStream_t stream) {
  if (fp8.codes) kernels::gemv_fp8(norm, fp8, bias, y, n_tokens, out_features, in_features, stream);
  else kernels::gemv_bf16(norm, weight, bias, y, n_tokens, out_features, in_features, stream);
}

void dense_gated_gemv(const kernels::ResidualNorm& norm, const kernels::Fp8Matrix& gate_fp8,
                      const kernels::Fp8Matrix& up_fp8, const bf16* gate, const bf16* up, float* h, int n_tokens,
                      int out_features, int in_features, cudaStream_t stream) {
  if (gate_fp8.codes) kernels::gated_gemv_fp8(norm, gate_fp8, up_fp8, h, n_tokens, out_features, in_features, stream);
  else kernels::gated_gemv_bf16(norm, gate, up, h, n_tokens, out_features, in_features, stream);
}

void make_fp8_weights(GpuWeights& w, const GpuModelConfig& c) {
  if (!c.fp8.any()) return;
  // A matrix [rows, cols] of bf16 `source`, quantized part by part: parts[i] rows each (one checkpoint tensor).
  auto quantize = [&](const bf16* source, std::initializer_list<int64_t> parts, int64_t cols, bool write_back) {
    int64_t rows = 0;
    for (int64_t part : parts) rows += part;
    kernels::Fp8Matrix m;
    auto* codes = static_cast<uint8_t*>(w.allocate(static_cast<size_t>(rows * cols)));
    auto* scales = static_cast<float*>(w.allocate(static_cast<size_t>(scale_count(rows, cols)) * sizeof(float)));
    int64_t row0 = 0;
    for (int64_t part : parts) {
      kernels::quantize_fp8_rows(const_cast<bf16*>(source), row0, part, cols, codes, scales, write_back, nullptr);
      row0 += part;
    }
    m.codes = codes;
    m.scales = scales;
    return m;
  };
  const int64_t Hp = c.hidden_padded;
  for (int layer = 0; layer < c.layers; ++layer) {
    GpuLayerWeights& L = w.layers[layer];
    if (c.fp8.attention) {
      L.qkv_fp8 = quantize(L.qkv, {c.q_width(), c.kv_width(), c.kv_width()}, Hp, true);
      L.o_fp8 = quantize(L.o, {Hp}, c.q_width(), true);
    }
    if (c.fp8.mlp && !c.is_sparse(layer)) {
      const int64_t Ip = c.intermediate_padded;
      const kernels::Fp8Matrix gate_up = quantize(L.gate_up, {Ip, Ip}, Hp, true);
      L.gate_fp8 = gate_up;
      L.up_fp8 = {gate_up.codes + Ip * Hp, gate_up.scales + scale_count(Ip, Hp)};  // Ip % 16 == 0: whole row groups
      L.down_fp8 = quantize(L.down, {Hp}, Ip, true);
    }
  }
  if (c.fp8.lm_head) w.lm_head_fp8 = quantize(w.lm_head, {c.vocab}, Hp, false);
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
}

#endif  // TACHYON_HAS_CUDA

}  // namespace tachyon::gpu
