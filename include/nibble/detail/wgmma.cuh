// nibble/detail/wgmma.cuh — the Hopper warpgroup MMA (wgmma, sm_90a only) in the one form nibble uses:
// A (64 x 16) from registers, B (16 x N) from shared memory through a matrix descriptor, fp32 accumulators.
//
// Everything here compiles for every target; the instructions are emitted only where the device pass
// targets sm_90a (__CUDA_ARCH_FEAT_SM90_ALL, see kWgmmaCompiled) and are empty elsewhere, so callers keep
// their wgmma code inside `if constexpr (kWgmmaCompiled)`.
//
// Register A fragment (per warp w of the warpgroup, rows 16w..16w+15 of the 64-row A; g = lane / 4,
// t = lane % 4) is the mma.m16n8k16 A fragment: a[0] = (row g, k 2t..2t+1), a[1] = (row g + 8, k 2t..),
// a[2] = (row g, k 2t+8..), a[3] = (row g + 8, k 2t+8..). Accumulator d[4i + r] of the m64nN result is
// (row g + 8 (r / 2), column 8i + 2t + r % 2) of the warp's 16 rows.
#pragma once

#include "ptx.cuh"

namespace nibble::detail {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
inline constexpr bool kWgmmaCompiled = true;
#else
inline constexpr bool kWgmmaCompiled = false;
#endif

/// wgmma.fence: orders this thread's register writes (A fragments, accumulators) before later wgmma reads.
NIBBLE_DEVICE void wgmma_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}
/// Closes the current group of wgmma operations.
NIBBLE_DEVICE void wgmma_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#endif
}
/// Waits until at most kPending wgmma groups of this warp are in flight.
template <int kPending>
NIBBLE_DEVICE void wgmma_wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
#endif
}
/// wgmma_wait<kPending>, and `regs` (the A fragment of an older wgmma group) are operands of the wait:
/// wgmma reads its register operands asynchronously, and without a use at the wait the register allocator
/// may hand those registers to other values while that group is still reading them.
template <int kPending>
NIBBLE_DEVICE void wgmma_wait_holding(std::uint32_t (&regs)[4]) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %4;"
               : "+r"(regs[0]), "+r"(regs[1]), "+r"(regs[2]), "+r"(regs[3])
               : "n"(kPending)
               : "memory");
#else
  (void)regs;
#endif
}

/// setmaxnreg (sm_90a; nothing elsewhere): the executing warpgroup gives registers back to the CTA's pool down
/// to kRegs per thread (dec) or takes them up to kRegs (inc), every warp of the warpgroup together.
template <int kRegs>
NIBBLE_DEVICE void setmaxnreg_dec() {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegs));
#endif
}
template <int kRegs>
NIBBLE_DEVICE void setmaxnreg_inc() {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegs));
#endif
}

/// Makes this thread's generic-proxy shared-memory writes (st.shared, cp.async) visible to the async proxy
/// (wgmma operand reads); execute before the barrier that publishes the data. Also orders this thread's reads of
/// a buffer before async-proxy writes (bulk copies) that a later barrier arrival permits.
NIBBLE_DEVICE void fence_proxy_async_shared() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

/// Shared-memory matrix descriptor of a K-major operand stored with the 128-byte swizzle: rows of 64
/// 16-bit elements (128 bytes), 16-byte chunk c of row r at chunk c ^ (r % 8), 8-row groups 1024 bytes
/// apart, the tile 1024-byte aligned. `smem` points at row 0's first element of the k-step (tile start +
/// 32 bytes per 16-element k-step; the hardware applies the swizzle to the absolute address). Fields: start address >>
/// 4 (bits 0-13), leading byte offset >> 4 (16-29; unused for swizzled K-major, 1 by convention), stride byte offset >>
/// 4 (32-45: 1024 B between 8-row groups), swizzle mode (62-63: 1 = 128 B).
NIBBLE_DEVICE std::uint64_t make_smem_desc_sw128(const void* smem) {
  const std::uint64_t addr = smem_addr(smem);
  return ((addr & 0x3FFFF) >> 4) | (std::uint64_t(1) << 16) | (std::uint64_t(1024 >> 4) << 32) |
         (std::uint64_t(1) << 62);
}

#define NIBBLE_WGMMA_RS_N64(TY)                                                                                     \
  asm volatile(                                                                                                     \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                                  \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY                                                       \
      " {"                                                                                                          \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                                                      \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"                                             \
      "}, {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"                                                                 \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),      \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),     \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])                   \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1))

#define NIBBLE_WGMMA_RS_N128(TY)                                                                                    \
  asm volatile(                                                                                                     \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                                                  \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY                                                      \
      " {"                                                                                                          \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                                                      \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"                                            \
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"                                            \
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"                                             \
      "}, {%64,%65,%66,%67}, %68, p, 1, 1, 0;\n}\n"                                                                 \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),      \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),     \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),     \
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),     \
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),     \
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),     \
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])                   \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1))

#define NIBBLE_WGMMA_RS_N256(TY)                                                                                     \
  asm volatile(                                                                                                      \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"                                                                  \
      "wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY                                                       \
      " {"                                                                                                           \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                                                       \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"                                             \
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"                                             \
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,"                                             \
      "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"                                             \
      "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,"                                             \
      "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,"                                 \
      "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127"                              \
      "}, {%128,%129,%130,%131}, %132, p, 1, 1, 0;\n}\n"                                                             \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),  \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),       \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),      \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),      \
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),      \
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),      \
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),      \
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]),      \
        "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]),      \
        "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]),      \
        "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]),      \
        "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]),      \
        "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), \
        "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),            \
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]),            \
        "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]),            \
        "+f"(d[126]), "+f"(d[127])                                                                                   \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1))

/// d (64 x N, fp32) += A (64 x 16, registers, T) * B (16 x N, shared memory via descriptor, T), for the
/// N the warpgroup kernel's tiles use (64, 128, 256). T is __half or __nv_bfloat16. Asynchronous: bracket
/// with wgmma_fence / wgmma_commit / wgmma_wait_holding. Empty where the device code is not sm_90a.
template <int N, class T>
NIBBLE_DEVICE void wgmma_rs(float (&d)[N / 2], const std::uint32_t (&a)[4], std::uint64_t desc_b) {
  static_assert(N == 64 || N == 128 || N == 256, "wgmma_rs: N must be 64, 128 or 256");
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "wgmma_rs: T is f16 or bf16");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kF16 = std::is_same_v<T, __half>;
  if constexpr (N == 64) {
    if constexpr (kF16)
      NIBBLE_WGMMA_RS_N64("f16");
    else
      NIBBLE_WGMMA_RS_N64("bf16");
  } else if constexpr (N == 128) {
    if constexpr (kF16)
      NIBBLE_WGMMA_RS_N128("f16");
    else
      NIBBLE_WGMMA_RS_N128("bf16");
  } else {
    if constexpr (kF16)
      NIBBLE_WGMMA_RS_N256("f16");
    else
      NIBBLE_WGMMA_RS_N256("bf16");
  }
#else
  (void)d, (void)a, (void)desc_b;
#endif
}
#undef NIBBLE_WGMMA_RS_N64
#undef NIBBLE_WGMMA_RS_N128
#undef NIBBLE_WGMMA_RS_N256

}  // namespace nibble::detail
