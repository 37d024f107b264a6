// Allocation and filling of the GPU weights. One walk over the model (build_weights) allocates every tensor in
// its padded layout and hands each to a sink: the checkpoint sink converts and uploads (FP4 experts: quantizes
// and packs into tiles on the host), the random sink fills on the device. The walk is the single place that knows
// the HF tensor names and the fused layouts.
#ifdef TACHYON_HAS_CUDA
#include "gpu/gpu_weights.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "fp4/fp4_kernel_layout.h"
#include "fp4/fp4_layouts.h"
#include "fp4/fp8_blocks.h"
#include "fp4_moe/fp4_tiles.h"
#include "gpu/fp4_experts.h"
#include "gpu/fp8_weights.h"
#include "gpu/gpt_oss_experts.h"
#include "model_runtime/model_runtime.h"

namespace tachyon::gpu {

namespace {

// A [rows, cols] HF matrix stored padded: real row r goes to (r / row_group) * row_group_padded + r % row_group,
// columns alike. Groups equal to their padded size mean no padding.
struct MatrixSpec {
  std::string name;
  bf16* dst = nullptr;
  int64_t rows = 0, cols = 0;
  int64_t row_group = 1, row_group_padded = 1;
  int64_t col_group = 1, col_group_padded = 1;
  int64_t padded_rows() const { return rows / row_group * row_group_padded; }
  int64_t padded_cols() const { return cols / col_group * col_group_padded; }
};

enum class VectorKind { Norm, Bias };

// A [length] HF vector (norm weight or bias) stored padded like the matrices' rows, times `scale`.
struct VectorSpec {
  std::string name;
  float* dst = nullptr;
  VectorKind kind = VectorKind::Norm;
  int64_t length = 0, group = 1, group_padded = 1;
  float scale = 1.0f;
  int64_t padded_length() const { return length / group * group_padded; }
};

// A stack of FP4 expert matrices (one per expert) in the kernel tile layout: padded [rows, cols] with the real
// [real_rows, real_cols] HF matrix at the start (fp4_experts.h).
struct Fp4StackSpec {
  std::function<std::string(int)> name;  // HF tensor name of expert e
  kernels::Fp4ExpertMatrices matrices;   // where the tiles and NVFP4 global scales go
  uint8_t* tiles = nullptr;              // == matrices.tiles, writable
  float* global_scales = nullptr;        // == matrices.global_scales, writable (NVFP4), else null
  int experts = 0;
  int64_t real_rows = 0, real_cols = 0;
};

class WeightSink {
 public:
  virtual ~WeightSink() = default;
  virtual void matrix(const MatrixSpec& spec) = 0;
  virtual void vector(const VectorSpec& spec) = 0;
  virtual void fp4_stack(const Fp4StackSpec& spec) = 0;
  // gpt-oss: one layer's stacked experts and their biases (gpt_oss_experts.h: one conversion for both sources).
  virtual void gpt_oss_experts(int layer, const GptOssExpertTargets& targets) = 0;
  virtual void layer_done(int layer, int layers) {}
};

std::string layer_name(int layer, const std::string& suffix) {
  return fmt::format("model.layers.{}.{}", layer, suffix);
}

GpuWeights build_weights(const GpuModelConfig& c, WeightSink& sink) {
  GpuWeights w;
  auto allocate = [&](size_t bytes) { return w.allocate(bytes); };
  auto new_matrix = [&](int64_t rows, int64_t cols) {
    return static_cast<bf16*>(allocate(rows * cols * sizeof(bf16)));
  };
  auto new_vector = [&](int64_t length) { return static_cast<float*>(allocate(length * sizeof(float))); };
  // H: the model's hidden width; Hp: as stored (columns of [*, H] matrices, rows of [H, *] ones, padded).
  const int64_t H = c.hidden, Hp = c.hidden_padded, hd = c.head_dim, hdp = c.head_dim_padded;
  const float hidden_norm_scale = c.hidden_norm_scale();

  bf16* embed = new_matrix(c.vocab, Hp);
  sink.matrix({"model.embed_tokens.weight", embed, c.vocab, H, 1, 1, H, Hp});
  w.embed = embed;
  if (c.tied_embeddings) {
    w.lm_head = embed;
  } else {
    bf16* head = new_matrix(c.vocab, Hp);
    sink.matrix({"lm_head.weight", head, c.vocab, H, 1, 1, H, Hp});
    w.lm_head = head;
  }
  float* final_norm = new_vector(Hp);
  sink.vector({"model.norm.weight", final_norm, VectorKind::Norm, H, H, Hp, hidden_norm_scale});
  w.final_norm = final_norm;

  // Per-head norm weights: the kernel divides by the padded head's RMS, sqrt(hd / hdp) times the real one's.
  const float head_norm_scale = std::sqrt(static_cast<float>(hd) / static_cast<float>(hdp));
  for (int i = 0; i < c.layers; ++i) {
    GpuLayerWeights& L = w.layers.emplace_back();
    float* input_norm = new_vector(Hp);
    sink.vector({layer_name(i, "input_layernorm.weight"), input_norm, VectorKind::Norm, H, H, Hp, hidden_norm_scale});
    float* post_norm = new_vector(Hp);
    sink.vector(
        {layer_name(i, "post_attention_layernorm.weight"), post_norm, VectorKind::Norm, H, H, Hp, hidden_norm_scale});
    L.input_norm = input_norm;
    L.post_attention_norm = post_norm;

    const int64_t q_rows = int64_t{c.heads} * hd, kv_rows = int64_t{c.kv_heads} * hd;
    bf16* qkv = new_matrix(c.qkv_width(), Hp);
    sink.matrix({layer_name(i, "self_attn.q_proj.weight"), qkv, q_rows, H, hd, hdp, H, Hp});
    sink.matrix(
        {layer_name(i, "self_attn.k_proj.weight"), qkv + int64_t{c.q_width()} * Hp, kv_rows, H, hd, hdp, H, Hp});
    sink.matrix({layer_name(i, "self_attn.v_proj.weight"), qkv + int64_t{c.q_width() + c.kv_width()} * Hp, kv_rows, H,
                 hd, hdp, H, Hp});
    L.qkv = qkv;
    if (c.qkv_bias) {
      float* bias = new_vector(c.qkv_width());
      sink.vector({layer_name(i, "self_attn.q_proj.bias"), bias, VectorKind::Bias, q_rows, hd, hdp});
      sink.vector({layer_name(i, "self_attn.k_proj.bias"), bias + c.q_width(), VectorKind::Bias, kv_rows, hd, hdp});
      sink.vector({layer_name(i, "self_attn.v_proj.bias"), bias + c.q_width() + c.kv_width(), VectorKind::Bias, kv_rows,
                   hd, hdp});
      L.qkv_bias = bias;
    }
    bf16* o = new_matrix(Hp, c.q_width());
    sink.matrix({layer_name(i, "self_attn.o_proj.weight"), o, H, q_rows, H, Hp, hd, hdp});
    L.o = o;
    if (c.o_bias) {
      float* bias = new_vector(Hp);
      sink.vector({layer_name(i, "self_attn.o_proj.bias"), bias, VectorKind::Bias, H, H, Hp});
      L.o_bias = bias;
    }
    if (c.attention_sinks) {
      float* sinks = new_vector(c.heads);
      sink.vector({layer_name(i, "self_attn.sinks"), sinks, VectorKind::Bias, c.heads, c.heads, c.heads});
      L.sinks = sinks;
    }
    if (c.qk_norm) {
      float* q_norm = new_vector(hdp);
      float* k_norm = new_vector(hdp);
      sink.vector({layer_name(i, "self_attn.q_norm.weight"), q_norm, VectorKind::Norm, hd, hd, hdp, head_norm_scale});
      sink.vector({layer_name(i, "self_attn.k_norm.weight"), k_norm, VectorKind::Norm, hd, hd, hdp, head_norm_scale});
      L.q_norm = q_norm;
      L.k_norm = k_norm;
    }

    if (!c.is_sparse(i)) {
      const int64_t I = c.intermediate, Ip = c.intermediate_padded;
      bf16* gate_up = new_matrix(2 * Ip, Hp);
      sink.matrix({layer_name(i, "mlp.gate_proj.weight"), gate_up, I, H, I, Ip, H, Hp});
      sink.matrix({layer_name(i, "mlp.up_proj.weight"), gate_up + Ip * Hp, I, H, I, Ip, H, Hp});
      bf16* down = new_matrix(Hp, Ip);
      sink.matrix({layer_name(i, "mlp.down_proj.weight"), down, H, I, H, Hp, I, Ip});
      L.gate_up = gate_up;
      L.down = down;
    } else {
      const int64_t I = c.moe_intermediate, Ip = c.moe_intermediate_padded;
      const bool gpt_oss = c.family == GpuFamily::GptOss;
      bf16* router = new_matrix(c.experts, Hp);
      sink.matrix({layer_name(i, gpt_oss ? "mlp.router.weight" : "mlp.gate.weight"), router, c.experts, H, 1, 1, H, Hp});
      L.router = router;
      if (c.router_bias) {
        float* bias = new_vector(c.experts);
        sink.vector({layer_name(i, "mlp.router.bias"), bias, VectorKind::Bias, c.experts, c.experts, c.experts});
        L.router_bias = bias;
      }
      if (gpt_oss) {
        GptOssExpertTargets targets;
        targets.gate_up_bias = new_vector(int64_t{c.experts} * 2 * Ip);
        targets.down_bias = new_vector(int64_t{c.experts} * Hp);
        if (c.expert_format == ExpertFormat::Bf16) {
          targets.gate_up = new_matrix(int64_t{c.experts} * 2 * Ip, Hp);
          targets.down = new_matrix(int64_t{c.experts} * Hp, Ip);
          L.expert_gate_up = targets.gate_up;
          L.expert_down = targets.down;
        } else {
          const fp4::Fp4Format format = fp4_format_of(c.expert_format);
          const bool nvfp4 = format == fp4::Fp4Format::Nvfp4;
          auto stack = [&](int64_t rows, int64_t cols) {
            const int64_t bytes = fp4::fp4_kernel_matrix_bytes(format, rows, cols);
            auto* tiles = static_cast<uint8_t*>(allocate(static_cast<size_t>(bytes) * c.experts));
            return kernels::Fp4ExpertMatrices{nvfp4 ? kernels::Fp4Kind::Nvfp4 : kernels::Fp4Kind::Mxfp4,
                                              static_cast<int>(rows), static_cast<int>(cols), tiles, bytes,
                                              nvfp4 ? new_vector(c.experts) : nullptr};
          };
          L.fp4_gate = targets.gate = stack(Ip, Hp);
          L.fp4_up = targets.up = stack(Ip, Hp);
          L.fp4_down = targets.down_fp4 = stack(Hp, Ip);
        }
        L.expert_gate_up_bias = targets.gate_up_bias;
        L.expert_down_bias = targets.down_bias;
        sink.gpt_oss_experts(i, targets);
        sink.layer_done(i, c.layers);
        continue;
      }
      if (c.expert_format != ExpertFormat::Bf16) {
        const fp4::Fp4Format format = fp4_format_of(c.expert_format);
        const bool nvfp4 = format == fp4::Fp4Format::Nvfp4;
        auto stack = [&](int64_t rows, int64_t cols, int64_t real_rows, int64_t real_cols, const char* suffix) {
          Fp4StackSpec spec;
          const int64_t bytes = fp4::fp4_kernel_matrix_bytes(format, rows, cols);
          spec.tiles = static_cast<uint8_t*>(allocate(static_cast<size_t>(bytes) * c.experts));
          spec.global_scales = nvfp4 ? new_vector(c.experts) : nullptr;
          spec.matrices = {nvfp4 ? kernels::Fp4Kind::Nvfp4 : kernels::Fp4Kind::Mxfp4, static_cast<int>(rows),
                           static_cast<int>(cols), spec.tiles, bytes, spec.global_scales};
          spec.name = [i, suffix](int e) { return layer_name(i, fmt::format("mlp.experts.{}.{}", e, suffix)); };
          spec.experts = c.experts;
          spec.real_rows = real_rows;
          spec.real_cols = real_cols;
          sink.fp4_stack(spec);
          return spec.matrices;
        };
        L.fp4_gate = stack(Ip, Hp, I, H, "gate_proj.weight");
        L.fp4_up = stack(Ip, Hp, I, H, "up_proj.weight");
        L.fp4_down = stack(Hp, Ip, H, I, "down_proj.weight");
        sink.layer_done(i, c.layers);
        continue;
      }
      bf16* gate_up = new_matrix(int64_t{c.experts} * 2 * Ip, Hp);
      bf16* down = new_matrix(int64_t{c.experts} * Hp, Ip);
      for (int e = 0; e < c.experts; ++e) {
        const std::string prefix = layer_name(i, fmt::format("mlp.experts.{}.", e));
        bf16* expert_gate_up = gate_up + e * expert_gate_up_stride(c);
        sink.matrix({prefix + "gate_proj.weight", expert_gate_up, I, H, I, Ip, H, Hp});
        sink.matrix({prefix + "up_proj.weight", expert_gate_up + Ip * Hp, I, H, I, Ip, H, Hp});
        sink.matrix({prefix + "down_proj.weight", down + e * expert_down_stride(c), H, I, H, Hp, I, Ip});
      }
      L.expert_gate_up = gate_up;
      L.expert_down = down;
    }
    sink.layer_done(i, c.layers);
  }
  make_fp8_weights(w, c);  // config.fp8's copies, from the bf16 matrices just filled
  return w;
}

// Row-major padded copy of a float matrix as bf16 bits.
std::vector<uint16_t> pad_to_bf16(const std::vector<float>& values, const MatrixSpec& s) {
  std::vector<uint16_t> out(static_cast<size_t>(s.padded_rows() * s.padded_cols()), 0);
  const int64_t padded_cols = s.padded_cols();
  for (int64_t r = 0; r < s.rows; ++r) {
    const int64_t pr = r / s.row_group * s.row_group_padded + r % s.row_group;
    for (int64_t col = 0; col < s.cols; ++col) {
      const int64_t pc = col / s.col_group * s.col_group_padded + col % s.col_group;
      out[pr * padded_cols + pc] = float_to_bf16(values[r * s.cols + col]);
    }
  }
  return out;
}

class CheckpointSink : public WeightSink {
 public:
  CheckpointSink(const Checkpoint& checkpoint, const GpuModelConfig& config, bool progress)
      : weights_(checkpoint.weights), config_(config), expert_format_(config.expert_format), progress_(progress) {
    // FP4 linears stored by the checkpoint (ModelOpt / compressed-tensors), by the name the models read.
    for (const fp4::Fp4Linear& linear : fp4::find_fp4_linears(weights_))
      fp4_linears_[linear.base + ".weight"] = linear.matrix;
    for (const fp4::Fp8Linear& linear : fp4::find_fp8_linears(weights_)) fp8_linears_[linear.base + ".weight"] = linear;
  }

  // The float values of a [rows, cols] matrix: the tensor, or a stored FP4 / FP8 linear dequantized (`--fp8`
  // requantizes an FP8 one to its own codes: same tiles, same amax / 448 scales when the checkpoint used that rule).
  std::vector<float> matrix_values(const std::string& name, int64_t rows, int64_t cols) const {
    const auto fp8 = fp8_linears_.find(name);
    if (fp8 != fp8_linears_.end()) {
      if (fp8->second.rows() != rows || fp8->second.cols() != cols)
        fail("{}: FP8 weight is [{}, {}], the model needs [{}, {}]", name, fp8->second.rows(), fp8->second.cols(), rows,
             cols);
      std::vector<float> values(static_cast<size_t>(rows * cols));
      fp8->second.to_float(values.data());
      return values;
    }
    const auto fp4 = fp4_linears_.find(name);
    if (fp4 == fp4_linears_.end()) return weights_.get(name, {rows, cols}).to_float();
    if (fp4->second.rows != rows || fp4->second.cols != cols)
      fail("{}: FP4 weight is [{}, {}], the model needs [{}, {}]", name, fp4->second.rows, fp4->second.cols, rows, cols);
    std::vector<float> values(static_cast<size_t>(rows * cols));
    fp4->second.to_float(values.data());
    return values;
  }

  void matrix(const MatrixSpec& s) override {
    const std::vector<uint16_t> bits = pad_to_bf16(matrix_values(s.name, s.rows, s.cols), s);
    TACHYON_CUDA_CHECK(cudaMemcpy(s.dst, bits.data(), bits.size() * sizeof(uint16_t), cudaMemcpyHostToDevice));
    uploaded_ += bits.size() * sizeof(uint16_t);
  }

  void vector(const VectorSpec& s) override {
    const TensorView& t = weights_.get(s.name, {s.length});
    const std::vector<float> values = t.to_float();
    std::vector<float> padded(static_cast<size_t>(s.padded_length()), 0.0f);
    for (int64_t i = 0; i < s.length; ++i) padded[i / s.group * s.group_padded + i % s.group] = values[i] * s.scale;
    TACHYON_CUDA_CHECK(cudaMemcpy(s.dst, padded.data(), padded.size() * sizeof(float), cudaMemcpyHostToDevice));
  }

  // Each expert packed into tiles and uploaded: a stored FP4 matrix of the asked format as it is, anything else
  // quantized on the host as `tachyon quantize` would (fp4_experts.h).
  void fp4_stack(const Fp4StackSpec& s) override {
    std::vector<float> global_scales;
    std::vector<uint8_t> tiles(static_cast<size_t>(s.matrices.expert_stride));
    for (int e = 0; e < s.experts; ++e) {
      const std::string name = s.name(e);
      const auto stored = fp4_linears_.find(name);
      const fp4::Fp4Matrix q =
          stored != fp4_linears_.end() && stored->second.format == fp4_format_of(expert_format_) &&
                  stored->second.rows == s.real_rows && stored->second.cols == s.real_cols
              ? pad_fp4_matrix(stored->second, s.matrices.rows, s.matrices.cols, name)
              : quantize_expert_matrix(expert_format_, matrix_values(name, s.real_rows, s.real_cols), s.real_rows,
                                       s.real_cols, s.matrices.rows, s.matrices.cols, name);
      fp4::pack_kernel_tiles(q.view(), tiles.data());
      TACHYON_CUDA_CHECK(
          cudaMemcpy(s.tiles + e * s.matrices.expert_stride, tiles.data(), tiles.size(), cudaMemcpyHostToDevice));
      global_scales.push_back(q.global_scale);
      uploaded_ += tiles.size();
    }
    if (s.global_scales)
      TACHYON_CUDA_CHECK(cudaMemcpy(s.global_scales, global_scales.data(), global_scales.size() * sizeof(float),
                                    cudaMemcpyHostToDevice));
  }

  void gpt_oss_experts(int layer, const GptOssExpertTargets& targets) override {
    const std::string prefix = layer_name(layer, "mlp.experts.");
    GptOssExpertTensors t;
    if (weights_.has(prefix + "gate_up_proj_blocks")) {
      t.gate_up_blocks = &weights_.get(prefix + "gate_up_proj_blocks");
      t.gate_up_scales = &weights_.get(prefix + "gate_up_proj_scales");
      t.down_blocks = &weights_.get(prefix + "down_proj_blocks");
      t.down_scales = &weights_.get(prefix + "down_proj_scales");
    } else {
      t.gate_up = &weights_.get(prefix + "gate_up_proj");
      t.down = &weights_.get(prefix + "down_proj");
    }
    t.gate_up_bias = &weights_.get(prefix + "gate_up_proj_bias");
    t.down_bias = &weights_.get(prefix + "down_proj_bias");
    uploaded_ += upload_gpt_oss_experts(t, config_, targets, prefix);
  }

  void layer_done(int layer, int layers) override {
    // Only big models are worth a progress line (SmolLM2 loads in a blink).
    if (!progress_ || (uploaded_ < (size_t{1} << 30) && layer + 1 < layers)) return;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    std::fprintf(stderr, "\r[loading weights: layer %d/%d, %.1f GB, %.0f s]%s", layer + 1, layers, uploaded_ / 1e9,
                 seconds, layer + 1 == layers ? "\n" : "");
    std::fflush(stderr);
  }

 private:
  const WeightStore& weights_;
  const GpuModelConfig& config_;
  std::map<std::string, fp4::Fp4MatrixView> fp4_linears_;
  std::map<std::string, fp4::Fp8Linear> fp8_linears_;
  ExpertFormat expert_format_;
  bool progress_;
  size_t uploaded_ = 0;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

class RandomSink : public WeightSink {
 public:
  RandomSink(const GpuModelConfig& config, uint64_t seed) : config_(config), seed_(seed) {}

  // gpt-oss: random MXFP4 blocks / scales and bf16 biases in host memory, in the checkpoint's layout, through the
  // checkpoint's conversion (gpt_oss_experts.h). One layer at a time (~0.4 GB at gpt-oss-20b shapes).
  void gpt_oss_experts(int layer, const GptOssExpertTargets& targets) override {
    make_random_gpt_oss_experts(config_, layer, seed_, experts_);
    upload_gpt_oss_experts(experts_.tensors(), config_, targets, layer_name(layer, "mlp.experts."));
  }

  void matrix(const MatrixSpec& s) override {
    kernels::PaddedMatrixLayout layout;
    layout.rows = s.padded_rows();
    layout.cols = s.padded_cols();
    layout.row_period = s.row_group_padded;
    layout.row_valid = s.row_group;
    layout.col_period = s.col_group_padded;
    layout.col_valid = s.col_group;
    kernels::fill_random_bf16(s.dst, layout, kStddev, seed_ ^ std::hash<std::string>{}(s.name), nullptr);
  }

  void vector(const VectorSpec& s) override {
    const float value = s.kind == VectorKind::Norm ? s.scale : 0.0f;
    kernels::fill_f32_periodic(s.dst, s.padded_length(), value, s.group_padded, s.group, nullptr);
  }

  // Random codes (zero in the padding) and block scales made on the device; weights of standard deviation ~kStddev.
  void fp4_stack(const Fp4StackSpec& s) override {
    kernels::Fp4StackLayout layout;
    layout.kind = s.matrices.kind;
    layout.n_matrices = s.experts;
    layout.rows = s.matrices.rows;
    layout.cols = s.matrices.cols;
    layout.stride = s.matrices.expert_stride;
    layout.row_period = s.matrices.rows;
    layout.row_valid = static_cast<int>(s.real_rows);
    layout.col_period = s.matrices.cols;
    layout.col_valid = static_cast<int>(s.real_cols);
    kernels::fill_random_fp4_tiles(s.tiles, layout, kStddev, seed_ ^ std::hash<std::string>{}(s.name(0)), nullptr);
    if (s.global_scales)
      kernels::fill_f32_periodic(s.global_scales, s.experts, kernels::fp4_random_global_scale(kStddev), 1, 1, nullptr);
  }

 private:
  static constexpr float kStddev = 0.02f;
  const GpuModelConfig& config_;
  uint64_t seed_;
  RandomGptOssExperts experts_;
};

}  // namespace

GpuWeights upload_checkpoint_weights(const Checkpoint& checkpoint, const GpuModelConfig& config, bool progress) {
  CheckpointSink sink(checkpoint, config, progress);
  return build_weights(config, sink);
}

GpuWeights random_device_weights(const GpuModelConfig& config, uint64_t seed) {
  RandomSink sink(config, seed);
  GpuWeights weights = build_weights(config, sink);
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  return weights;
}

}  // namespace tachyon::gpu
#endif  // TACHYON_HAS_CUDA
