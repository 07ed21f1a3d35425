// tests/gemm/odr_sm90a.cu — the probe unit built for CUDA_ARCHITECTURES 90a (NIBBLE_SM90A).
#define NIBBLE_ODR_PROBE_NAME probe_sm90a
#include "odr_probe.hpp"
