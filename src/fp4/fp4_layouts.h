// How checkpoints store FP4 linear weights, for reading and for writing. One linear layer `base`
// ("model.layers.0.mlp.gate_proj") of weight [N, K]:
//
//   ModelOpt NVFP4 (hf_quant_config.json quant_algo NVFP4):
//     base.weight          U8       [N, K/2]
//     base.weight_scale    F8_E4M3  [N, K/16]
//     base.weight_scale_2  F32      []         global scale = amax / (6 * 448)
//   compressed-tensors nvfp4-pack-quantized:
//     base.weight_packed        U8       [N, K/2]
//     base.weight_scale         F8_E4M3  [N, K/16]
//     base.weight_global_scale  F32      [1]   = 1 / global scale (448 * 6 / amax)
//   compressed-tensors mxfp4-pack-quantized:
//     base.weight_packed  U8 [N, K/2]
//     base.weight_scale   U8 [N, K/32]   e8m0 exponent bytes
//   gpt-oss (stacked experts, read natively by models/gpt_oss.cpp):
//     ...experts.gate_up_proj_blocks U8 [E, 2I, H/32, 16], ..._scales U8 [E, 2I, H/32]   (rows interleaved gate/up)
//     ...experts.down_proj_blocks    U8 [E, H, I/32, 16],  ..._scales U8 [E, H, I/32]
// ModelOpt-style names with U8 e8m0 scales and no weight_scale_2 are read as MXFP4 too.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "fp4/fp4_blocks.h"
#include "loader/weights.h"

namespace tachyon::fp4 {

enum class Fp4Layout { ModelOpt, CompressedTensors };
std::string_view layout_name(Fp4Layout layout);  // "modelopt", "compressed-tensors"
bool parse_layout(std::string_view name, Fp4Layout* out);

// A quantized linear weight found in a checkpoint.
struct Fp4Linear {
  std::string base;  // "model.layers.0.mlp.gate_proj": the models read base + ".weight"
  Fp4Layout layout = Fp4Layout::ModelOpt;
  Fp4MatrixView matrix;
  std::vector<std::string> stored_names;  // the tensors it is made of
};

// Every ModelOpt / compressed-tensors FP4 linear weight of the store, in name order. Dtypes and shapes are
// checked against each other; errors name the file and tensor.
std::vector<Fp4Linear> find_fp4_linears(const WeightStore& store);

// A tensor to write: name, dtype, shape and its bytes.
struct StoredTensor {
  std::string name;
  DType dtype = DType::U8;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
// The tensors that store `matrix` as linear `base` in `layout`. MXFP4 in the ModelOpt layout is an Error
// (ModelOpt has no weight-only MXFP4 format; compressed-tensors has one).
std::vector<StoredTensor> layout_tensors(Fp4Layout layout, const std::string& base, const Fp4Matrix& matrix);
// Their names, dtypes and shapes only (for planning a file before the bytes exist).
std::vector<StoredTensor> layout_tensor_shapes(Fp4Layout layout, Fp4Format format, const std::string& base,
                                               int64_t rows, int64_t cols);

// The MXFP4 matrix of expert `expert` in a gpt-oss blocks [E, rows, cols/32, 16] / scales [E, rows, cols/32] pair.
Fp4MatrixView gpt_oss_expert_matrix(const TensorView& blocks, const TensorView& scales, int64_t expert);

// config.json "quantization_config" for a checkpoint whose linears matching each group's patterns are FP4 in
// that group's format and whose other linears (`excluded_patterns`) are not. Patterns use * for a layer or
// expert number ("model.layers.*.mlp.experts.*.gate_proj"); compressed-tensors gets them as "re:" regexes.
// ModelOpt takes NVFP4 groups only.
struct QuantizedGroup {
  Fp4Format format = Fp4Format::Nvfp4;
  std::vector<std::string> patterns;
};
nlohmann::json quantization_config(Fp4Layout layout, const std::vector<QuantizedGroup>& groups,
                                   const std::vector<std::string>& excluded_patterns);
// hf_quant_config.json (ModelOpt's side file).
nlohmann::json modelopt_hf_quant_config(Fp4Format format, const std::vector<std::string>& excluded_patterns);
// "model.layers.12.mlp.experts.3.up_proj" -> "model.layers.*.mlp.experts.*.up_proj".
std::string wildcard_pattern(const std::string& module_name);

}  // namespace tachyon::fp4
