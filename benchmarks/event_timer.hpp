// benchmarks/event_timer.hpp — the CUDA-event iteration loop of the bandwidth benchmarks (bench_quant,
// bench_import): each Google Benchmark iteration times one call of `op` between two events on `stream`.
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <nibble/status.cuh>

/// Runs `op()` (returning a nibble::Status) once per iteration between two events recorded on `stream`, sets
/// the iteration's manual time from them and returns the seconds summed over the iterations; a call that
/// fails skips the benchmark with its Status.
template <class Op>
double time_with_events(benchmark::State& state, cudaStream_t stream, Op&& op) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  double seconds = 0.0;
  for (auto _ : state) {
    cudaEventRecord(start, stream);
    const nibble::Status s = op();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    if (s != nibble::Status::kSuccess) {
      state.SkipWithError(nibble::to_string(s));
      break;
    }
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, start, stop);
    state.SetIterationTime(ms / 1e3);
    seconds += ms / 1e3;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return seconds;
}
