// gpt-oss routed experts onto the GPU: ONE conversion from gpt-oss's stacked expert tensors to the runner's
// expert layouts, used by both weight sources (gpu_weights.cpp):
//   - a checkpoint: the tensors as stored (`*_blocks` / `*_scales` MXFP4, or bf16/float `gate_up_proj` [E, H, 2I]
//     and `down_proj` [E, I, H] as transformers saves them), biases `*_bias`;
//   - random weights (`tachyon bench --random-weights gpt-oss-20b`): random MXFP4 blocks / scales and bf16 biases
//     made in host memory in exactly the checkpoint's layout (random_gpt_oss_experts), then handed to the same
//     conversion. What is shared is everything after the bytes exist: the de-interleaving of gate (even rows)
//     and up (odd rows), padding, keeping MXFP4 codes and scales as they are for MXFP4 experts (no requantization),
//     dequantizing for bf16 experts or requantizing for NVFP4, the tile packing and the bias layout.
// Targets: bf16 stacks [E][2][Ip][Hp] (gate rows, then up rows) and [E][Hp][Ip], or FP4 tile stacks (gate, up,
// down); biases float32 [E][2][Ip] (gate, then up) and [E][Hp].
#pragma once
#ifdef TACHYON_HAS_CUDA
#include <cstdint>
#include <string>
#include <vector>

#include "fp4_moe/fp4_moe.h"
#include "gpu/gpu_config.h"
#include "gpu/gpu_weights.h"
#include "loader/weights.h"

namespace tachyon::gpu {

// One layer's expert tensors, in the checkpoint's names and layouts. Either the four MXFP4 tensors or the two
// dense ones are set; the biases always.
struct GptOssExpertTensors {
  const TensorView* gate_up_blocks = nullptr;  // U8 [E, 2I, H/32, 16]
  const TensorView* gate_up_scales = nullptr;  // U8 [E, 2I, H/32]
  const TensorView* down_blocks = nullptr;     // U8 [E, H, I/32, 16]
  const TensorView* down_scales = nullptr;     // U8 [E, H, I/32]
  const TensorView* gate_up = nullptr;         // [E, H, 2I] (x @ W)
  const TensorView* down = nullptr;            // [E, I, H]
  const TensorView* gate_up_bias = nullptr;    // [E, 2I], interleaved like the rows
  const TensorView* down_bias = nullptr;       // [E, H]
};

// Where one layer's experts go on the device (allocated by build_weights).
struct GptOssExpertTargets {
  bf16* gate_up = nullptr;  // bf16 experts: [E][2][Ip][Hp]
  bf16* down = nullptr;     //               [E][Hp][Ip]
  kernels::Fp4ExpertMatrices gate, up, down_fp4;  // FP4 experts: tile stacks (tiles / global scales writable)
  float* gate_up_bias = nullptr;  // [E][2][Ip]
  float* down_bias = nullptr;     // [E][Hp]
};

// Converts and uploads one layer's experts (`layer_prefix` = "model.layers.{i}.mlp.experts." names errors).
// Returns the bytes uploaded.
size_t upload_gpt_oss_experts(const GptOssExpertTensors& tensors, const GpuModelConfig& config,
                              const GptOssExpertTargets& targets, const std::string& layer_prefix);

// Random gpt-oss MXFP4 experts of one layer in host memory, in the checkpoint layout: uniform e2m1 codes (zero
// in no position: the real model has no padding here), e8m0 scales 2^-8 or 2^-7 (weights of standard deviation
// ~0.02), biases bf16 uniform with standard deviation 0.02. Deterministic in (seed, layer).
struct RandomGptOssExperts {
  std::vector<uint8_t> gate_up_blocks, gate_up_scales, down_blocks, down_scales, gate_up_bias, down_bias;
  TensorView views[6];
  GptOssExpertTensors tensors() const;
};
void make_random_gpt_oss_experts(const GpuModelConfig& config, int layer, uint64_t seed, RandomGptOssExperts& out);

// The expert kernels' epilogue for a layer: gpt-oss's biases and clamped SwiGLU; empty (plain SiLU, no biases)
// for every other family.
inline kernels::ExpertEpilogue expert_epilogue(const GpuModelConfig& c, const GpuLayerWeights& L) {
  kernels::ExpertEpilogue e;
  if (c.swiglu_limit <= 0) return e;
  e.gate_bias = L.expert_gate_up_bias;
  e.up_bias = L.expert_gate_up_bias ? L.expert_gate_up_bias + c.moe_intermediate_padded : nullptr;
  e.gate_up_bias_stride = int64_t{2} * c.moe_intermediate_padded;
  e.down_bias = L.expert_down_bias;
  e.down_bias_stride = c.hidden_padded;
  e.swiglu_limit = c.swiglu_limit;
  e.swiglu_alpha = c.swiglu_alpha;
  return e;
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
