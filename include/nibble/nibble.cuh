// nibble/nibble.cuh — umbrella header: includes every public nibble header.
#pragma once

#include "config.cuh"
#include "detail/ptx.cuh"
#include "device.cuh"
#include "format/codebook.cuh"
#include "format/format.cuh"
#include "gemm/gemm.cuh"
#include "gemm/warp_mma.cuh"
#include "import/import.cuh"
#include "layout/gemm_layout.cuh"
#include "layout/repack.cuh"
#include "layout/shard.cuh"
#include "quant/quantize.cuh"
#include "quant/streaming.cuh"
#include "status.cuh"
#include "thread/convert.cuh"
#include "thread/pack.cuh"
