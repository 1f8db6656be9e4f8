//===- Half.h - IEEE binary16 and bfloat16 conversions ----------*- C++ -*-===//
//
// Bit-exact fp16 <-> fp32 and bf16 <-> fp32 conversions with
// round-to-nearest-even, as the GPU's cvt.rn.f16.f32 and cvt.rn.bf16.f32 do.
// The record format stores every scale as fp16; bf16 is an activation dtype.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_SUPPORT_HALF_H
#define KVARN_SUPPORT_HALF_H

#include <cstdint>
#include <cstring>

namespace kvarn {

inline float halfToFloat(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else { // subnormal: renormalize
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t floatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  uint16_t sign = uint16_t((x >> 16) & 0x8000);
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) // inf or nan
    return sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0);
  if (absx >= 0x477ff000u) // rounds to >= 65520: overflow to inf
    return sign | 0x7c00;
  if (absx < 0x38800000u) { // below the smallest normal half: subnormal or 0
    if (absx < 0x33000000u) // below half the smallest subnormal
      return sign;
    uint32_t e = absx >> 23;
    uint32_t m = (absx & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e; // 14..24
    uint32_t result = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (result & 1)))
      ++result;
    return sign | uint16_t(result);
  }
  uint32_t result = ((absx >> 13) - ((127 - 15) << 10));
  uint32_t rem = absx & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (result & 1)))
    ++result;
  return sign | uint16_t(result);
}

/// bfloat16 is the high half of an fp32.
inline float bfloat16ToFloat(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

/// Round to nearest even, as cvt.rn.bf16.f32; NaN stays a (quiet) NaN.
inline uint16_t floatToBFloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  if ((x & 0x7fffffffu) > 0x7f800000u)
    return uint16_t((x >> 16) | 0x40);
  uint32_t lsb = (x >> 16) & 1;
  return uint16_t((x + 0x7fffu + lsb) >> 16);
}

/// Rounds a float to the nearest fp16 value and back.
inline float roundToHalf(float f) { return halfToFloat(floatToHalf(f)); }

/// Rounds a float to the nearest bfloat16 value (ties to even) and back.
inline float roundToBFloat16(float f) {
  return bfloat16ToFloat(floatToBFloat16(f));
}

} // namespace kvarn

#endif // KVARN_SUPPORT_HALF_H
