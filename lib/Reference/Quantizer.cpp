//===- Quantizer.cpp - CPU reference of the KVarN tile quantizer ----------===//
//
// The public reference's algorithm in the arithmetic of TileArithmetic.h,
// which every GPU lowering shares bit for bit (built with -ffp-contract=off).
//
//===----------------------------------------------------------------------===//

#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Reference/TileArithmetic.h"
#include "kvarn/Support/Fp8.h"
#include "kvarn/Support/Half.h"

#include <algorithm>
#include <cassert>
#include <cmath>

using namespace kvarn;

namespace tmath = kvarn::tilemath;

/// Column stds of M / c / r, factored as TileArithmetic.h says:
/// (1/c_j) * std_i(M_ij * (1/r_i)). `invCol`, `invRow` are the reciprocals.
static std::vector<float> columnStds(const Matrix &m,
                                     const std::vector<float> &invCol,
                                     const std::vector<float> &invRow) {
  std::vector<float> out(m.cols);
  for (int c = 0; c < m.cols; ++c)
    out[c] = invCol[c] * tmath::standardDeviation(
                             m.rows, [&](int r) { return m.at(r, c); },
                             [&](int r) { return invRow[r]; });
  return out;
}

/// Row stds of M / c / r: (1/r_i) * std_j(M_ij * (1/c_j)).
static std::vector<float> rowStds(const Matrix &m, const std::vector<float> &invCol,
                                  const std::vector<float> &invRow) {
  std::vector<float> out(m.rows);
  for (int r = 0; r < m.rows; ++r)
    out[r] = invRow[r] * tmath::standardDeviation(
                             m.cols, [&](int c) { return m.at(r, c); },
                             [&](int c) { return invCol[c]; });
  return out;
}

static std::vector<float> reciprocals(const std::vector<float> &v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out[i] = 1.0f / v[i];
  return out;
}

static float imbalanceOf(const std::vector<float> &colStd,
                         const std::vector<float> &rowStd) {
  auto [cLo, cHi] = std::minmax_element(colStd.begin(), colStd.end());
  auto [rLo, rHi] = std::minmax_element(rowStd.begin(), rowStd.end());
  return tmath::spread(*cHi, *cLo) + tmath::spread(*rHi, *rLo);
}

float kvarn::imbalance(const Matrix &m, llvm::ArrayRef<float> colScale,
                       llvm::ArrayRef<float> rowScale) {
  std::vector<float> ic = reciprocals(colScale.vec()), ir = reciprocals(rowScale.vec());
  return imbalanceOf(columnStds(m, ic, ir), rowStds(m, ic, ir));
}

float kvarn::imbalance(const Matrix &m) {
  return imbalance(m, std::vector<float>(m.cols, 1.0f),
                   std::vector<float>(m.rows, 1.0f));
}

// The order of docs/kvarn.md, "Variance normalization", with the stds of
// TileArithmetic.h.
// The column stds an iteration ends with (those of its imbalance) are the
// next iteration's column step's; the row stds after a row step are the
// step's own, divided by the step's factor.
SinkhornResult kvarn::sinkhorn(const Matrix &m, int iters) {
  std::vector<float> sc(m.cols, 1.0f), sr(m.rows, 1.0f);
  std::vector<float> ic = sc, ir = sr;
  std::vector<float> colStd = columnStds(m, ic, ir);
  SinkhornResult best;
  best.initialImbalance = best.bestImbalance =
      imbalanceOf(colStd, rowStds(m, ic, ir));
  best.colScale = sc;
  best.rowScale = sr;
  for (int it = 1; it <= iters; ++it) {
    for (int c = 0; c < m.cols; ++c)
      sc[c] = tmath::stepScale(sc[c], colStd[c]);
    ic = reciprocals(sc);
    std::vector<float> rowBase(m.rows), rowStd(m.rows);
    for (int r = 0; r < m.rows; ++r) {
      rowBase[r] = tmath::standardDeviation(
          m.cols, [&](int c) { return m.at(r, c); }, [&](int c) { return ic[c]; });
      sr[r] = tmath::stepScale(sr[r], ir[r] * rowBase[r]);
    }
    ir = reciprocals(sr);
    for (int r = 0; r < m.rows; ++r)
      rowStd[r] = ir[r] * rowBase[r];
    colStd = columnStds(m, ic, ir);
    float imb = imbalanceOf(colStd, rowStd);
    if (imb <= best.bestImbalance) { // ties: the newer iterate wins
      best.bestImbalance = imb;
      best.bestIteration = it;
      best.colScale = sc;
      best.rowScale = sr;
    }
  }
  return best;
}

float QuantizedTile::scaleAt(int r) const {
  return scaleFormat == ScaleFormat::E4M3
             ? decodeScale(uint8_t(absorbedScale[r]), scaleExponent)
             : halfToFloat(absorbedScale[r]);
}

float QuantizedTile::zeroAt(int r) const {
  return halfToFloat(absorbedZero[r]);
}

float QuantizedTile::otherAt(int c) const {
  return scaleFormat == ScaleFormat::E4M3
             ? decodeScale(uint8_t(otherScale[c]), otherExponent)
             : halfToFloat(otherScale[c]);
}

QuantizedTile kvarn::quantizeTile(const Matrix &m, int bits,
                                  const SinkhornResult &s, ScaleFormat format) {
  return quantizeTileWithScales(m, bits, s.colScale, s.rowScale, format);
}

/// A scale field rounded under a provisional exponent (that of its values
/// before rounding), re-encoded under the exponent of its rounded values:
/// the form a store of those values writes (never a larger exponent, so
/// exact). Rounding may lower the maximum into a smaller binade.
static void canonicalizeScaleField(std::vector<uint16_t> &bytes,
                                   int &exponent) {
  float max = 0;
  for (uint16_t b : bytes)
    max = std::max(max, decodeScale(uint8_t(b), exponent));
  int canonical = scaleFieldExponent(max);
  for (uint16_t &b : bytes)
    b = encodeScale(decodeScale(uint8_t(b), exponent), canonical,
                    /*roundUp=*/false);
  exponent = canonical;
}

/// quantizeTileWithScales for ScaleFormat::E4M3 (its header comment).
static void quantizeAgainstE4M3(const Matrix &m, llvm::ArrayRef<float> colScale,
                                QuantizedTile &q) {
  const float qmax = float((1 << q.bits) - 1);
  // The column scales as stored; never 0 (they divide).
  q.otherExponent =
      scaleFieldExponent(*std::max_element(colScale.begin(), colScale.end()));
  std::vector<float> ic(m.cols);
  for (int c = 0; c < m.cols; ++c) {
    uint8_t bits = std::max<uint8_t>(
        encodeScale(colScale[c], q.otherExponent, /*roundUp=*/false), 1);
    q.otherScale[c] = bits;
    ic[c] = 1.0f / decodeScale(bits, q.otherExponent);
  }
  std::vector<float> y(size_t(m.rows) * m.cols), lo(m.rows), step(m.rows);
  float maxStep = 0;
  for (int r = 0; r < m.rows; ++r) {
    float *row = &y[size_t(r) * m.cols];
    for (int c = 0; c < m.cols; ++c)
      row[c] = m.at(r, c) * ic[c];
    auto [loIt, hiIt] = std::minmax_element(row, row + m.cols);
    lo[r] = *loIt;
    step[r] = std::max((*hiIt - *loIt) / qmax, tmath::kRangeFloor);
    maxStep = std::max(maxStep, step[r]);
  }
  q.scaleExponent = scaleFieldExponent(maxStep);
  for (int r = 0; r < m.rows; ++r) {
    uint8_t bits = encodeScale(step[r], q.scaleExponent, /*roundUp=*/false);
    bits = std::max<uint8_t>(bits, 1);
    q.absorbedScale[r] = bits;
    // The grid of the rounded step centred on the row's range.
    float a = decodeScale(bits, q.scaleExponent);
    q.absorbedZero[r] = floatToHalf(lo[r] + 0.5f * (step[r] - a) * qmax);
    float inverseStep = 1.0f / decodeScale(bits, q.scaleExponent);
    float zero = halfToFloat(q.absorbedZero[r]);
    for (int c = 0; c < m.cols; ++c) {
      float code =
          std::nearbyint((y[size_t(r) * m.cols + c] - zero) * inverseStep);
      q.codes[size_t(r) * m.cols + c] = uint8_t(std::clamp(code, 0.0f, qmax));
    }
  }
  canonicalizeScaleField(q.absorbedScale, q.scaleExponent);
  canonicalizeScaleField(q.otherScale, q.otherExponent);
}

QuantizedTile kvarn::quantizeTileWithScales(const Matrix &m, int bits,
                                            llvm::ArrayRef<float> colScale,
                                            llvm::ArrayRef<float> rowScale,
                                            ScaleFormat format) {
  assert(colScale.size() == size_t(m.cols) && rowScale.size() == size_t(m.rows) &&
         "one scale per column and per row");
  QuantizedTile q;
  q.rows = m.rows;
  q.cols = m.cols;
  q.bits = bits;
  q.scaleFormat = format;
  q.codes.resize(size_t(m.rows) * m.cols);
  q.absorbedScale.resize(m.rows);
  q.absorbedZero.resize(m.rows);
  q.otherScale.resize(m.cols);
  if (format == ScaleFormat::E4M3) {
    quantizeAgainstE4M3(m, colScale, q);
    return q;
  }

  const float qmax = float((1 << bits) - 1);
  std::vector<float> ic = reciprocals(colScale.vec());
  std::vector<float> balanced(m.cols);
  for (int r = 0; r < m.rows; ++r) {
    float ir = 1.0f / rowScale[r];
    for (int c = 0; c < m.cols; ++c)
      balanced[c] = m.at(r, c) * ic[c] * ir;
    auto [loIt, hiIt] = std::minmax_element(balanced.begin(), balanced.end());
    float lo = *loIt, hi = *hiIt;
    float a = std::max((hi - lo) / qmax, tmath::kRangeFloor);
    float inverseStep = 1.0f / a;
    for (int c = 0; c < m.cols; ++c) {
      // nearbyint rounds half to even in the default rounding mode.
      float code = std::nearbyint((balanced[c] - lo) * inverseStep);
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
                                          SinkhornResult *sinkhornOut,
                                          ScaleFormat format) {
  SinkhornResult s = sinkhorn(m, iters);
  QuantizedTile q = quantizeTile(m, bits, s, format);
  if (sinkhornOut)
    *sinkhornOut = std::move(s);
  return q;
}

std::vector<double> kvarn::dequantizeTile(const QuantizedTile &q) {
  std::vector<double> x(size_t(q.rows) * q.cols);
  for (int r = 0; r < q.rows; ++r) {
    // fp32 on purpose: see the header.
    float scale = q.scaleAt(r);
    float zero = q.zeroAt(r);
    for (int c = 0; c < q.cols; ++c)
      x[size_t(r) * q.cols + c] =
          (float(q.codes[size_t(r) * q.cols + c]) * scale + zero) *
          q.otherAt(c);
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

/// A scale field: fp16 little-endian, or one e4m3 byte per element.
static void storeScales(ScaleFormat format, llvm::ArrayRef<uint16_t> values,
                        uint8_t *dst) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (format == ScaleFormat::E4M3) {
      dst[i] = uint8_t(values[i]);
      continue;
    }
    dst[2 * i] = uint8_t(values[i] & 0xff);
    dst[2 * i + 1] = uint8_t(values[i] >> 8);
  }
}

static std::vector<uint16_t> loadScales(ScaleFormat format, const uint8_t *src,
                                        size_t n) {
  std::vector<uint16_t> out(n);
  for (size_t i = 0; i < n; ++i)
    out[i] = format == ScaleFormat::E4M3
                 ? src[i]
                 : uint16_t(src[2 * i] | (src[2 * i + 1] << 8));
  return out;
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
  const ScaleFormat f = layout.scaleFormat;
  QuantizedTile qk =
      normalizeAndQuantize(k, layout.keyBits, layout.sinkhornIters, nullptr, f);
  QuantizedTile qv = normalizeAndQuantize(v, layout.valueBits,
                                          layout.sinkhornIters, nullptr, f);

  std::fill(record, record + layout.recordBytes, 0);
  packCodes(qk.codes, layout.keyBits,
            {record + layout.kCodes, size_t(d * layout.kRowBytes())});
  storeScales(f, qk.absorbedScale, record + layout.kScale);
  storeHalves(qk.absorbedZero, record + layout.kZero);
  storeScales(f, qk.otherScale, record + layout.kTokenScale);
  packCodes(qv.codes, layout.valueBits,
            {record + layout.vCodes, size_t(g * layout.vRowBytes())});
  storeScales(f, qv.otherScale, record + layout.vChannelScale);
  storeScales(f, qv.absorbedScale, record + layout.vScale);
  storeHalves(qv.absorbedZero, record + layout.vZero);
  if (f == ScaleFormat::E4M3) {
    auto store = [&](ScaleField field, int exponent) {
      record[layout.scaleExponentOffset(field)] = uint8_t(int8_t(exponent));
    };
    store(ScaleField::KScale, qk.scaleExponent);
    store(ScaleField::KTokenScale, qk.otherExponent);
    store(ScaleField::VChannelScale, qv.otherExponent);
    store(ScaleField::VScale, qv.scaleExponent);
  }
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
  const ScaleFormat f = layout.scaleFormat;
  r.k.scaleFormat = r.v.scaleFormat = f;
  r.k.absorbedScale = loadScales(f, record + layout.kScale, d);
  r.k.absorbedZero = loadHalves(record + layout.kZero, d);
  r.k.otherScale = loadScales(f, record + layout.kTokenScale, g);

  r.v.rows = g;
  r.v.cols = d;
  r.v.bits = layout.valueBits;
  r.v.codes.resize(size_t(g) * d);
  unpackCodes({record + layout.vCodes, size_t(g * layout.vRowBytes())},
              layout.valueBits, r.v.codes);
  r.v.otherScale = loadScales(f, record + layout.vChannelScale, d);
  r.v.absorbedScale = loadScales(f, record + layout.vScale, g);
  r.v.absorbedZero = loadHalves(record + layout.vZero, g);
  if (f == ScaleFormat::E4M3) {
    auto exponent = [&](ScaleField field) {
      return int(int8_t(record[layout.scaleExponentOffset(field)]));
    };
    r.k.scaleExponent = exponent(ScaleField::KScale);
    r.k.otherExponent = exponent(ScaleField::KTokenScale);
    r.v.otherExponent = exponent(ScaleField::VChannelScale);
    r.v.scaleExponent = exponent(ScaleField::VScale);
  }
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
