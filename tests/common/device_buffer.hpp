// tests/common/device_buffer.hpp — device RAII for tests: DevBuf (cudaMalloc'd bytes with upload /
// download), to_device(vector), Stream, GraphExec and capture() (a Status-returning body captured into an
// instantiated CUDA graph; the capture is always ended).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "common/check.hpp"

class DevBuf {
 public:
  DevBuf() = default;
  explicit DevBuf(std::size_t bytes) : bytes_(bytes) {
    if (bytes > 0) CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  }
  ~DevBuf() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DevBuf(DevBuf&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;

  void* get() const { return ptr_; }
  template <class U>
  U* as() const {
    return static_cast<U*>(ptr_);
  }
  std::size_t size() const { return bytes_; }
  void upload(const void* src, std::size_t bytes) {
    if (bytes > 0) CUDA_CHECK(cudaMemcpy(ptr_, src, bytes, cudaMemcpyHostToDevice));
  }
  template <class U>
  std::vector<U> download(std::size_t offset_bytes = 0, std::size_t bytes = std::size_t(-1)) const {
    if (bytes == std::size_t(-1)) bytes = bytes_ - offset_bytes;
    std::vector<U> out(bytes / sizeof(U));
    if (bytes > 0)
      CUDA_CHECK(cudaMemcpy(out.data(), static_cast<const char*>(ptr_) + offset_bytes, bytes, cudaMemcpyDeviceToHost));
    return out;
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

template <class V>
DevBuf to_device(const V& v) {
  DevBuf d(v.size() * sizeof(typename V::value_type));
  d.upload(v.data(), d.size());
  return d;
}

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() {
    if (s != nullptr) cudaStreamDestroy(s);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};

struct GraphExec {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~GraphExec() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
};

/// Captures `body(stream)` (which returns a Status) into a graph on `stream` and instantiates it. The
/// capture is always ended, also when body fails, so the stream stays usable.
template <class Body>
void capture(cudaStream_t stream, GraphExec& g, Body&& body) {
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const Status st = body(stream);
  const cudaError_t end = cudaStreamEndCapture(stream, &g.graph);
  NIBBLE_CHECK(st);
  CUDA_CHECK(end);
  CUDA_CHECK(cudaGraphInstantiate(&g.exec, g.graph, 0));
}
