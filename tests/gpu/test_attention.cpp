// qk_norm_rope_kv_append + decode_attention against the CPU (rms_norm, Rope::apply, cached_attention) on a
// batch of sequences of different lengths in shuffled pages: GQA, causal inside the query block, sliding
// window, sinks, long contexts (split-KV), and an O(1) rollback followed by a replay; bidirectional passes (the
// DFlash drafter's block: causal = false), with and without a window.
// Bound: |out - ref| <= 4e-3 * max|v| + 1e-4 (P rounded to bf16: 2^-9 relative per weight).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "attention/decode_attention.h"
#include "gpu_test_util.h"
#include "models/layers.h"
#include "models/rope.h"

namespace tachyon {
namespace {

using namespace gpu_test;

struct AttentionCase {
  std::string name;
  int n_heads, n_kv_heads, head_dim;
  bool qk_norm;
  int window;
  bool sinks;
  int page_size;
  std::vector<std::pair<int, int>> sequences;  // (positions already cached, new tokens)
  bool causal = true;
};

// The CPU reference of a bidirectional pass (cached_attention is causal): row t at position start + t sees every
// key j < start + n, within (p - window, p + window) when windowed. Double accumulation.
void bidirectional_attention(const float* q, int64_t n, int64_t start, const KvLayer& kv, const AttentionShape& shape,
                             const float* sinks, float* out) {
  const int keys = static_cast<int>(start + n), group = shape.n_heads / shape.n_kv_heads, d = shape.head_dim;
  for (int t = 0; t < n; ++t) {
    const int p = static_cast<int>(start) + t;
    for (int h = 0; h < shape.n_heads; ++h) {
      const float* qh = q + (static_cast<size_t>(t) * shape.n_heads + h) * d;
      std::vector<double> scores(keys, -INFINITY);
      double max = sinks ? sinks[h] : -INFINITY;
      for (int j = 0; j < keys; ++j) {
        if (shape.sliding_window > 0 && (p - j >= shape.sliding_window || j - p >= shape.sliding_window)) continue;
        double dot = 0;
        for (int i = 0; i < d; ++i) dot += static_cast<double>(qh[i]) * kv.k_row(j)[(h / group) * d + i];
        scores[j] = dot * shape.scale;
        max = std::max(max, scores[j]);
      }
      double sum = sinks ? std::exp(sinks[h] - max) : 0.0;
      std::vector<double> acc(d, 0.0);
      for (int j = 0; j < keys; ++j) {
        if (scores[j] == -INFINITY) continue;
        const double w = std::exp(scores[j] - max);
        sum += w;
        for (int i = 0; i < d; ++i) acc[i] += w * kv.v_row(j)[(h / group) * d + i];
      }
      float* o = out + (static_cast<size_t>(t) * shape.n_heads + h) * d;
      for (int i = 0; i < d; ++i) o[i] = static_cast<float>(acc[i] / sum);
    }
  }
}

// Host mirror of the paged cache plus one CPU KvLayer per sequence holding the same bf16-rounded values.
struct Scenario {
  const AttentionCase& c;
  int kv_width, max_pages;
  std::vector<int> block_table;
  std::vector<uint16_t> k_pages, v_pages;
  std::vector<KvLayer> cpu;
  Rope rope;
  std::vector<float> q_norm_weight, k_norm_weight, sinks;

  explicit Scenario(const AttentionCase& cs)
      : c(cs), kv_width(cs.n_kv_heads * cs.head_dim), rope([&] {
          RopeConfig rc;
          rc.rotary_dim = cs.head_dim;
          rc.theta = 1000000.0;
          return rc;
        }()) {
    int total_pages = 0;
    max_pages = 0;
    for (auto [cached, fresh] : c.sequences) {
      const int pages = (cached + fresh + 16 + c.page_size - 1) / c.page_size;  // room for a replay
      total_pages += pages;
      max_pages = std::max(max_pages, pages);
    }
    std::vector<int> page_ids(total_pages);
    std::iota(page_ids.begin(), page_ids.end(), 0);
    std::shuffle(page_ids.begin(), page_ids.end(), rng());
    block_table.assign(c.sequences.size() * max_pages, -1);
    int next = 0;
    for (size_t s = 0; s < c.sequences.size(); ++s) {
      const int pages = (c.sequences[s].first + c.sequences[s].second + 16 + c.page_size - 1) / c.page_size;
      for (int i = 0; i < pages; ++i) block_table[s * max_pages + i] = page_ids[next++];
    }
    k_pages.assign(static_cast<size_t>(total_pages) * c.page_size * kv_width, 0xffff);  // NaN: unwritten slots
    v_pages = k_pages;
    cpu.resize(c.sequences.size());
    for (size_t s = 0; s < c.sequences.size(); ++s) {
      KvLayer& layer = cpu[s];
      layer.k_width = layer.v_width = kv_width;
      const int capacity = c.sequences[s].first + c.sequences[s].second + 16;
      layer.k.assign(static_cast<size_t>(capacity) * kv_width, NAN);
      layer.v = layer.k;
      const Bf16Tensor k = to_bf16(random_floats(static_cast<size_t>(c.sequences[s].first) * kv_width, -2, 2));
      const Bf16Tensor v = to_bf16(random_floats(k.bits.size(), -2, 2));
      for (int p = 0; p < c.sequences[s].first; ++p) store(s, p, k.bits.data() + static_cast<size_t>(p) * kv_width,
                                                          v.bits.data() + static_cast<size_t>(p) * kv_width);
    }
    if (c.qk_norm) {
      q_norm_weight = random_floats(c.head_dim, 0.5f, 1.5f);
      k_norm_weight = random_floats(c.head_dim, 0.5f, 1.5f);
    }
    if (c.sinks) sinks = random_floats(c.n_heads, -1.0f, 3.0f);
  }

  size_t slot(size_t s, int position) const {
    const int page = block_table[s * max_pages + position / c.page_size];
    return (static_cast<size_t>(page) * c.page_size + position % c.page_size) * kv_width;
  }
  void store(size_t s, int position, const uint16_t* k, const uint16_t* v) {
    std::copy(k, k + kv_width, k_pages.begin() + slot(s, position));
    std::copy(v, v + kv_width, v_pages.begin() + slot(s, position));
    for (int i = 0; i < kv_width; ++i) {
      cpu[s].k_row(position)[i] = bf16_to_float(k[i]);
      cpu[s].v_row(position)[i] = bf16_to_float(v[i]);
    }
  }
};

// Runs one pass: new tokens for every sequence starting at start[s]; checks q, the appended cache rows and
// the attention output against the CPU.
void run_pass(Scenario& sc, const std::vector<int>& start, const std::vector<int>& fresh, cuda::DeviceBuffer<uint16_t>& k_dev,
              cuda::DeviceBuffer<uint16_t>& v_dev, const std::string& what) {
  const AttentionCase& c = sc.c;
  const int n_seq = static_cast<int>(c.sequences.size());
  const int q_width = c.n_heads * c.head_dim, row = q_width + 2 * sc.kv_width;
  std::vector<int> query_start(n_seq + 1, 0), seq_lens(n_seq), positions, token_sequence;
  int max_len = 0, max_q = 0;
  for (int s = 0; s < n_seq; ++s) {
    query_start[s + 1] = query_start[s] + fresh[s];
    seq_lens[s] = start[s] + fresh[s];
    max_len = std::max(max_len, seq_lens[s]);
    max_q = std::max(max_q, fresh[s]);
    for (int i = 0; i < fresh[s]; ++i) positions.push_back(start[s] + i), token_sequence.push_back(s);
  }
  const int n_tokens = query_start[n_seq];
  const std::vector<float> qkv = random_floats(static_cast<size_t>(n_tokens) * row, -2, 2);

  // CPU: norms and RoPE per head, bf16 K/V into the per-sequence layers, then attention.
  std::vector<float> q_want(static_cast<size_t>(n_tokens) * q_width), out_want(q_want.size());
  float v_max = 0;
  for (int t = 0; t < n_tokens; ++t) {
    const int s = token_sequence[t], p = positions[t];
    const float* src = qkv.data() + static_cast<size_t>(t) * row;
    for (int h = 0; h < c.n_heads; ++h) {
      float* q = q_want.data() + static_cast<size_t>(t) * q_width + h * c.head_dim;
      std::copy(src + h * c.head_dim, src + (h + 1) * c.head_dim, q);
      if (c.qk_norm) rms_norm(std::vector<float>(q, q + c.head_dim).data(), sc.q_norm_weight.data(), 1e-6f, 1, c.head_dim, q);
      sc.rope.apply(q, p);
    }
    std::vector<float> k(src + q_width, src + q_width + sc.kv_width);
    for (int h = 0; h < c.n_kv_heads; ++h) {
      float* kh = k.data() + h * c.head_dim;
      if (c.qk_norm) rms_norm(std::vector<float>(kh, kh + c.head_dim).data(), sc.k_norm_weight.data(), 1e-6f, 1, c.head_dim, kh);
      sc.rope.apply(kh, p);
    }
    const Bf16Tensor kb = to_bf16(k), vb = to_bf16(std::vector<float>(src + q_width + sc.kv_width, src + row));
    sc.store(s, p, kb.bits.data(), vb.bits.data());
  }
  AttentionShape shape{c.n_heads, c.n_kv_heads, c.head_dim, c.head_dim, 1.0f / std::sqrt(static_cast<float>(c.head_dim)),
                       c.window};
  for (int s = 0; s < n_seq; ++s) {
    (c.causal ? cached_attention : bidirectional_attention)(
        q_want.data() + static_cast<size_t>(query_start[s]) * q_width, fresh[s], start[s], sc.cpu[s], shape,
        c.sinks ? sc.sinks.data() : nullptr, out_want.data() + static_cast<size_t>(query_start[s]) * q_width);
    for (int p = 0; p < seq_lens[s]; ++p)
      for (int i = 0; i < sc.kv_width; ++i) v_max = std::max(v_max, std::fabs(sc.cpu[s].v_row(p)[i]));
  }

  // GPU.
  cuda::DeviceBuffer<float> qkv_dev(qkv), qn_dev(sc.q_norm_weight), kn_dev(sc.k_norm_weight), sinks_dev(sc.sinks),
      inv_freq_dev(sc.rope.inverse_frequencies());
  cuda::DeviceBuffer<int> table_dev(sc.block_table), query_start_dev(query_start), seq_lens_dev(seq_lens),
      positions_dev(positions), token_sequence_dev(token_sequence);
  kernels::PagedKvCache cache{as_bf16(k_dev), as_bf16(v_dev), table_dev.data(), sc.max_pages, c.page_size, c.n_kv_heads,
                              c.head_dim};
  kernels::AttentionBatch batch{n_seq, n_tokens, query_start_dev.data(), seq_lens_dev.data(), positions_dev.data(),
                                token_sequence_dev.data(), max_len, max_q};
  kernels::AttentionPrologue prologue;
  prologue.q = qkv_dev.data();
  prologue.q_stride = row;
  prologue.n_heads = c.n_heads;
  prologue.k = qkv_dev.data() + q_width;
  prologue.k_stride = row;
  prologue.v = qkv_dev.data() + q_width + sc.kv_width;
  prologue.v_stride = row;
  prologue.q_norm_weight = c.qk_norm ? qn_dev.data() : nullptr;
  prologue.k_norm_weight = c.qk_norm ? kn_dev.data() : nullptr;
  prologue.rope = kernels::RopeTable{inv_freq_dev.data(), c.head_dim, sc.rope.attention_factor(), false};
  kernels::qk_norm_rope_kv_append(prologue, cache, batch, nullptr);

  kernels::AttentionParams params;
  params.q = qkv_dev.data();
  params.q_stride = row;
  auto out_dev = poisoned(static_cast<size_t>(n_tokens) * q_width);
  params.out = out_dev.data();
  params.out_stride = q_width;
  params.n_heads = c.n_heads;
  params.scale = shape.scale;
  params.sliding_window = c.window;
  params.causal = c.causal;
  params.sinks = c.sinks ? sinks_dev.data() : nullptr;
  const size_t workspace_bytes = kernels::decode_attention_workspace_bytes(params, cache, batch);
  cuda::DeviceBuffer<uint8_t> workspace(std::max<size_t>(workspace_bytes, 16));
  kernels::decode_attention(params, cache, batch, workspace.data(), workspace_bytes, nullptr);
  // The same attention over a settled cache (its first tile read before the previous kernel ends, the pass's own rows
  // and the rows past each sequence fixed after): bit-identical. Windowed cases take the plain path either way.
  kernels::AttentionParams settled = params;
  auto out_settled = poisoned(static_cast<size_t>(n_tokens) * q_width);
  settled.out = out_settled.data();
  settled.cache_settled = true;
  kernels::decode_attention(settled, cache, batch, workspace.data(), workspace_bytes, nullptr);
  TACHYON_CUDA_CHECK(cudaDeviceSynchronize());
  expect_same_bits(out_settled.to_host(), out_dev.to_host(), what + ": attention over a settled cache");

  const std::vector<float> qkv_after = qkv_dev.to_host();
  std::vector<float> q_got(q_want.size());
  for (int t = 0; t < n_tokens; ++t)
    std::copy(qkv_after.begin() + static_cast<size_t>(t) * row, qkv_after.begin() + static_cast<size_t>(t) * row + q_width,
              q_got.begin() + static_cast<size_t>(t) * q_width);
  expect_within(q_got, q_want, 3e-5f, 3e-5f, what + ": q after norm + RoPE");

  // Appended rows: the bf16 of the CPU values, give or take one bf16 ulp where the tiny q/k difference
  // crosses a rounding boundary.
  const std::vector<uint16_t> k_got = k_dev.to_host(), v_got = v_dev.to_host();
  std::vector<float> cache_got, cache_want;
  for (int t = 0; t < n_tokens; ++t) {
    const size_t at = sc.slot(token_sequence[t], positions[t]);
    for (int i = 0; i < sc.kv_width; ++i) {
      cache_got.push_back(bf16_to_float(k_got[at + i]));
      cache_want.push_back(bf16_to_float(sc.k_pages[at + i]));
      cache_got.push_back(bf16_to_float(v_got[at + i]));
      cache_want.push_back(bf16_to_float(sc.v_pages[at + i]));
    }
  }
  expect_within(cache_got, cache_want, 1.0f / 128, 1e-30f, what + ": appended K/V");
  expect_within(out_dev.to_host(), out_want, 0.0f, 4e-3f * v_max + 1e-4f, what + ": attention output");
}

void run_case(const AttentionCase& c) {
  Scenario sc(c);
  cuda::DeviceBuffer<uint16_t> k_dev(sc.k_pages), v_dev(sc.v_pages);
  std::vector<int> start, fresh;
  for (auto [cached, n] : c.sequences) start.push_back(cached), fresh.push_back(n);
  run_pass(sc, start, fresh, k_dev, v_dev, c.name);
  // Roll every sequence back to half of what it gained (O(1): only the lengths change), then replay new tokens
  // over the rejected positions.
  std::vector<int> start2 = start, fresh2 = fresh;
  for (size_t s = 0; s < start.size(); ++s) {
    start2[s] = start[s] + fresh[s] / 2;
    fresh2[s] = std::min(16, fresh[s] + 3);
  }
  run_pass(sc, start2, fresh2, k_dev, v_dev, c.name + " after rollback");
}

TEST(GpuAttention, Qwen3ShapesWithQkNormBatchOfLengths) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  run_case({"qwen3 32/4x128", 32, 4, 128, true, 0, false, 64, {{0, 16}, {37, 5}, {1000, 16}, {5000, 1}}});
}

TEST(GpuAttention, SmolLM2Shapes) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  run_case({"smollm2 9/3x64", 9, 3, 64, false, 0, false, 16, {{0, 1}, {200, 16}, {63, 2}, {1, 9}}});
}

TEST(GpuAttention, SlidingWindowAndSinks) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  run_case({"gpt-oss-like 64/8x64 window 128", 64, 8, 64, false, 128, true, 32, {{300, 16}, {10, 3}, {127, 1}}});
  run_case({"sinks only 16/2x128", 16, 2, 128, false, 0, true, 64, {{700, 4}, {0, 16}}});
}

TEST(GpuAttention, LongContextsSplitAcrossBlocks) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  run_case({"long 8/1x128", 8, 1, 128, false, 0, false, 64, {{8191, 1}, {6000, 16}}});
  run_case({"long 32/4x128 one sequence", 32, 4, 128, true, 0, false, 128, {{16000, 16}}});
}

TEST(GpuAttention, DecodeStepsOverASettledCache) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  // Passes of 1..4 tokens per sequence, where AttentionParams::cache_settled takes its early first tile (run_pass
  // compares it bit for bit with the plain path): splits whose first tile holds the pass's rows, rows past the
  // sequence (NaN-poisoned unwritten slots), unallocated pages, one tile and many.
  run_case({"settled qwen3 32/4x128", 32, 4, 128, true, 0, false, 64, {{1000, 1}, {37, 4}, {0, 1}, {62, 3}}});
  run_case({"settled smollm2 9/3x64", 9, 3, 64, false, 0, false, 16, {{200, 2}, {1, 1}, {15, 4}}});
  run_case({"settled long 8/1x128", 8, 1, 128, false, 0, false, 64, {{16000, 1}}});
}

TEST(GpuAttention, BidirectionalBlocks) {
  SKIP_WITHOUT_GPU();
  reseed_for_current_test();
  // Every row sees the whole block, later rows included (and, after the rollback, rows cached past it that the
  // replay overwrites). Windows of 5 and 100 cut keys on both sides of a row; the window's far side inside the
  // block matters for the small one.
  run_case({"bidirectional 8/2x64", 8, 2, 64, true, 0, false, 16, {{37, 16}, {0, 2}, {200, 8}}, false});
  run_case({"bidirectional window 5 4/1x64", 4, 1, 64, true, 5, false, 16, {{37, 16}, {3, 6}}, false});
  run_case({"bidirectional window 100 32/4x128 long", 32, 4, 128, false, 100, false, 64, {{3000, 16}, {90, 12}}, false});
}

}  // namespace
}  // namespace tachyon
