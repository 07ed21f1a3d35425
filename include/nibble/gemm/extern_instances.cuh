// nibble/gemm/extern_instances.cuh — optional: declares every typed gemm::run<T, F> `extern template`, so that a
// translation unit including this header (after gemm.cuh) calls the GEMM without compiling its kernels. Each
// combination must then be explicitly instantiated in exactly one translation unit of the program, built for
// the same CUDA architectures (the architecture namespace must match, or the link fails), e.g. a file with
//
//   #include <nibble/gemm/gemm.cuh>
//   template nibble::Status nibble::gemm::run<__half, nibble::Format::kS4>(const nibble::gemm::Arguments&, void*,
//                                                                          std::size_t, cudaStream_t);
//
// This splits the kernels' compilation over up to ten translation units that build in parallel and are
// compiled once for many programs (nibble's own tests and benchmarks do this: cmake/nibble_instances.cmake).
// The untyped run(args, ...) dispatches to these and compiles no kernel either.
#pragma once

#include "gemm.cuh"

namespace nibble::gemm {
NIBBLE_ARCH_NAMESPACE_BEGIN
extern template Status run<__half, Format::kS4>(const Arguments&, void*, std::size_t, cudaStream_t);
extern template Status run<__half, Format::kU4>(const Arguments&, void*, std::size_t, cudaStream_t);
extern template Status run<__half, Format::kNf4>(const Arguments&, void*, std::size_t, cudaStream_t);
extern template Status run<__half, Format::kFp4>(const Arguments&, void*, std::size_t, cudaStream_t);
extern template Status run<__half, Format::kAffineU4>(const Arguments&, void*, std::size_t, cudaStream_t);
extern template Status run<__nv_bfloat16, Format::kS4>(const Arguments&, void*, std::size_t, cudaStream_t);
extern template Status run<__nv_bfloat16, Format::kU4>(const Arguments&, void*, std::size_t, cudaStream_t);
extern template Status run<__nv_bfloat16, Format::kNf4>(const Arguments&, void*, std::size_t, cudaStream_t);
extern template Status run<__nv_bfloat16, Format::kFp4>(const Arguments&, void*, std::size_t, cudaStream_t);
extern template Status run<__nv_bfloat16, Format::kAffineU4>(const Arguments&, void*, std::size_t, cudaStream_t);
NIBBLE_ARCH_NAMESPACE_END
}  // namespace nibble::gemm
