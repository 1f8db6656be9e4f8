//===- Compare.cpp - agreement figures between records and outputs --------===//

#include "kvarn/Golden/Compare.h"
#include "kvarn/Reference/Quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

using namespace kvarn;

template <typename T>
static double relL2(const T *a, const T *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  if (den == 0)
    return num == 0 ? 0 : INFINITY;
  return std::sqrt(num / den);
}

double kvarn::relativeL2(const float *a, const float *b, size_t n) {
  return relL2(a, b, n);
}
double kvarn::relativeL2(const double *a, const double *b, size_t n) {
  return relL2(a, b, n);
}

double kvarn::stepOf(uint16_t bits, DType dtype) {
  // The largest finite magnitude's bits (its step is the one below it).
  const uint16_t maxFinite = dtype == DType::F16 ? 0x7BFF : 0x7F7F;
  uint16_t magnitude = bits & 0x7FFF;
  uint16_t lower = magnitude == maxFinite ? magnitude - 1 : magnitude;
  return double(dtypeToFloat(uint16_t(lower + 1), dtype)) -
         double(dtypeToFloat(lower, dtype));
}

double kvarn::relativeL2BeyondRounding(const uint16_t *got, const double *exact,
                                       size_t n, DType dtype) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double g = dtypeToFloat(got[i], dtype);
    if (!std::isfinite(g))
      return INFINITY;
    double beyond =
        std::max(0.0, std::fabs(g - exact[i]) - stepOf(got[i], dtype) / 2);
    num += beyond * beyond;
    den += exact[i] * exact[i];
  }
  if (den == 0)
    return num == 0 ? 0 : INFINITY;
  return std::sqrt(num / den);
}

static void compareCodes(const std::vector<uint8_t> &a,
                         const std::vector<uint8_t> &b, RecordComparison &r) {
  for (size_t i = 0; i < a.size(); ++i) {
    ++r.codes;
    int step = std::abs(int(a[i]) - int(b[i]));
    if (step == 0)
      ++r.codesEqual;
    r.maxCodeStep = std::max(r.maxCodeStep, step);
  }
}

RecordComparison kvarn::compareRecords(const RecordLayout &layout,
                                       const uint8_t *a, const uint8_t *b,
                                       int64_t tiles) {
  RecordComparison r;
  r.tiles = tiles;
  const size_t elems = size_t(layout.group) * layout.headDim;
  std::vector<double> ka(elems), va(elems), kb(elems), vb(elems);
  for (int64_t t = 0; t < tiles; ++t) {
    const uint8_t *ra = a + t * layout.recordBytes;
    const uint8_t *rb = b + t * layout.recordBytes;
    for (int64_t i = 0; i < layout.recordBytes; ++i)
      r.bytesEqual += ra[i] == rb[i];
    r.bytes += layout.recordBytes;
    DecodedRecord da = decodeRecord(layout, ra), db = decodeRecord(layout, rb);
    compareCodes(da.k.codes, db.k.codes, r);
    compareCodes(da.v.codes, db.v.codes, r);
    dequantizeRecord(layout, ra, ka.data(), va.data());
    dequantizeRecord(layout, rb, kb.data(), vb.data());
    r.maxKRelL2 = std::max(r.maxKRelL2, relativeL2(ka.data(), kb.data(), elems));
    r.maxVRelL2 = std::max(r.maxVRelL2, relativeL2(va.data(), vb.data(), elems));
  }
  return r;
}
