// tests/common/format_oracles.hpp — oracles independent of the headers under test, shared by
// tests/format/ and tests/thread/: bitsandbytes' NF4 / FP4 literals (csrc/kernels.cu dDequantizeNF4 /
// dDequantizeFP4Tree / dQuantizeNF4 / dQuantizeFP4, functional.py get_4bit_type), thread/pack.cuh's
// interleave diagram written out by hand, host fp16 / bf16 conversions straight from cuda_fp16.h /
// cuda_bf16.h, a failure reporter that caps its messages, and the test words (every byte replicated,
// then random words with the seed printed).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <nibble/format/format.cuh>
#include <nibble/thread/pack.cuh>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "common/names.hpp"
#include "common/random.hpp"

namespace {

using nibble::Format;
using nibble::NibbleOrder;
using std::uint16_t;
using std::uint32_t;

constexpr NibbleOrder kSeq = NibbleOrder::kSequential;
constexpr NibbleOrder kIlv = NibbleOrder::kInterleaved;

// ---- independent oracles --------------------------------------------------------------------------

// bitsandbytes csrc/kernels.cu dDequantizeNF4 (same list as functional.py get_4bit_type("nf4")).
constexpr float kBnbNf4[16] = {-1.0f,
                               -0.6961928009986877f,
                               -0.5250730514526367f,
                               -0.39491748809814453f,
                               -0.28444138169288635f,
                               -0.18477343022823334f,
                               -0.09105003625154495f,
                               0.0f,
                               0.07958029955625534f,
                               0.16093020141124725f,
                               0.24611230194568634f,
                               0.33791524171829224f,
                               0.44070982933044434f,
                               0.5626170039176941f,
                               0.7229568362236023f,
                               1.0f};
// bitsandbytes csrc/kernels.cu dDequantizeFP4Tree: magnitude literal * sign (code 8 gives 0 * -1 = -0).
constexpr float kBnbFp4[16] = {0.00000000f,  5.208333333e-03f,  0.66666667f,  1.00000000f,
                               0.33333333f,  0.50000000f,       0.16666667f,  0.25000000f,
                               -0.00000000f, -5.208333333e-03f, -0.66666667f, -1.00000000f,
                               -0.33333333f, -0.50000000f,      -0.16666667f, -0.25000000f};
// bitsandbytes functional.py get_4bit_type("fp4") before its division by the largest magnitude, 12.
constexpr float kBnbFp4Unnormalized[16] = {0, 0.0625f, 8, 12, 4, 6, 2, 3, -0.0f, -0.0625f, -8, -12, -4, -6, -2, -3};
// bitsandbytes csrc/kernels.cu dQuantizeNF4: `x > t` decides between code i (below) and i + 1 (above).
constexpr float kBnbNf4Threshold[15] = {
    -0.8480964004993439f,  -0.6106329262256622f,   -0.4599952697753906f, -0.33967943489551544f, -0.23460740596055984f,
    -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,   0.2035212516784668f,
    0.2920137718319893f,   0.3893125355243683f,    0.5016634166240692f,  0.6427869200706482f,   0.8614784181118011f};
// bitsandbytes csrc/kernels.cu dQuantizeFP4: |x| > t decides between magnitude code below / above.
struct Fp4Split {
  float t;
  unsigned below, above;
};
constexpr Fp4Split kBnbFp4Split[7] = {
    {0.00260417f, 0b000, 0b001}, {0.0859375f, 0b001, 0b110}, {0.20833333f, 0b110, 0b111}, {0.29166667f, 0b111, 0b100},
    {0.4166667f, 0b100, 0b101},  {0.583333f, 0b101, 0b010},  {0.8333333f, 0b010, 0b011}};

// thread/pack.cuh's diagram, written out: nibble 7..0 hold values 7 5 3 1 6 4 2 0.
constexpr int kInterleavedNibbleOfValue[8] = {0, 4, 1, 5, 2, 6, 3, 7};

int nibble_position_oracle(NibbleOrder order, int i) { return order == kSeq ? i : kInterleavedNibbleOfValue[i]; }
// The value a 4-bit pattern stands for: two's complement for s4, the plain code otherwise.
int value_oracle(Format f, unsigned nib) {
  nib &= 0xFu;
  return (f == kS4 && nib >= 8) ? int(nib) - 16 : int(nib);
}
uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
// Host round-to-nearest-even conversions straight from cuda_fp16.h / cuda_bf16.h.
uint16_t f16_bits(float x) { return __half_raw(__float2half_rn(x)).x; }
uint16_t bf16_bits(float x) { return __nv_bfloat16_raw(__float2bfloat16_rn(x)).x; }
float f16_value(uint16_t bits) {
  __half_raw r;
  r.x = bits;
  return __half2float(__half(r));
}
float bf16_value(uint16_t bits) {
  __nv_bfloat16_raw r;
  r.x = bits;
  return __bfloat162float(__nv_bfloat16(r));
}
template <class T>
uint16_t bits16(float x) {
  return std::is_same_v<T, __half> ? f16_bits(x) : bf16_bits(x);
}
template <class T>
float value16(uint16_t bits) {
  return std::is_same_v<T, __half> ? f16_value(bits) : bf16_value(bits);
}
template <class T>
const char* type_name() {
  return std::is_same_v<T, __half> ? "f16" : std::is_same_v<T, __nv_bfloat16> ? "bf16" : "f32";
}

const char* hex(uint32_t x) {
  static thread_local char buf[4][16];
  static thread_local int slot = 0;
  slot = (slot + 1) % 4;
  std::snprintf(buf[slot], sizeof buf[slot], "0x%08X", x);
  return buf[slot];
}

// At most kMaxReports failure messages per check, then a count (so one bug cannot print 100k lines).
class Reporter {
 public:
  static constexpr int kMaxReports = 10;
  bool report() { return ++failures_ <= kMaxReports; }
  ~Reporter() {
    if (failures_ > kMaxReports)
      ADD_FAILURE() << failures_ << " mismatches in total (first " << kMaxReports << " shown)";
  }

 private:
  int failures_ = 0;
};
#define NIBBLE_REPORT_UNLESS(rep, cond, msg)             \
  do {                                                   \
    if (!(cond) && (rep).report()) ADD_FAILURE() << msg; \
  } while (0)

// ---- test words -----------------------------------------------------------------------------------

// Every byte value replicated into all four bytes: each value in every nibble position.
std::vector<uint32_t> replicated_byte_words() {
  std::vector<uint32_t> w(256);
  for (uint32_t b = 0; b < 256; ++b) w[b] = b * 0x01010101u;
  return w;
}
// Replicated bytes, then `random_count` words of four independent random bytes; prints how to replay.
std::vector<uint32_t> test_words(std::mt19937_64& rng, std::size_t random_count, const char* what) {
  std::vector<uint32_t> w = replicated_byte_words();
  std::uniform_int_distribution<uint32_t> byte(0, 255);
  for (std::size_t i = 0; i < random_count; ++i)
    w.push_back(byte(rng) | byte(rng) << 8 | byte(rng) << 16 | byte(rng) << 24);
  std::printf("[nibble] %s: 256 replicated-byte words + %zu random words (NIBBLE_SEED=%llu)\n", what, random_count,
              static_cast<unsigned long long>(nibble_test_seed()));
  return w;
}
std::vector<uint32_t> test_words_for_current_test(std::size_t random_count = 100000) {
  auto rng = nibble_test_rng();
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string name = std::string(info->test_suite_name()) + "." + info->name();
  return test_words(rng, random_count, name.c_str());
}

}  // namespace
