// nibble/import/import.cuh — every checkpoint importer (GPTQ, AWQ, compressed-tensors, bitsandbytes, GGUF
// Q4_0 / Q4_1 / Q4_K, HQQ; each with a CPU and a GPU path) and the act-order activation permutation. Sits beside
// layout/: includes format/, thread/, quant/.
#pragma once

#include "awq.cuh"
#include "bitsandbytes.cuh"
#include "common.cuh"
#include "compressed_tensors.cuh"
#include "gguf.cuh"
#include "gptq.cuh"
#include "hqq.cuh"
#include "permute.cuh"
