// embedding_gather_bf16: x[t, :] = table[id[t], :] * scale, bf16 [vocab, dim] -> float32 [tokens, dim].
// One block per token, 16-byte loads of the row (8 bf16) and two float4 stores. Reads dim * 2 bytes per
// token: negligible; costs its launch, hence programmatic dependent launch (waits for the previous kernel first
// thing). Exact (bf16 -> float32 is exact; scale = 1 in most models).
#include "embedding/embedding.h"

#include <cstdint>

#include "common/device_helpers.cuh"
#include "common/launch.cuh"
#include "cuda/cuda_check.h"

namespace tachyon::kernels {

namespace {

__global__ void embedding_gather_kernel(const __nv_bfloat16* table, const int* token_ids, float* x, int vocab,
                                        int dim, float scale) {
  wait_for_previous_kernel();  // launched programmatically: the token ids may come from the previous kernel
  allow_next_kernel_to_start();
  const int token = blockIdx.x;
  const int id = token_ids[token];
  float* out = x + static_cast<int64_t>(token) * dim;
  if (id < 0 || id >= vocab) {
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[i] = __int_as_float(0x7fc00000);
    return;
  }
  const uint4* row = reinterpret_cast<const uint4*>(table + static_cast<int64_t>(id) * dim);
  for (int i = threadIdx.x; i < dim / 8; i += blockDim.x) {
    const uint4 packed = row[i];
    const float2 a = unpack_bf16x2(packed.x), b = unpack_bf16x2(packed.y), c = unpack_bf16x2(packed.z),
                 d = unpack_bf16x2(packed.w);
    reinterpret_cast<float4*>(out)[2 * i] = make_float4(a.x * scale, a.y * scale, b.x * scale, b.y * scale);
    reinterpret_cast<float4*>(out)[2 * i + 1] = make_float4(c.x * scale, c.y * scale, d.x * scale, d.y * scale);
  }
}

}  // namespace

void embedding_gather_bf16(const __nv_bfloat16* table, const int* token_ids, float* x, int n_tokens, int vocab,
                           int dim, float scale, cudaStream_t stream) {
  TACHYON_REQUIRE(dim > 0 && dim % 8 == 0, "embedding_gather_bf16", "dim must be a positive multiple of 8");
  if (n_tokens <= 0) return;
  launch_programmatic("embedding_gather_kernel", embedding_gather_kernel, dim3(n_tokens), dim3(128), 0, stream, table,
                      token_ids, x, vocab, dim, scale);
}

}  // namespace tachyon::kernels
