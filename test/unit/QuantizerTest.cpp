//===- QuantizerTest.cpp - Sinkhorn, RTN, packing and records -------------===//

#include "TestUtil.h"

#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Support/Half.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace kvarn;

TEST(Pack, LowBitsFirst) {
  std::vector<uint8_t> twoBit = {1, 2, 3, 0, 3, 3, 0, 1};
  std::vector<uint8_t> packed(2);
  packCodes(twoBit, 2, packed);
  EXPECT_EQ(packed[0], 0b00111001); // codes 1,2,3,0 at shifts 0,2,4,6
  EXPECT_EQ(packed[1], 0b01001111);
  std::vector<uint8_t> fourBit = {0xA, 0x5, 0x0, 0xF};
  packCodes(fourBit, 4, packed);
  EXPECT_EQ(packed[0], 0x5A); // even index in the low nibble
  EXPECT_EQ(packed[1], 0xF0);
}

TEST(Pack, RandomRoundTrip) {
  std::mt19937_64 rng(test::freshSeed());
  for (int bits : {2, 4}) {
    std::vector<uint8_t> codes(1024), packed(1024 * bits / 8), back(1024);
    std::uniform_int_distribution<int> code(0, (1 << bits) - 1);
    for (uint8_t &c : codes)
      c = uint8_t(code(rng));
    packCodes(codes, bits, packed);
    unpackCodes(packed, bits, back);
    EXPECT_EQ(codes, back) << bits << " bits";
  }
}

static Matrix tileFromTokens(const std::vector<uint16_t> &tokens, int g, int d,
                             bool channelRows) {
  Matrix m(channelRows ? d : g, channelRows ? g : d);
  for (int t = 0; t < g; ++t)
    for (int c = 0; c < d; ++c) {
      float x = halfToFloat(tokens[size_t(t) * d + c]);
      if (channelRows)
        m.at(c, t) = x;
      else
        m.at(t, c) = x;
    }
  return m;
}

// The best-iterate rule: the kept imbalance is never above the untouched
// tile's, and it is the imbalance of the scales actually kept.
TEST(Sinkhorn, BestIterateIsNeverWorseThanTheInput) {
  std::mt19937_64 rng(test::freshSeed());
  for (int trial = 0; trial < 20; ++trial) {
    int g = trial % 2 ? 64 : 128, d = 64 + 16 * (trial % 5);
    std::vector<uint16_t> tokens =
        test::heavyTailedTokens(rng, g, d, /*sink=*/trial % 3 == 0);
    for (bool channelRows : {true, false}) {
      Matrix m = tileFromTokens(tokens, g, d, channelRows);
      SinkhornResult s = sinkhorn(m, 8);
      EXPECT_LE(s.bestImbalance, s.initialImbalance);
      EXPECT_EQ(s.initialImbalance, imbalance(m));
      Matrix kept(m.rows, m.cols);
      for (int r = 0; r < m.rows; ++r)
        for (int c = 0; c < m.cols; ++c)
          kept.at(r, c) =
              m.at(r, c) / std::exp(s.logCol[c]) / std::exp(s.logRow[r]);
      EXPECT_EQ(imbalance(kept), s.bestImbalance);
      for (float l : s.logCol) {
        EXPECT_GE(l, kLogScaleMin);
        EXPECT_LE(l, kLogScaleMax);
      }
    }
  }
}

TEST(Sinkhorn, ZeroIterationsKeepsTheTile) {
  Matrix m(4, 3);
  for (size_t i = 0; i < m.data.size(); ++i)
    m.data[i] = float(i * i) - 3.0f;
  SinkhornResult s = sinkhorn(m, 0);
  EXPECT_EQ(s.bestIteration, 0);
  for (float l : s.logCol)
    EXPECT_EQ(l, 0.0f);
}

// Every element reconstructs within half a quantization step of its row,
// plus the fp16 rounding of the three scale fields.
TEST(Quantize, RoundTripErrorBoundPerBitWidth) {
  std::mt19937_64 rng(test::freshSeed());
  const float ulp = std::ldexp(1.0f, -11);
  for (int bits : {2, 4}) {
    for (bool channelRows : {true, false}) {
      std::vector<uint16_t> tokens = test::heavyTailedTokens(rng, 128, 128);
      Matrix m = tileFromTokens(tokens, 128, 128, channelRows);
      SinkhornResult s;
      QuantizedTile q = normalizeAndQuantize(m, bits, 8, &s);
      std::vector<double> x = dequantizeTile(q);
      const int qmax = (1 << bits) - 1;
      for (int r = 0; r < m.rows; ++r) {
        double sRow = std::exp(double(s.logRow[r]));
        double lo = INFINITY, hi = -INFINITY;
        for (int c = 0; c < m.cols; ++c) {
          double b = m.at(r, c) / std::exp(double(s.logCol[c])) / sRow;
          lo = std::min(lo, b);
          hi = std::max(hi, b);
        }
        double a = std::max((hi - lo) / qmax, 1e-10);
        for (int c = 0; c < m.cols; ++c) {
          double sCol = std::exp(double(s.logCol[c]));
          double step = a * sRow * sCol;
          double magnitude = (qmax * a + std::fabs(lo)) * sRow * sCol;
          double bound = 0.5 * step * (1 + 1e-4) + 3 * ulp * magnitude +
                         1e-6 * std::fabs(m.at(r, c));
          ASSERT_LE(std::fabs(x[size_t(r) * m.cols + c] - m.at(r, c)), bound)
              << bits << " bits, row " << r << " col " << c;
          ASSERT_LE(q.codes[size_t(r) * m.cols + c], qmax);
        }
      }
    }
  }
}

TEST(Record, PaddingIsZeroAndFieldsRoundTrip) {
  std::mt19937_64 rng(test::freshSeed());
  for (int d : {128, 256}) {
    RecordLayout l = *RecordLayout::get(defaultPreset(), d);
    std::vector<uint16_t> k = test::heavyTailedTokens(rng, l.group, d);
    std::vector<uint16_t> v = test::heavyTailedTokens(rng, l.group, d);
    std::vector<uint8_t> record(l.recordBytes, 0xA5);
    encodeRecord(l, k.data(), v.data(), record.data());
    for (int64_t i = l.unalignedBytes; i < l.recordBytes; ++i)
      ASSERT_EQ(record[i], 0) << "padding byte " << i;
    if (d == 256)
      EXPECT_GT(l.recordBytes, l.unalignedBytes);

    // Decoding gives back exactly the quantized tiles the encoder made.
    Matrix km = tileFromTokens(k, l.group, d, true);
    QuantizedTile qk = normalizeAndQuantize(km, l.keyBits, l.sinkhornIters);
    DecodedRecord dec = decodeRecord(l, record.data());
    EXPECT_EQ(dec.k.codes, qk.codes);
    EXPECT_EQ(dec.k.absorbedScale, qk.absorbedScale);
    EXPECT_EQ(dec.k.absorbedZero, qk.absorbedZero);
    EXPECT_EQ(dec.k.otherScale, qk.otherScale);

    // The dequantized record is exactly the dequantized tiles.
    Matrix vm = tileFromTokens(v, l.group, d, false);
    QuantizedTile qv = normalizeAndQuantize(vm, l.valueBits, l.sinkhornIters);
    std::vector<double> kTile = dequantizeTile(qk), vTile = dequantizeTile(qv);
    std::vector<double> kd(size_t(l.group) * d), vd(kd.size());
    dequantizeRecord(l, record.data(), kd.data(), vd.data());
    for (int t = 0; t < l.group; ++t)
      for (int c = 0; c < d; ++c) {
        ASSERT_EQ(kd[size_t(t) * d + c], kTile[size_t(c) * l.group + t]);
        ASSERT_EQ(vd[size_t(t) * d + c], vTile[size_t(t) * d + c]);
      }
  }
}
