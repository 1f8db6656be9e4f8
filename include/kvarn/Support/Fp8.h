//===- Fp8.h - e4m3 scale fields with a shared exponent ---------*- C++ -*-===//
//
// The scales of the `_e4m3` presets (docs/kvarn.md, "Scale formats"): every
// scale field of a record is one OCP FP8 E4M3 (e4m3fn) byte per element
// times 2^exponent, one signed exponent byte per field, chosen so that the
// field's largest value lands at or below 448 (the largest finite e4m3).
// Scales are positive, so only non-negative values are encoded; the
// encodings here are the ones the GPU lowering reproduces bit for bit.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_SUPPORT_FP8_H
#define KVARN_SUPPORT_FP8_H

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace kvarn {

constexpr float kE4M3Max = 448.0f;     // 0x7e
constexpr uint8_t kE4M3MaxBits = 0x7e; // 0x7f is NaN in e4m3fn
constexpr float kE4M3MinSubnormal = 0x1p-9f;
constexpr float kE4M3MinNormal = 0x1p-6f;
/// The shared exponents stay within [-64, 64], so that every decoded scale
/// is a normal, finite fp32 value.
constexpr int kScaleExponentLimit = 64;

/// The value of a non-negative e4m3fn byte (0x7f and the sign bit are not
/// produced by encodeE4M3).
inline float decodeE4M3(uint8_t bits) {
  int exponent = (bits >> 3) & 0xf, mantissa = bits & 7;
  if (exponent == 0)
    return std::ldexp(float(mantissa), -9);
  return std::ldexp(float(8 + mantissa), exponent - 10);
}

/// The e4m3fn byte of x in [0, 448]: round to nearest (ties to even) or,
/// with `roundUp`, the smallest e4m3 value >= x. Never 0 for x > 0 when
/// rounding up; saturates at 448.
inline uint8_t encodeE4M3(float x, bool roundUp) {
  if (!(x > 0))
    return 0;
  if (x >= kE4M3Max)
    return kE4M3MaxBits;
  int exponent; // x = m * 2^exponent, m in [0.5, 1)
  std::frexp(x, &exponent);
  // The step of x's binade: 3 mantissa bits, or the subnormal step.
  int stepExponent = std::max(exponent - 4, -9);
  float units = std::ldexp(x, -stepExponent); // exact: a power-of-two scale
  float n = roundUp ? std::ceil(units) : std::nearbyint(units);
  // n steps of 2^stepExponent: re-encode (a carry into the next binade and
  // the subnormal-to-normal carry both come out right: the encoding is
  // monotonic in the value).
  float value = std::ldexp(n, stepExponent);
  if (value >= kE4M3Max)
    return kE4M3MaxBits;
  if (value < kE4M3MinNormal)
    return uint8_t(n); // subnormal: n steps of 2^-9
  int e;
  float m = std::frexp(value, &e); // value = m * 2^e, m in [0.5, 1)
  int mantissa = int(m * 16.0f) - 8;
  return uint8_t(((e - 1 + 7) << 3) | mantissa);
}

/// The shared exponent of a scale field whose largest element is `max`: the
/// smallest e with max / 2^e <= 448 (0 for an all-zero field), clamped to
/// [-kScaleExponentLimit, kScaleExponentLimit].
inline int scaleFieldExponent(float max) {
  if (!(max > 0) || !std::isfinite(max))
    return 0;
  int e;
  std::frexp(max / kE4M3Max, &e); // max / 448 = m * 2^e, m in [0.5, 1)
  // 2^(e - 1) <= max / 448 < 2^e; a power of two itself needs only e - 1.
  if (std::ldexp(kE4M3Max, e - 1) >= max)
    --e;
  return std::clamp(e, -kScaleExponentLimit, kScaleExponentLimit);
}

/// decodeE4M3(bits) * 2^exponent, in fp32 (exact).
inline float decodeScale(uint8_t bits, int exponent) {
  return std::ldexp(decodeE4M3(bits), exponent);
}

/// x / 2^exponent encoded (exact scaling, then encodeE4M3).
inline uint8_t encodeScale(float x, int exponent, bool roundUp) {
  return encodeE4M3(std::ldexp(x, -exponent), roundUp);
}

} // namespace kvarn

#endif // KVARN_SUPPORT_FP8_H
