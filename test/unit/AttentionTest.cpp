//===- AttentionTest.cpp - reference decode over a paged cache ------------===//

#include "RandomPagedCache.h"
#include "TestUtil.h"

#include "kvarn/Reference/Attention.h"
#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Reference/Rotation.h"
#include "kvarn/Support/Error.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace kvarn;
using kvarn::test::RandomPagedCache;


// Attention computed in the un-rotated frame (un-rotated q against K and V
// un-rotated after dequantization) must equal the reference, which works in
// the rotated frame and un-rotates the output: this checks the rotation of
// q, the GQA head mapping and the dual-source read together. q is read as
// fp16 or as bf16 bits.
TEST(DecodeAttention, MatchesAttentionInTheUnrotatedFrame) {
  std::mt19937_64 rng(test::freshSeed());
  struct Shape { int presetIndex, d, hk, ratio; std::vector<int> lens; };
  for (DType dtype : {DType::F16, DType::BF16})
  for (const Shape &s : std::vector<Shape>{{0, 128, 2, 4, {1, 300, 129}},
                                           {1, 96, 1, 6, {200, 64}},
                                           {3, 64, 3, 1, {65, 5}},
                                           {2, 80, 2, 2, {257}}}) {
    RandomPagedCache c(allPresets()[s.presetIndex], s.d, s.hk, s.ratio, s.lens, rng);
    if (dtype == DType::BF16) // the same values, rounded to bf16 bits
      for (uint16_t &x : c.q)
        x = floatToBFloat16(halfToFloat(x));
    Rotation rot = *Rotation::get(s.d);
    std::vector<float> out(size_t(s.lens.size()) * c.hq * s.d);
    DecodeBatchView bv = c.batchView();
    bv.qType = dtype;
    ASSERT_FALSE(bool(decodeAttention(c.view(), bv, rot, out.data())));
    for (size_t b = 0; b < s.lens.size(); ++b)
      for (int h = 0; h < c.hq; ++h) {
        int kvh = h / s.ratio, len = s.lens[b];
        const uint16_t *q = &c.q[(b * c.hq + h) * s.d];
        std::vector<double> scores(len), expect(s.d, 0.0);
        double mx = -INFINITY, den = 0;
        for (int t = 0; t < len; ++t) {
          double dot = 0;
          for (int i = 0; i < s.d; ++i)
            dot += (dtype == DType::F16 ? halfToFloat(q[i])
                                        : bfloat16ToFloat(q[i])) *
                   c.kHeld[b][kvh][size_t(t) * s.d + i];
          scores[t] = dot / std::sqrt(double(s.d));
          mx = std::max(mx, scores[t]);
        }
        for (int t = 0; t < len; ++t) {
          double p = std::exp(scores[t] - mx);
          den += p;
          for (int i = 0; i < s.d; ++i)
            expect[i] += p * c.vHeld[b][kvh][size_t(t) * s.d + i];
        }
        for (int i = 0; i < s.d; ++i)
          ASSERT_NEAR(out[(b * c.hq + h) * s.d + i], expect[i] / den,
                      1e-5 * (1 + std::fabs(expect[i] / den)))
              << "request " << b << " head " << h << " channel " << i << " "
              << std::string(spell(dtype));
      }
  }
}

TEST(DecodeAttention, PaddingRowsAreZeroAndBadIndicesAreErrors) {
  std::mt19937_64 rng(test::freshSeed());
  RandomPagedCache c(defaultPreset(), 64, 1, 2, {130, 10}, rng);
  Rotation rot = *Rotation::get(64);
  std::vector<float> out(2 * 2 * 64, 7.0f);
  c.lens[1] = 0; // a graph-padding row
  ASSERT_FALSE(bool(decodeAttention(c.view(), c.batchView(), rot, out.data())));
  for (int i = 2 * 64; i < 4 * 64; ++i)
    ASSERT_EQ(out[i], 0.0f);

  std::string message;
  c.lens[1] = 10;
  c.blockTable[1 * c.maxBlocks] = 999; // a block id past the cache
  EXPECT_EQ(consumeError(decodeAttention(c.view(), c.batchView(), rot,
                                         out.data()),
                         message),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(message.find("999"), std::string::npos);

  c.blockTable[1 * c.maxBlocks] = c.blockTable[0];
  c.lens[0] = 100000; // longer than the block table
  EXPECT_EQ(consumeError(decodeAttention(c.view(), c.batchView(), rot,
                                         out.data()),
                         message),
            KVARN_ERROR_INVALID_ARGUMENT);

  c.lens[0] = 130;
  c.blockToSlot[c.blockTable[0]] = 12345; // a pool slot past the pool
  EXPECT_EQ(consumeError(decodeAttention(c.view(), c.batchView(), rot,
                                         out.data()),
                         message),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(message.find("12345"), std::string::npos);
}

// Lengths near INT32_MAX are errors, never an int32 overflow: a block count
// of (len + G - 1) / G wrapped negative, passed the table check and the
// reference then tried to allocate len * D doubles (std::bad_alloc).
TEST(DecodeAttention, LengthsNearInt32MaxAreErrors) {
  std::mt19937_64 rng(test::freshSeed());
  RandomPagedCache c(defaultPreset(), 64, 1, 2, {130, 10}, rng);
  Rotation rot = *Rotation::get(64);
  std::vector<float> out(2 * 2 * 64);
  std::string message;
  c.lens[1] = INT32_MAX - 126; // + G - 1 = 2^31
  EXPECT_EQ(consumeError(decodeAttention(c.view(), c.batchView(), rot,
                                         out.data()),
                         message),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(message.find("2147483521 tokens (16777216 blocks)"),
            std::string::npos) << message;

  // verify: the last query token's length is context + query tokens.
  c.lens[1] = 10;
  std::vector<int32_t> contextLens = {130, INT32_MAX - 1}, queryLens = {1, 2};
  std::vector<uint16_t> q(2 * 2 * 2 * 64);
  VerifyBatchView v;
  v.batch = 2;
  v.numQHeads = 2;
  v.maxQueryTokens = 2;
  v.q = q.data();
  v.blockTable = c.blockTable.data();
  v.maxBlocks = c.maxBlocks;
  v.contextLens = contextLens.data();
  v.queryLens = queryLens.data();
  std::vector<float> verifyOut(2 * 2 * 2 * 64);
  EXPECT_EQ(consumeError(verifyAttention(c.view(), v, rot, verifyOut.data()),
                         message),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(message.find("2147483646 context and 2 query tokens"),
            std::string::npos) << message;

  // materialize: the same block count, and a start past the output rows.
  std::vector<int32_t> lens = {INT32_MAX - 126, 10}, starts = {0, INT32_MAX};
  ContextBatchView m;
  m.batch = 2;
  m.blockTable = c.blockTable.data();
  m.maxBlocks = c.maxBlocks;
  m.seqLens = lens.data();
  m.outStart = starts.data();
  std::vector<uint16_t> k(16 * 2 * 64), vv(16 * 2 * 64);
  EXPECT_EQ(consumeError(materializeContext(c.view(), m, 16, k.data(),
                                            vv.data()),
                         message),
            KVARN_ERROR_INVALID_ARGUMENT);
  lens[0] = 10;
  EXPECT_EQ(consumeError(materializeContext(c.view(), m, 16, k.data(),
                                            vv.data()),
                         message),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(message.find("request 1"), std::string::npos) << message;
}
