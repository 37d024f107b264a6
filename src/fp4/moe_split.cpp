#include "fp4/moe_split.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "models/architectures.h"
#include "models/decoder.h"
#include "models/layers.h"
#include "models/moe.h"

namespace tachyon::fp4 {

namespace {

// Cholesky solve of the symmetric positive definite system A X = B (A [n, n], B [n, m], row-major, double).
void solve_spd(std::vector<double> a, int n, std::vector<double>& b, int m) {
  for (int j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
    if (!(d > 0)) fail("router fit: the calibration activations are degenerate (pivot {} is {})", j, d);
    const double l = std::sqrt(d);
    a[j * n + j] = l;
    for (int i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (int k = 0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = s / l;
    }
  }
  for (int c = 0; c < m; ++c) {  // L y = b, then L^T x = y
    for (int i = 0; i < n; ++i) {
      double s = b[i * m + c];
      for (int k = 0; k < i; ++k) s -= a[i * n + k] * b[k * m + c];
      b[i * m + c] = s / a[i * n + i];
    }
    for (int i = n - 1; i >= 0; --i) {
      double s = b[i * m + c];
      for (int k = i + 1; k < n; ++k) s -= a[k * n + i] * b[k * m + c];
      b[i * m + c] = s / a[i * n + i];
    }
  }
}

// The dense Llama model, run on calibration text, with each MLP computed as the sum of its E expert slices
// so that every expert's output on every token is seen. Accumulates the ridge-regression statistics of each
// layer (fit mode), or measures the fitted routers on held-out tokens (evaluate mode).
class SplitRecorder : public DecoderModel {
 public:
  SplitRecorder(const Checkpoint& checkpoint, int experts, int top_k, const std::vector<std::vector<std::vector<int64_t>>>& groups)
      : DecoderModel(checkpoint, "llama"), experts_(experts), top_k_(top_k), groups_(groups) {
    load_common();
    require_silu_mlp(config_);
    intermediate_ = config_.get_dim("intermediate_size", 1, 1 << 20);
    for (int i = 0; i < num_layers_; ++i) {
      attention_.push_back(load_attention(i, false, false, false));
      mlp_.push_back(load_mlp(tensor_name(i, "mlp"), intermediate_));
      // Down-projection columns of each expert as contiguous float32 [hidden, I/E] matrices.
      const int64_t width = intermediate_ / experts_;
      const std::vector<float> down = mlp_.back().down->to_float();
      std::vector<float> slices(down.size());
      for (int e = 0; e < experts_; ++e)
        for (int64_t r = 0; r < hidden_size_; ++r)
          for (int64_t c = 0; c < width; ++c)
            slices[(e * hidden_size_ + r) * width + c] = down[r * intermediate_ + groups_[i][e][c]];
      down_slices_.push_back(std::move(slices));
    }
    const int64_t h = hidden_size_;
    xtx_.assign(num_layers_, std::vector<double>(h * h, 0.0));
    xty_.assign(num_layers_, std::vector<double>(h * experts_, 0.0));
    sums_.assign(num_layers_, std::vector<double>(4, 0.0));
  }

  void set_routers(std::vector<std::vector<float>> routers) { routers_ = std::move(routers); }
  std::vector<float> fit_router(int layer, double ridge) const {
    const int64_t h = hidden_size_;
    std::vector<double> a = xtx_[layer], b = xty_[layer];
    double trace = 0;
    for (int64_t i = 0; i < h; ++i) trace += a[i * h + i];
    for (int64_t i = 0; i < h; ++i) a[i * h + i] += ridge * trace / static_cast<double>(h);
    solve_spd(std::move(a), static_cast<int>(h), b, experts_);
    std::vector<float> router(experts_ * h);  // [E, H]
    for (int e = 0; e < experts_; ++e)
      for (int64_t i = 0; i < h; ++i) router[e * h + i] = static_cast<float>(b[i * experts_ + e]);
    return router;
  }
  MoeSplitLayerReport layer_report(int layer) const {
    const std::vector<double>& s = sums_[layer];  // fitted error^2, oracle error^2, dense^2, R2 residual, R2 total
    MoeSplitLayerReport r;
    r.fitted_error = s[2] > 0 ? std::sqrt(s[0] / s[2]) : 0;
    r.oracle_error = s[2] > 0 ? std::sqrt(s[1] / s[2]) : 0;
    r.fit_r2 = residual_total_[layer].second > 0 ? 1.0 - residual_total_[layer].first / residual_total_[layer].second : 0;
    return r;
  }
  void prepare_evaluation() { residual_total_.assign(num_layers_, {0.0, 0.0}); }

 protected:
  void feed_forward(int layer, const float* x, int64_t n, float* out) override {
    const MlpWeights& mlp = mlp_[layer];
    const int64_t inter = intermediate_, width = inter / experts_, hdim = hidden_size_;
    std::vector<float> gate(n * inter), up(n * inter);
    linear(*mlp.gate, nullptr, x, n, gate.data());
    linear(*mlp.up, nullptr, x, n, up.data());
    swiglu(gate.data(), up.data(), n * inter, gate.data());
    std::vector<float> h_slice(n * width), y(static_cast<size_t>(experts_) * n * hdim);  // y [E, n, H]
    for (int e = 0; e < experts_; ++e) {
      const std::vector<int64_t>& columns = groups_[layer][e];
      for (int64_t t = 0; t < n; ++t)
        for (int64_t c = 0; c < width; ++c) h_slice[t * width + c] = gate[t * inter + columns[c]];
      linear_f32(down_slices_[layer].data() + e * hdim * width, hdim, width, nullptr, h_slice.data(), n,
                 y.data() + e * n * hdim);
    }
    std::fill(out, out + n * hdim, 0.0f);
    for (int e = 0; e < experts_; ++e)
      for (int64_t i = 0; i < n * hdim; ++i) out[i] += y[e * n * hdim + i];

    // Targets: each expert's log output norm, centered per token (the softmax only sees differences).
    std::vector<double> target(n * experts_), norms(n * experts_);
    for (int64_t t = 0; t < n; ++t) {
      double mean = 0;
      for (int e = 0; e < experts_; ++e) {
        const float* row = y.data() + (e * n + t) * hdim;
        norms[t * experts_ + e] = std::sqrt(static_cast<double>(dot(row, row, hdim)));
        target[t * experts_ + e] = std::log(norms[t * experts_ + e] + 1e-12);
        mean += target[t * experts_ + e];
      }
      for (int e = 0; e < experts_; ++e) target[t * experts_ + e] -= mean / experts_;
    }
    if (routers_.empty()) {
      accumulate(layer, x, n, target);
      return;
    }
    // Evaluate: the sum of the k chosen experts against the dense output, for the fitted router and the oracle.
    const std::vector<float>& router = routers_[layer];
    std::vector<float> logits(experts_), chosen_sum(hdim);
    for (int64_t t = 0; t < n; ++t) {
      for (int e = 0; e < experts_; ++e) {
        logits[e] = dot(router.data() + e * hdim, x + t * hdim, hdim);
        const double residual = logits[e] - target[t * experts_ + e];
        residual_total_[layer].first += residual * residual;
        residual_total_[layer].second += target[t * experts_ + e] * target[t * experts_ + e];
      }
      std::vector<float> norm_f(norms.begin() + t * experts_, norms.begin() + (t + 1) * experts_);
      const std::vector<int> picks[2] = {top_k_indices(logits.data(), experts_, top_k_),
                                         top_k_indices(norm_f.data(), experts_, top_k_)};
      for (int which = 0; which < 2; ++which) {
        std::fill(chosen_sum.begin(), chosen_sum.end(), 0.0f);
        for (int e : picks[which])
          for (int64_t d = 0; d < hdim; ++d) chosen_sum[d] += y[(e * n + t) * hdim + d];
        double error = 0;
        for (int64_t d = 0; d < hdim; ++d) error += std::pow(chosen_sum[d] - out[t * hdim + d], 2);
        sums_[layer][which] += error;
      }
      sums_[layer][2] += dot(out + t * hdim, out + t * hdim, hdim);
    }
  }

 private:
  void accumulate(int layer, const float* x, int64_t n, const std::vector<double>& target) {
    const int64_t h = hidden_size_;
    std::vector<double>& a = xtx_[layer];
    std::vector<double>& b = xty_[layer];
    for (int64_t t = 0; t < n; ++t) {
      const float* row = x + t * h;
      for (int64_t i = 0; i < h; ++i) {
        const double xi = row[i];
        double* a_row = a.data() + i * h;
        for (int64_t j = 0; j <= i; ++j) a_row[j] += xi * row[j];  // lower triangle; mirrored below
        for (int e = 0; e < experts_; ++e) b[i * experts_ + e] += xi * target[t * experts_ + e];
      }
    }
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < i; ++j) a[j * h + i] = a[i * h + j];
  }

  int experts_, top_k_;
  const std::vector<std::vector<std::vector<int64_t>>>& groups_;  // [layer][expert] -> neuron indices
  int64_t intermediate_ = 0;
  std::vector<MlpWeights> mlp_;
  std::vector<std::vector<float>> down_slices_;
  std::vector<std::vector<double>> xtx_, xty_, sums_;
  std::vector<std::pair<double, double>> residual_total_;
  std::vector<std::vector<float>> routers_;
};

}  // namespace

std::vector<std::vector<int64_t>> balanced_row_clusters(const std::vector<float>& rows, int64_t n, int64_t dim, int groups) {
  if (groups < 1 || n % groups != 0) fail("cannot cluster {} rows into {} equal groups", n, groups);
  const int64_t size = n / groups;
  std::vector<float> unit(rows);
  for (int64_t i = 0; i < n; ++i) {
    float* r = unit.data() + i * dim;
    const float norm = std::sqrt(dot(r, r, dim));
    if (norm > 0)
      for (int64_t d = 0; d < dim; ++d) r[d] /= norm;
  }
  // Deterministic start: centroids at evenly spaced rows.
  std::vector<float> centroids(groups * dim);
  for (int g = 0; g < groups; ++g) std::copy_n(unit.data() + (g * size) * dim, dim, centroids.data() + g * dim);
  std::vector<int> assignment(n, 0);
  std::vector<float> similarity(n * groups);
  std::vector<int64_t> order(n * groups);
  for (int iteration = 0; iteration < 25; ++iteration) {
    linear_f32(centroids.data(), groups, dim, nullptr, unit.data(), n, similarity.data());  // [n, groups]
    // Balanced assignment: the most similar (row, group) pairs first, each group capped at n / groups rows.
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return similarity[a] > similarity[b]; });
    std::vector<int> previous = assignment;
    std::fill(assignment.begin(), assignment.end(), -1);
    std::vector<int64_t> count(groups, 0);
    for (int64_t pair : order) {
      const int64_t row = pair / groups;
      const int g = static_cast<int>(pair % groups);
      if (assignment[row] < 0 && count[g] < size) {
        assignment[row] = g;
        ++count[g];
      }
    }
    std::fill(centroids.begin(), centroids.end(), 0.0f);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < dim; ++d) centroids[assignment[i] * dim + d] += unit[i * dim + d];
    for (int g = 0; g < groups; ++g) {
      float* c = centroids.data() + g * dim;
      const float norm = std::sqrt(dot(c, c, dim));
      if (norm > 0)
        for (int64_t d = 0; d < dim; ++d) c[d] /= norm;
    }
    if (assignment == previous) break;
  }
  std::vector<std::vector<int64_t>> clusters(groups);
  for (int64_t i = 0; i < n; ++i) clusters[assignment[i]].push_back(i);
  return clusters;
}

std::string MoeSplitReport::summary() const {
  if (layers.empty()) return "  zero router (no calibration)\n";
  double fitted = 0, oracle = 0, r2 = 0;
  for (const auto& l : layers) {
    fitted += l.fitted_error;
    oracle += l.oracle_error;
    r2 += l.fit_r2;
  }
  const double n = static_cast<double>(layers.size());
  return fmt::format(
      "  router fitted on {} calibration tokens; on held-out tokens, mean over {} layers: ||chosen experts - dense MLP|| / "
      "||dense MLP|| = {:.4f} (oracle top-k by output norm: {:.4f}); R^2 of the log-norm fit {:.3f}\n",
      calibration_tokens, layers.size(), fitted / n, oracle / n, r2 / n);
}

std::unique_ptr<DerivedCheckpoint> split_mlp_into_experts(std::shared_ptr<const Checkpoint> dense,
                                                          const MoeSplitOptions& options, MoeSplitReport* report) {
  const nlohmann::json& config = dense->config;
  const ConfigReader reader(config, dense->path + " config");
  const std::string architecture =
      config.contains("architectures") && config["architectures"].is_array() && !config["architectures"].empty()
          ? config["architectures"][0].get<std::string>()
          : "";
  if (architecture != "LlamaForCausalLM")
    fail("{}: splitting MLPs into experts needs a Llama model (Mixtral's attention), not {}", dense->path, architecture);
  if (reader.get_bool("attention_bias", false) || reader.get_bool("mlp_bias", false))
    reader.fail_field("attention_bias", "Mixtral has no attention or MLP biases");
  const int experts = options.experts, k = options.top_k;
  const int64_t layers = reader.get_dim("num_hidden_layers", 1, 1024), hidden = reader.get_dim("hidden_size", 1, 1 << 16);
  const int64_t intermediate = reader.get_dim("intermediate_size", 1, 1 << 20);
  if (experts < 1 || intermediate % experts != 0)
    fail("{}: intermediate_size {} does not split into {} experts", dense->path, intermediate, experts);
  if (k < 1 || k > experts) fail("top-k {} outside [1, {}]", k, experts);
  if (k < experts && options.calibration_tokens.empty())
    fail("a router for top-{} of {} experts needs calibration text", k, experts);
  const int64_t width = intermediate / experts;

  // Which neurons each expert takes, per layer.
  std::vector<std::vector<std::vector<int64_t>>> groups(layers);
  for (int64_t layer = 0; layer < layers; ++layer) {
    if (options.cluster_neurons) {
      const std::vector<float> gate =
          dense->weights.get(fmt::format("model.layers.{}.mlp.gate_proj.weight", layer), {intermediate, hidden}).to_float();
      groups[layer] = balanced_row_clusters(gate, intermediate, hidden, experts);
    } else {
      groups[layer].resize(experts);
      for (int e = 0; e < experts; ++e)
        for (int64_t c = 0; c < width; ++c) groups[layer][e].push_back(e * width + c);
    }
  }

  // Routers: zero (all experts equal) or fitted on calibration text.
  std::vector<std::vector<float>> routers(layers, std::vector<float>(experts * hidden, 0.0f));
  MoeSplitReport local_report;
  if (!options.calibration_tokens.empty()) {
    SplitRecorder recorder(*dense, experts, k, groups);
    const std::vector<int32_t>& tokens = options.calibration_tokens;
    const int64_t chunk = options.calibration_chunk;
    const int64_t chunks = static_cast<int64_t>(tokens.size()) / chunk;
    if (chunks < 2) fail("calibration needs at least {} tokens (two chunks: fit and held-out)", 2 * chunk);
    for (int64_t c = 0; c + 1 < chunks; ++c) {
      KvCache cache = recorder.new_cache(chunk);
      recorder.forward(std::span<const int32_t>(tokens.data() + c * chunk, chunk), cache);
    }
    for (int64_t layer = 0; layer < layers; ++layer) {
      routers[layer] = recorder.fit_router(static_cast<int>(layer), options.ridge);
    }
    recorder.set_routers(routers);
    recorder.prepare_evaluation();
    KvCache cache = recorder.new_cache(chunk);
    recorder.forward(std::span<const int32_t>(tokens.data() + (chunks - 1) * chunk, chunk), cache);
    for (int64_t layer = 0; layer < layers; ++layer) local_report.layers.push_back(recorder.layer_report(static_cast<int>(layer)));
    local_report.calibration_tokens = (chunks - 1) * chunk;
    for (auto& router : routers)
      for (float& w : router) w *= options.router_scale;
  }
  if (report) *report = local_report;

  auto moe = std::make_unique<DerivedCheckpoint>(dense);
  nlohmann::json& moe_config = moe->checkpoint().config;
  moe_config["architectures"] = {"MixtralForCausalLM"};
  moe_config["model_type"] = "mixtral";
  moe_config["num_local_experts"] = experts;
  moe_config["num_experts_per_tok"] = k;
  moe_config["intermediate_size"] = width;
  moe_config["sliding_window"] = nullptr;
  moe_config["router_aux_loss_coef"] = 0.0;
  moe_config["output_router_logits"] = false;
  moe_config.erase("mlp_bias");
  moe_config.erase("pretraining_tp");
  // Mixtral's default rope_theta (1e6) differs from Llama's (1e4): always spell it out.
  if (!moe_config.contains("rope_theta") && !moe_config.contains("rope_parameters")) moe_config["rope_theta"] = 10000.0;
  moe_config["moe_split"] = {{"experts", experts}, {"top_k", k}, {"router", options.calibration_tokens.empty() ? "zero" : "fitted"},
                                     {"router_scale", options.router_scale}, {"neurons", options.cluster_neurons ? "clustered" : "contiguous"},
                             {"source", dense->path}};

  for (const auto& [name, tensor] : dense->weights.all()) {
    if (name.find(".mlp.") == std::string::npos) moe->add_view(tensor);
  }
  const float down_scale = static_cast<float>(k);
  for (int64_t layer = 0; layer < layers; ++layer) {
    const std::string prefix = fmt::format("model.layers.{}.", layer);
    const std::vector<float> gate = dense->weights.get(prefix + "mlp.gate_proj.weight", {intermediate, hidden}).to_float();
    const std::vector<float> up = dense->weights.get(prefix + "mlp.up_proj.weight", {intermediate, hidden}).to_float();
    const std::vector<float> down = dense->weights.get(prefix + "mlp.down_proj.weight", {hidden, intermediate}).to_float();
    float* router = moe->add_float(prefix + "block_sparse_moe.gate.weight", {experts, hidden});
    std::copy(routers[layer].begin(), routers[layer].end(), router);
    for (int e = 0; e < experts; ++e) {
      const std::string expert = fmt::format("{}block_sparse_moe.experts.{}.", prefix, e);
      float* w1 = moe->add_float(expert + "w1.weight", {width, hidden});
      float* w3 = moe->add_float(expert + "w3.weight", {width, hidden});
      float* w2 = moe->add_float(expert + "w2.weight", {hidden, width});
      const std::vector<int64_t>& neurons = groups[layer][e];
      for (int64_t c = 0; c < width; ++c) {
        std::copy_n(gate.data() + neurons[c] * hidden, hidden, w1 + c * hidden);
        std::copy_n(up.data() + neurons[c] * hidden, hidden, w3 + c * hidden);
      }
      for (int64_t r = 0; r < hidden; ++r)
        for (int64_t c = 0; c < width; ++c) w2[r * width + c] = down_scale * down[r * intermediate + neurons[c]];
    }
  }
  return moe;
}

}  // namespace tachyon::fp4
