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

} // namespace kvarn

#endif // KVARN_GOLDEN_COMPARE_H
