#include "fp4/quality_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/parallel.h"

namespace tachyon::fp4 {

EvalCorpus tokenize_files(const Tokenizer& tokenizer, const std::vector<std::string>& files, int64_t max_tokens) {
  EvalCorpus corpus;
  for (const std::string& file : files) {
    if (static_cast<int64_t>(corpus.tokens.size()) >= max_tokens) break;
    std::ifstream in(file, std::ios::binary);
    if (!in) fail("{}: cannot read evaluation text", file);
    std::stringstream text;
    text << in.rdbuf();
    const std::vector<int32_t> ids = tokenizer.encode(text.str(), /*parse_special=*/false);
    const int64_t take = std::min<int64_t>(static_cast<int64_t>(ids.size()), max_tokens - static_cast<int64_t>(corpus.tokens.size()));
    corpus.tokens.insert(corpus.tokens.end(), ids.begin(), ids.begin() + take);
    corpus.files.push_back(file);
  }
  return corpus;
}

double ModelMetrics::perplexity() const { return positions ? std::exp(nll_sum / positions) : 0; }

double ModelMetrics::kl_quantile(double q) const {
  if (kl.empty()) return 0;
  std::vector<float> sorted = kl;
  const size_t index = std::min(sorted.size() - 1, static_cast<size_t>(q * static_cast<double>(sorted.size())));
  std::nth_element(sorted.begin(), sorted.begin() + index, sorted.end());
  return sorted[index];
}

void log_softmax(const float* logits, int64_t n, std::vector<double>& out) {
  out.resize(n);
  const float max = *std::max_element(logits, logits + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  const double log_sum = std::log(sum) + max;
  for (int64_t i = 0; i < n; ++i) out[i] = logits[i] - log_sum;
}

namespace {

int64_t argmax(const float* x, int64_t n) { return std::max_element(x, x + n) - x; }

}  // namespace

EvalReport compare_models(const LabelledModel& reference, const std::vector<LabelledModel>& candidates,
                          const std::vector<int32_t>& tokens, int64_t positions, int64_t chunk,
                          const std::function<void(int64_t, int64_t)>& progress) {
  if (chunk < 2) fail("eval: chunks must hold at least 2 tokens");
  const int64_t chunks = (positions + chunk - 2) / (chunk - 1);
  if (chunks * chunk > static_cast<int64_t>(tokens.size()))
    fail("eval: {} chunks of {} tokens need {} tokens of text, have {}", chunks, chunk, chunks * chunk, tokens.size());
  const auto start = std::chrono::steady_clock::now();
  EvalReport report;
  report.chunk = chunk;
  report.chunks = chunks;
  report.reference.label = reference.label;
  for (const LabelledModel& c : candidates) {
    report.candidates.emplace_back();
    report.candidates.back().label = c.label;
  }
  const int vocab = reference.model->vocab_size();
  for (const LabelledModel& c : candidates)
    if (c.model->vocab_size() != vocab) fail("eval: {} has vocabulary {}, the reference {}", c.label, c.model->vocab_size(), vocab);

  // Per chunk: the reference's log-probabilities and probabilities of every position (kept for the KL terms of
  // every candidate), then each candidate. Positions are scored in parallel into per-position slots and summed
  // in position order afterwards, so the totals do not depend on the thread count.
  const int64_t rows = chunk - 1;
  std::vector<std::vector<double>> ref_log(rows), ref_prob(rows);
  std::vector<int64_t> ref_top(rows), cand_top(rows);
  std::vector<double> kl(rows), nll(rows);
  for (int64_t c = 0; c < chunks; ++c) {
    const std::span<const int32_t> ids(tokens.data() + c * chunk, chunk);
    KvCache ref_cache = reference.model->new_cache(chunk);
    const std::vector<float> ref_logits = reference.model->forward(ids, ref_cache, /*all_rows=*/true);
    parallel_for(rows, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const float* row = ref_logits.data() + t * vocab;
        log_softmax(row, vocab, ref_log[t]);
        ref_prob[t].resize(vocab);
        for (int v = 0; v < vocab; ++v) ref_prob[t][v] = std::exp(ref_log[t][v]);
        ref_top[t] = argmax(row, vocab);
      }
    });
    for (int64_t t = 0; t < rows; ++t) {
      report.reference.nll_sum -= ref_log[t][ids[t + 1]];
      report.reference.correct += ref_top[t] == ids[t + 1];
      ++report.reference.positions;
    }
    for (size_t m = 0; m < candidates.size(); ++m) {
      KvCache cache = candidates[m].model->new_cache(chunk);
      const std::vector<float> logits = candidates[m].model->forward(ids, cache, true);
      parallel_for(rows, [&](int64_t begin, int64_t end) {
        std::vector<double> cand_log;
        for (int64_t t = begin; t < end; ++t) {
          const float* row = logits.data() + t * vocab;
          log_softmax(row, vocab, cand_log);
          const std::vector<double>& log_p = ref_log[t];
          const std::vector<double>& p = ref_prob[t];
          double sum = 0;
          for (int v = 0; v < vocab; ++v) sum += p[v] * (log_p[v] - cand_log[v]);
          kl[t] = std::max(sum, 0.0);  // rounding can leave a tiny negative value for identical distributions
          nll[t] = -cand_log[ids[t + 1]];
          cand_top[t] = argmax(row, vocab);
        }
      });
      ModelMetrics& metrics = report.candidates[m];
      for (int64_t t = 0; t < rows; ++t) {
        metrics.kl_sum += kl[t];
        metrics.kl.push_back(static_cast<float>(kl[t]));
        metrics.top1_agree += cand_top[t] == ref_top[t];
        metrics.nll_sum += nll[t];
        metrics.correct += cand_top[t] == ids[t + 1];
        ++metrics.positions;
      }
    }
    if (progress) progress(c + 1, chunks);
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

std::string EvalReport::table() const {
  std::string text = fmt::format("{} positions in {} chunks of {} tokens, {:.0f} s\n", reference.positions, chunks, chunk, seconds);
  text += fmt::format("{:<34} {:>10} {:>9} {:>11} {:>10} {:>10} {:>10} {:>9}\n", "model", "perplexity", "accuracy",
                      "KL mean", "KL median", "KL p99", "KL max", "top-1 =");
  text += fmt::format("{:<34} {:>10.4f} {:>9.4f} {:>11} {:>10} {:>10} {:>10} {:>9}\n", reference.label, reference.perplexity(),
                      reference.accuracy(), "-", "-", "-", "-", "-");
  for (const ModelMetrics& m : candidates)
    text += fmt::format("{:<34} {:>10.4f} {:>9.4f} {:>11.6f} {:>10.6f} {:>10.5f} {:>10.4f} {:>9.4f}\n", m.label,
                        m.perplexity(), m.accuracy(), m.kl_mean(), m.kl_quantile(0.5), m.kl_quantile(0.99),
                        m.kl_quantile(1.0), m.top1_agreement());
  return text;
}

nlohmann::json EvalReport::to_json() const {
  auto metrics = [](const ModelMetrics& m, bool candidate) {
    nlohmann::json j = {{"label", m.label}, {"positions", m.positions}, {"perplexity", m.perplexity()}, {"accuracy", m.accuracy()}};
    if (candidate) {
      j["kl_mean"] = m.kl_mean();
      j["kl_median"] = m.kl_quantile(0.5);
      j["kl_p99"] = m.kl_quantile(0.99);
      j["kl_max"] = m.kl_quantile(1.0);
      j["top1_agreement"] = m.top1_agreement();
    }
    return j;
  };
  nlohmann::json j = {{"chunk", chunk}, {"chunks", chunks}, {"seconds", seconds}, {"reference", metrics(reference, false)}};
  j["candidates"] = nlohmann::json::array();
  for (const ModelMetrics& m : candidates) j["candidates"].push_back(metrics(m, true));
  return j;
}

}  // namespace tachyon::fp4
