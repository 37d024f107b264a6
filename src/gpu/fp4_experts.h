// FP4 routed experts on the GPU (docs/fp4.md): a Qwen3-MoE model's experts held as NVFP4 or MXFP4 in the kernel
// tile layout of src/fp4/fp4_kernel_layout.h. Decode and verify passes (1..16 tokens) run them through the fused
// kernels/fp4_moe (each touched expert read once, dequantized in registers); prefill dequantizes one layer's
// experts to bf16 at a time for its cuBLASLt GEMMs (Hopper GEMMs take no FP4 operand).
//
// Where the FP4 weights come from (gpu_weights.cpp): random codes and scales made on the device
// (`tachyon bench --random-weights ... --experts nvfp4`); a checkpoint's bf16/float experts quantized on the host
// at load time (round to nearest, as `tachyon quantize` does: MXFP4 scales round up, NVFP4 global scale
// amax / (6 * 448) per matrix, gate and up each their own); or a checkpoint's FP4 experts (ModelOpt,
// compressed-tensors) taken as they are when their format is the one asked for (else dequantized and
// requantized). Other FP4 linears of such a checkpoint are dequantized to bf16.
//
// Padding: the tile layout needs rows % 16 and columns % 64, so with FP4 experts the hidden and expert widths are
// padded to multiples of 64 (not 32); zero rows / columns quantize to zero codes, padded activations stay zero.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "fp4/fp4_blocks.h"
#include "gpu/gpu_config.h"

namespace tachyon::gpu {

// "bf16", "nvfp4", "mxfp4"; parse throws Error naming `what` for anything else.
std::string_view expert_format_name(ExpertFormat format);
ExpertFormat parse_expert_format(std::string_view name, const std::string& what);
fp4::Fp4Format fp4_format_of(ExpertFormat format);  // Error for Bf16

// Records the experts' storage format in the config and pads widths for it. Error for a model without routed
// experts when the format is FP4.
void set_expert_format(GpuModelConfig& config, ExpertFormat format, const std::string& source);

// Bytes of one routed expert as stored (gate + up + down; FP4: codes, block scales and NVFP4's 3 global scales).
double stored_expert_bytes(const GpuModelConfig& config);

// The quantization the loader applies to one expert matrix: the real [rows, cols] values zero-padded at the end
// to [padded_rows, padded_cols], then quantized (round to nearest). Tests dequantize the result to build the CPU
// reference with exactly the GPU's weights.
fp4::Fp4Matrix quantize_expert_matrix(ExpertFormat format, const std::vector<float>& values, int64_t rows, int64_t cols,
                                      int64_t padded_rows, int64_t padded_cols, const std::string& name);

// A checkpoint's FP4 matrix (ModelOpt / compressed-tensors, already quantized) zero-padded at the end to
// [padded_rows, padded_cols] without touching its codes, scales or global scale: what the loader packs when the
// checkpoint's format is the one asked for (no requantization).
fp4::Fp4Matrix pad_fp4_matrix(const fp4::Fp4MatrixView& matrix, int64_t padded_rows, int64_t padded_cols,
                              const std::string& name);

}  // namespace tachyon::gpu

#ifdef TACHYON_HAS_CUDA
#include <cuda_runtime_api.h>

#include "gpu/gpu_weights.h"

namespace tachyon::gpu {

// Bf16 elements of the prefill scratch that holds one layer's experts dequantized (the bf16 expert layout).
int64_t fp4_prefill_scratch_elements(const GpuModelConfig& config);

// Dequantizes every expert of a layer into `scratch` in the bf16 layout ([E][2][Ip][Hp] gate/up, then [E][Hp][Ip]
// down) and returns pointers the bf16 prefill path uses in place of L.expert_gate_up / L.expert_down.
struct Bf16ExpertPointers {
  const bf16* gate_up = nullptr;
  const bf16* down = nullptr;
};
Bf16ExpertPointers dequantize_layer_experts(const GpuLayerWeights& layer, const GpuModelConfig& config, bf16* scratch,
                                            cudaStream_t stream);

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
