// `tachyon quantize`: which weights of a checkpoint become FP4, and writing the result as a Hugging Face
// directory (config.json, model.safetensors in a standard FP4 layout, tokenizer files), plus the same
// quantization applied in memory for `tachyon eval` (dequantize(quantize(w)), exactly what a loader presents
// for the written checkpoint).
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fp4/fp4_blocks.h"
#include "fp4/fp4_checkpoint.h"
#include "fp4/fp4_layouts.h"

namespace tachyon::fp4 {

// Routed experts (what MoE layers select from), dense MLPs (including shared experts), the attention projections,
// the output head, and everything else (routers, embeddings, norms: never quantized here).
enum class WeightRole { RoutedExpert, DenseMlp, Attention, LmHead, Other };
// By HF tensor name: *.experts.<e>.{gate,up,down}_proj.weight and *.experts.<e>.w{1,2,3}.weight are routed
// experts; *.mlp.{gate,up,down}_proj.weight and shared_expert(s).*_proj.weight are dense MLPs;
// *.self_attn.{q,k,v,o}_proj.weight are attention; lm_head.weight is the head.
WeightRole weight_role(const std::string& name);
std::string_view role_name(WeightRole role);  // "expert", "mlp", "attn", "head", "other"

struct QuantizeOptions {
  std::optional<Fp4Format> experts;  // routed experts
  std::optional<Fp4Format> mlp;      // dense MLPs and shared experts
  Mxfp4ScaleRule mxfp4_rule = Mxfp4ScaleRule::RoundUp;
  // NVFP4 is written in this layout; MXFP4 always as compressed-tensors (and then NVFP4 too, one layout per file).
  Fp4Layout nvfp4_layout = Fp4Layout::ModelOpt;
  // NVFP4: gate and up of one MLP share one global scale (the larger), as vLLM's fused loaders expect.
  bool share_gate_up_scale = true;
  // Block-scaled FP8 (fp8_blocks.h) instead: attention projections, dense MLPs. Written as "X.weight" F8_E4M3 +
  // "X.weight_scale_inv" F32 with quant_method "fp8" (DeepSeek-V3 / Qwen3-FP8); not in one file with FP4.
  bool attention_fp8 = false, mlp_fp8 = false;
  // The lm_head too (in memory only, what the GPU's `--fp8 lm_head` computes with; a tied lm_head becomes an FP8 copy
  // of the embedding, which stays as it is).
  bool lm_head_fp8 = false;

  std::optional<Fp4Format> format_for(WeightRole role) const;
  bool fp8_for(WeightRole role) const;
  Fp4Layout layout() const;  // the one layout of a written checkpoint
  std::string describe() const;  // "experts=nvfp4 mlp=none (modelopt)"
};

// What happened to one quantized tensor.
struct TensorRecord {
  std::string name;  // "model.layers.0.mlp.gate_proj.weight"
  WeightRole role = WeightRole::Other;
  Fp4Format format = Fp4Format::Nvfp4;  // unless fp8
  bool fp8 = false;                      // block-scaled FP8 (fp8_blocks.h)
  int64_t rows = 0, cols = 0;
  QuantizationError error;

  std::string_view format_label() const { return fp8 ? "fp8" : format_name(format); }
};

// Called after each tensor: (done, total, name).
using Progress = std::function<void(size_t done, size_t total, const std::string& name)>;

// The names of `weights` that `options` quantizes, in name order; errors for selected tensors that are not 2-D
// or whose rows are not whole blocks.
std::vector<std::string> select_tensors(const WeightStore& weights, const QuantizeOptions& options);

// The global scale of every selected NVFP4 tensor (shared by gate/up pairs when options say so).
std::map<std::string, float> nvfp4_global_scales(const WeightStore& weights, const std::vector<std::string>& selected,
                                                 const QuantizeOptions& options);

// `base` with the selected weights replaced by float32 dequantize(quantize(w)).
std::unique_ptr<DerivedCheckpoint> quantize_in_memory(std::shared_ptr<const Checkpoint> base,
                                                      const QuantizeOptions& options, std::vector<TensorRecord>* records,
                                                      const Progress& progress = {});

struct WriteOptions {
  DType other_dtype = DType::BF16;  // tensors not quantized (F32, BF16 or F16); 1-D tensors are always F32
  bool keep_source_float_dtype = true;  // F32/BF16/F16 sources keep their dtype instead
};

// Writes `source` as an HF directory `out_dir` (created; must not contain a model already).
std::vector<TensorRecord> write_quantized_checkpoint(const Checkpoint& source, const std::string& out_dir,
                                                     const QuantizeOptions& options, const WriteOptions& write,
                                                     const Progress& progress = {});

// Summary lines of records by role and format: count, mean / max relative error.
std::string summarize_records(const std::vector<TensorRecord>& records);
nlohmann::json records_json(const std::vector<TensorRecord>& records);

}  // namespace tachyon::fp4
