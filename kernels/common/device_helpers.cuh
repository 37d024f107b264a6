// Small device-side helpers shared by the kernels: warp reductions, bf16 packing, the bf16 and fp16
// tensor-core instructions used by the gemv, FP4 and attention kernels, and cache-hinted 16-byte loads.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

namespace tachyon::kernels {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over the first `warps` warps of the block, which meet at `sync` (a barrier among exactly them); `scratch`
// holds one float per warp. Every participating thread gets the result, the warps' sums added in warp order.
template <typename Sync>
__device__ __forceinline__ float block_sum(float v, float* scratch, int warps, Sync&& sync) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  sync();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  sync();
  float total = 0;
  for (int w = 0; w < warps; ++w) total += scratch[w];
  return total;
}

// Sum over the whole block.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  return block_sum(v, scratch, (blockDim.x + 31) >> 5, [] { __syncthreads(); });
}

// Two bf16 packed in a 32-bit word (lower index in the lower half, as the mma fragments expect) -> floats.
__device__ __forceinline__ float2 unpack_bf16x2(uint32_t packed) {
  float2 r;
  r.x = __uint_as_float(packed << 16);
  r.y = __uint_as_float(packed & 0xffff0000u);
  return r;
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Splits two floats into bf16 "high" parts and bf16 "low" remainders: a + b ~= hi + lo to about 2^-17
// relative. Two tensor-core products (hi and lo) then give nearly float32 accuracy for the activations.
__device__ __forceinline__ void split_bf16x2(float a, float b, uint32_t& hi, uint32_t& lo) {
  hi = pack_bf16x2(a, b);
  const float2 back = unpack_bf16x2(hi);
  lo = pack_bf16x2(a - back.x, b - back.y);
}

// D = A * B + D for one m16n8k16 tile: A bf16 16x16 (row), B bf16 16x8 (col), D float32 16x8.
// Fragment ownership (lane = 4 * group + thread_in_group):
//   a[0]: (row group, k 2t..2t+1)   a[1]: (row group+8, k 2t..2t+1)
//   a[2]: (row group, k 2t+8..2t+9) a[3]: (row group+8, k 2t+8..2t+9)
//   b[0]: (k 2t..2t+1, col group)   b[1]: (k 2t+8..2t+9, col group)
//   d[0..1]: (row group, cols 2t, 2t+1)   d[2..3]: (row group+8, cols 2t, 2t+1)
__device__ __forceinline__ void mma_bf16_16x8x16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D += A * B for one m16n8k16 tile with fp16 inputs and float32 accumulation (fragments as mma_bf16_16x8x16; the
// FP4 and FP8 kernels, whose weight codes are exact in fp16).
__device__ __forceinline__ void mma_f16_16x8x16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t half2_bits(__half2 v) { return *reinterpret_cast<uint32_t*>(&v); }

// x ~= hi + lo, both fp16 pairs (lower index in the lower half).
__device__ __forceinline__ void split_f16x2(float a, float b, uint32_t& hi, uint32_t& lo) {
  const __half2 h = __floats2half2_rn(a, b);
  const float2 back = __half22float2(h);
  hi = half2_bits(h);
  lo = half2_bits(__floats2half2_rn(a - back.x, b - back.y));
}

// Two e4m3 codes (the low byte is the lower index) -> their exact values as an fp16 pair (every e4m3 value is an
// fp16 value): one conversion instruction on sm_89+.
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t two_bytes) {
  const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two_bytes), __NV_E4M3);
  return static_cast<uint32_t>(raw.x) | (static_cast<uint32_t>(raw.y) << 16);
}

// 16-byte load of data read once (weights): bypasses L1 allocation so that activations stay cached.
__device__ __forceinline__ uint4 load_streaming_16B(const void* ptr) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(ptr));
  return r;
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// gpt-oss's clamped SwiGLU (models/gpt_oss.cpp): g = min(g, limit), u = clamp(u, -limit, limit),
// h = (u + 1) * g * sigmoid(alpha * g).
__device__ __forceinline__ float clamped_swiglu(float g, float u, float alpha, float limit) {
  g = fminf(g, limit);
  u = fminf(fmaxf(u, -limit), limit);
  return (u + 1.0f) * (g / (1.0f + expf(-alpha * g)));
}

}  // namespace tachyon::kernels

namespace tachyon::kernels {

// Asynchronous 16-byte global -> shared copy that skips L1 (data read once). Completion is tracked per
// thread in commit groups: cp_async_wait<N>() returns once at most N of this thread's groups are pending.
// No "memory" clobber here on purpose: it would stop the compiler from hoisting the address loads of later
// copies (e.g. block-table lookups) above earlier copies, serializing their latencies. Ordering against
// ordinary accesses of the destination comes from cp_async_wait (which clobbers memory) and barriers.
// cp_async_16B_to_shared_address: the destination already a shared-space address (lets a hot loop convert its
// ring's address once).
__device__ __forceinline__ void cp_async_16B_to_shared_address(uint32_t shared_dst, const void* global_src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_dst), "l"(global_src));
}
__device__ __forceinline__ void cp_async_16B(void* shared_dst, const void* global_src) {
  cp_async_16B_to_shared_address(static_cast<uint32_t>(__cvta_generic_to_shared(shared_dst)), global_src);
}
// A 4-byte copy (through L1: .cg takes 16 bytes only), e.g. a scalar a block needs later, without stalling a register
// on its load.
__device__ __forceinline__ void cp_async_4B(void* shared_dst, const void* global_src) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(shared_dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(global_src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace tachyon::kernels

namespace tachyon::kernels {

// ldmatrix: four 8x8 bf16 matrices from shared memory; lane l supplies the address of row (l % 8) of matrix
// (l / 8); each lane receives, per matrix, the two elements (row lane / 4, cols 2 (lane % 4) + 0..1),
// or with .trans the same of the transposed matrix. Row addresses must be 16-byte aligned.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* shared_row) {
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(shared_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* shared_row) {
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(shared_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

}  // namespace tachyon::kernels

namespace tachyon::kernels {

// Programmatic dependent launch (sm_90). A kernel launched with launch_programmatic() (common/launch.cuh, which
// states the contract) may start while the previous kernel in the stream is still running: it must call
// wait_for_previous_kernel() before touching anything that kernel writes (or reads), and before any global write.
// Kernels call allow_next_kernel_to_start() early to let such a dependent be scheduled; that is always safe, since
// the dependent still waits for full completion. In a kernel launched normally the wait returns at once.
__device__ __forceinline__ void wait_for_previous_kernel() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void allow_next_kernel_to_start() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }

}  // namespace tachyon::kernels
