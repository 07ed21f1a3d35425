// tests/gemm/odr_sm80.cu — the probe unit built for CUDA_ARCHITECTURES 80 (no NIBBLE_SM90A).
#define NIBBLE_ODR_PROBE_NAME probe_sm80
#include "odr_probe.hpp"
