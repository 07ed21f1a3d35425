// tests/common/random.hpp — reproducible random test inputs with a printed seed.
//
// Every run uses one base seed: $NIBBLE_SEED if set, else kNibbleTestDefaultSeed. It is printed the
// first time it is used ("[nibble] NIBBLE_SEED=..."), so a failing log says how to replay it:
//   NIBBLE_SEED=1234 ./build/default/tests/test_quant --gtest_filter='Quant*'
//
// Each test case draws from its own engine, seeded from (base seed, test name), so its inputs do
// not depend on which other cases ran before it or in which order:
//   auto rng = nibble_test_rng();                        // engine for the current gtest case
//   std::vector<float> w = nibble_test_normal(rng, n);   // N(0, 1)
//   std::vector<float> a = nibble_test_normal(rng, n, /*mean=*/0.f, /*stddev=*/0.02f);
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

/// Base seed when NIBBLE_SEED is not set.
inline constexpr std::uint64_t kNibbleTestDefaultSeed = 20261121;

/// The run's base seed: $NIBBLE_SEED (decimal) if set and valid, else kNibbleTestDefaultSeed.
/// Prints it once per process.
inline std::uint64_t nibble_test_seed() {
  static const std::uint64_t seed = [] {
    std::uint64_t value = kNibbleTestDefaultSeed;
    const char* env = std::getenv("NIBBLE_SEED");
    if (env != nullptr && *env != '\0') {
      char* end = nullptr;
      const unsigned long long parsed = std::strtoull(env, &end, 10);
      if (*end == '\0') {
        value = parsed;
      } else {
        std::printf("[nibble] ignoring NIBBLE_SEED='%s' (not a decimal number)\n", env);
      }
    }
    std::printf("[nibble] NIBBLE_SEED=%llu\n", static_cast<unsigned long long>(value));
    std::fflush(stdout);
    return value;
  }();
  return seed;
}

/// 64-bit FNV-1a: a stable hash of a name (std::hash may differ between standard libraries).
inline std::uint64_t nibble_test_hash(const std::string& text) {
  std::uint64_t hash = 14695981039346656037ull;
  for (const unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

/// An engine seeded from the base seed and `stream` (any number that tells callers apart).
inline std::mt19937_64 nibble_test_rng(std::uint64_t stream) {
  const std::uint64_t seed = nibble_test_seed();
  std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                    static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)};
  return std::mt19937_64(seq);
}

/// An engine for the running gtest case, seeded from the base seed and "Suite.Name".
/// Outside a running test (e.g. in a global Environment) it falls back to stream 0.
inline std::mt19937_64 nibble_test_rng() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (info == nullptr) return nibble_test_rng(0);
  return nibble_test_rng(nibble_test_hash(std::string(info->test_suite_name()) + "." + info->name()));
}

/// Fills `out` with draws from N(mean, stddev^2).
inline void nibble_test_fill_normal(std::mt19937_64& rng, std::vector<float>& out, float mean = 0.f,
                                    float stddev = 1.f) {
  std::normal_distribution<float> dist(mean, stddev);
  for (float& x : out) x = dist(rng);
}

/// `count` draws from N(mean, stddev^2).
inline std::vector<float> nibble_test_normal(std::mt19937_64& rng, std::size_t count, float mean = 0.f,
                                             float stddev = 1.f) {
  std::vector<float> out(count);
  nibble_test_fill_normal(rng, out, mean, stddev);
  return out;
}
