// nibble/nibble.cuh — umbrella header: includes every public nibble header.
#pragma once

#include "config.cuh"
#include "status.cuh"
#include "format/format.cuh"
#include "format/codebook.cuh"
#include "thread/pack.cuh"
#include "thread/convert.cuh"
#include "detail/ptx.cuh"
#if __has_include("quant/quantize.cuh")
#include "quant/quantize.cuh"
#endif
#if __has_include("gemm/gemm.cuh")
#include "gemm/gemm.cuh"
#endif
