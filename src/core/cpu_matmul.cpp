#include "core/cpu_matmul.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"

namespace tachyon {

namespace {

// A dot product is 16 lanes (lane = k mod 16) accumulated in k order. Each kernel holds the 16 lanes in its
// native registers: one AVX-512 register, two AVX2 registers, four SSE registers (GCC vector extensions, so
// one source serves every kernel; the target attribute of the caller picks the instructions and fuses
// acc += a * b into FMA where the target has it).
constexpr int64_t kLanes = 16;
typedef float Vec16 __attribute__((vector_size(64)));
typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec4 __attribute__((vector_size(16)));
// Weight rows dequantized per task: 48 rows of 1536 floats (SmolLM2's down_proj) = 288 KiB, inside L2.
constexpr int64_t kRowBlock = 48;

// The fixed reduction tree of the 16 lanes: (i, i+8), then (i, i+4), then (0, 2) (1, 3), then the pair.
[[gnu::always_inline]] inline float reduce_lanes(const float* v) {
  float a[8], b[4];
  for (int i = 0; i < 8; ++i) a[i] = v[i] + v[i + 8];
  for (int i = 0; i < 4; ++i) b[i] = a[i] + a[i + 4];
  return (b[0] + b[2]) + (b[1] + b[3]);
}

// y[r, c] = x[r, :] . w[c, :] + bias[c] for an MR x NR tile; k16 is a multiple of 16 (rows zero-padded).
// V is the native vector, P = 16 / lanes(V) of them hold one 16-lane sum.
template <typename V, int MR, int NR>
[[gnu::always_inline]] inline void tile(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t k16,
                                        const float* bias, float* y, int64_t ldy) {
  constexpr int W = sizeof(V) / sizeof(float), P = kLanes / W;
  V acc[MR][NR][P];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c)
      for (int p = 0; p < P; ++p) acc[r][c][p] = V{};
  for (int64_t k = 0; k < k16; k += kLanes) {
    for (int p = 0; p < P; ++p) {
      V xv[MR];
      for (int r = 0; r < MR; ++r) std::memcpy(&xv[r], x + r * ldx + k + p * W, sizeof(V));
      for (int c = 0; c < NR; ++c) {
        V wv;
        std::memcpy(&wv, w + c * ldw + k + p * W, sizeof(V));
        for (int r = 0; r < MR; ++r) acc[r][c][p] += xv[r] * wv;
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) {
      float lanes[kLanes];
      std::memcpy(lanes, acc[r][c], sizeof(lanes));
      y[r * ldy + c] = reduce_lanes(lanes) + (bias ? bias[c] : 0.0f);
    }
}

struct BlockArgs {
  const float* x;  // [tokens, ldx]
  int64_t ldx, tokens;
  const float* panel;  // [rows, k16]
  int64_t rows, k16;
  const float* bias;  // [rows] or null
  float* y;           // [tokens, ldy], column 0 = the panel's first row
  int64_t ldy;
};

// One token tile (M tokens from t) against every row of the panel: NR-row tiles, then single rows at the edge.
// (Helpers are always_inline templates, not lambdas: whatever is inlined compiles for the caller's target.)
template <typename V, int M, int NR>
[[gnu::always_inline]] inline void token_tile(const BlockArgs& a, int64_t t) {
  int64_t c = 0;
  for (; c + NR <= a.rows; c += NR)
    tile<V, M, NR>(a.x + t * a.ldx, a.ldx, a.panel + c * a.k16, a.k16, a.k16, a.bias ? a.bias + c : nullptr,
                a.y + t * a.ldy + c, a.ldy);
  for (; c < a.rows; ++c)
    tile<V, M, 1>(a.x + t * a.ldx, a.ldx, a.panel + c * a.k16, a.k16, a.k16, a.bias ? a.bias + c : nullptr,
               a.y + t * a.ldy + c, a.ldy);
}

// Every token of the block against every row of the panel, MR-token tiles and single tokens at the edge.
template <typename V, int MR, int NR>
[[gnu::always_inline]] inline void run_block(const BlockArgs& a) {
  int64_t t = 0;
  for (; t + MR <= a.tokens; t += MR) token_tile<V, MR, NR>(a, t);
  for (; t < a.tokens; ++t) token_tile<V, 1, NR>(a, t);
}

// Tile shapes keep accumulators + operands inside the register file: 4x4 sums = 16 zmm accumulators of 32;
// 2x3 = 12 of 16 ymm (two per sum); 1x3 = 12 of 16 xmm (four per sum).
#if defined(__x86_64__) || defined(__i386__)
[[gnu::target("avx512f,fma")]] void run_block_avx512(const BlockArgs& a) { run_block<Vec16, 4, 4>(a); }
[[gnu::target("avx2,fma")]] void run_block_avx2(const BlockArgs& a) { run_block<Vec8, 2, 3>(a); }
#endif
void run_block_baseline(const BlockArgs& a) { run_block<Vec4, 1, 3>(a); }

bool cpu_has(MatmulIsa isa) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  switch (isa) {
    case MatmulIsa::Baseline: return true;
    case MatmulIsa::Avx2Fma: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case MatmulIsa::Avx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  }
  return false;
#else
  return isa == MatmulIsa::Baseline;
#endif
}

MatmulIsa detect_isa() {
  // TACHYON_MATMUL_ISA=baseline|avx2|avx512 picks a kernel (for comparisons); unsupported ones are ignored.
  if (const char* env = std::getenv("TACHYON_MATMUL_ISA")) {
    const std::string_view name(env);
    for (MatmulIsa isa : {MatmulIsa::Baseline, MatmulIsa::Avx2Fma, MatmulIsa::Avx512})
      if (name == matmul_isa_name(isa) && cpu_has(isa)) return isa;
  }
  if (cpu_has(MatmulIsa::Avx512)) return MatmulIsa::Avx512;
  if (cpu_has(MatmulIsa::Avx2Fma)) return MatmulIsa::Avx2Fma;
  return MatmulIsa::Baseline;
}

std::atomic<int> selected_isa{-1};

void run_block_with(MatmulIsa isa, const BlockArgs& a) {
  switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case MatmulIsa::Avx512: run_block_avx512(a); return;
    case MatmulIsa::Avx2Fma: run_block_avx2(a); return;
#endif
    default: run_block_baseline(a); return;
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

const char* matmul_isa_name(MatmulIsa isa) {
  switch (isa) {
    case MatmulIsa::Baseline: return "baseline";
    case MatmulIsa::Avx2Fma: return "avx2";
    case MatmulIsa::Avx512: return "avx512";
  }
  return "?";
}

bool matmul_isa_supported(MatmulIsa isa) { return cpu_has(isa); }

MatmulIsa matmul_isa() {
  int isa = selected_isa.load(std::memory_order_relaxed);
  if (isa < 0) {
    isa = static_cast<int>(detect_isa());
    selected_isa.store(isa, std::memory_order_relaxed);
  }
  return static_cast<MatmulIsa>(isa);
}

void set_matmul_isa(MatmulIsa isa) {
  if (!cpu_has(isa)) fail("matmul: this CPU does not support the {} kernel", matmul_isa_name(isa));
  selected_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
}

void matmul_rows(const WeightRowReader& read_row, int64_t out_features, int64_t in_features, const float* bias,
                 const float* x, int64_t n, float* y) {
  if (n <= 0 || out_features <= 0) return;
  const int64_t k16 = ceil_div(in_features, kLanes) * kLanes;
  // Token rows padded with zeros to whole lanes, unless they already are.
  std::vector<float> x_padded;
  const float* xs = x;
  int64_t ldx = in_features;
  if (k16 != in_features) {
    x_padded.assign(n * k16, 0.0f);
    for (int64_t t = 0; t < n; ++t) std::copy_n(x + t * in_features, in_features, x_padded.data() + t * k16);
    xs = x_padded.data();
    ldx = k16;
  }
  // Tasks: row blocks, times token blocks when there are too few row blocks to keep every thread busy
  // (the k/v projections of small models). A task's panel is reused while consecutive tasks share it.
  const int64_t row_blocks = ceil_div(out_features, kRowBlock);
  const int64_t want_tasks = 4 * int64_t{cpu_thread_count()};
  int64_t token_step = n;
  if (row_blocks < want_tasks && n >= 32) token_step = std::max<int64_t>(16, ceil_div(n, ceil_div(want_tasks, row_blocks)));
  const int64_t token_blocks = ceil_div(n, token_step);
  const MatmulIsa isa = matmul_isa();
  parallel_for(row_blocks * token_blocks, [&](int64_t begin, int64_t end) {
    std::vector<float> panel(kRowBlock * k16, 0.0f);  // the tails past in_features stay zero
    int64_t loaded = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t block = task / token_blocks, first_token = (task % token_blocks) * token_step;
      const int64_t first_row = block * kRowBlock, rows = std::min(kRowBlock, out_features - first_row);
      if (block != loaded) {
        for (int64_t r = 0; r < rows; ++r) read_row(first_row + r, panel.data() + r * k16);
        loaded = block;
      }
      const BlockArgs args{xs + first_token * ldx, ldx, std::min(token_step, n - first_token), panel.data(), rows, k16,
                           bias ? bias + first_row : nullptr, y + first_token * out_features + first_row, out_features};
      run_block_with(isa, args);
    }
  });
}

void matmul_f32(const float* w, int64_t out_features, int64_t in_features, const float* bias, const float* x,
                int64_t n, float* y) {
  matmul_rows([&](int64_t row, float* out) { std::copy_n(w + row * in_features, in_features, out); }, out_features,
              in_features, bias, x, n, y);
}

}  // namespace tachyon
