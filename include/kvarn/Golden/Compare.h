//===- Compare.h - agreement figures between records and outputs -*- C++ -*-===//
//
// The figures docs/kvarn.md, "Golden data", and the golden tests speak in:
// code agreement, code step, and relative L2 of dequantized tiles and
// outputs.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_GOLDEN_COMPARE_H
#define KVARN_GOLDEN_COMPARE_H

#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Support/DType.h"

#include <cstddef>
#include <cstdint>

namespace kvarn {

struct RecordComparison {
  int64_t tiles = 0;
  int64_t codes = 0;         // K and V codes compared
  int64_t codesEqual = 0;
  int maxCodeStep = 0;       // largest |a - b| over differing codes
  int64_t bytes = 0;         // record bytes compared (padding included)
  int64_t bytesEqual = 0;
  double maxKRelL2 = 0;      // worst tile: ||deq(a) - deq(b)|| / ||deq(b)||
  double maxVRelL2 = 0;
  double codeAgreement() const { return codes ? double(codesEqual) / codes : 1; }
  double byteAgreement() const { return bytes ? double(bytesEqual) / bytes : 1; }
};

/// Compares `tiles` records `a` against `b` (the expected ones).
RecordComparison compareRecords(const RecordLayout &layout, const uint8_t *a,
                                const uint8_t *b, int64_t tiles);

/// ||a - b||_2 / ||b||_2 (0 when both are zero).
double relativeL2(const float *a, const float *b, size_t n);
double relativeL2(const double *a, const double *b, size_t n);

/// The step from `bits` (a finite 16-bit value of `dtype`) to the next
/// value of larger magnitude (for the largest finite, from the one below).
double stepOf(uint16_t bits, DType dtype);

/// The relative L2 error of outputs `got` (16-bit values of `dtype`)
/// against `exact`, less what rounding them to `dtype` accounts for:
/// element i counts max(0, |got_i - exact_i| - h_i), h_i half of got_i's
/// step away from zero (a value rounded to nearest lies within h_i of its
/// rounding). So it bounds below the error of the values a kernel computed
/// before it rounded them. Comparing with the exact values rounded to
/// `dtype` instead counts a whole step where the two round apart: 2^-10 of
/// an element that dominates its row, in f16, for a kernel off by 1e-7.
double relativeL2BeyondRounding(const uint16_t *got, const double *exact,
                                size_t n, DType dtype);

} // namespace kvarn

#endif // KVARN_GOLDEN_COMPARE_H
