// `tachyon bench --draft DIR`: DFlash speculative decoding on the GPU against plain decoding of the same model,
// both measured in the same run on the fixed prompt set (prompts/*.jsonl): per category the mean acceptance tau
// (tokens committed per target pass, bonus included), the histogram of tokens per round, tokens/s with and
// without the drafter and their ratio, and whether every output is token-identical to plain greedy (it must be
// at T = 0). Also the device time of the round's parts at a fixed KV length: the drafter's context pass + draft
// pass, the verify pass at b, and a plain decode pass, each replayed as a CUDA graph.
#pragma once
#ifdef TACHYON_HAS_CUDA
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpu/gpu_drafter.h"
#include "gpu/gpu_model.h"
#include "tokenizer/tokenizer.h"

namespace tachyon::gpu {

struct SpecBenchOptions {
  std::vector<std::string> prompt_files;  // JSON lines {"id", "category", "chat", "prompt"}
  int max_tokens = 128;                   // per prompt (generation also ends at EOS)
  int limit = 0;                          // prompts per file; 0 = all
  int block_size = 0;                     // 0 = the drafter's
  bool adaptive = false;                  // the cost-aware block-size policy (spec/block_size_policy.h)
  int64_t phase_context = 512;            // KV length at which the round's parts are timed
};

nlohmann::json run_spec_bench(GpuModel& model, GpuDrafter& drafter, const Tokenizer& tokenizer,
                              const SpecBenchOptions& options);
void print_spec_bench(const nlohmann::json& results);

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
