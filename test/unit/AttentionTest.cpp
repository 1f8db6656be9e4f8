//===- AttentionTest.cpp - reference decode over a paged cache ------------===//

#include "TestUtil.h"

#include "kvarn/Reference/Attention.h"
#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Reference/Rotation.h"
#include "kvarn/Support/Error.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace kvarn;

namespace {
/// A small paged cache built from raw (un-rotated) tokens: blocks alternate
/// between records and pool slots, in shuffled order.
struct SmallCache {
  RecordLayout layout;
  int hk, hq, d, g;
  std::vector<int> seqLens;
  int maxBlocks = 0;
  std::vector<int32_t> blockTable, blockToSlot, lens;
  std::vector<uint8_t> records;
  std::vector<uint16_t> poolK, poolV, q;
  // Un-rotated "what the cache holds", per request and KV head: [len][d].
  std::vector<std::vector<std::vector<double>>> kHeld, vHeld;

  SmallCache(const Preset &preset, int d, int hk, int ratio,
             std::vector<int> seqLensIn, std::mt19937_64 &rng)
      : layout(*RecordLayout::get(preset, d)), hk(hk), hq(hk * ratio), d(d),
        g(preset.group), seqLens(std::move(seqLensIn)) {
    Rotation rot = *Rotation::get(d);
    int batch = int(seqLens.size());
    for (int len : seqLens)
      maxBlocks = std::max(maxBlocks, (len + g - 1) / g);
    int numBlocks = batch * maxBlocks + 1;
    std::vector<int32_t> ids(numBlocks);
    for (int i = 0; i < numBlocks; ++i)
      ids[i] = i;
    std::shuffle(ids.begin(), ids.end(), rng);
    blockTable.assign(size_t(batch) * maxBlocks, -1);
    blockToSlot.assign(numBlocks, -1);
    records.assign(size_t(numBlocks) * hk * layout.recordBytes, 0xA5);
    int slots = 0;
    kHeld.assign(batch, std::vector<std::vector<double>>(hk));
    vHeld = kHeld;
    for (int b = 0; b < batch; ++b) {
      int nb = (seqLens[b] + g - 1) / g;
      for (int blk = 0; blk < nb; ++blk) {
        int32_t id = ids[b * maxBlocks + blk];
        blockTable[size_t(b) * maxBlocks + blk] = id;
        bool inPool = blk % 2 == 0; // sink block and every other block
        if (inPool)
          blockToSlot[id] = slots++;
      }
    }
    poolK.assign(size_t(std::max(slots, 1)) * g * hk * d, 0);
    poolV = poolK;
    for (int b = 0; b < batch; ++b) {
      int nb = (seqLens[b] + g - 1) / g;
      for (int blk = 0; blk < nb; ++blk) {
        int32_t id = blockTable[size_t(b) * maxBlocks + blk];
        for (int h = 0; h < hk; ++h) {
          std::vector<uint16_t> kRaw = test::heavyTailedTokens(rng, g, d, blk == 0);
          std::vector<uint16_t> vRaw = test::heavyTailedTokens(rng, g, d, false);
          std::vector<uint16_t> kRot(kRaw.size()), vRot(vRaw.size());
          for (int t = 0; t < g; ++t) {
            rot.rotateHalf(&kRaw[size_t(t) * d], &kRot[size_t(t) * d]);
            rot.rotateHalf(&vRaw[size_t(t) * d], &vRot[size_t(t) * d]);
          }
          std::vector<double> kHeldRot(kRot.size()), vHeldRot(vRot.size());
          if (blockToSlot[id] >= 0) {
            for (int t = 0; t < g; ++t)
              for (int c = 0; c < d; ++c) {
                size_t at = ((size_t(blockToSlot[id]) * g + t) * hk + h) * d + c;
                poolK[at] = kRot[size_t(t) * d + c];
                poolV[at] = vRot[size_t(t) * d + c];
                kHeldRot[size_t(t) * d + c] = halfToFloat(poolK[at]);
                vHeldRot[size_t(t) * d + c] = halfToFloat(poolV[at]);
              }
          } else {
            uint8_t *rec = &records[(size_t(id) * hk + h) * layout.recordBytes];
            encodeRecord(layout, kRot.data(), vRot.data(), rec);
            dequantizeRecord(layout, rec, kHeldRot.data(), vHeldRot.data());
          }
          int tokens = std::min(g, seqLens[b] - blk * g);
          for (int t = 0; t < tokens; ++t) {
            std::vector<double> ku(d), vu(d);
            rot.unrotate(&kHeldRot[size_t(t) * d], ku.data());
            rot.unrotate(&vHeldRot[size_t(t) * d], vu.data());
            kHeld[b][h].insert(kHeld[b][h].end(), ku.begin(), ku.end());
            vHeld[b][h].insert(vHeld[b][h].end(), vu.begin(), vu.end());
          }
        }
      }
    }
    q = test::heavyTailedTokens(rng, batch * hq, d, false);
    lens.assign(seqLens.begin(), seqLens.end());
  }

  PagedCacheView view() const {
    PagedCacheView v;
    v.layout = &layout;
    v.numKvHeads = hk;
    v.numBlocks = int64_t(blockToSlot.size());
    v.records = records.data();
    v.blockToSlot = blockToSlot.data();
    v.poolSlots = int64_t(poolK.size()) / (size_t(g) * hk * d);
    v.poolK = poolK.data();
    v.poolV = poolV.data();
    return v;
  }
  DecodeBatchView batchView() const {
    DecodeBatchView b;
    b.batch = int(seqLens.size());
    b.numQHeads = hq;
    b.q = q.data();
    b.blockTable = blockTable.data();
    b.maxBlocks = maxBlocks;
    b.seqLens = lens.data();
    b.softmaxScale = 1.0 / std::sqrt(double(d));
    return b;
  }
};
} // namespace

// Attention computed in the un-rotated frame (un-rotated q against K and V
// un-rotated after dequantization) must equal the reference, which works in
// the rotated frame and un-rotates the output: this checks the rotation of
// q, the GQA head mapping and the dual-source read together.
TEST(DecodeAttention, MatchesAttentionInTheUnrotatedFrame) {
  std::mt19937_64 rng(test::freshSeed());
  struct Shape { int presetIndex, d, hk, ratio; std::vector<int> lens; };
  for (const Shape &s : std::vector<Shape>{{0, 128, 2, 4, {1, 300, 129}},
                                           {1, 96, 1, 6, {200, 64}},
                                           {3, 64, 3, 1, {65, 5}},
                                           {2, 80, 2, 2, {257}}}) {
    SmallCache c(allPresets()[s.presetIndex], s.d, s.hk, s.ratio, s.lens, rng);
    Rotation rot = *Rotation::get(s.d);
    std::vector<float> out(size_t(s.lens.size()) * c.hq * s.d);
    ASSERT_FALSE(bool(decodeAttention(c.view(), c.batchView(), rot, out.data())));
    for (size_t b = 0; b < s.lens.size(); ++b)
      for (int h = 0; h < c.hq; ++h) {
        int kvh = h / s.ratio, len = s.lens[b];
        const uint16_t *q = &c.q[(b * c.hq + h) * s.d];
        std::vector<double> scores(len), expect(s.d, 0.0);
        double mx = -INFINITY, den = 0;
        for (int t = 0; t < len; ++t) {
          double dot = 0;
          for (int i = 0; i < s.d; ++i)
            dot += halfToFloat(q[i]) * c.kHeld[b][kvh][size_t(t) * s.d + i];
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
              << "request " << b << " head " << h << " channel " << i;
      }
  }
}

TEST(DecodeAttention, PaddingRowsAreZeroAndBadIndicesAreErrors) {
  std::mt19937_64 rng(test::freshSeed());
  SmallCache c(defaultPreset(), 64, 1, 2, {130, 10}, rng);
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
