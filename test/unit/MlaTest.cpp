//===- MlaTest.cpp - the MLA record layout and its CPU reference ----------===//

#include "TestUtil.h"

#include "kvarn/Layout/MlaRecordLayout.h"
#include "kvarn/Reference/Mla.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/Half.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace kvarn;

namespace {

const MlaPreset &defaultMla() { return allMlaPresets().front(); }

MlaRecordLayout layoutOf(int r, int rope) {
  auto l = MlaRecordLayout::get(defaultMla(), r, rope);
  EXPECT_TRUE(bool(l)) << kvarn::toString(l.takeError());
  return *l;
}

/// A block's latent shaped like a model's (RMS-normed, per-channel gains
/// with a few outlier channels, per-token spread), rotated by H_R and
/// rounded to fp16 as append stores it: [G][R] fp16 bits.
std::vector<uint16_t> realisticRotatedLatent(std::mt19937_64 &rng, int g,
                                             int r) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::lognormal_distribution<float> gain(0.0f, 0.5f);
  std::vector<float> channel(r), token(g);
  for (float &x : channel)
    x = gain(rng);
  for (int i = 0; i < 4; ++i)
    channel[rng() % r] *= 6.0f;
  for (float &x : token)
    x = gain(rng);
  Rotation h = cantFail(Rotation::get(r));
  std::vector<uint16_t> raw(r), out(size_t(g) * r);
  for (int t = 0; t < g; ++t) {
    for (int c = 0; c < r; ++c)
      raw[c] = floatToHalf(normal(rng) * channel[c] * token[t]);
    h.rotateHalf(raw.data(), out.data() + size_t(t) * r);
  }
  return out;
}

std::vector<uint16_t> randomHalves(std::mt19937_64 &rng, size_t n) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> out(n);
  for (uint16_t &x : out)
    x = floatToHalf(normal(rng));
  return out;
}

uint16_t halfAt(const std::vector<uint8_t> &bytes, int64_t at) {
  return uint16_t(bytes[at] | (bytes[at + 1] << 8));
}

} // namespace

// DeepSeek-V2-Lite's shape, field by field as the issue and the reference's
// kvarn_mla_tile_layout give it: 51456 bytes per 128-token block.
TEST(MlaLayout, DeepSeekShape) {
  MlaRecordLayout l = layoutOf(512, 64);
  const int64_t codes = 128 * 512 / 2, scale = 512 * 2, zero = 512 * 2,
                tokenScale = 128 * 2, rope = 128 * 64 * 2;
  EXPECT_EQ(l.codes, 0);
  EXPECT_EQ(l.scale, codes);
  EXPECT_EQ(l.zero, codes + scale);
  EXPECT_EQ(l.tokenScale, codes + scale + zero);
  EXPECT_EQ(l.rope, codes + scale + zero + tokenScale);
  EXPECT_EQ(l.recordBytes, codes + scale + zero + tokenScale + rope);
  EXPECT_EQ(l.recordBytes, 51456);
  EXPECT_EQ(l.bytesPerToken(), 402);
  EXPECT_EQ(l.tokenCodeBytes(), 256);
}

TEST(MlaLayout, BadShapesAndNamesAreErrors) {
  for (auto [r, rope] : {std::pair{500, 64},
                         {32, 64},
                         {1024, 64},
                         {512, 60},
                         {512, -8},
                         {512, 264}}) {
    auto l = MlaRecordLayout::get(defaultMla(), r, rope);
    ASSERT_FALSE(bool(l)) << r << " " << rope;
    std::string message;
    EXPECT_EQ(consumeError(l.takeError(), message),
              KVARN_ERROR_UNSUPPORTED_SHAPE);
    EXPECT_NE(message.find("MLA"), std::string::npos) << message;
  }
  auto p = lookupMlaPreset("kvarn_mla_k4_g64x");
  ASSERT_FALSE(bool(p));
  std::string message;
  EXPECT_EQ(consumeError(p.takeError(), message), KVARN_ERROR_UNKNOWN_PRESET);
  EXPECT_NE(message.find("kvarn_mla_k4_g128"), std::string::npos) << message;
  EXPECT_TRUE(bool(lookupMlaPreset("kvarn_mla_k4_g128")));
}

// The record holds the dense quantizer's codes of the [R, G] tile token-major
// (low nibble = even channel), its absorbed scales and zeros per channel, the
// per-token scale and the rope keys as given; every element dequantizes
// within half a step (plus the fp16 rounding of scale and zero).
TEST(MlaRecord, HoldsTheTileTokenMajor) {
  std::mt19937_64 rng(test::freshSeed());
  for (auto [r, rope] : {std::pair{512, 64}, {256, 32}, {64, 0}}) {
    MlaRecordLayout l = layoutOf(r, rope);
    const int g = l.group;
    std::vector<uint16_t> lat = realisticRotatedLatent(rng, g, r);
    std::vector<uint16_t> ropeKeys = randomHalves(rng, size_t(g) * rope);
    std::vector<uint8_t> record(l.recordBytes, 0xcd);
    encodeMlaRecord(l, lat.data(), ropeKeys.data(), record.data());

    Matrix m(r, g);
    for (int t = 0; t < g; ++t)
      for (int c = 0; c < r; ++c)
        m.at(c, t) = halfToFloat(lat[size_t(t) * r + c]);
    QuantizedTile q = normalizeAndQuantize(m, 4, l.sinkhornIters);
    for (int t = 0; t < g; ++t)
      for (int c = 0; c < r; ++c) {
        uint8_t byte = record[l.codes + size_t(t) * (r / 2) + c / 2];
        ASSERT_EQ((byte >> (4 * (c % 2))) & 0xf, q.codes[size_t(c) * g + t])
            << "token " << t << " channel " << c;
      }
    for (int c = 0; c < r; ++c) {
      ASSERT_EQ(halfAt(record, l.scale + 2 * c), q.absorbedScale[c]);
      ASSERT_EQ(halfAt(record, l.zero + 2 * c), q.absorbedZero[c]);
    }
    for (int t = 0; t < g; ++t)
      ASSERT_EQ(halfAt(record, l.tokenScale + 2 * t), q.otherScale[t]);
    for (int i = 0; i < g * rope; ++i)
      ASSERT_EQ(halfAt(record, l.rope + 2 * i), ropeKeys[i]);

    std::vector<double> deq(size_t(g) * r), deqRope(size_t(g) * rope);
    dequantizeMlaRecord(l, record.data(), deq.data(), deqRope.data());
    double err = 0, norm = 0;
    for (int t = 0; t < g; ++t) {
      double ts = halfToFloat(q.otherScale[t]);
      for (int c = 0; c < r; ++c) {
        double scale = halfToFloat(q.absorbedScale[c]);
        double zero = halfToFloat(q.absorbedZero[c]);
        double x = m.at(c, t), y = deq[size_t(t) * r + c];
        // Half a step, the fp16 rounding of scale (x 15) and zero, and the
        // fp16 rounding of the token scale.
        double bound =
            (0.5 * scale + (15 * scale + std::fabs(zero)) * 0x1p-11) * ts *
                (1 + 0x1p-10) +
            1e-6;
        ASSERT_LE(std::fabs(x - y), bound * 1.5 + std::fabs(x) * 0x1p-10)
            << "token " << t << " channel " << c;
        err += (x - y) * (x - y);
        norm += x * x;
      }
    }
    for (int i = 0; i < g * rope; ++i)
      ASSERT_EQ(deqRope[i], halfToFloat(ropeKeys[i]));
    std::printf("[ figures  ] MLA R %d: 4-bit latent rel L2 %.4f\n", r,
                std::sqrt(err / norm));
    // Round-to-nearest leaves step / sqrt(12) per element; a step is 1/15 of
    // a channel's range, about 5.2 sigma over 128 Gaussian tokens: ~0.10 of
    // the tile's norm, less where Sinkhorn evens the channels out.
    EXPECT_LT(std::sqrt(err / norm), 0.12);
  }
}

namespace {

/// A random MLA cache: `records` flushed blocks, `pooled` blocks in fp16 pool
/// slots, shuffled in the block table; the true (unquantized) rotated
/// latent kept for comparison.
struct RandomMlaCache {
  MlaRecordLayout layout;
  std::vector<uint8_t> records;
  std::vector<int32_t> blockToSlot;
  std::vector<uint16_t> poolLatent, poolRope;
  std::vector<uint16_t> trueLatent, trueRope; // per block, [G][R] / [G][E]
  int64_t numBlocks = 0, poolSlots = 0;

  MlaPagedCacheView view() const {
    MlaPagedCacheView v{
        &layout,   numBlocks,         records.data(), blockToSlot.data(),
        poolSlots, poolLatent.data(), poolRope.data()};
    return v;
  }
};

RandomMlaCache randomMlaCache(std::mt19937_64 &rng, MlaRecordLayout l,
                              int64_t blocks, int64_t pooled) {
  RandomMlaCache c;
  c.layout = l;
  c.numBlocks = blocks;
  c.poolSlots = pooled;
  const int g = l.group, r = l.kvLoraRank, e = l.ropeDim;
  c.records.assign(size_t(blocks) * l.recordBytes, 0);
  c.blockToSlot.assign(blocks, -1);
  c.poolLatent.resize(size_t(pooled) * g * r);
  c.poolRope.resize(size_t(pooled) * g * e);
  std::vector<int64_t> order(blocks);
  for (int64_t i = 0; i < blocks; ++i)
    order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  for (int64_t i = 0; i < blocks; ++i) {
    std::vector<uint16_t> lat = realisticRotatedLatent(rng, g, r);
    std::vector<uint16_t> rope = randomHalves(rng, size_t(g) * e);
    c.trueLatent.insert(c.trueLatent.end(), lat.begin(), lat.end());
    c.trueRope.insert(c.trueRope.end(), rope.begin(), rope.end());
    int64_t block = i;
    auto slotOf = std::find(order.begin(), order.begin() + pooled, block);
    if (slotOf != order.begin() + pooled) {
      int32_t slot = int32_t(slotOf - order.begin());
      c.blockToSlot[block] = slot;
      std::copy(lat.begin(), lat.end(), c.poolLatent.begin() + slot * g * r);
      std::copy(rope.begin(), rope.end(), c.poolRope.begin() + slot * g * e);
    } else {
      encodeMlaRecord(l, lat.data(), rope.data(),
                      c.records.data() + block * l.recordBytes);
    }
  }
  return c;
}

} // namespace

// mlaDecodeAttention rotates the query; this test un-rotates the cache
// instead (K = V = latent H^T per token) and attends in the model's frame.
TEST(MlaDecode, MatchesAttentionInTheModelFrame) {
  std::mt19937_64 rng(test::freshSeed());
  MlaRecordLayout l = layoutOf(256, 32);
  const int g = l.group, r = l.kvLoraRank, e = l.ropeDim, heads = 3;
  RandomMlaCache cache = randomMlaCache(rng, l, 7, 3);
  Rotation rot = cantFail(Rotation::get(r));

  const int batch = 3, maxBlocks = 4;
  std::vector<int32_t> seqLens = {int32_t(2 * g + 5), 0, int32_t(4 * g)};
  std::vector<int32_t> table = {6, 2, 4, -1, -1, -1, -1, -1, 0, 1, 3, 5};
  std::normal_distribution<float> normal(0.0f, 0.2f);
  std::vector<float> q(size_t(batch) * heads * (r + e));
  for (float &x : q)
    x = normal(rng);
  MlaDecodeBatchView bv;
  bv.batch = batch;
  bv.numHeads = heads;
  bv.q = q.data();
  bv.blockTable = table.data();
  bv.maxBlocks = maxBlocks;
  bv.seqLens = seqLens.data();
  bv.softmaxScale = 1.0f / std::sqrt(float(r + e));
  std::vector<float> out(size_t(batch) * heads * r), lse(batch * heads);
  ASSERT_FALSE(
      bool(mlaDecodeAttention(cache.view(), bv, rot, out.data(), lse.data())));

  std::vector<double> latRot, rope, k(r);
  for (int b = 0; b < batch; ++b) {
    int len = seqLens[b];
    if (len == 0) {
      for (int i = 0; i < heads * r; ++i)
        ASSERT_EQ(out[size_t(b) * heads * r + i], 0.0f);
      continue;
    }
    std::vector<double> keys, ropes;
    for (int t = 0; t < len; ++t) {
      if (t % g == 0) {
        ASSERT_FALSE(bool(readMlaBlock(
            cache.view(), table[b * maxBlocks + t / g], latRot, rope)));
      }
      rot.unrotate(latRot.data() + size_t(t % g) * r, k.data());
      keys.insert(keys.end(), k.begin(), k.end());
      ropes.insert(ropes.end(), rope.begin() + size_t(t % g) * e,
                   rope.begin() + size_t(t % g + 1) * e);
    }
    for (int h = 0; h < heads; ++h) {
      const float *qh = q.data() + (size_t(b) * heads + h) * (r + e);
      std::vector<double> s(len);
      double mx = -INFINITY, sum = 0;
      for (int t = 0; t < len; ++t) {
        s[t] = 0;
        for (int c = 0; c < r; ++c)
          s[t] += qh[c] * keys[size_t(t) * r + c];
        for (int c = 0; c < e; ++c)
          s[t] += qh[r + c] * ropes[size_t(t) * e + c];
        s[t] *= bv.softmaxScale;
        mx = std::max(mx, s[t]);
      }
      std::vector<double> o(r, 0.0);
      for (int t = 0; t < len; ++t) {
        double p = std::exp(s[t] - mx);
        sum += p;
        for (int c = 0; c < r; ++c)
          o[c] += p * keys[size_t(t) * r + c];
      }
      double err = 0, norm = 0;
      for (int c = 0; c < r; ++c) {
        double d = out[(size_t(b) * heads + h) * r + c] - o[c] / sum;
        err += d * d;
        norm += (o[c] / sum) * (o[c] / sum);
      }
      EXPECT_LT(std::sqrt(err / norm), 1e-6)
          << "request " << b << " head " << h;
      EXPECT_NEAR(lse[b * heads + h], mx + std::log(sum), 1e-4);
    }
  }
}

// Decode over the 4-bit records against decode over the same blocks kept in
// fp16: the quantization error attention sees. How large it is depends on
// how attention spreads: near-uniform weights average the tokens' errors
// out (~0.01 of a token's latent norm); weights on a few large tokens pass
// their own ~0.1 through, plus what the scores' errors move between them
// (seed 13602957662432782890: one head's output norm 108 against ~3, its
// error 0.10 of it). So the bound is relative to the norm of what attention
// reads, sqrt(sum_t p_t |x_t|^2) with the exact weights p_t, for queries
// that may concentrate attention; and for queries small enough to spread
// it, the averaging itself.
TEST(MlaDecode, QuantizedCacheStaysCloseToFp16) {
  std::mt19937_64 rng(test::freshSeed());
  MlaRecordLayout l = layoutOf(512, 64);
  const int g = l.group, r = l.kvLoraRank, e = l.ropeDim, heads = 4;
  const int64_t blocks = 4;
  RandomMlaCache cache = randomMlaCache(rng, l, blocks, 0);
  RandomMlaCache exact = cache; // every block in a pool slot, unquantized
  exact.poolSlots = blocks;
  exact.poolLatent = cache.trueLatent;
  exact.poolRope = cache.trueRope;
  for (int64_t i = 0; i < blocks; ++i)
    exact.blockToSlot[i] = int32_t(i);
  Rotation rot = cantFail(Rotation::get(r));
  const int len = 4 * g - 17;
  std::vector<int32_t> table = {0, 1, 2, 3}, seqLens = {len};
  // The true rotated latents and rope keys, token by token.
  std::vector<double> x(size_t(len) * r), pe(size_t(len) * e);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = halfToFloat(cache.trueLatent[i]);
  for (size_t i = 0; i < pe.size(); ++i)
    pe[i] = halfToFloat(cache.trueRope[i]);
  double tokenNorm = 0; // a token's RMS latent norm
  for (double v : x)
    tokenNorm += v * v;
  tokenNorm = std::sqrt(tokenNorm / len);

  for (float spread : {0.01f, 0.1f}) {
    SCOPED_TRACE(testing::Message() << "queries of sd " << spread);
    std::normal_distribution<float> normal(0.0f, spread);
    std::vector<float> q(size_t(heads) * (r + e));
    for (float &v : q)
      v = normal(rng);
    MlaDecodeBatchView bv;
    bv.batch = 1;
    bv.numHeads = heads;
    bv.q = q.data();
    bv.blockTable = table.data();
    bv.maxBlocks = 4;
    bv.seqLens = seqLens.data();
    bv.softmaxScale = 1.0f / std::sqrt(float(192));
    std::vector<float> a(size_t(heads) * r), b(size_t(heads) * r);
    ASSERT_FALSE(bool(mlaDecodeAttention(cache.view(), bv, rot, a.data())));
    ASSERT_FALSE(bool(mlaDecodeAttention(exact.view(), bv, rot, b.data())));
    double worstRead = 0, allErr = 0;
    std::vector<double> ql(r), qr(r), p(len);
    for (int h = 0; h < heads; ++h) {
      std::copy_n(q.begin() + size_t(h) * (r + e), r, ql.begin());
      rot.rotate(ql.data(), qr.data());
      const float *qpe = q.data() + size_t(h) * (r + e) + r;
      double mx = -INFINITY, sum = 0, read = 0, err = 0;
      for (int t = 0; t < len; ++t) {
        double sc = 0;
        for (int c = 0; c < r; ++c)
          sc += qr[c] * x[size_t(t) * r + c];
        for (int c = 0; c < e; ++c)
          sc += double(qpe[c]) * pe[size_t(t) * e + c];
        mx = std::max(mx, p[t] = sc * bv.softmaxScale);
      }
      for (int t = 0; t < len; ++t)
        sum += (p[t] = std::exp(p[t] - mx));
      for (int t = 0; t < len; ++t)
        for (int c = 0; c < r; ++c)
          read += p[t] / sum * x[size_t(t) * r + c] * x[size_t(t) * r + c];
      for (int c = 0; c < r; ++c)
        err +=
            (a[h * r + c] - b[h * r + c]) * double(a[h * r + c] - b[h * r + c]);
      allErr += err;
      // A tile's ~0.10 passed through, and what the scores' errors move.
      EXPECT_LT(std::sqrt(err / read), 0.3) << "head " << h;
      worstRead = std::max(worstRead, std::sqrt(err / read));
    }
    double averaged = std::sqrt(allErr / heads) / tokenNorm;
    if (spread < 0.05f) { // near-uniform weights: the errors average out
      EXPECT_LT(averaged, 0.05);
    }
    std::printf("[ figures  ] MLA decode, 4-bit vs fp16 cache, queries of sd "
                "%.2f: error %.4f of a token's latent norm, at most %.4f of "
                "what a head reads\n",
                spread, averaged, worstRead);
  }
}

TEST(MlaDecode, BadIndicesAreErrors) {
  std::mt19937_64 rng(test::freshSeed());
  MlaRecordLayout l = layoutOf(64, 8);
  RandomMlaCache cache = randomMlaCache(rng, l, 2, 1);
  Rotation rot = cantFail(Rotation::get(64));
  std::vector<float> q(72, 0.1f), out(64);
  std::vector<int32_t> table = {0, 9}, seqLens = {int32_t(l.group + 1)};
  MlaDecodeBatchView bv;
  bv.batch = 1;
  bv.numHeads = 1;
  bv.q = q.data();
  bv.blockTable = table.data();
  bv.maxBlocks = 2;
  bv.seqLens = seqLens.data();
  bv.softmaxScale = 0.1f;
  std::string message;
  EXPECT_EQ(consumeError(mlaDecodeAttention(cache.view(), bv, rot, out.data()),
                         message),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(message.find("block id 9"), std::string::npos) << message;
  seqLens[0] = 3 * l.group;
  EXPECT_EQ(consumeError(mlaDecodeAttention(cache.view(), bv, rot, out.data()),
                         message),
            KVARN_ERROR_INVALID_ARGUMENT);
  Rotation wrong = cantFail(Rotation::get(128));
  seqLens[0] = 1;
  EXPECT_EQ(
      consumeError(mlaDecodeAttention(cache.view(), bv, wrong, out.data()),
                   message),
      KVARN_ERROR_INVALID_ARGUMENT);
}
