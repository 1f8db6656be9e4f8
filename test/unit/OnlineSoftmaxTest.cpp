//===- OnlineSoftmaxTest.cpp - block steps, split merge, verify, materialize -===//
//
// The block-wise references (the semantics of kvt.attend, attend_finish and
// merge) against decodeAttention, and the verify and materialize references.
//
//===----------------------------------------------------------------------===//

#include "RandomPagedCache.h"

#include "kvarn/Golden/Compare.h"
#include "kvarn/Reference/OnlineSoftmax.h"
#include "kvarn/Support/Half.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace kvarn;
using kvarn::test::RandomPagedCache;

namespace {
/// Decode of `c` with the block references: per (request, KV head), rotated
/// q, one attendBlock per block (or per split range, then mergePartials),
/// un-rotated output. `splits` = 0 means one pass.
std::vector<float> blockwiseDecode(const RandomPagedCache &c, int splits) {
  const int d = c.d, g = c.g, ratio = c.hq / c.hk;
  Rotation rot = *Rotation::get(d);
  PagedCacheView view = c.view();
  DecodeBatchView bv = c.batchView();
  std::vector<float> out(size_t(bv.batch) * c.hq * d, 0.0f);
  std::vector<double> k, v, tmp(d), unrot(d);
  for (int b = 0; b < bv.batch; ++b) {
    const int len = bv.seqLens[b];
    if (len <= 0)
      continue;
    const int numBlocks = (len + g - 1) / g;
    for (int h = 0; h < c.hk; ++h) {
      std::vector<double> q(size_t(ratio) * d);
      for (int j = 0; j < ratio; ++j) {
        for (int i = 0; i < d; ++i)
          tmp[i] = halfToFloat(c.q[(size_t(b) * c.hq + h * ratio + j) * d + i]);
        rot.rotate(tmp.data(), &q[size_t(j) * d]);
      }
      const int parts = std::max(splits, 1);
      const int perSplit = (numBlocks + parts - 1) / parts;
      std::vector<double> partOut(size_t(parts) * ratio * d), lses(size_t(parts) * ratio);
      for (int s = 0; s < parts; ++s) {
        std::vector<double> m(ratio, -INFINITY), l(ratio, 0.0), acc(size_t(ratio) * d, 0.0);
        for (int blk = s * perSplit; blk < std::min(numBlocks, (s + 1) * perSplit); ++blk) {
          EXPECT_FALSE(bool(readBlockRows(view, bv.blockTable[size_t(b) * bv.maxBlocks + blk], h, k, v)));
          std::vector<int32_t> valid(ratio, len - blk * g);
          attendBlock(ratio, d, q, k, v, valid, bv.softmaxScale, m, l, acc);
        }
        finishAttention(ratio, d, m, l, acc,
                        llvm::MutableArrayRef<double>(partOut).slice(size_t(s) * ratio * d, size_t(ratio) * d),
                        llvm::MutableArrayRef<double>(lses).slice(size_t(s) * ratio, ratio));
      }
      std::vector<double> merged(size_t(ratio) * d);
      mergePartials(parts, ratio, d, partOut, lses, parts, merged);
      for (int j = 0; j < ratio; ++j) {
        rot.unrotate(&merged[size_t(j) * d], unrot.data());
        for (int i = 0; i < d; ++i)
          out[(size_t(b) * c.hq + h * ratio + j) * d + i] = float(unrot[i]);
      }
    }
  }
  return out;
}
} // namespace

TEST(OnlineSoftmax, BlockStepsGiveDecodeAttention) {
  std::mt19937_64 rng(test::freshSeed());
  for (int splits : {0, 1, 3, 16}) {
    RandomPagedCache c(allPresets()[1], 96, 2, 3, {1, 64, 200, 0, 641}, rng);
    std::vector<float> expected(size_t(5) * c.hq * c.d);
    ASSERT_FALSE(bool(decodeAttention(c.view(), c.batchView(), *Rotation::get(96), expected.data())));
    std::vector<float> got = blockwiseDecode(c, splits);
    EXPECT_LT(relativeL2(got.data(), expected.data(), got.size()), 1e-7) << splits << " splits";
  }
}

TEST(OnlineSoftmax, EmptyRowsAndEmptySplits) {
  // valid <= 0 leaves a row alone; finish of an empty row is 0 with lse -inf;
  // merge ignores -inf splits and splits at or past count.
  std::vector<double> q = {1, 0, 0, 1}, k = {1, 0, 0, 1}, v = {2, 4, 6, 8};
  std::vector<double> m(2, -INFINITY), l(2, 0.0), acc(4, 0.0);
  attendBlock(2, 2, q, k, v, {2, 0}, 1.0, m, l, acc);
  EXPECT_EQ(l[1], 0.0);
  EXPECT_EQ(m[1], -INFINITY);
  std::vector<double> out(4), lse(2);
  finishAttention(2, 2, m, l, acc, out, lse);
  EXPECT_EQ(out[2], 0.0);
  EXPECT_EQ(lse[1], -INFINITY);
  double e = std::exp(1.0);
  EXPECT_NEAR(out[0], (2 * e + 6) / (e + 1), 1e-12);
  EXPECT_NEAR(lse[0], std::log(e + 1), 1e-12);

  std::vector<double> parts = {1, 1, 5, 5, 9, 9};
  std::vector<double> lses = {0.0, -INFINITY, NAN};
  std::vector<double> merged(2);
  mergePartials(3, 1, 2, parts, lses, 2, merged); // the NaN split is past count
  EXPECT_EQ(merged[0], 1.0);
  mergePartials(3, 1, 2, parts, {-INFINITY, -INFINITY, 0.0}, 2, merged);
  EXPECT_EQ(merged[1], 0.0);
}

TEST(VerifyAttention, EveryTokenIsADecodeRowWithItsCausalLength) {
  std::mt19937_64 rng(test::freshSeed());
  RandomPagedCache c(defaultPreset(), 64, 1, 2, {300, 140}, rng);
  const int t = 3, hq = c.hq, d = c.d;
  std::vector<uint16_t> q = test::heavyTailedTokens(rng, 2 * t * hq, d, false);
  std::vector<int32_t> ctx = {290, 127}, qlens = {3, 2};
  VerifyBatchView vb;
  vb.batch = 2;
  vb.numQHeads = hq;
  vb.maxQueryTokens = t;
  vb.q = q.data();
  vb.blockTable = c.blockTable.data();
  vb.maxBlocks = c.maxBlocks;
  vb.contextLens = ctx.data();
  vb.queryLens = qlens.data();
  vb.softmaxScale = 0.125;
  Rotation rot = *Rotation::get(d);
  std::vector<float> out(size_t(2) * t * hq * d, 7.0f);
  ASSERT_FALSE(bool(verifyAttention(c.view(), vb, rot, out.data())));
  for (int b = 0; b < 2; ++b)
    for (int j = 0; j < t; ++j) {
      // One request of one token with the same block table row.
      DecodeBatchView one;
      one.batch = 1;
      one.numQHeads = hq;
      one.q = &q[(size_t(b) * t + j) * hq * d];
      one.blockTable = &c.blockTable[size_t(b) * c.maxBlocks];
      one.maxBlocks = c.maxBlocks;
      int32_t len = j < qlens[b] ? ctx[b] + j + 1 : 0;
      one.seqLens = &len;
      one.softmaxScale = 0.125;
      std::vector<float> expect(size_t(hq) * d);
      ASSERT_FALSE(bool(decodeAttention(c.view(), one, rot, expect.data())));
      for (int i = 0; i < hq * d; ++i)
        ASSERT_EQ(out[(size_t(b) * t + j) * hq * d + i], expect[i]) << b << " " << j;
    }
}

TEST(MaterializeContext, RebuildsWhatTheCacheHolds) {
  std::mt19937_64 rng(test::freshSeed());
  RandomPagedCache c(allPresets()[3], 128, 2, 1, {70, 129}, rng);
  std::vector<int32_t> start = {5, 80};
  const int64_t rows = 80 + 129;
  std::vector<uint16_t> k(size_t(rows) * c.hk * c.d, 0x7e00), v = k;
  ContextBatchView cb;
  cb.batch = 2;
  cb.blockTable = c.blockTable.data();
  cb.maxBlocks = c.maxBlocks;
  cb.seqLens = c.lens.data();
  cb.outStart = start.data();
  ASSERT_FALSE(bool(materializeContext(c.view(), cb, rows, k.data(), v.data())));
  Rotation rot = *Rotation::get(c.d);
  std::vector<double> rotated(c.d), held(c.d);
  for (int b = 0; b < 2; ++b)
    for (int h = 0; h < c.hk; ++h)
      for (int t = 0; t < c.seqLens[b]; ++t) {
        // kHeld is un-rotated; rotate it back and compare at fp16 precision.
        rot.rotate(&c.kHeld[b][h][size_t(t) * c.d], held.data());
        for (int i = 0; i < c.d; ++i) {
          double got = halfToFloat(k[((size_t(start[b]) + t) * c.hk + h) * c.d + i]);
          ASSERT_NEAR(got, held[i], 1e-3 * (1 + std::fabs(held[i])));
        }
      }
  EXPECT_EQ(k[0], 0x7e00) << "rows before the first request are not written";
  // In bf16: the same rows, each rounded once to bf16 (8 significant bits,
  // so within 2^-8 of the value, relative).
  std::vector<uint16_t> kb(k.size(), 0x7e00), vb = kb;
  cb.outType = DType::BF16;
  ASSERT_FALSE(bool(materializeContext(c.view(), cb, rows, kb.data(), vb.data())));
  for (int b = 0; b < 2; ++b)
    for (int h = 0; h < c.hk; ++h)
      for (int t = 0; t < c.seqLens[b]; ++t) {
        rot.rotate(&c.kHeld[b][h][size_t(t) * c.d], held.data());
        rot.rotate(&c.vHeld[b][h][size_t(t) * c.d], rotated.data());
        for (int i = 0; i < c.d; ++i) {
          size_t at = ((size_t(start[b]) + t) * c.hk + h) * c.d + i;
          ASSERT_NEAR(bfloat16ToFloat(kb[at]), held[i],
                      std::ldexp(std::fabs(held[i]), -8) + 1e-6);
          ASSERT_NEAR(bfloat16ToFloat(vb[at]), rotated[i],
                      std::ldexp(std::fabs(rotated[i]), -8) + 1e-6);
        }
      }
  cb.outType = DType::F16;
  start[1] = 200; // 129 rows from 200 overrun the output
  kvarn::Error overrun =
      materializeContext(c.view(), cb, rows, k.data(), v.data());
  EXPECT_TRUE(bool(overrun));
  kvarn::consumeError(std::move(overrun));
}
