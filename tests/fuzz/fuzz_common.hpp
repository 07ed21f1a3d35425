// tests/fuzz/fuzz_common.hpp — what every importer fuzz target shares: a reader that turns the fuzzer's
// bytes into metadata and tensor contents, exact-size heap buffers (so ASan sees any read past what the
// documented shape allows), and a host PackedMatrix for the output.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <nibble/import/import.cuh>
#include <nibble/quant/quantize.cuh>
#include <vector>

namespace fuzz {

/// Consumes the input front to back; past the end it yields zeros (never fails).
struct Reader {
  const std::uint8_t* p;
  std::size_t n;
  std::uint8_t u8() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  std::uint32_t u32() {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t(u8()) << (8 * i);
    return v;
  }
  /// One of `values` (picked by one byte).
  template <class T, std::size_t N>
  T pick(const T (&values)[N]) {
    return values[u8() % N];
  }
  /// Fills `bytes` bytes from the input, then repeats what it has (or a fixed pattern if empty).
  void fill(void* dst, std::size_t bytes) {
    auto* d = static_cast<std::uint8_t*>(dst);
    for (std::size_t i = 0; i < bytes; ++i) d[i] = n ? u8() : std::uint8_t(0x5A + i * 13);
  }
};

/// A heap buffer of exactly `bytes` bytes (malloc: ASan redzones right after it), optionally shifted by
/// `misalign` bytes inside a larger block to test the alignment checks.
struct Buffer {
  std::uint8_t* base = nullptr;
  std::uint8_t* data = nullptr;
  Buffer(std::size_t bytes, unsigned misalign = 0) {
    base = static_cast<std::uint8_t*>(std::malloc(bytes + misalign + 1));
    data = base + misalign;
  }
  ~Buffer() { std::free(base); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

/// A host PackedMatrix carved for (n, k, p), poisoned; `ok` false when the parameters do not carve.
struct Output {
  std::vector<std::uint8_t> raw;
  nibble::PackedMatrix m;
  bool ok = false;
  Output(std::int64_t n, std::int64_t k, const nibble::QuantParams& p) {
    const nibble::PackedBytes b = nibble::packed_bytes(n, k, p);
    if (b.status != nibble::Status::kSuccess || b.total > (std::size_t(1) << 24)) return;
    raw.assign(b.total + nibble::kPackedAlignment, 0xA5);
    const auto addr = reinterpret_cast<std::uintptr_t>(raw.data());
    auto* base = raw.data() + (nibble::kPackedAlignment - addr % nibble::kPackedAlignment) % nibble::kPackedAlignment;
    ok = nibble::carve_packed_matrix(n, k, p, base, b.total, &m) == nibble::Status::kSuccess;
  }
};

/// Dequantizes a successful import (touches every output buffer through nibble's own reader).
inline void touch(const nibble::PackedMatrix& m) {
  std::vector<float> w(std::size_t(m.n * m.k));
  if (nibble::dequantize_cpu<float>(m, w.data(), m.k) != nibble::Status::kSuccess) std::abort();
}

/// Shapes the fuzzer explores: small, with the odd / boundary values the importers must refuse.
inline std::int64_t small_dim(Reader& r) {
  static const std::int64_t kDims[] = {0, -8, 1, 2, 7, 8, 16, 24, 30, 32, 40, 60, 64, 96, 128, 192, 256, 320};
  return r.pick(kDims);
}

/// Group sizes as checkpoints spell them, valid and not.
inline int group(Reader& r) {
  static const int kGroups[] = {-1, 0, 16, 32, 48, 64, 128, 256, 512, -2};
  return r.pick(kGroups);
}

/// A per-column group index: half the time a valid (shuffled) act-order assignment, else raw bytes.
inline std::vector<std::int32_t> g_idx(Reader& r, std::int64_t k, std::int64_t g) {
  std::vector<std::int32_t> v(std::size_t(k > 0 ? k : 0));
  const bool valid = (r.u8() & 1) && g > 0 && k > 0 && k % g == 0;
  for (std::int64_t c = 0; c < k; ++c)
    v[std::size_t(c)] = valid ? std::int32_t(c / g) : std::int32_t(std::int8_t(r.u8()) % 8);
  if (valid)
    for (std::int64_t c = k - 1; c > 0; --c) std::swap(v[std::size_t(c)], v[std::size_t(r.u8() % (c + 1))]);
  return v;
}

/// nibble's effective group for a checkpoint group g (what the importers document), or 0 if none.
inline std::int64_t expected_group(std::int64_t g, std::int64_t k) {
  if (k <= 0) return 0;
  if (g == -1 || g == k) return k;
  if (g > 0 && k % g == 0) return g;
  return 0;
}

}  // namespace fuzz
