// nibble/config.cuh — function qualifiers, architecture guards and the library version.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#define NIBBLE_VERSION_MAJOR 0
#define NIBBLE_VERSION_MINOR 1
#define NIBBLE_VERSION_PATCH 0
#define NIBBLE_VERSION_STRING "0.1.0"

/// Callable from host and device code, always inlined (header-only library: no ODR issues).
#define NIBBLE_HOST_DEVICE __host__ __device__ __forceinline__
/// Device-only, always inlined.
#define NIBBLE_DEVICE __device__ __forceinline__

// Set while compiling device code for sm_80 or newer; the PTX wrappers that need Ampere are guarded by it.
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 800)
#define NIBBLE_ARCH_SM80 1
#endif

// Code whose meaning depends on the architectures a translation unit is built for (the GEMM kernels, and
// the host functions that choose between them: wgmma_available, resolve_mainloop, get_workspace_size, run)
// lives in an inline namespace named after NIBBLE_SM90A, as CUB's CUB_NAMESPACE_BEGIN does: two translation
// units built for "80" and for "90a" then link into one program without breaking the one-definition rule,
// and each runs its own kernels. NIBBLE_SM90A is set by the CMake package when the target's
// CUDA_ARCHITECTURES list 90a (see CMakeLists.txt).
#if defined(NIBBLE_SM90A)
#define NIBBLE_ARCH_NAMESPACE arch_sm90a
#else
#define NIBBLE_ARCH_NAMESPACE arch_sm80
#endif
#define NIBBLE_ARCH_NAMESPACE_BEGIN inline namespace NIBBLE_ARCH_NAMESPACE {
#define NIBBLE_ARCH_NAMESPACE_END }

namespace nibble {

NIBBLE_ARCH_NAMESPACE_BEGIN
/// True when this translation unit's device code includes sm_90a (NIBBLE_SM90A); see the namespace above.
#if defined(NIBBLE_SM90A)
inline constexpr bool kBuiltForSm90a = true;
#else
inline constexpr bool kBuiltForSm90a = false;
#endif
NIBBLE_ARCH_NAMESPACE_END

/// Oldest compute capability (major * 10 + minor) the kernels support.
inline constexpr int kMinComputeCapability = 80;

/// x rounded up to a multiple of m (m > 0, x >= 0).
NIBBLE_HOST_DEVICE constexpr std::int64_t round_up(std::int64_t x, std::int64_t m) { return (x + m - 1) / m * m; }

namespace detail {
/// True when `p` is a multiple of `a` bytes (a null pointer is aligned).
inline bool is_aligned(const void* p, std::size_t a) { return reinterpret_cast<std::uintptr_t>(p) % a == 0; }
}  // namespace detail

/// For `static_assert(dependent_false<T>, ...)` at the end of an `if constexpr` chain.
template <class... T>
inline constexpr bool dependent_false = false;

}  // namespace nibble
