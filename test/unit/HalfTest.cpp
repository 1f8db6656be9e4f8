//===- HalfTest.cpp - fp16 and bf16 conversions ---------------------------===//

#include "kvarn/Support/Half.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace kvarn;

TEST(Half, EveryFiniteHalfRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) // NaN payloads
      continue;
    ASSERT_EQ(floatToHalf(halfToFloat(uint16_t(h))), h) << std::hex << h;
  }
}

TEST(Half, KnownValues) {
  EXPECT_EQ(halfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(halfToFloat(0xc000), -2.0f);
  EXPECT_EQ(halfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(halfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(floatToHalf(65519.0f), 0x7bff); // below the overflow midpoint
  EXPECT_EQ(floatToHalf(65520.0f), 0x7c00); // rounds to infinity
  EXPECT_EQ(floatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00); // tie: even
  EXPECT_EQ(floatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -25)), 0x0000); // tie to even zero
  EXPECT_EQ(floatToHalf(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(floatToHalf(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(halfToFloat(floatToHalf(NAN))));
}

/// Against an independent rounding: the nearest of the two neighbouring
/// halves, found by brute force, ties to the even one.
TEST(Half, RandomFloatsRoundToNearestEven) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> exponent(-26.0f, 16.0f);
  std::uniform_real_distribution<float> unit(1.0f, 2.0f);
  for (int i = 0; i < 200000; ++i) {
    float f = std::ldexp(unit(rng), int(exponent(rng))) * (i & 1 ? -1 : 1);
    if (std::fabs(f) >= 65504.0f)
      continue;
    uint16_t h = floatToHalf(f);
    double got = halfToFloat(h);
    uint16_t up = uint16_t(h + 1), down = uint16_t(h - 1);
    double err = std::fabs(got - f);
    for (uint16_t n : {up, down}) {
      if ((n & 0x7c00) == 0x7c00 || ((n ^ h) & 0x8000))
        continue;
      double nerr = std::fabs(double(halfToFloat(n)) - f);
      ASSERT_TRUE(err < nerr || (err == nerr && (h & 1) == 0))
          << f << " -> " << got << " but " << halfToFloat(n) << " is nearer";
    }
  }
}

TEST(BFloat16, EveryFiniteBFloat16RoundTrips) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    if ((b & 0x7f80) == 0x7f80 && (b & 0x7f)) // NaN payloads
      continue;
    ASSERT_EQ(floatToBFloat16(bfloat16ToFloat(uint16_t(b))), b) << std::hex << b;
  }
}

TEST(BFloat16, KnownValues) {
  EXPECT_EQ(bfloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(bfloat16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(floatToBFloat16(1.0f + std::ldexp(1.0f, -8)), 0x3f80); // tie: even
  EXPECT_EQ(floatToBFloat16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(floatToBFloat16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)),
            0x3f81); // just above the tie
  EXPECT_EQ(floatToBFloat16(3.4e38f), 0x7f80); // past the largest: infinity
  EXPECT_EQ(floatToBFloat16(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(bfloat16ToFloat(floatToBFloat16(NAN))));
  EXPECT_EQ(roundToBFloat16(65504.0f), 65536.0f); // fp16's max is not a bf16
}

/// Against an independent rounding, as for fp16 above.
TEST(BFloat16, RandomFloatsRoundToNearestEven) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> exponent(-130.0f, 120.0f);
  std::uniform_real_distribution<float> unit(1.0f, 2.0f);
  for (int i = 0; i < 200000; ++i) {
    float f = std::ldexp(unit(rng), int(exponent(rng))) * (i & 1 ? -1 : 1);
    uint16_t b = floatToBFloat16(f);
    double got = bfloat16ToFloat(b);
    double err = std::fabs(got - f);
    for (uint16_t n : {uint16_t(b + 1), uint16_t(b - 1)}) {
      if ((n & 0x7f80) == 0x7f80 || ((n ^ b) & 0x8000))
        continue;
      double nerr = std::fabs(double(bfloat16ToFloat(n)) - f);
      ASSERT_TRUE(err < nerr || (err == nerr && (b & 1) == 0))
          << f << " -> " << got << " but " << bfloat16ToFloat(n)
          << " is nearer";
    }
  }
}
