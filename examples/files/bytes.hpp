// examples/files/bytes.hpp — what the two file readers share: a bounds-checked little-endian cursor over an
// in-memory byte span, overflow-checked size arithmetic, and the Result every parse returns.
//
// Plain C++17 (no CUDA, no nibble): the library does no file I/O, these readers live with the examples. They
// may allocate (std::string, std::vector), but never an amount an attacker-controlled count asks for before
// the bytes that count describes have been found in the buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace nibble_files {

/// The outcome of a parse: ok, or a message naming what is wrong (and where, for binary formats).
struct Result {
  bool ok = true;
  std::string error;
  static Result success() { return {}; }
  static Result failure(std::string message) { return {false, std::move(message)}; }
};

/// printf-style message for Result::failure (messages are short: 512 bytes is plenty).
template <class... Args>
std::string message(const char* fmt, Args... args) {
  char buf[512];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}
inline std::string message(const char* text) { return text; }

/// a * b into *out; false on overflow.
inline bool mul_u64(std::uint64_t a, std::uint64_t b, std::uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}
/// a + b into *out; false on overflow.
inline bool add_u64(std::uint64_t a, std::uint64_t b, std::uint64_t* out) {
  if (a > std::numeric_limits<std::uint64_t>::max() - b) return false;
  *out = a + b;
  return true;
}
/// x rounded up to a multiple of `align` (a power of two) into *out; false on overflow.
inline bool align_up_u64(std::uint64_t x, std::uint64_t align, std::uint64_t* out) {
  std::uint64_t t = 0;
  if (!add_u64(x, align - 1, &t)) return false;
  *out = t & ~(align - 1);
  return true;
}

/// Reads little-endian values front to back from [data, data + size); every read checks what is left first
/// and fails (returns false, moves nothing) rather than read past the end.
class Cursor {
 public:
  Cursor(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::size_t pos() const { return pos_; }
  std::size_t left() const { return size_ - pos_; }
  const std::uint8_t* here() const { return data_ + pos_; }

  template <class T>
  bool read(T* out) {
    static_assert(std::numeric_limits<T>::is_integer || std::is_floating_point<T>::value, "scalar");
    if (left() < sizeof(T)) return false;
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) v |= std::uint64_t(data_[pos_ + i]) << (8 * i);
    if constexpr (sizeof(T) == 8) {
      std::memcpy(out, &v, 8);
    } else if constexpr (sizeof(T) == 4) {
      const auto w = std::uint32_t(v);
      std::memcpy(out, &w, 4);
    } else if constexpr (sizeof(T) == 2) {
      const auto w = std::uint16_t(v);
      std::memcpy(out, &w, 2);
    } else {
      const auto w = std::uint8_t(v);
      std::memcpy(out, &w, 1);
    }
    pos_ += sizeof(T);
    return true;
  }
  /// Skips `bytes` bytes if that many are left.
  bool skip(std::uint64_t bytes) {
    if (bytes > left()) return false;
    pos_ += std::size_t(bytes);
    return true;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

/// The whole file in memory (examples only; the readers take a span). False with *error set on failure.
inline bool read_file(const std::string& path, std::vector<std::uint8_t>* out, std::string* error) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    *error = "cannot open " + path;
    return false;
  }
  out->clear();
  std::uint8_t buf[1 << 16];
  for (;;) {
    const std::size_t got = std::fread(buf, 1, sizeof buf, f);
    out->insert(out->end(), buf, buf + got);
    if (got < sizeof buf) break;
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) *error = "read error on " + path;
  return !failed;
}

}  // namespace nibble_files
