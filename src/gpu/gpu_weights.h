// The model's weights in GPU memory, as the decode kernels read them: matrices bf16 row-major [out, in],
// norms and biases float32. Two sources: a checkpoint (any dtype the loader reads, dequantized on the host with
// TensorView::to_float, rounded to bf16, uploaded) or seeded random values generated on the GPU (benchmarks of
// real shapes with no checkpoint and no host memory). Then the FP8 copies config.fp8 asks for (fp8_weights.h).
//
// Layout choices (all so that one kernel launch reads what one product needs):
// - q, k and v projections are one matrix [q_width + 2 kv_width, hidden] (one gemv; the attention prologue
//   takes the three slices of its output);
// - a dense MLP's gate and up are one [2 I, hidden] allocation (gate rows, then up rows): the decode gemv
//   takes the two halves, the prefill GEMM does both in one product;
// - experts are stacked: gate_up [E][2][I][hidden], down [E][hidden][I], so expert e is base + e * stride;
//   FP4 experts (NVFP4 / MXFP4) are three stacks of tiles instead (fp4_experts.h).
// Tensor parallelism would give each GPU a slice of this same layout: heads of qkv (rows) and o (columns),
// columns of gate_up / rows of down, whole experts; see docs/gpu-runtime.md.
#pragma once
#ifdef TACHYON_HAS_CUDA
#include <cstdint>
#include <vector>

#include <cuda_bf16.h>

#include "cuda/device_buffer.h"
#include "fp4_moe/fp4_moe.h"
#include "gemv/gemv_bf16.h"
#include "gpu/gpu_config.h"
#include "loader/checkpoint.h"

namespace tachyon::gpu {

using bf16 = __nv_bfloat16;

struct GpuLayerWeights {
  const float* input_norm = nullptr;           // [hidden]
  const float* post_attention_norm = nullptr;  // [hidden]
  const bf16* qkv = nullptr;                   // [qkv_width, hidden]
  const float* qkv_bias = nullptr;             // [qkv_width] or null
  const bf16* o = nullptr;                     // [hidden, q_width]
  const float* o_bias = nullptr;               // [hidden] or null
  // Per-head RMSNorm weights [head_dim_padded] (Qwen3), pre-scaled by sqrt(head_dim / head_dim_padded) so that
  // the kernel's mean over the padded head equals the model's mean over the real one (with eps scaled alike).
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
  // Dense MLP layers.
  const bf16* gate_up = nullptr;  // [2 * intermediate_padded, hidden]
  const bf16* down = nullptr;     // [hidden, intermediate_padded]
  // MoE layers.
  const bf16* router = nullptr;          // [experts, hidden]
  const bf16* expert_gate_up = nullptr;  // [experts][2][moe_intermediate_padded][hidden]
  const bf16* expert_down = nullptr;     // [experts][hidden][moe_intermediate_padded]
  // MoE layers with FP4 experts (config.expert_format != Bf16; then expert_gate_up / expert_down are null):
  // gate, up [experts][moe_intermediate_padded, hidden] and down [experts][hidden, moe_intermediate_padded] in the
  // kernel tile layout, NVFP4 global scales [experts] each (fp4_experts.h).
  kernels::Fp4ExpertMatrices fp4_gate, fp4_up, fp4_down;
  // gpt-oss (null otherwise): attention sinks [heads], router bias [experts], expert biases [experts][2][Ip] (gate,
  // then up) and [experts][hidden_padded].
  const float* sinks = nullptr;
  const float* router_bias = nullptr;
  const float* expert_gate_up_bias = nullptr;
  const float* expert_down_bias = nullptr;
  // FP8 copies for the decode / verify products (config.fp8; codes null otherwise): qkv, o, and the dense MLP's gate,
  // up (the two halves of gate_up) and down. The bf16 matrices above then hold the FP8 values rounded to bf16, for
  // prefill's GEMMs (fp8_weights.h).
  kernels::Fp8Matrix qkv_fp8, o_fp8, gate_fp8, up_fp8, down_fp8;
};

struct GpuWeights {
  const bf16* embed = nullptr;        // [vocab, hidden]
  const bf16* lm_head = nullptr;      // [vocab, hidden]; == embed when tied
  const float* final_norm = nullptr;  // [hidden]
  kernels::Fp8Matrix lm_head_fp8;     // config.fp8.lm_head (lm_head itself stays unrounded: it may be the embedding)
  std::vector<GpuLayerWeights> layers;
  size_t device_bytes = 0;  // everything allocated for the weights
  std::vector<cuda::DeviceBuffer<uint8_t>> storage;
  // A new device allocation owned here (256-byte granules), counted in device_bytes.
  void* allocate(size_t bytes) {
    storage.emplace_back((bytes + 255) / 256 * 256);
    device_bytes += storage.back().bytes();
    return storage.back().data();
  }
};

// Uploads a checkpoint's weights (HF tensor names, the same checks as the CPU model). Prints progress to
// stderr when `progress` is set.
GpuWeights upload_checkpoint_weights(const Checkpoint& checkpoint, const GpuModelConfig& config, bool progress);

// Random weights on the device: matrices uniform with standard deviation 0.02 (the usual initializer_range),
// norms 1, biases 0. Deterministic in `seed`.
GpuWeights random_device_weights(const GpuModelConfig& config, uint64_t seed);

// Element offsets inside the stacked expert tensors.
inline int64_t expert_gate_up_stride(const GpuModelConfig& c) {
  return int64_t{2} * c.moe_intermediate_padded * c.hidden_padded;
}
inline int64_t expert_down_stride(const GpuModelConfig& c) {
  return int64_t{c.hidden_padded} * c.moe_intermediate_padded;
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
