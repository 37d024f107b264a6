#include "fp4/fp4_layouts.h"

#include <cmath>
#include <cstring>

#include "core/error.h"

namespace tachyon::fp4 {

using nlohmann::json;

std::string_view layout_name(Fp4Layout layout) {
  return layout == Fp4Layout::ModelOpt ? "modelopt" : "compressed-tensors";
}

bool parse_layout(std::string_view name, Fp4Layout* out) {
  if (name == "modelopt") *out = Fp4Layout::ModelOpt;
  else if (name == "compressed-tensors") *out = Fp4Layout::CompressedTensors;
  else return false;
  return true;
}

namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

float scalar_of(const TensorView& t) {
  if (t.numel() != 1) fail("{}: tensor {} has shape {}, expected one value", t.file, t.name, t.shape_string());
  if (!dtype_info(t.dtype).is_float_convertible || t.dtype == DType::Q8_0 || t.dtype == DType::Q4_0 || t.dtype == DType::Q4_1)
    fail("{}: tensor {} has dtype {}, expected a float scalar", t.file, t.name, dtype_name(t.dtype));
  const float value = t.to_float()[0];
  if (!(value > 0.0f) || !std::isfinite(value))
    fail("{}: tensor {} is {}, expected a positive finite scale", t.file, t.name, value);
  return value;
}

// Checks packed [N, K/2] against scales [N, K/block] and fills the view (global scale left at 1).
Fp4MatrixView matrix_view(const TensorView& packed, const TensorView& scales, Fp4Format format) {
  if (packed.dtype != DType::U8)
    fail("{}: tensor {} has dtype {}, packed FP4 needs U8", packed.file, packed.name, dtype_name(packed.dtype));
  if (packed.shape.size() != 2)
    fail("{}: tensor {} has shape {}, expected [out, in / 2]", packed.file, packed.name, packed.shape_string());
  const int64_t rows = packed.shape[0], cols = packed.shape[1] * 2, block = block_size(format);
  if (cols % block != 0)
    fail("{}: tensor {} holds rows of {} values, not whole {} blocks of {}", packed.file, packed.name, cols,
         format_name(format), block);
  if (scales.shape != std::vector<int64_t>{rows, cols / block})
    fail("{}: tensor {} has shape {}, {} of {} implies [{}, {}]", scales.file, scales.name, scales.shape_string(),
         format_name(format), packed.shape_string(), rows, cols / block);
  Fp4MatrixView view;
  view.format = format;
  view.rows = rows;
  view.cols = cols;
  view.packed = packed.data;
  view.scales = scales.data;
  return view;
}

Fp4Format scale_format(const TensorView& scales) {
  if (scales.dtype == DType::F8_E4M3) return Fp4Format::Nvfp4;
  if (scales.dtype == DType::U8 || scales.dtype == DType::F8_E8M0) return Fp4Format::Mxfp4;
  fail("{}: tensor {} has dtype {}; FP4 block scales are F8_E4M3 (NVFP4) or U8 / F8_E8M0 (MXFP4)", scales.file,
       scales.name, dtype_name(scales.dtype));
}

std::vector<uint8_t> float_bytes(float value) {
  std::vector<uint8_t> bytes(4);
  std::memcpy(bytes.data(), &value, 4);
  return bytes;
}

}  // namespace

std::vector<Fp4Linear> find_fp4_linears(const WeightStore& store) {
  std::vector<Fp4Linear> found;
  for (const auto& [name, tensor] : store.all()) {
    Fp4Linear linear;
    const TensorView* scales = nullptr;
    if (ends_with(name, ".weight_packed")) {
      linear.base = name.substr(0, name.size() - std::strlen(".weight_packed"));
      linear.layout = Fp4Layout::CompressedTensors;
      scales = store.find(linear.base + ".weight_scale");
      if (scales == nullptr) fail("{}: tensor {} has no {}.weight_scale beside it", tensor.file, name, linear.base);
    } else if (ends_with(name, ".weight") && tensor.dtype == DType::U8) {
      linear.base = name.substr(0, name.size() - std::strlen(".weight"));
      linear.layout = Fp4Layout::ModelOpt;
      scales = store.find(linear.base + ".weight_scale");
      if (scales == nullptr) continue;  // a U8 weight without block scales is not FP4
    } else {
      continue;
    }
    const Fp4Format format = scale_format(*scales);
    linear.matrix = matrix_view(tensor, *scales, format);
    linear.stored_names = {name, scales->name};
    if (format == Fp4Format::Nvfp4) {
      const std::string global_name =
          linear.base + (linear.layout == Fp4Layout::ModelOpt ? ".weight_scale_2" : ".weight_global_scale");
      const TensorView* global = store.find(global_name);
      if (global == nullptr) fail("{}: tensor {} (NVFP4) has no {} beside it", tensor.file, name, global_name);
      const float value = scalar_of(*global);
      // compressed-tensors stores the inverse of the scale that multiplies the block scales.
      linear.matrix.global_scale = linear.layout == Fp4Layout::ModelOpt ? value : 1.0f / value;
      linear.stored_names.push_back(global_name);
    }
    // Activation scales of W4A4 checkpoints belong to the linear too; weight-only use ignores them.
    if (const TensorView* input_scale = store.find(linear.base + ".input_scale")) linear.stored_names.push_back(input_scale->name);
    if (const TensorView* input_global = store.find(linear.base + ".input_global_scale"))
      linear.stored_names.push_back(input_global->name);
    found.push_back(std::move(linear));
  }
  return found;
}

std::vector<StoredTensor> layout_tensor_shapes(Fp4Layout layout, Fp4Format format, const std::string& base,
                                               int64_t rows, int64_t cols) {
  if (layout == Fp4Layout::ModelOpt && format == Fp4Format::Mxfp4)
    fail("{}: MXFP4 cannot be written in the ModelOpt layout (it has no weight-only MXFP4 format); use "
         "compressed-tensors",
         base);
  const int64_t blocks = cols / block_size(format);
  const bool modelopt = layout == Fp4Layout::ModelOpt;
  std::vector<StoredTensor> tensors;
  tensors.push_back({base + (modelopt ? ".weight" : ".weight_packed"), DType::U8, {rows, cols / 2}, {}});
  tensors.push_back({base + ".weight_scale", format == Fp4Format::Nvfp4 ? DType::F8_E4M3 : DType::U8, {rows, blocks}, {}});
  if (format == Fp4Format::Nvfp4) {
    if (modelopt) tensors.push_back({base + ".weight_scale_2", DType::F32, {}, {}});
    else tensors.push_back({base + ".weight_global_scale", DType::F32, {1}, {}});
  }
  return tensors;
}

std::vector<StoredTensor> layout_tensors(Fp4Layout layout, const std::string& base, const Fp4Matrix& matrix) {
  std::vector<StoredTensor> tensors = layout_tensor_shapes(layout, matrix.format, base, matrix.rows, matrix.cols);
  tensors[0].bytes = matrix.packed;
  tensors[1].bytes = matrix.scales;
  if (matrix.format == Fp4Format::Nvfp4)
    tensors[2].bytes = float_bytes(layout == Fp4Layout::ModelOpt ? matrix.global_scale : 1.0f / matrix.global_scale);
  return tensors;
}

Fp4MatrixView gpt_oss_expert_matrix(const TensorView& blocks, const TensorView& scales, int64_t expert) {
  if (blocks.dtype != DType::U8 || scales.dtype != DType::U8)
    fail("{}: tensors {} / {} must be U8 (gpt-oss MXFP4)", blocks.file, blocks.name, scales.name);
  if (blocks.shape.size() != 4 || blocks.shape[3] != kMxfp4Block / 2)
    fail("{}: tensor {} has shape {}, expected [experts, rows, cols / 32, 16]", blocks.file, blocks.name,
         blocks.shape_string());
  const int64_t experts = blocks.shape[0], rows = blocks.shape[1], groups = blocks.shape[2];
  if (scales.shape != std::vector<int64_t>{experts, rows, groups})
    fail("{}: tensor {} has shape {}, blocks {} imply [{}, {}, {}]", scales.file, scales.name, scales.shape_string(),
         blocks.shape_string(), experts, rows, groups);
  if (expert < 0 || expert >= experts) fail("{}: expert {} outside [0, {})", blocks.name, expert, experts);
  Fp4MatrixView view;
  view.format = Fp4Format::Mxfp4;
  view.rows = rows;
  view.cols = groups * kMxfp4Block;
  view.packed = blocks.data + expert * rows * groups * (kMxfp4Block / 2);
  view.scales = scales.data + expert * rows * groups;
  return view;
}

std::string wildcard_pattern(const std::string& module_name) {
  std::string out;
  size_t start = 0;
  while (start <= module_name.size()) {
    size_t dot = module_name.find('.', start);
    if (dot == std::string::npos) dot = module_name.size();
    const std::string part = module_name.substr(start, dot - start);
    const bool number = !part.empty() && part.find_first_not_of("0123456789") == std::string::npos;
    if (!out.empty()) out += '.';
    out += number ? "*" : part;
    start = dot + 1;
  }
  return out;
}

namespace {
std::string regex_of(const std::string& pattern) {
  std::string regex = "re:^";
  for (char c : pattern) {
    if (c == '*') regex += "\\d+";
    else if (c == '.') regex += "\\.";
    else regex += c;
  }
  return regex + "$";
}
}  // namespace

json quantization_config(Fp4Layout layout, const std::vector<QuantizedGroup>& groups,
                         const std::vector<std::string>& excluded_patterns) {
  if (layout == Fp4Layout::ModelOpt) {
    for (const QuantizedGroup& group : groups)
      if (group.format != Fp4Format::Nvfp4) fail("the ModelOpt layout holds NVFP4 only, not {}", format_name(group.format));
    return {{"quant_method", "modelopt"},
            {"quant_algo", "NVFP4"},
            {"group_size", kNvfp4Block},
            {"kv_cache_quant_algo", nullptr},
            {"exclude_modules", excluded_patterns},
            {"producer", {{"name", "tachyon"}}}};
  }
  auto compression_of = [](Fp4Format format) {
    return std::string(format == Fp4Format::Nvfp4 ? "nvfp4-pack-quantized" : "mxfp4-pack-quantized");
  };
  json config_groups = json::object();
  std::string top_format;
  for (size_t g = 0; g < groups.size(); ++g) {
    const bool nv = groups[g].format == Fp4Format::Nvfp4;
    json targets = json::array();
    for (const std::string& p : groups[g].patterns) targets.push_back(regex_of(p));
    json weights = {{"num_bits", 4},    {"type", "float"},  {"symmetric", true},
                    {"dynamic", false}, {"group_size", block_size(groups[g].format)},
                    {"strategy", nv ? "tensor_group" : "group"}, {"observer", "minmax"}, {"actorder", nullptr}};
    if (!nv) weights["scale_dtype"] = "torch.uint8";
    const std::string compression = compression_of(groups[g].format);
    config_groups[fmt::format("group_{}", g)] = {{"targets", targets},
                                                 {"weights", weights},
                                                 {"input_activations", nullptr},
                                                 {"output_activations", nullptr},
                                                 {"format", compression}};
    top_format = top_format.empty() || top_format == compression ? compression : "mixed-precision";
  }
  json ignore = json::array();
  for (const std::string& p : excluded_patterns) ignore.push_back(regex_of(p));
  return {{"quant_method", "compressed-tensors"},
          {"format", top_format},
          {"quantization_status", "compressed"},
          {"config_groups", config_groups},
          {"ignore", ignore},
          {"producer", {{"name", "tachyon"}}}};
}

json modelopt_hf_quant_config(Fp4Format format, const std::vector<std::string>& excluded_patterns) {
  (void)format;
  return {{"producer", {{"name", "tachyon"}}},
          {"quantization",
           {{"quant_algo", "NVFP4"}, {"group_size", kNvfp4Block}, {"kv_cache_quant_algo", nullptr},
            {"exclude_modules", excluded_patterns}}}};
}

}  // namespace tachyon::fp4
