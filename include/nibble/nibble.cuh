// nibble/nibble.cuh — umbrella header: includes every public nibble header.
#pragma once

#include "config.cuh"
#include "device.cuh"
#include "status.cuh"
#include "detail/ptx.cuh"
#include "format/codebook.cuh"
#include "format/format.cuh"
#include "thread/convert.cuh"
#include "thread/pack.cuh"
#include "quant/quantize.cuh"
#include "quant/streaming.cuh"
#include "layout/gemm_layout.cuh"
#include "layout/repack.cuh"
#include "gemm/gemm.cuh"
#include "gemm/warp_mma.cuh"
