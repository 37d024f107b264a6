// Multi-token matrix products of the CPU reference backend: y[t, o] = sum_k x[t, k] * w[o, k] (+ bias[o]),
// x: [n, in], w: [out, in] (rows of any dtype, handed over by a reader), y: [n, out].
//
// Each task dequantizes a block of weight rows once into a float panel that stays in L2 and runs every token
// of its range against it with a register-blocked kernel (tokens x rows of 16-float lanes), compiled for
// AVX-512, AVX2+FMA and baseline x86-64 and picked at run time. Tasks (row blocks, and token blocks where a
// matrix has few rows) spread over parallel_for.
//
// Numerics: every output is the same computation whatever n is or which tile it falls in: 16 lanes (lane =
// k mod 16) accumulated in k order with fused multiply-add, then one fixed reduction tree, then + bias. A row's
// result therefore does not depend on how many rows are computed with it (batched prefill gives the same
// bits as token-by-token decode), and the AVX-512 and AVX2 kernels agree bit for bit (the baseline kernel,
// without FMA, rounds differently).
#pragma once
#include <cstdint>
#include <functional>

namespace tachyon {

// Writes weight row `row` ([in] floats) to `out`.
using WeightRowReader = std::function<void(int64_t row, float* out)>;

void matmul_rows(const WeightRowReader& read_row, int64_t out_features, int64_t in_features, const float* bias,
                 const float* x, int64_t n, float* y);
// Same for a float32 [out, in] matrix in memory.
void matmul_f32(const float* w, int64_t out_features, int64_t in_features, const float* bias, const float* x,
                int64_t n, float* y);

// The kernel in use; tests force each one the machine supports to compare them.
enum class MatmulIsa { Baseline, Avx2Fma, Avx512 };
MatmulIsa matmul_isa();
bool matmul_isa_supported(MatmulIsa isa);
void set_matmul_isa(MatmulIsa isa);  // must be supported
const char* matmul_isa_name(MatmulIsa isa);

}  // namespace tachyon
