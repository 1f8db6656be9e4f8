//===- QuantizerTest.cpp - Sinkhorn, RTN, packing and records -------------===//

#include "TestUtil.h"

#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Reference/TileArithmetic.h"
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

// The best-iterate rule: the kept imbalance is never above the untouched
// tile's, and it is the imbalance of the scales actually kept.
TEST(Sinkhorn, BestIterateIsNeverWorseThanTheInput) {
  std::mt19937_64 rng(test::freshSeed());
  for (int trial = 0; trial < 20; ++trial) {
    int g = trial % 2 ? 64 : 128, d = 64 + 16 * (trial % 5);
    std::vector<uint16_t> tokens =
        test::heavyTailedTokens(rng, g, d, /*sink=*/trial % 3 == 0);
    for (bool channelRows : {true, false}) {
      Matrix m = test::tileFromTokens(tokens.data(), g, d, channelRows);
      SinkhornResult s = sinkhorn(m, 8);
      EXPECT_LE(s.bestImbalance, s.initialImbalance);
      EXPECT_EQ(s.initialImbalance, imbalance(m));
      EXPECT_EQ(imbalance(m, s.colScale, s.rowScale), s.bestImbalance);
      for (float x : s.colScale) {
        EXPECT_GE(x, tilemath::kScaleMin);
        EXPECT_LE(x, tilemath::kScaleMax);
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
  for (float x : s.colScale)
    EXPECT_EQ(x, 1.0f);
}

// Every element reconstructs within half a quantization step of its row,
// plus the fp16 rounding of the three scale fields.
TEST(Quantize, RoundTripErrorBoundPerBitWidth) {
  std::mt19937_64 rng(test::freshSeed());
  const float ulp = std::ldexp(1.0f, -11);
  for (int bits : {2, 4}) {
    for (bool channelRows : {true, false}) {
      std::vector<uint16_t> tokens = test::heavyTailedTokens(rng, 128, 128);
      Matrix m = test::tileFromTokens(tokens.data(), 128, 128, channelRows);
      SinkhornResult s;
      QuantizedTile q = normalizeAndQuantize(m, bits, 8, &s);
      std::vector<double> x = dequantizeTile(q);
      const int qmax = (1 << bits) - 1;
      for (int r = 0; r < m.rows; ++r) {
        double sRow = s.rowScale[r];
        double lo = INFINITY, hi = -INFINITY;
        for (int c = 0; c < m.cols; ++c) {
          double b = m.at(r, c) / double(s.colScale[c]) / sRow;
          lo = std::min(lo, b);
          hi = std::max(hi, b);
        }
        double a = std::max((hi - lo) / qmax, 1e-10);
        for (int c = 0; c < m.cols; ++c) {
          double sCol = s.colScale[c];
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

// fp16 scales and e4m3 scales (docs/kvarn.md, "Scale formats").
TEST(Record, PaddingIsZeroAndFieldsRoundTrip) {
  std::mt19937_64 rng(test::freshSeed());
  for (const char *name :
       {"kvarn_k4v2_g128", "kvarn_k4v2_g128_e4m3", "kvarn_k4v4_g64_e4m3"})
    for (int d : {128, 256}) {
      SCOPED_TRACE(std::string(name) + " head_dim " + std::to_string(d));
      RecordLayout l = *RecordLayout::get(**lookupPreset(name), d);
      std::vector<uint16_t> k = test::heavyTailedTokens(rng, l.group, d);
      std::vector<uint16_t> v = test::heavyTailedTokens(rng, l.group, d);
      std::vector<uint8_t> record(l.recordBytes, 0xA5);
      encodeRecord(l, k.data(), v.data(), record.data());
      for (int64_t i = l.unalignedBytes; i < l.recordBytes; ++i)
        ASSERT_EQ(record[i], 0) << "padding byte " << i;
      if (d == 256)
        EXPECT_GT(l.recordBytes, l.unalignedBytes);

      // Decoding gives back exactly the quantized tiles the encoder made.
      Matrix km = test::tileFromTokens(k.data(), l.group, d, true);
      Matrix vm = test::tileFromTokens(v.data(), l.group, d, false);
      QuantizedTile qk = normalizeAndQuantize(km, l.keyBits, l.sinkhornIters,
                                              nullptr, l.scaleFormat);
      QuantizedTile qv = normalizeAndQuantize(vm, l.valueBits, l.sinkhornIters,
                                              nullptr, l.scaleFormat);
      DecodedRecord dec = decodeRecord(l, record.data());
      for (auto [got, want] :
           {std::pair{&dec.k, &qk}, std::pair{&dec.v, &qv}}) {
        EXPECT_EQ(got->codes, want->codes);
        EXPECT_EQ(got->absorbedScale, want->absorbedScale);
        EXPECT_EQ(got->absorbedZero, want->absorbedZero);
        EXPECT_EQ(got->otherScale, want->otherScale);
        EXPECT_EQ(got->scaleExponent, want->scaleExponent);
        EXPECT_EQ(got->otherExponent, want->otherExponent);
      }

      // The dequantized record is exactly the dequantized tiles.
      std::vector<double> kTile = dequantizeTile(qk),
                          vTile = dequantizeTile(qv);
      std::vector<double> kd(size_t(l.group) * d), vd(kd.size());
      dequantizeRecord(l, record.data(), kd.data(), vd.data());
      for (int t = 0; t < l.group; ++t)
        for (int c = 0; c < d; ++c) {
          ASSERT_EQ(kd[size_t(t) * d + c], kTile[size_t(c) * l.group + t]);
          ASSERT_EQ(vd[size_t(t) * d + c], vTile[size_t(t) * d + c]);
        }
    }
}

// TileArithmetic.h's claim: a grid of T threads (a power of two) holding
// elements k = t + j T realizes treeSum exactly when each thread first sums
// its own elements as the tree over j, then the threads combine from their
// highest index bit down (what the GPU lowering does with shuffles and the
// cross-warp stage). Checked bit for bit on random data, any n.
TEST(TileArithmetic, AThreadGridRealizesTheTreeSum) {
  std::mt19937_64 rng(test::freshSeed());
  std::student_t_distribution<float> t3(3.0f);
  for (int n : {64, 80, 96, 112, 128, 192, 256, 320, 512}) {
    std::vector<float> x(n);
    for (float &v : x)
      v = t3(rng) * (rng() % 4 == 0 ? 100.0f : 1.0f);
    float tree = tilemath::treeSum(n, [&](int k) { return x[k]; });
    for (int threads = 1; threads <= 64 && n % threads == 0; threads *= 2) {
      const int per = n / threads;
      std::vector<float> partial(threads);
      for (int t = 0; t < threads; ++t)
        partial[t] = tilemath::treeSum(per, [&](int j) { return x[t + j * threads]; });
      for (int h = threads / 2; h >= 1; h /= 2)
        for (int t = 0; t < h; ++t)
          partial[t] = partial[t] + partial[t + h];
      EXPECT_EQ(partial[0], tree) << n << " elements on " << threads << " threads";
    }
    // The product tree sum too, its fused first level in-thread (at least
    // two elements per thread).
    std::vector<float> f(n);
    for (float &v : f)
      v = 1.0f / (1.0f + float(rng() % 1000) / 100.0f);
    float products = tilemath::productTreeSum(
        n, [&](int k) { return x[k]; }, [&](int k) { return f[k]; });
    for (int threads = 1; threads <= 64 && n % threads == 0 && n / threads >= 2;
         threads *= 2) {
      const int per = n / threads;
      std::vector<float> partial(threads);
      for (int t = 0; t < threads; ++t)
        partial[t] = tilemath::productTreeSum(
            per, [&](int j) { return x[t + j * threads]; },
            [&](int j) { return f[t + j * threads]; });
      for (int h = threads / 2; h >= 1; h /= 2)
        for (int t = 0; t < h; ++t)
          partial[t] = partial[t] + partial[t + h];
      EXPECT_EQ(partial[0], products) << n << " products on " << threads << " threads";
    }
    // And it is a sum: within n ulps of the exact one.
    double exact = 0, magnitude = 0;
    for (float v : x)
      exact += v, magnitude += std::fabs(v);
    EXPECT_NEAR(tree, exact, n * magnitude * 0x1p-24);
  }
}
