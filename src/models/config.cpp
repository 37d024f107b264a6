#include "models/config.h"

#include "core/error.h"

namespace tachyon {

bool ConfigReader::has(const std::string& field) const {
  return config_.is_object() && config_.contains(field) && !config_[field].is_null();
}

void ConfigReader::fail_field(const std::string& field, const std::string& why) const {
  fail("{}: field {}: {}", source_, field, why);
}

int64_t ConfigReader::get_int(const std::string& field) const {
  if (!has(field)) fail_field(field, "missing");
  const auto& v = config_[field];
  if (v.is_number_integer() || v.is_number_unsigned()) return v.get<int64_t>();
  if (v.is_number_float() && v.get<double>() == static_cast<double>(static_cast<int64_t>(v.get<double>())))
    return static_cast<int64_t>(v.get<double>());
  fail_field(field, "expected an integer, got " + v.dump());
}

int64_t ConfigReader::get_int(const std::string& field, int64_t fallback) const {
  return has(field) ? get_int(field) : fallback;
}

double ConfigReader::get_float(const std::string& field) const {
  if (!has(field)) fail_field(field, "missing");
  const auto& v = config_[field];
  if (!v.is_number()) fail_field(field, "expected a number, got " + v.dump());
  return v.get<double>();
}

double ConfigReader::get_float(const std::string& field, double fallback) const {
  return has(field) ? get_float(field) : fallback;
}

bool ConfigReader::get_bool(const std::string& field, bool fallback) const {
  if (!has(field)) return fallback;
  const auto& v = config_[field];
  if (!v.is_boolean()) fail_field(field, "expected true or false, got " + v.dump());
  return v.get<bool>();
}

std::string ConfigReader::get_string(const std::string& field, const std::string& fallback) const {
  if (!has(field)) return fallback;
  const auto& v = config_[field];
  if (!v.is_string()) fail_field(field, "expected a string, got " + v.dump());
  return v.get<std::string>();
}

int64_t ConfigReader::get_dim(const std::string& field, int64_t lo, int64_t hi) const {
  int64_t v = get_int(field);
  if (v < lo || v > hi) fail_field(field, fmt::format("value {} outside the supported range [{}, {}]", v, lo, hi));
  return v;
}

int64_t ConfigReader::get_dim(const std::string& field, int64_t lo, int64_t hi, int64_t fallback) const {
  return has(field) ? get_dim(field, lo, hi) : fallback;
}

RopeConfig read_rope_config(const ConfigReader& reader, int rotary_dim, double default_theta) {
  RopeConfig rope;
  rope.rotary_dim = rotary_dim;
  rope.interleaved = reader.get_bool("tachyon_rope_interleaved", false);
  // transformers 5 writes rope_parameters (with rope_theta inside); older configs rope_theta at the
  // top level and an optional rope_scaling object.
  const nlohmann::json* params = nullptr;
  std::string params_field;
  for (const char* name : {"rope_parameters", "rope_scaling"}) {
    if (reader.has(name)) {
      params = &reader.raw()[name];
      params_field = name;
      break;
    }
  }
  rope.theta = reader.get_float("rope_theta", default_theta);
  if (params == nullptr) return rope;
  if (!params->is_object()) reader.fail_field(params_field, "expected an object");
  ConfigReader p(*params, reader.source() + " " + params_field);
  // transformers 5 also allows one parameter set per layer type (Gemma 3 style); none of the
  // supported architectures uses that, so it is refused rather than half read.
  for (const char* layer_type : {"full_attention", "sliding_attention"})
    if (p.has(layer_type)) reader.fail_field(params_field + "." + layer_type, "per-layer-type RoPE parameters are not supported");
  rope.theta = p.get_float("rope_theta", rope.theta);
  // As transformers' standardize_rope_params: a top-level original_max_position_embeddings wins,
  // then the one in the RoPE parameters, then max_position_embeddings.
  auto original_max_position = [&] {
    if (reader.has("original_max_position_embeddings")) return reader.get_int("original_max_position_embeddings");
    return p.get_int("original_max_position_embeddings", reader.get_int("max_position_embeddings", 0));
  };
  std::string type = p.get_string("rope_type", p.get_string("type", "default"));
  if (type == "default") {
    rope.type = RopeType::Default;
  } else if (type == "linear") {
    rope.type = RopeType::Linear;
    rope.factor = p.get_float("factor");
  } else if (type == "llama3") {
    rope.type = RopeType::Llama3;
    rope.factor = p.get_float("factor");
    rope.low_freq_factor = p.get_float("low_freq_factor");
    rope.high_freq_factor = p.get_float("high_freq_factor");
    rope.original_max_position = original_max_position();
    if (rope.high_freq_factor <= rope.low_freq_factor)
      reader.fail_field(params_field + ".high_freq_factor", "must be greater than low_freq_factor");
  } else if (type == "yarn") {
    rope.type = RopeType::Yarn;
    rope.original_max_position = original_max_position();
    if (rope.original_max_position <= 0)
      reader.fail_field(params_field + ".original_max_position_embeddings", "missing or not positive");
    // Without an explicit factor transformers derives it from the two context lengths.
    rope.factor = p.has("factor") ? p.get_float("factor")
                                  : static_cast<double>(reader.get_int("max_position_embeddings")) /
                                        static_cast<double>(rope.original_max_position);
    // transformers reads these with `or`, so 0 means the default too.
    rope.beta_fast = p.get_float("beta_fast", 0.0);
    rope.beta_slow = p.get_float("beta_slow", 0.0);
    if (rope.beta_fast == 0) rope.beta_fast = 32.0;
    if (rope.beta_slow == 0) rope.beta_slow = 1.0;
    rope.mscale = p.get_float("mscale", 0.0);
    rope.mscale_all_dim = p.get_float("mscale_all_dim", 0.0);
    rope.attention_factor = p.get_float("attention_factor", 0.0);
    rope.truncate = p.get_bool("truncate", true);
  } else {
    reader.fail_field(params_field + ".rope_type",
                      "RoPE type '" + type + "' is not supported (default, linear, llama3, yarn are)");
  }
  if (rope.factor <= 0) reader.fail_field(params_field + ".factor", "must be positive");
  return rope;
}

std::vector<int> read_layer_sliding_windows(const ConfigReader& reader, int num_layers) {
  std::vector<int> windows(num_layers, 0);
  if (!reader.has("layer_types")) return windows;
  const auto& types = reader.raw()["layer_types"];
  if (!types.is_array() || types.size() != static_cast<size_t>(num_layers))
    reader.fail_field("layer_types", fmt::format("expected a list of {} layer types", num_layers));
  for (int i = 0; i < num_layers; ++i) {
    const std::string type = types[i].is_string() ? types[i].get<std::string>() : types[i].dump();
    if (type == "sliding_attention")
      windows[i] = static_cast<int>(reader.get_dim("sliding_window", 1, 1 << 30));
    else if (type != "full_attention")
      reader.fail_field("layer_types",
                        fmt::format("layer {} has type {} (sliding_attention and full_attention are supported)", i, type));
  }
  return windows;
}

}  // namespace tachyon
