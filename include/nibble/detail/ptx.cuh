// nibble/detail/ptx.cuh — one small function per PTX instruction nibble uses (sm_80+ unless noted).
#pragma once

#include "../config.cuh"

namespace nibble::detail {

/// lop3.b32: any 3-input bitwise function; `kLut` is the truth table ((a op b) op c evaluated on 0xF0,0xCC,0xAA).
template <int kLut>
NIBBLE_DEVICE std::uint32_t lop3(std::uint32_t a, std::uint32_t b, std::uint32_t c) {
  std::uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, %4;" : "=r"(d) : "r"(a), "r"(b), "r"(c), "n"(kLut));
  return d;
}
/// Truth table of (a & b) | c for lop3.
inline constexpr int kLutAndOr = (0xF0 & 0xCC) | 0xAA;
static_assert(kLutAndOr == 0xEA, "(a & b) | c");

/// prmt.b32: byte permute; result byte i = byte `sel` nibble i (3 bits) of the 8-byte pair {b, a}.
NIBBLE_DEVICE std::uint32_t prmt(std::uint32_t a, std::uint32_t b, std::uint32_t sel) {
  std::uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}

/// Shared-memory address of a generic pointer (for cp.async / ldmatrix operands).
NIBBLE_DEVICE std::uint32_t smem_addr(const void* p) { return static_cast<std::uint32_t>(__cvta_generic_to_shared(p)); }

/// cp.async 16 bytes global -> shared, cached in L2 only; zero-fills the destination when !pred.
NIBBLE_DEVICE void cp_async_16(void* smem, const void* gmem, bool pred) {
  const int src_bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(smem)), "l"(gmem), "r"(src_bytes));
}

/// Prefetches the 128-byte line holding `gmem` into L2 (no register result, no ordering).
NIBBLE_DEVICE void prefetch_l2(const void* gmem) { asm volatile("prefetch.global.L2 [%0];" ::"l"(gmem)); }

/// Closes the current group of cp.async operations.
NIBBLE_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;" ::); }

/// Programmatic dependent launch (sm_90+, no-ops elsewhere and when the kernel was launched without the
/// attribute): wait until the previous kernel in the stream has completed and its memory is visible.
NIBBLE_DEVICE void griddepcontrol_wait() {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
/// Programmatic dependent launch: lets the next kernel in the stream start (its own wait still orders it
/// after this grid's completion).
NIBBLE_DEVICE void griddepcontrol_launch_dependents() {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/// Waits until at most `kPending` committed cp.async groups are still in flight.
template <int kPending>
NIBBLE_DEVICE void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending));
}

/// ldmatrix.x4: four 8x8 b16 matrices from shared memory; lane l gives the row address of matrix l/8.
NIBBLE_DEVICE void ldmatrix_x4(std::uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}

/// ldmatrix.x4 at a shared-memory address (smem_addr).
NIBBLE_DEVICE void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem));
}

/// mma.sync m16n8k16, row.col, fp32 accumulate; T is __half or __nv_bfloat16 (A and B both of T).
/// a: 4 regs (A 16x16 fragment), b: 2 regs (B 16x8 fragment), c: 4 floats accumulated in place.
template <class T>
NIBBLE_DEVICE void mma_m16n8k16(float (&c)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    static_assert(dependent_false<T>, "mma_m16n8k16: T must be __half or __nv_bfloat16");
  }
}

/// mma_m16n8k16 into fresh accumulators: d = A * B (C = 0, no zeroed registers needed).
template <class T>
NIBBLE_DEVICE void mma_m16n8k16_zero_c(float (&d)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "T: __half or __nv_bfloat16");
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%10,%10,%10};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(0.0f));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%10,%10,%10};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(0.0f));
  }
}

// ---- mbarrier + 1-D bulk copies (the TMA unit without a tensor map; sm_90+, no-ops
// elsewhere, like griddepcontrol above) ----------------------------
/// Initializes the mbarrier at shared address `bar` for `count` arrivals.
NIBBLE_DEVICE void mbarrier_init(std::uint32_t bar, int count) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile("mbarrier.init.shared.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
#else
  (void)bar, (void)count;
#endif
}
/// Makes mbarrier initializations visible to the async proxy (the bulk copies) before their first use.
NIBBLE_DEVICE void fence_mbarrier_init() {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}
/// Arrives at `bar` and adds `bytes` to the transaction count its current phase waits for.
NIBBLE_DEVICE void mbarrier_arrive_expect_tx(std::uint32_t bar, std::uint32_t bytes) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
#else
  (void)bar, (void)bytes;
#endif
}
/// Arrives at `bar` once every cp.async this thread issued before has landed (the arrival is counted in the
/// mbarrier's init count: .noinc).
NIBBLE_DEVICE void cp_async_mbarrier_arrive_noinc(std::uint32_t bar) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];" ::"r"(bar) : "memory");
#else
  (void)bar;
#endif
}
/// Arrives at `bar` (release at CTA scope: this thread's earlier shared-memory accesses happen before).
NIBBLE_DEVICE void mbarrier_arrive(std::uint32_t bar) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile("mbarrier.arrive.shared.b64 _, [%0];" ::"r"(bar) : "memory");
#else
  (void)bar;
#endif
}
/// Named barrier `id` (1 .. 15; 0 is __syncthreads) for `count` threads (a multiple of 32), whole warps.
NIBBLE_DEVICE void named_barrier_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(count) : "memory");
}
/// Waits until the phase of `bar` with parity `parity` has completed.
NIBBLE_DEVICE void mbarrier_wait_parity(std::uint32_t bar, std::uint32_t parity) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile(
      "{\n .reg .pred p;\n NIBBLE_WAIT_%=:\n mbarrier.try_wait.parity.shared.b64 p, [%0], %1;\n @!p bra "
      "NIBBLE_WAIT_%=;\n}" ::"r"(bar),
      "r"(parity)
      : "memory");
#else
  (void)bar, (void)parity;
#endif
}
/// Bulk copy of `bytes` (a multiple of 16; both addresses 16-byte aligned) global -> shared, completing as
/// transactions on the mbarrier `bar`.
NIBBLE_DEVICE void cp_async_bulk_g2s(std::uint32_t smem, const void* gmem, std::uint32_t bytes, std::uint32_t bar) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem),
               "l"(gmem), "r"(bytes), "r"(bar)
               : "memory");
#else
  (void)smem, (void)gmem, (void)bytes, (void)bar;
#endif
}

/// 16-byte global load through the non-coherent path, not allocated in L1 (streamed data).
NIBBLE_DEVICE uint4 ld_global_nc_v4(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

}  // namespace nibble::detail
