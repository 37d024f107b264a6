// persistent_decode: a whole decode step of a small dense model (Llama / Qwen2 / Qwen3 family, bf16 weights, one
// token, one sequence) as ONE kernel whose blocks stay resident: embedding, every decoder layer, and the final norm.
// lm_head and sampling stay the ordinary kernels after it. GpuModelOptions::persistent_decode (off in the library; on
// by default in `tachyon bench|generate`, `--no-persistent`): on an H100 it is 1.30x the CUDA graph of per-op kernels
// for SmolLM2 (session 11: 502 vs 654-667 us; docs/gpu-runtime.md "Persistent decode kernel" has the measured phase
// times and what to try next).
//
// Why: SmolLM2-135M's layer reads 7 MB (2.3 us at the stream-read bandwidth) but costs ~22 us as seven kernels,
// each paying a launch drain and its own memory round trips. Here a layer is five phases separated by grid
// barriers, and the weights are off the critical path: every block owns a contiguous range of rows of every matrix,
// and a producer warp bulk-copies (TMA) the NEXT layer's slices into the block's shared memory while the current
// layer runs (and stages the attention units' cached keys, cp.async); a phase only reads activations from L2.
//   P1  x -> RMSNorm -> q, k, v rows (every block normalizes the whole row itself, from the sums of squares the
//       row's owners published with it: no barrier or block reduction for the norm)
//   P2  attention: (KV head, key split) units over keys staged in shared memory a layer ahead (the cache rows below
//       the step's position are settled); RoPE (and Qwen3's q / k norms) on the fly; the unit holding the new
//       position appends its k, v to the paged cache
//   P3  every block merges the splits of every head (the combine), then its o_proj rows, added into its own rows of
//       the residual
//   P4  x -> RMSNorm -> its gate / up rows -> h = silu(gate) * up
//   P5  its down rows, added into its residual rows
// The residual rows a block owns are the same for o_proj and down, so only the full-row reads (P1, P4) cross blocks.
//
// The grid barrier is a 64-bit arrival counter that only grows (never reset: a barrier's target is the next multiple
// of the grid size above the arrival's ticket), so consecutive launches and graph replays need no reset node. All
// blocks must be resident at once: the grid is the SM count and the launch checks that a block fits per SM. On a
// GPU shared with other work a block may not become resident: the waiting blocks then trap after seconds (the launch
// fails with an error) rather than hang.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace tachyon::kernels {

struct PersistentLayer {
  const __nv_bfloat16* qkv = nullptr;      // [q_width + 2 kv_width, hidden]
  const float* qkv_bias = nullptr;         // [q_width + 2 kv_width] or null
  const float* q_norm = nullptr;           // [head_dim] or null (Qwen3); k_norm likewise
  const float* k_norm = nullptr;
  const __nv_bfloat16* o = nullptr;        // [hidden, q_width]
  const float* o_bias = nullptr;           // [hidden] or null
  const __nv_bfloat16* gate_up = nullptr;  // [2 intermediate, hidden]: gate rows, then up rows
  const __nv_bfloat16* down = nullptr;     // [hidden, intermediate]
  const float* input_norm = nullptr;       // [hidden]
  const float* post_attention_norm = nullptr;
  __nv_bfloat16* k_pages = nullptr;        // this layer's paged cache: [page][page_size][kv_heads][head_dim]
  __nv_bfloat16* v_pages = nullptr;
};

struct PersistentDecodeParams {
  const PersistentLayer* layers = nullptr;  // device array [n_layers]
  int n_layers = 0;
  const __nv_bfloat16* embed = nullptr;     // [vocab, hidden]
  const float* final_norm = nullptr;
  int hidden = 0;        // multiple of 8; padding columns of the weights and the residual are zero
  int intermediate = 0;  // multiple of 8
  int heads = 0, kv_heads = 0;
  int head_dim = 0;      // as stored: 64 or 128 (a padded head has zero q / k / v rows and zero o columns)
  float hidden_norm_eps = 0, head_norm_eps = 0;
  float attention_scale = 0;
  const float* rope_inv_freq = nullptr;  // [rotary_dim / 2]
  int rotary_dim = 0;
  float rope_attention_factor = 1.0f;
  bool rope_interleaved = false;
  const int* block_table = nullptr;  // the sequence's page ids
  int page_size = 0;
  // The step's inputs (device, written by earlier kernels): token id, its position, the KV length including it.
  const int* token = nullptr;
  const int* position = nullptr;
  const int* seq_len = nullptr;
  int max_splits = 0;  // key splits per KV head the workspace holds (persistent_decode_workspace)
  void* workspace = nullptr;
  float* normed_out = nullptr;             // [hidden]: the final norm of the last layer's residual
  unsigned long long* barrier = nullptr;   // one zero-initialized word, owned by one stream's launches
  // Optional (null: off): block 0's %globaltimer at the start, at each barrier's arrival and release, and at the end
  // ([2 + 2 * 5 * n_layers] values), then inside phases ([n_layers][5]: P1's weights landed and norm done; P2's
  // q / k ready and keys done; P3's combine done), then every block's work per phase summed over the layers
  // ([grid][5] ns, from the block's own release of the previous barrier to its arrival), for `tachyon bench`.
  unsigned long long* trace = nullptr;
};

constexpr int kPersistentPhases = 5;  // per layer
constexpr const char* kPersistentPhaseNames[kPersistentPhases] = {"qkv", "attention", "o_proj", "gate_up", "down"};
constexpr int kPersistentDetailStamps = 5;
constexpr int persistent_decode_block_clocks_at(int n_layers) {  // where the per-block sums start in the trace
  return 2 + (2 * kPersistentPhases + kPersistentDetailStamps) * n_layers;
}
constexpr int persistent_decode_trace_size(int n_layers, int grid) {
  return persistent_decode_block_clocks_at(n_layers) + kPersistentPhases * grid;
}

// Why the kernel cannot run these shapes ("" when it can): head_dim, query heads per KV head, widths, RoPE.
std::string persistent_decode_unsupported(const PersistentDecodeParams& params);
// Shared memory per block for a grid of `grid` blocks (0 if the head dim is unsupported); the caller compares it
// with the device's opt-in limit.
size_t persistent_decode_shared_bytes(const PersistentDecodeParams& params, int grid);
// Split count bound and workspace bytes for a cache of `max_keys` positions.
int persistent_decode_max_splits(const PersistentDecodeParams& params, int grid, int64_t max_keys);
size_t persistent_decode_workspace_bytes(const PersistentDecodeParams& params, int max_splits);
// The grid the launch uses: one block per SM, or 0 when a block does not fit on an SM.
int persistent_decode_grid(const PersistentDecodeParams& params);

// Enqueues the step (programmatic dependent launch: the first layer's weight copies overlap the previous kernel).
void persistent_decode(const PersistentDecodeParams& params, cudaStream_t stream);

}  // namespace tachyon::kernels
