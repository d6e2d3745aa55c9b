// Thin wrappers over the sm_90 / sm_90a instructions of the Hopper attention path: mbarrier
// (init, expect-tx arrive, parity wait), TMA tensor loads completing on an mbarrier and tensor-map
// prefetch, wgmma
// fence / commit / wait, shared-memory matrix descriptors for 128-byte-swizzled tiles,
// setmaxnreg and named barriers. Hand-written PTX, like ptx_sm80.cuh (no CUTLASS on the GPU
// machine). Bodies compile only for sm_90a; other passes see empty functions that are never run.
#pragma once

#include <cstdint>

#include "ptx_sm80.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SP_SM90A_ASM(...) asm volatile(__VA_ARGS__)
#else
#define SP_SM90A_ASM(...) ((void)0)
#endif

namespace sp::cuda {

__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t count) {
  SP_SM90A_ASM("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_address(bar)), "r"(count));
}
// Makes initialised barriers visible to the async proxy (TMA) before first use.
__device__ __forceinline__ void fence_barrier_init() {
  SP_SM90A_ASM("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  SP_SM90A_ASM("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_address(bar)),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  SP_SM90A_ASM("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_address(bar)) : "memory");
}
// Blocks until the barrier's phase with the given parity has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t parity) {
  SP_SM90A_ASM(
      "{\n.reg .pred done;\nwait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n}\n" ::"r"(smem_address(bar)),
      "r"(parity)
      : "memory");
}

// TMA: the box at (c0, c1, c2) of a 3-D tensor map into shared memory; rows past the tensor's
// extent are zero-filled. Completion adds the box's bytes to `bar`'s transaction count.
__device__ __forceinline__ void tma_load_3d(void* dst, const void* tensor_map, uint64_t* bar,
                                            int c0, int c1, int c2) {
  SP_SM90A_ASM(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(smem_address(dst)),
      "l"(reinterpret_cast<uint64_t>(tensor_map)), "r"(c0), "r"(c1), "r"(c2),
      "r"(smem_address(bar))
      : "memory");
}

// Pulls a TMA tensor map (a __grid_constant__ kernel parameter) into the descriptor cache.
__device__ __forceinline__ void prefetch_tensor_map(const void* tensor_map) {
  SP_SM90A_ASM("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(tensor_map))
               : "memory");
}

__device__ __forceinline__ void wgmma_fence() {
  SP_SM90A_ASM("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  SP_SM90A_ASM("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int pending>
__device__ __forceinline__ void wgmma_wait() {
  SP_SM90A_ASM("wgmma.wait_group.sync.aligned %0;\n" ::"n"(pending) : "memory");
}
// Makes this thread's generic-proxy writes to shared memory (st.shared, cp.async) visible to the
// async proxy (wgmma operands) after the next barrier.
__device__ __forceinline__ void fence_proxy_async_shared() {
  SP_SM90A_ASM("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Keeps the compiler from moving reads/writes of accumulator registers across wgmma waits.
template <int R, int C>
__device__ __forceinline__ void fence_registers(float (&d)[R][C]) {
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int j = 0; j < C; ++j) asm volatile("" : "+f"(d[i][j])::"memory");
}

template <int regs>
__device__ __forceinline__ void setmaxnreg_inc() {
  SP_SM90A_ASM("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(regs));
}
template <int regs>
__device__ __forceinline__ void setmaxnreg_dec() {
  SP_SM90A_ASM("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(regs));
}

// Barrier `id` (1..15; 0 is __syncthreads) among `threads` threads of the CTA.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
// Arrives on barrier `id` without waiting (the other `threads` minus these wait in bar.sync).
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Descriptor of a shared-memory operand stored in 128-byte swizzle atoms (8 rows of 128 bytes,
// 1024-byte aligned), the layout TMA writes with CU_TENSOR_MAP_SWIZZLE_128B.
//   K-major (Q, K: rows along M/N, 64 elements of the reduction dim per row): leading offset
//   unused, stride offset = 1024 bytes between 8-row groups; the start address advances 32
//   bytes per k-step of 16 elements inside the atom.
//   MN-major (V as B of P V: rows are the reduction dim, 64 elements of N per row): leading
//   offset = bytes between 64-column chunks of N, stride offset = 1024 bytes between 8-row
//   groups of the reduction dim.
__device__ __forceinline__ uint64_t smem_descriptor(const void* p, uint32_t leading_bytes,
                                                    uint32_t stride_bytes) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((smem_address(p) & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>((leading_bytes >> 4) & 0x3FFF) << 16;
  d |= static_cast<uint64_t>((stride_bytes >> 4) & 0x3FFF) << 32;
  d |= uint64_t{1} << 62;  // 128-byte swizzle
  return d;
}

}  // namespace sp::cuda
