//===- Math.h - integer rounding for sizes ----------------------*- C++ -*-===//
#ifndef KVARN_SUPPORT_MATH_H
#define KVARN_SUPPORT_MATH_H

#include <cstdint>

namespace kvarn {

inline constexpr bool isPowerOf2(uint64_t v) { return v && !(v & (v - 1)); }

/// The least power of two >= `v` (0 for 0, as LLVM's PowerOf2Ceil).
inline constexpr uint64_t powerOf2Ceil(uint64_t v) {
  if (v == 0)
    return 0;
  uint64_t p = 1;
  while (p < v)
    p <<= 1;
  return p;
}

/// `numerator / denominator` rounded up (non-negative operands).
inline constexpr int64_t divideCeil(int64_t numerator, int64_t denominator) {
  return (numerator + denominator - 1) / denominator;
}

/// `value` rounded up to a multiple of `align`.
inline constexpr uint64_t alignTo(uint64_t value, uint64_t align) {
  return (value + align - 1) / align * align;
}

} // namespace kvarn

#endif // KVARN_SUPPORT_MATH_H
