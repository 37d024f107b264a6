// The benchmark of kernels/fp4_moe (in the spirit of kernels/bench): achieved bandwidth of the FP4 expert kernels
// against the same run's streaming-read ceiling, with the BF16 expert path (expert_gated_gemv_bf16 +
// expert_gemv_bf16 + moe_combine) measured beside them on the same shapes and routing. Prints markdown rows
//   | kernel | shape | tokens | variant | MB read | us | GB/s | % of stream read |
// "MB read" is what the launch must read: the union of the experts the tokens route to (codes + block scales +
// NVFP4 global scales; bf16 for the BF16 path), plus the router for the whole-layer rows. Weights are random
// (made on the device) and rotate over copies larger than 4x L2, so they come from HBM as in a decode step.
// Run through `tachyon eval --kernel-bench [qwen3|gpt-oss|smollm2|all] [--sweep]` on a GPU host.
#pragma once
#include <string>

namespace tachyon::kernels {

struct Fp4MoeBenchOptions {
  std::string shapes = "all";  // qwen3 (Qwen3-30B-A3B experts), gpt-oss (gpt-oss-20b expert shape), smollm2, all
  bool sweep = false;          // also every k_split of the gate/up kernel
};

// Returns 0, or 1 without a CUDA device.
int run_fp4_moe_bench(const Fp4MoeBenchOptions& options);

}  // namespace tachyon::kernels
