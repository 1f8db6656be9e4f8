//===- ScaleFormatTest.cpp - e4m3 scale fields against fp16 ones ---------===//
//
// docs/kvarn.md, "Scale formats": the e4m3 codec, quantization against the
// stored e4m3 scales, the records of the `_e4m3` presets, and their error
// against the fp16-scale presets on the golden flush cases' tiles and on
// fresh heavy-tailed tiles (the table printed here is docs/benchmarks.md's).
//
//===----------------------------------------------------------------------===//

#include "TestUtil.h"
#include "kvarn/Golden/GoldenCase.h"
#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Reference/Rotation.h"
#include "kvarn/Support/Fp8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>

using namespace kvarn;

TEST(E4M3, EveryFiniteByteRoundTrips) {
  for (int b = 0; b <= kE4M3MaxBits; ++b) {
    float x = decodeE4M3(uint8_t(b));
    EXPECT_EQ(encodeE4M3(x, false), b) << b;
    EXPECT_EQ(encodeE4M3(x, true), b) << b;
    if (b > 0) { // monotonic
      EXPECT_GT(x, decodeE4M3(uint8_t(b - 1))) << b;
    }
  }
  EXPECT_EQ(decodeE4M3(kE4M3MaxBits), kE4M3Max);
  EXPECT_EQ(decodeE4M3(1), kE4M3MinSubnormal);
  EXPECT_EQ(decodeE4M3(8), kE4M3MinNormal);
}

// Nearest is the closest byte (ties to an even mantissa), up the smallest
// byte at or above x, on fresh values over the whole range and beyond.
TEST(E4M3, RoundingModes) {
  std::mt19937_64 rng(test::freshSeed());
  std::uniform_real_distribution<float> log2x(-12.0f, 9.5f);
  for (int i = 0; i < 20000; ++i) {
    float x = std::exp2(log2x(rng));
    uint8_t up = encodeE4M3(x, true), near = encodeE4M3(x, false);
    if (x <= kE4M3Max) {
      ASSERT_GE(decodeE4M3(up), x) << x;
      if (up > 0) {
        ASSERT_LT(decodeE4M3(uint8_t(up - 1)), x) << x;
      }
    } else {
      ASSERT_EQ(up, kE4M3MaxBits);
    }
    float err = std::fabs(decodeE4M3(near) - x);
    for (int n : {near - 1, near + 1})
      if (n >= 0 && n <= kE4M3MaxBits) {
        float other = std::fabs(decodeE4M3(uint8_t(n)) - x);
        ASSERT_TRUE(err < other || (err == other && (near & 1) == 0))
            << x << " -> " << int(near);
      }
  }
  EXPECT_EQ(encodeE4M3(0.0f, true), 0);
  EXPECT_EQ(encodeE4M3(1e-30f, true), 1); // never 0 when rounding up
}

TEST(E4M3, FieldExponentPutsTheMaximumAtMost448) {
  std::mt19937_64 rng(test::freshSeed());
  std::uniform_real_distribution<float> log2x(-60.0f, 60.0f);
  for (int i = 0; i < 20000; ++i) {
    float max = std::exp2(log2x(rng));
    int e = scaleFieldExponent(max);
    ASSERT_LE(std::ldexp(max, -e), kE4M3Max) << max;
    if (e > -kScaleExponentLimit) { // the smallest e, unless clamped
      ASSERT_GT(std::ldexp(max, -(e - 1)), kE4M3Max) << max;
    }
  }
  EXPECT_EQ(scaleFieldExponent(kE4M3Max), 0);
  EXPECT_EQ(scaleFieldExponent(0.0f), 0);
  EXPECT_EQ(scaleFieldExponent(1e38f), kScaleExponentLimit);
}

namespace {

/// ||dequantize(q) - m|| / ||m||.
double relativeError(const Matrix &m, const QuantizedTile &q) {
  std::vector<double> x = dequantizeTile(q);
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double e = x[i] - m.data[i];
    num += e * e;
    den += double(m.data[i]) * m.data[i];
  }
  return std::sqrt(num / den);
}

struct ErrorSums {
  double f16 = 0, e4m3 = 0;
  int tiles = 0;
  double worstRatio = 0;
};

void addTile(ErrorSums &s, const Matrix &m, int bits) {
  SinkhornResult sk = sinkhorn(m, 8);
  double f16 = relativeError(m, quantizeTile(m, bits, sk, ScaleFormat::F16));
  double e4m3 = relativeError(m, quantizeTile(m, bits, sk, ScaleFormat::E4M3));
  s.f16 += f16;
  s.e4m3 += e4m3;
  s.worstRatio = std::max(s.worstRatio, e4m3 / f16);
  ++s.tiles;
}

} // namespace

// Every element within half a step of its row's rounded e4m3 step, plus
// what the rounded grid leaves uncovered at either end of the row's range
// (the grid is centred on it) and the fp16 rounding of its zero point, times
// the rounded column scale.
TEST(E4M3, QuantizedAgainstTheStoredScales) {
  std::mt19937_64 rng(test::freshSeed());
  for (int bits : {2, 4})
    for (bool channelRows : {true, false}) {
      std::vector<uint16_t> tokens = test::heavyTailedTokens(rng, 128, 128);
      Matrix m = test::tileFromTokens(tokens.data(), 128, 128, channelRows);
      SinkhornResult s = sinkhorn(m, 8);
      QuantizedTile q = quantizeTile(m, bits, s, ScaleFormat::E4M3);
      std::vector<double> x = dequantizeTile(q);
      const int qmax = (1 << bits) - 1;
      for (int r = 0; r < m.rows; ++r) {
        double a = q.scaleAt(r), zero = q.zeroAt(r);
        ASSERT_GT(a, 0);
        double lo = INFINITY, hi = -INFINITY;
        for (int c = 0; c < m.cols; ++c) {
          double y = double(m.at(r, c)) / q.otherAt(c);
          lo = std::min(lo, y);
          hi = std::max(hi, y);
        }
        double step = std::max((hi - lo) / qmax, 1e-10);
        double uncovered = std::max(0.0, 0.5 * (step - a) * qmax);
        double centred = lo + 0.5 * (step - a) * qmax;
        for (int c = 0; c < m.cols; ++c) {
          double other = q.otherAt(c);
          double y = m.at(r, c) / other;
          double bound = (0.5 * a * (1 + 1e-4) + uncovered * (1 + 1e-4) +
                          std::fabs(centred - zero) + 1e-6 * std::fabs(y)) *
                         other;
          ASSERT_LE(std::fabs(x[size_t(r) * m.cols + c] - m.at(r, c)), bound)
              << bits << " bits, row " << r << " col " << c;
          ASSERT_LE(q.codes[size_t(r) * m.cols + c], qmax);
        }
      }
    }
}

// Four scale vectors of one byte instead of two, plus the exponents; every
// stored field in canonical form (its largest element's byte above 224,
// unless its exponent is clamped). Round trips: QuantizerTest's Record.
TEST(E4M3, RecordsAreSmallerAndCanonical) {
  std::mt19937_64 rng(test::freshSeed());
  for (const Preset &preset : allPresets()) {
    if (preset.scales != ScaleFormat::E4M3)
      continue;
    for (int d : {64, 128, 256}) {
      RecordLayout l = *RecordLayout::get(preset, d);
      RecordLayout f16 =
          *RecordLayout::get(Preset{"f16", preset.keyBits, preset.valueBits,
                                    preset.group, preset.sinkhornIters},
                             d);
      EXPECT_EQ(l.unalignedBytes,
                f16.unalignedBytes - 2 * (d + l.group) + kScaleFieldCount);
      EXPECT_EQ(l.recordBytes % 16, 0);
      std::vector<uint16_t> k = test::heavyTailedTokens(rng, l.group, d);
      std::vector<uint16_t> v = test::heavyTailedTokens(rng, l.group, d);
      std::vector<uint8_t> record(l.recordBytes);
      encodeRecord(l, k.data(), v.data(), record.data());
      DecodedRecord dec = decodeRecord(l, record.data());
      for (const QuantizedTile *q : {&dec.k, &dec.v})
        for (auto [bytes, exponent] :
             {std::pair{&q->absorbedScale, q->scaleExponent},
              std::pair{&q->otherScale, q->otherExponent}}) {
          uint16_t top = *std::max_element(bytes->begin(), bytes->end());
          ASSERT_LE(top, kE4M3MaxBits);
          if (exponent > -kScaleExponentLimit) {
            ASSERT_GT(decodeE4M3(uint8_t(top)), kE4M3Max / 2)
                << preset.name << " D " << d;
          }
        }
    }
  }
}

// The table of docs/benchmarks.md: mean relative L2 error of the
// dequantized tile, fp16 scales against e4m3 scales, the same Sinkhorn
// scales for both. E4M3 changes a row's step by its rounding (at most 1/16
// either way) and nothing else, so over a set of tiles the error grows by
// about that much at most: the mean ratio of a set is bounded (1.05; 600
// fresh seeds of the random sets gave at most 1.028). One tile's ratio is
// not: where a row's data happen to sit on the grid of its fp16 step (its
// error ~40x below the tile's), the rounded step leaves that grid, and a
// tile of such rows measured up to 1.28x (150 seeds; 1.15, the bound
// before, failed ~5% of them, e.g. 483496202754445176). The worst tile is
// printed; each element's bound is QuantizedAgainstTheStoredScales'.
TEST(E4M3, ErrorAgainstFp16ScalesOnGoldenAndRandomTiles) {
  const char *dir = std::getenv("KVARN_GOLDEN_DIR");
  std::string root = dir && *dir ? dir : KVARN_GOLDEN_DIR;
  std::printf("| inputs | bits | rows | tiles | fp16 scales | e4m3 scales | "
              "e4m3 / fp16 | worst tile |\n");
  auto report = [](const char *what, int bits, const char *rows,
                   const ErrorSums &s) {
    std::printf("| %s | %d | %s | %d | %.4e | %.4e | %.4f | %.4f |\n", what,
                bits, rows, s.tiles, s.f16 / s.tiles, s.e4m3 / s.tiles,
                s.e4m3 / s.f16, s.worstRatio);
    EXPECT_LE(s.e4m3 / s.f16, 1.05) << what;
  };
  for (const char *name :
       {"flush_kvarn_k4v2_g128_d128_a", "flush_kvarn_k4v2_g128_d256_a",
        "flush_kvarn_k4v2_g64_d128_a", "flush_kvarn_k4v4_g128_d128_a"}) {
    kvarn::Expected<GoldenCase> c = GoldenCase::load(root + "/" + name);
    ASSERT_TRUE(bool(c)) << kvarn::toString(c.takeError());
    const RecordLayout &l = c->recordLayout();
    kvarn::Expected<Tensor> k = c->tensor("k_rot", "float16", 3);
    kvarn::Expected<Tensor> v = c->tensor("v_rot", "float16", 3);
    ASSERT_TRUE(k && v);
    ErrorSums ks, vs;
    size_t tileElems = size_t(l.group) * l.headDim;
    for (int64_t t = 0; t < k->shape[0]; ++t) {
      addTile(ks,
              test::tileFromTokens(k->as<uint16_t>() + t * tileElems, l.group,
                                   l.headDim, true),
              l.keyBits);
      addTile(vs,
              test::tileFromTokens(v->as<uint16_t>() + t * tileElems, l.group,
                                   l.headDim, false),
              l.valueBits);
    }
    report(name, l.keyBits, "K (channels)", ks);
    report(name, l.valueBits, "V (tokens)", vs);
  }
  std::mt19937_64 rng(test::freshSeed());
  Rotation rot = *Rotation::get(128);
  for (int bits : {2, 4})
    for (bool channelRows : {true, false}) {
      ErrorSums s;
      for (int i = 0; i < 16; ++i) {
        std::vector<uint16_t> raw =
            test::heavyTailedTokens(rng, 128, 128, channelRows && i % 4 == 0);
        std::vector<uint16_t> rotated(raw.size());
        for (int t = 0; t < 128; ++t)
          rot.rotateHalf(&raw[size_t(t) * 128], &rotated[size_t(t) * 128]);
        addTile(s, test::tileFromTokens(rotated.data(), 128, 128, channelRows),
                bits);
      }
      report("random heavy-tailed, rotated, G 128 D 128", bits,
             channelRows ? "K (channels)" : "V (tokens)", s);
    }
}
