//===- Quantizer.cpp - CPU reference of the KVarN tile quantizer ----------===//
//
// Arithmetic follows the public reference's PyTorch path step by step in fp32
// (standard deviations are accumulated in double and rounded once, which is
// at least as exact as torch's reduction).
//
//===----------------------------------------------------------------------===//

#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Support/Half.h"

#include <algorithm>
#include <cassert>
#include <cmath>

using namespace kvarn;

/// Unbiased standard deviation of n values read through `at(i)`.
template <typename At> static float unbiasedStd(int n, At at) {
  double mean = 0;
  for (int i = 0; i < n; ++i)
    mean += at(i);
  mean /= n;
  double ss = 0;
  for (int i = 0; i < n; ++i) {
    double d = at(i) - mean;
    ss += d * d;
  }
  return float(std::sqrt(ss / (n - 1)));
}

static std::vector<float> columnStds(const Matrix &m) {
  std::vector<float> out(m.cols);
  for (int c = 0; c < m.cols; ++c)
    out[c] = unbiasedStd(m.rows, [&](int r) { return m.at(r, c); });
  return out;
}

static std::vector<float> rowStds(const Matrix &m) {
  std::vector<float> out(m.rows);
  for (int r = 0; r < m.rows; ++r)
    out[r] = unbiasedStd(m.cols, [&](int c) { return m.at(r, c); });
  return out;
}

static float spread(const std::vector<float> &stds) {
  auto [lo, hi] = std::minmax_element(stds.begin(), stds.end());
  return *hi / std::max(*lo, kImbalanceFloor);
}

float kvarn::imbalance(const Matrix &m) {
  return spread(columnStds(m)) + spread(rowStds(m));
}

/// cur = M / exp(logCol)[None, :] / exp(logRow)[:, None], in that order.
static Matrix scaled(const Matrix &m, const std::vector<float> &logCol,
                     const std::vector<float> &logRow) {
  Matrix cur(m.rows, m.cols);
  for (int r = 0; r < m.rows; ++r) {
    float rowScale = std::exp(logRow[r]);
    for (int c = 0; c < m.cols; ++c)
      cur.at(r, c) = m.at(r, c) / std::exp(logCol[c]) / rowScale;
  }
  return cur;
}

static float stepLogScale(float logScale, float std) {
  float clampedStd = std::clamp(std, kStdMin, kStdMax);
  return std::clamp(logScale + std::log(clampedStd), kLogScaleMin,
                    kLogScaleMax);
}

SinkhornResult kvarn::sinkhorn(const Matrix &m, int iters) {
  std::vector<float> logCol(m.cols, 0.0f), logRow(m.rows, 0.0f);
  SinkhornResult best;
  best.initialImbalance = best.bestImbalance = imbalance(m);
  best.logCol = logCol;
  best.logRow = logRow;
  for (int it = 1; it <= iters; ++it) {
    std::vector<float> colStd = columnStds(scaled(m, logCol, logRow));
    for (int c = 0; c < m.cols; ++c)
      logCol[c] = stepLogScale(logCol[c], colStd[c]);
    std::vector<float> rowStd = rowStds(scaled(m, logCol, logRow));
    for (int r = 0; r < m.rows; ++r)
      logRow[r] = stepLogScale(logRow[r], rowStd[r]);
    float imb = imbalance(scaled(m, logCol, logRow));
    if (imb <= best.bestImbalance) { // ties: the newer iterate wins
      best.bestImbalance = imb;
      best.bestIteration = it;
      best.logCol = logCol;
      best.logRow = logRow;
    }
  }
  return best;
}

std::vector<float> kvarn::scalesFromLogs(llvm::ArrayRef<float> logScales) {
  std::vector<float> scales(logScales.size());
  for (size_t i = 0; i < logScales.size(); ++i)
    scales[i] = std::exp(logScales[i]);
  return scales;
}

QuantizedTile kvarn::quantizeTile(const Matrix &m, int bits,
                                  const SinkhornResult &s) {
  return quantizeTileWithScales(m, bits, scalesFromLogs(s.logCol),
                                scalesFromLogs(s.logRow));
}

QuantizedTile kvarn::quantizeTileWithScales(const Matrix &m, int bits,
                                            llvm::ArrayRef<float> colScale,
                                            llvm::ArrayRef<float> rowScale) {
  assert(colScale.size() == size_t(m.cols) && rowScale.size() == size_t(m.rows) &&
         "one scale per column and per row");
  QuantizedTile q;
  q.rows = m.rows;
  q.cols = m.cols;
  q.bits = bits;
  q.codes.resize(size_t(m.rows) * m.cols);
  q.absorbedScale.resize(m.rows);
  q.absorbedZero.resize(m.rows);
  q.otherScale.resize(m.cols);

  const float qmax = float((1 << bits) - 1);
  std::vector<float> balanced(m.cols);
  for (int r = 0; r < m.rows; ++r) {
    for (int c = 0; c < m.cols; ++c)
      balanced[c] = m.at(r, c) / colScale[c] / rowScale[r];
    auto [loIt, hiIt] = std::minmax_element(balanced.begin(), balanced.end());
    float lo = *loIt, hi = *hiIt;
    float a = std::max((hi - lo) / qmax, kRangeFloor);
    for (int c = 0; c < m.cols; ++c) {
      // nearbyint rounds half to even in the default rounding mode.
      float code = std::nearbyint((balanced[c] - lo) / a);
      q.codes[size_t(r) * m.cols + c] = uint8_t(std::clamp(code, 0.0f, qmax));
    }
    q.absorbedScale[r] = floatToHalf(rowScale[r] * a);
    q.absorbedZero[r] = floatToHalf(rowScale[r] * lo);
  }
  for (int c = 0; c < m.cols; ++c)
    q.otherScale[c] = floatToHalf(colScale[c]);
  return q;
}

QuantizedTile kvarn::normalizeAndQuantize(const Matrix &m, int bits, int iters,
                                          SinkhornResult *sinkhornOut) {
  SinkhornResult s = sinkhorn(m, iters);
  QuantizedTile q = quantizeTile(m, bits, s);
  if (sinkhornOut)
    *sinkhornOut = std::move(s);
  return q;
}

std::vector<double> kvarn::dequantizeTile(const QuantizedTile &q) {
  std::vector<double> x(size_t(q.rows) * q.cols);
  for (int r = 0; r < q.rows; ++r) {
    // fp32 on purpose: see the header.
    float scale = halfToFloat(q.absorbedScale[r]);
    float zero = halfToFloat(q.absorbedZero[r]);
    for (int c = 0; c < q.cols; ++c)
      x[size_t(r) * q.cols + c] =
          (float(q.codes[size_t(r) * q.cols + c]) * scale + zero) *
          halfToFloat(q.otherScale[c]);
  }
  return x;
}

void kvarn::packCodes(llvm::ArrayRef<uint8_t> codes, int bits,
                      llvm::MutableArrayRef<uint8_t> out) {
  int perByte = 8 / bits;
  assert(out.size() * perByte == codes.size() && "packed size mismatch");
  std::fill(out.begin(), out.end(), 0);
  for (size_t i = 0; i < codes.size(); ++i)
    out[i / perByte] |= uint8_t(codes[i] << ((i % perByte) * bits));
}

void kvarn::unpackCodes(llvm::ArrayRef<uint8_t> packed, int bits,
                        llvm::MutableArrayRef<uint8_t> out) {
  int perByte = 8 / bits;
  assert(packed.size() * perByte == out.size() && "packed size mismatch");
  uint8_t mask = uint8_t((1 << bits) - 1);
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = (packed[i / perByte] >> ((i % perByte) * bits)) & mask;
}

static void storeHalves(llvm::ArrayRef<uint16_t> values, uint8_t *dst) {
  for (size_t i = 0; i < values.size(); ++i) { // little-endian
    dst[2 * i] = uint8_t(values[i] & 0xff);
    dst[2 * i + 1] = uint8_t(values[i] >> 8);
  }
}

static std::vector<uint16_t> loadHalves(const uint8_t *src, size_t n) {
  std::vector<uint16_t> out(n);
  for (size_t i = 0; i < n; ++i)
    out[i] = uint16_t(src[2 * i] | (src[2 * i + 1] << 8));
  return out;
}

void kvarn::encodeRecord(const RecordLayout &layout, const uint16_t *kRot,
                         const uint16_t *vRot, uint8_t *record) {
  const int d = layout.headDim, g = layout.group;
  Matrix k(d, g), v(g, d);
  for (int t = 0; t < g; ++t)
    for (int c = 0; c < d; ++c) {
      k.at(c, t) = halfToFloat(kRot[size_t(t) * d + c]);
      v.at(t, c) = halfToFloat(vRot[size_t(t) * d + c]);
    }
  QuantizedTile qk = normalizeAndQuantize(k, layout.keyBits, layout.sinkhornIters);
  QuantizedTile qv =
      normalizeAndQuantize(v, layout.valueBits, layout.sinkhornIters);

  std::fill(record, record + layout.recordBytes, 0);
  packCodes(qk.codes, layout.keyBits,
            {record + layout.kCodes, size_t(d * layout.kRowBytes())});
  storeHalves(qk.absorbedScale, record + layout.kScale);
  storeHalves(qk.absorbedZero, record + layout.kZero);
  storeHalves(qk.otherScale, record + layout.kTokenScale);
  packCodes(qv.codes, layout.valueBits,
            {record + layout.vCodes, size_t(g * layout.vRowBytes())});
  storeHalves(qv.otherScale, record + layout.vChannelScale);
  storeHalves(qv.absorbedScale, record + layout.vScale);
  storeHalves(qv.absorbedZero, record + layout.vZero);
}

DecodedRecord kvarn::decodeRecord(const RecordLayout &layout,
                                  const uint8_t *record) {
  const int d = layout.headDim, g = layout.group;
  DecodedRecord r;
  r.k.rows = d;
  r.k.cols = g;
  r.k.bits = layout.keyBits;
  r.k.codes.resize(size_t(d) * g);
  unpackCodes({record + layout.kCodes, size_t(d * layout.kRowBytes())},
              layout.keyBits, r.k.codes);
  r.k.absorbedScale = loadHalves(record + layout.kScale, d);
  r.k.absorbedZero = loadHalves(record + layout.kZero, d);
  r.k.otherScale = loadHalves(record + layout.kTokenScale, g);

  r.v.rows = g;
  r.v.cols = d;
  r.v.bits = layout.valueBits;
  r.v.codes.resize(size_t(g) * d);
  unpackCodes({record + layout.vCodes, size_t(g * layout.vRowBytes())},
              layout.valueBits, r.v.codes);
  r.v.otherScale = loadHalves(record + layout.vChannelScale, d);
  r.v.absorbedScale = loadHalves(record + layout.vScale, g);
  r.v.absorbedZero = loadHalves(record + layout.vZero, g);
  return r;
}

void kvarn::dequantizeRecord(const RecordLayout &layout, const uint8_t *record,
                             double *kRot, double *vRot) {
  const int d = layout.headDim, g = layout.group;
  DecodedRecord r = decodeRecord(layout, record);
  std::vector<double> k = dequantizeTile(r.k); // [D, G]
  std::vector<double> v = dequantizeTile(r.v); // [G, D]
  for (int t = 0; t < g; ++t)
    for (int c = 0; c < d; ++c) {
      kRot[size_t(t) * d + c] = k[size_t(c) * g + t];
      vRot[size_t(t) * d + c] = v[size_t(t) * d + c];
    }
}
