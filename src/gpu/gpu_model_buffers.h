// Internal to gpu_model*.cpp: the prefill activations (sized for one chunk of prefill_chunk tokens).
#pragma once
#ifdef TACHYON_HAS_CUDA
#include <vector>

#include "gpu/gpu_model.h"

namespace tachyon::gpu {

struct GpuModel::PrefillBuffers {
  int chunk = 0;     // tokens per chunk (multiple of 16)
  int moe_rows = 0;  // rows of the expert-sorted buffers: chunk * top_k plus alignment gaps
  cuda::DeviceBuffer<float> x, normed, qkv, attn, delta, gate_up, mlp_h;
  cuda::DeviceBuffer<bf16> activations;  // bf16 GEMM operand [chunk, max(hidden, q_width, intermediate)]
  // MoE: router logits [chunk, E], choices [chunk * k], expert-sorted rows.
  cuda::DeviceBuffer<float> router_logits, topk_weights, expert_gate_up, expert_h, expert_out;
  cuda::DeviceBuffer<int> topk_ids, row_source, assignment_entry;
  cuda::DeviceBuffer<bf16> expert_activations;  // [moe_rows, max(hidden, moe_intermediate)]
  // [tokens | positions | token_sequence | query_start | seq_lens | block table rows], uploaded per chunk.
  cuda::DeviceBuffer<int> ints;
  std::vector<int> ints_host;
  cuda::DeviceBuffer<uint8_t> attention_workspace;
  kernels::CublasLtGemm gemm;
  // Host copies for the MoE grouping.
  std::vector<int> topk_ids_host, row_source_host, assignment_entry_host;
};

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
