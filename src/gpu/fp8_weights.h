// Block-scaled FP8 dense weights on the GPU (`--fp8 attention,mlp,lm_head`; docs/fp4.md "FP8"): the attention
// projections, dense MLPs and lm_head held as e4m3 codes with a float scale per 128 x 128 tile of each checkpoint
// tensor (the DeepSeek-V3 / Qwen3-FP8 format, fp4/fp8_blocks.h), read by kernels::gemv_fp8 in decode and verify
// passes: half the bytes of bf16.
//
// Where they come from: the loader (or the random-weight maker) fills the bf16 matrices as always, then
// make_fp8_weights quantizes them on the GPU (kernels/fp8/fp8_quantize.h), per checkpoint tensor (q, k and v of
// the fused qkv each with their own tiles; gate and up alike), and rounds the bf16 copies to the FP8 values, which
// prefill's bf16 GEMMs keep using (so prefill and decode compute with one model, prefill to bf16's rounding). The
// lm_head's bf16 copy is left as it is (it may be the tied embedding); every lm_head product uses the FP8 copy.
// Tiles lie over the GPU's padded layout: where heads or widths are padded (head_dim 80 -> 96, say) they differ
// from the checkpoint tensor's own tiles. Memory: the FP8 copies come on top of the bf16 ones.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "gpu/gpu_config.h"
#ifdef TACHYON_HAS_CUDA
#include "gpu/gpu_weights.h"
#endif

namespace tachyon::gpu {

// The `--fp8` option's help text (bench, generate, serve).
inline constexpr const char* kFp8OptionHelp =
    "Dense weights held as block-scaled FP8 on the GPU (e4m3, a float scale per 128 x 128 tile) for decode and "
    "verify: any of attention, mlp, lm_head, comma-separated; quantized at load (docs/fp4.md). The lm_head costs "
    "the most quality (docs/fp4-quality.md)";

// "attention,mlp,lm_head" (any subset, comma-separated; "none" or "" for none). Error naming `what` otherwise.
Fp8Weights parse_fp8_weights(std::string_view list, const std::string& what);
std::string fp8_weights_name(const Fp8Weights& fp8);  // "attention,lm_head", or "none"

// Records the choice in the config and pads widths for the FP8 gemv (columns % 64). Error for mlp on a model with no
// dense MLP layer.
void set_fp8_weights(GpuModelConfig& config, const Fp8Weights& fp8, const std::string& source);

// Bytes of a [rows, cols] matrix as the FP8 gemv reads it: codes, and a float scale per 16 rows x 128 columns.
double fp8_matrix_bytes(int64_t rows, int64_t cols);

#ifdef TACHYON_HAS_CUDA
// Adds the FP8 copies config.fp8 asks for to `weights` (allocated into weights.storage).
void make_fp8_weights(GpuWeights& weights, const GpuModelConfig& config);

// The runner's dense products: through the FP8 copy when the matrix has one (fp8.codes), else the bf16 matrix.
void dense_gemv(const kernels::Fp8Matrix& fp8, const bf16* weight, const float* bias, const float* x, float* y,
                int n_tokens, int out_features, int in_features, cudaStream_t stream);
void dense_gemv(const kernels::ResidualNorm& norm, const kernels::Fp8Matrix& fp8, const bf16* weight, const float* bias,
                float* y, int n_tokens, int out_features, int in_features, cudaStream_t stream);
void dense_gated_gemv(const kernels::ResidualNorm& norm, const kernels::Fp8Matrix& gate_fp8,
                      const kernels::Fp8Matrix& up_fp8, const bf16* gate, const bf16* up, float* h, int n_tokens,
                      int out_features, int in_features, cudaStream_t stream);
#endif  // TACHYON_HAS_CUDA

}  // namespace tachyon::gpu
