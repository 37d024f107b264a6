#include "fp4/quantize_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "core/error.h"
#include "fp4/fp4_codec.h"
#include "fp4/fp8_blocks.h"
#include "fp4/hf_export.h"
#include "fp4/safetensors_writer.h"

namespace tachyon::fp4 {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::vector<std::string> split_dots(const std::string& name) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', start)) {
    parts.push_back(name.substr(start, dot - start));
    start = dot + 1;
  }
  parts.push_back(name.substr(start));
  return parts;
}

bool is_number(const std::string& s) { return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos; }

// "X.gate_proj.weight" <-> "X.up_proj.weight", "X.w1.weight" <-> "X.w3.weight"; "" when it has no partner.
std::string gate_up_partner(const std::string& name) {
  const std::pair<const char*, const char*> pairs[] = {
      {".gate_proj.weight", ".up_proj.weight"}, {".up_proj.weight", ".gate_proj.weight"},
      {".w1.weight", ".w3.weight"},             {".w3.weight", ".w1.weight"}};
  for (const auto& [suffix, other] : pairs)
    if (name.ends_with(suffix)) return name.substr(0, name.size() - std::string_view(suffix).size()) + other;
  return "";
}

std::string module_of(const std::string& weight_name) { return weight_name.substr(0, weight_name.size() - 7); }

}  // namespace

WeightRole weight_role(const std::string& name) {
  if (name == "lm_head.weight") return WeightRole::LmHead;
  if (!name.ends_with(".weight")) return WeightRole::Other;
  const std::vector<std::string> parts = split_dots(name);
  if (parts.size() < 3) return WeightRole::Other;
  const std::string& leaf = parts[parts.size() - 2];
  const std::string& parent = parts[parts.size() - 3];
  const bool projection = leaf == "gate_proj" || leaf == "up_proj" || leaf == "down_proj";
  const bool mixtral = leaf == "w1" || leaf == "w2" || leaf == "w3";
  if ((projection || mixtral) && is_number(parent) && parts.size() >= 4 && parts[parts.size() - 4] == "experts")
    return WeightRole::RoutedExpert;
  if (projection && (parent == "mlp" || parent == "shared_expert" || parent == "shared_experts" || parent == "shared_mlp"))
    return WeightRole::DenseMlp;
  if ((leaf == "q_proj" || leaf == "k_proj" || leaf == "v_proj" || leaf == "o_proj") && parent == "self_attn")
    return WeightRole::Attention;
  return WeightRole::Other;
}

std::string_view role_name(WeightRole role) {
  switch (role) {
    case WeightRole::RoutedExpert: return "expert";
    case WeightRole::DenseMlp: return "mlp";
    case WeightRole::Attention: return "attn";
    case WeightRole::LmHead: return "head";
    case WeightRole::Other: return "other";
  }
  return "?";
}

std::optional<Fp4Format> QuantizeOptions::format_for(WeightRole role) const {
  if (role == WeightRole::RoutedExpert) return experts;
  if (role == WeightRole::DenseMlp) return mlp;
  return std::nullopt;
}

bool QuantizeOptions::fp8_for(WeightRole role) const {
  return (role == WeightRole::Attention && attention_fp8) || (role == WeightRole::DenseMlp && mlp_fp8) ||
         (role == WeightRole::LmHead && lm_head_fp8);
}

Fp4Layout QuantizeOptions::layout() const {
  if (experts == Fp4Format::Mxfp4 || mlp == Fp4Format::Mxfp4) return Fp4Layout::CompressedTensors;
  return nvfp4_layout;
}

std::string QuantizeOptions::describe() const {
  auto name = [](const std::optional<Fp4Format>& f) { return f ? std::string(format_name(*f)) : std::string("none"); };
  std::string text = fmt::format("experts={} mlp={}", name(experts), mlp_fp8 ? std::string("fp8") : name(mlp));
  if (attention_fp8) text += " attention=fp8";
  if (lm_head_fp8) text += " lm_head=fp8";
  if (experts == Fp4Format::Mxfp4 || mlp == Fp4Format::Mxfp4) text += fmt::format(" mxfp4-scale={}", scale_rule_name(mxfp4_rule));
  return text;
}

std::vector<std::string> select_tensors(const WeightStore& weights, const QuantizeOptions& options) {
  std::vector<std::string> selected;
  for (const auto& [name, tensor] : weights.all()) {
    const std::optional<Fp4Format> format = options.format_for(weight_role(name));
    if (options.fp8_for(weight_role(name))) {
      if (tensor.shape.size() != 2)
        fail("{}: tensor {} has shape {}; FP8 quantizes 2-D [out, in] weights", tensor.file, name, tensor.shape_string());
      selected.push_back(name);
      continue;
    }
    if (!format) continue;
    if (tensor.shape.size() != 2)
      fail("{}: tensor {} has shape {}; FP4 quantizes 2-D [out, in] weights", tensor.file, name, tensor.shape_string());
    if (tensor.shape[1] % block_size(*format) != 0)
      fail("{}: tensor {} has rows of {} values, not whole {} blocks of {}", tensor.file, name, tensor.shape[1],
           format_name(*format), block_size(*format));
    selected.push_back(name);
  }
  return selected;
}

std::map<std::string, float> nvfp4_global_scales(const WeightStore& weights, const std::vector<std::string>& selected,
                                                 const QuantizeOptions& options) {
  const std::set<std::string> chosen(selected.begin(), selected.end());
  std::map<std::string, float> amax;
  for (const std::string& name : selected) {
    if (options.format_for(weight_role(name)) != Fp4Format::Nvfp4) continue;
    const std::vector<float> values = weights.get(name).to_float();
    amax[name] = max_magnitude(values.data(), static_cast<int64_t>(values.size()), name);
  }
  const bool compressed_tensors = options.layout() == Fp4Layout::CompressedTensors;
  std::map<std::string, float> scales;
  for (const auto& [name, own] : amax) {
    float a = own;
    const std::string partner = gate_up_partner(name);
    if (options.share_gate_up_scale && !partner.empty() && amax.count(partner)) a = std::max(a, amax.at(partner));
    // compressed-tensors stores 1 / scale: derive the scale from the stored float so that readers get it exactly.
    scales[name] = compressed_tensors && a > 0.0f ? 1.0f / (kE2M1Max * kE4M3Max / a) : nvfp4_global_scale(a);
  }
  return scales;
}

namespace {

// The record of a matrix quantized to block-scaled FP8 (its format field is not used for FP8).
TensorRecord fp8_record(const std::string& name, WeightRole role, const float* values, const float* dequantized,
                        int64_t rows, int64_t cols) {
  return {name, role, Fp4Format::Nvfp4, true, rows, cols, quantization_error(values, dequantized, rows * cols)};
}

}  // namespace

std::unique_ptr<DerivedCheckpoint> quantize_in_memory(std::shared_ptr<const Checkpoint> base,
                                                      const QuantizeOptions& options, std::vector<TensorRecord>* records,
                                                      const Progress& progress) {
  const std::vector<std::string> selected = select_tensors(base->weights, options);
  const std::map<std::string, float> global_scales = nvfp4_global_scales(base->weights, selected, options);
  const std::set<std::string> chosen(selected.begin(), selected.end());
  auto derived = std::make_unique<DerivedCheckpoint>(base);
  size_t done = 0;
  for (const auto& [name, tensor] : base->weights.all()) {
    if (!chosen.count(name)) {
      derived->add_view(tensor);
      continue;
    }
    const WeightRole role = weight_role(name);
    const std::vector<float> values = tensor.to_float();
    const int64_t rows = tensor.shape[0], cols = tensor.shape[1];
    float* dequantized = derived->add_float(name, {rows, cols});
    // Errors from the values the candidate model will read (no second dequantization).
    if (options.fp8_for(role)) {
      quantize_fp8_block(values.data(), rows, cols, name).to_float(dequantized);
      if (records) records->push_back(fp8_record(name, role, values.data(), dequantized, rows, cols));
    } else {
      const Fp4Format format = *options.format_for(role);
      const auto scale = global_scales.find(name);
      quantize(format, values.data(), rows, cols, options.mxfp4_rule,
               scale == global_scales.end() ? 0.0f : scale->second, name)
          .view()
          .to_float(dequantized);
      if (records)
        records->push_back({name, role, format, false, rows, cols,
                            quantization_error(values.data(), dequantized, rows * cols)});
    }
    if (progress) progress(++done, selected.size(), name);
  }
  // A tied head (no lm_head.weight): an FP8 copy of the embedding becomes the head, the embedding itself unchanged.
  const TensorView* embedding = base->weights.find("model.embed_tokens.weight");
  if (options.lm_head_fp8 && !base->weights.has("lm_head.weight") && embedding && embedding->shape.size() == 2) {
    const std::vector<float> values = embedding->to_float();
    const int64_t rows = embedding->shape[0], cols = embedding->shape[1];
    float* head = derived->add_float("lm_head.weight", {rows, cols});
    quantize_fp8_block(values.data(), rows, cols, "lm_head.weight (tied)").to_float(head);
    derived->checkpoint().config["tie_word_embeddings"] = false;
    if (records) records->push_back(fp8_record("lm_head.weight", WeightRole::LmHead, values.data(), head, rows, cols));
  }
  return derived;
}

namespace {

// Where the bytes of one planned output tensor come from.
struct Source {
  std::string name;   // source tensor
  int piece = -1;     // -1: written as a float dtype; else index into the FP4 layout's tensors
};

bool is_float_dtype(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

std::string torch_dtype_name(DType t) {
  return t == DType::F32 ? "float32" : t == DType::F16 ? "float16" : "bfloat16";
}

void write_json(const fs::path& path, const json& value) {
  std::ofstream out(path);
  if (!out) fail("{}: cannot open for writing", path.string());
  out << value.dump(2) << "\n";
  if (!out) fail("{}: write failed", path.string());
}

}  // namespace

std::vector<TensorRecord> write_quantized_checkpoint(const Checkpoint& source, const std::string& out_dir,
                                                     const QuantizeOptions& options, const WriteOptions& write,
                                                     const Progress& progress) {
  if (!is_float_dtype(write.other_dtype)) fail("quantize: --dtype must be f32, bf16 or f16");
  const bool fp8 = options.attention_fp8 || options.mlp_fp8;
  if (options.lm_head_fp8) fail("quantize: an FP8 lm_head is evaluated in memory only (`tachyon eval`), not written");
  if (fp8 && (options.experts || options.mlp))
    fail("quantize: one checkpoint holds one quantization method: FP8 (attention / mlp) or FP4 (experts / mlp), "
         "not both ({})", options.describe());
  const HfExport plan = plan_hf_export(source);
  const std::vector<std::string> selected = select_tensors(source.weights, options);
  const std::set<std::string> chosen(selected.begin(), selected.end());
  const std::map<std::string, float> global_scales = nvfp4_global_scales(source.weights, selected, options);
  const Fp4Layout layout = options.layout();

  std::vector<PlannedTensor> planned;
  std::vector<Source> sources;
  std::map<Fp4Format, std::set<std::string>> quantized_patterns;
  std::set<std::string> excluded_patterns = {"lm_head"};
  std::set<std::string> fp8_not_converted = {"lm_head"};  // FP8: HF's modules_to_not_convert (exact module names)
  DType dtype_written = write.other_dtype;
  for (const auto& [name, tensor] : source.weights.all()) {
    if (chosen.count(name) && options.fp8_for(weight_role(name))) {  // codes, then the tiles' scales
      planned.push_back({name, DType::F8_E4M3, tensor.shape});
      sources.push_back({name, 0});
      planned.push_back({module_of(name) + ".weight_scale_inv", DType::F32,
                         {Fp8BlockMatrix::blocks(tensor.shape[0]), Fp8BlockMatrix::blocks(tensor.shape[1])}});
      sources.push_back({name, 1});
      continue;
    }
    if (chosen.count(name)) {
      const Fp4Format format = *options.format_for(weight_role(name));
      const std::vector<StoredTensor> pieces =
          layout_tensor_shapes(layout, format, module_of(name), tensor.shape[0], tensor.shape[1]);
      for (size_t p = 0; p < pieces.size(); ++p) {
        planned.push_back({pieces[p].name, pieces[p].dtype, pieces[p].shape});
        sources.push_back({name, static_cast<int>(p)});
      }
      quantized_patterns[format].insert(wildcard_pattern(module_of(name)));
      continue;
    }
    if (!dtype_info(tensor.dtype).is_float_convertible)
      fail("{}: tensor {} has dtype {}, which cannot be written", tensor.file, name, dtype_name(tensor.dtype));
    DType dtype = write.other_dtype;
    // Vectors (norms, biases) and routers stay float32: they are small and routing is sensitive to rounding.
    const bool router = name.ends_with(".block_sparse_moe.gate.weight") || name.ends_with(".mlp.gate.weight") ||
                        name.find(".router.") != std::string::npos;
    if (tensor.shape.size() <= 1 || router) dtype = DType::F32;
    else if (write.keep_source_float_dtype && is_float_dtype(tensor.dtype)) dtype = tensor.dtype;
    if (tensor.shape.size() == 2 && !router) dtype_written = dtype;
    planned.push_back({name, dtype, tensor.shape});
    sources.push_back({name, -1});
    if (tensor.shape.size() == 2 && name.ends_with(".weight") && name.find("embed_tokens") == std::string::npos &&
        name.find("norm") == std::string::npos) {
      excluded_patterns.insert(wildcard_pattern(module_of(name)));
      fp8_not_converted.insert(module_of(name));
    }
  }

  const fs::path dir(out_dir);
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) fail("{}: cannot create directory: {}", out_dir, error.message());

  // The FP4 or FP8 matrix being written: its pieces are consecutive in the plan.
  std::string current_name;
  Fp4Matrix current;
  Fp8BlockMatrix current_fp8;
  std::vector<TensorRecord> records;
  size_t done = 0;
  // A source tensor's values in the written row order (GGUF llama q/k rows are un-permuted for HF).
  auto values_of = [&](const std::string& name, const TensorView& tensor) {
    auto order = plan.row_order.find(name);
    return read_rows(tensor, order == plan.row_order.end() ? std::vector<int64_t>{} : order->second);
  };
  write_safetensors((dir / "model.safetensors").string(), planned, [&](size_t i, std::vector<uint8_t>& bytes) {
    const Source& from = sources[i];
    const TensorView& tensor = source.weights.get(from.name);
    if (from.piece < 0) {
      const std::vector<float> values = values_of(from.name, tensor);
      encode_floats(values.data(), static_cast<int64_t>(values.size()), planned[i].dtype, bytes);
    } else if (options.fp8_for(weight_role(from.name))) {
      if (current_name != from.name) {
        const std::vector<float> values = values_of(from.name, tensor);
        const int64_t rows = tensor.shape[0], cols = tensor.shape[1];
        current_fp8 = quantize_fp8_block(values.data(), rows, cols, from.name);
        current_name = from.name;
        std::vector<float> dequantized(values.size());
        current_fp8.to_float(dequantized.data());
        records.push_back(fp8_record(from.name, weight_role(from.name), values.data(), dequantized.data(), rows, cols));
      }
      if (from.piece == 0) {
        bytes = current_fp8.codes;
      } else {
        bytes.resize(current_fp8.scales.size() * sizeof(float));
        std::memcpy(bytes.data(), current_fp8.scales.data(), bytes.size());  // little-endian float32, as safetensors
      }
    } else {
      if (current_name != from.name) {
        const WeightRole role = weight_role(from.name);
        const Fp4Format format = *options.format_for(role);
        const std::vector<float> values = values_of(from.name, tensor);
        const auto scale = global_scales.find(from.name);
        current = quantize(format, values.data(), tensor.shape[0], tensor.shape[1], options.mxfp4_rule,
                           scale == global_scales.end() ? 0.0f : scale->second, from.name);
        current_name = from.name;
        records.push_back({from.name, role, format, false, tensor.shape[0], tensor.shape[1],
                           quantization_error(values.data(), current.view())});
      }
      bytes = layout_tensors(layout, module_of(from.name), current)[from.piece].bytes;
    }
    if (progress) progress(++done, planned.size(), planned[i].name);
  });

  json config = plan.config;
  config["torch_dtype"] = torch_dtype_name(dtype_written);
  if (fp8 && !selected.empty()) {  // the DeepSeek-V3 / Qwen3-FP8 description (transformers' FineGrainedFP8Config)
    config["quantization_config"] = {{"quant_method", "fp8"},
                                     {"fmt", "e4m3"},
                                     {"activation_scheme", "dynamic"},
                                     {"weight_block_size", {Fp8BlockMatrix::kBlock, Fp8BlockMatrix::kBlock}},
                                     {"modules_to_not_convert", fp8_not_converted}};
  } else if (!selected.empty()) {
    std::vector<QuantizedGroup> groups;
    for (const auto& [format, patterns] : quantized_patterns) groups.push_back({format, {patterns.begin(), patterns.end()}});
    const std::vector<std::string> excluded(excluded_patterns.begin(), excluded_patterns.end());
    config["quantization_config"] = quantization_config(layout, groups, excluded);
    if (layout == Fp4Layout::ModelOpt) write_json(dir / "hf_quant_config.json", modelopt_hf_quant_config(Fp4Format::Nvfp4, excluded));
  }
  write_json(dir / "config.json", config);
  if (plan.generation_config.is_object() && !plan.generation_config.empty())
    write_json(dir / "generation_config.json", plan.generation_config);
  if (!plan.tokenizer_json.is_null()) write_json(dir / "tokenizer.json", plan.tokenizer_json);
  if (plan.tokenizer_config.is_object() && !plan.tokenizer_config.empty())
    write_json(dir / "tokenizer_config.json", plan.tokenizer_config);
  if (source.format == "safetensors") {
    // Tokenizer side files that an HF directory may carry besides tokenizer.json.
    for (const char* file : {"special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja"}) {
      const fs::path from = fs::path(source.path) / file;
      if (fs::exists(from)) fs::copy_file(from, dir / file, fs::copy_options::overwrite_existing);
    }
  }
  json report = records_json(records);
  report["options"] = options.describe();
  report["source"] = source.path;
  write_json(dir / "quantization_report.json", report);
  return records;
}

std::string summarize_records(const std::vector<TensorRecord>& records) {
  struct Sum {
    int count = 0;
    double mean = 0, max = 0, error2 = 0, norm2 = 0;
  };
  std::map<std::pair<std::string, std::string>, Sum> sums;
  for (const TensorRecord& r : records) {
    Sum& s = sums[{std::string(role_name(r.role)), std::string(r.format_label())}];
    ++s.count;
    s.mean += r.error.relative_l2;
    s.max = std::max(s.max, r.error.relative_l2);
    s.norm2 += r.error.reference_norm * r.error.reference_norm;
    s.error2 += std::pow(r.error.relative_l2 * r.error.reference_norm, 2);
  }
  std::string text;
  for (const auto& [key, s] : sums)
    text += fmt::format("  {:<6} {:<5} {:>5} tensors  relative L2 error: mean {:.4f}, max {:.4f}, pooled {:.4f}\n",
                        key.first, key.second, s.count, s.mean / s.count, s.max,
                        s.norm2 > 0 ? std::sqrt(s.error2 / s.norm2) : 0.0);
  return text;
}

json records_json(const std::vector<TensorRecord>& records) {
  json tensors = json::array();
  for (const TensorRecord& r : records)
    tensors.push_back({{"name", r.name},
                       {"role", role_name(r.role)},
                       {"format", r.format_label()},
                       {"shape", {r.rows, r.cols}},
                       {"relative_l2", r.error.relative_l2},
                       {"max_abs", r.error.max_abs}});
  return {{"tensors", tensors}};
}

}  // namespace tachyon::fp4
