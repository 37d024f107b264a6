// Token embedding lookup: bf16 table rows -> float32 activations.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace tachyon::kernels {

// x[t, :] = float(table[token_ids[t], :]) * scale. table: bf16 [vocab, dim]; token_ids: int32 [n_tokens] on the
// device; x: float [n_tokens, dim]; dim % 8 == 0. Ids outside [0, vocab) give a row of NaN (never a wild read),
// so a corrupt id shows up in the logits instead of reading another row.
void embedding_gather_bf16(const __nv_bfloat16* table, const int* token_ids, float* x, int n_tokens, int vocab,
                           int dim, float scale, cudaStream_t stream);

}  // namespace tachyon::kernels
