// tests/common/names.hpp — short names for the enum values the tests write in their tables.
#pragma once

#include <nibble/format/format.cuh>

inline constexpr nibble::Format kS4 = nibble::Format::kS4;
inline constexpr nibble::Format kU4 = nibble::Format::kU4;
inline constexpr nibble::Format kNf4 = nibble::Format::kNf4;
inline constexpr nibble::Format kFp4 = nibble::Format::kFp4;
inline constexpr nibble::Format kAU4 = nibble::Format::kAffineU4;  // affine u4 (w = q * s + m)
inline constexpr nibble::DType kF32 = nibble::DType::kF32;
inline constexpr nibble::DType kF16 = nibble::DType::kF16;
inline constexpr nibble::DType kBF16 = nibble::DType::kBF16;
