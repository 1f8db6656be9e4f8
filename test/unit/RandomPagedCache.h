//===- RandomPagedCache.h - a small random paged KV cache -------*- C++ -*-===//
#ifndef KVARN_TEST_RANDOMPAGEDCACHE_H
#define KVARN_TEST_RANDOMPAGEDCACHE_H

#include "TestUtil.h"

#include "kvarn/Reference/Attention.h"
#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Reference/Rotation.h"

namespace kvarn::test {
/// A small paged cache built from raw (un-rotated) tokens: blocks alternate
/// between records and pool slots, in shuffled order.
struct RandomPagedCache {
  RecordLayout layout;
  int hk, hq, d, g;
  std::vector<int> seqLens;
  int maxBlocks = 0;
  std::vector<int32_t> blockTable, blockToSlot, lens;
  std::vector<uint8_t> records;
  std::vector<uint16_t> poolK, poolV, q;
  // Un-rotated "what the cache holds", per request and KV head: [len][d].
  std::vector<std::vector<std::vector<double>>> kHeld, vHeld;

  RandomPagedCache(const Preset &preset, int d, int hk, int ratio,
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
          std::vector<uint16_t> kRaw = heavyTailedTokens(rng, g, d, blk == 0);
          std::vector<uint16_t> vRaw = heavyTailedTokens(rng, g, d, false);
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
    q = heavyTailedTokens(rng, batch * hq, d, false);
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
  /// verifyAttention's view of `batch` requests of up to `maxQueryTokens`
  /// queries `q` ([batch, maxQueryTokens, hq, d] of qType) over this cache.
  VerifyBatchView verifyView(int batch, int maxQueryTokens, const uint16_t *q,
                             const std::vector<int32_t> &contextLens,
                             const std::vector<int32_t> &queryLens,
                             double softmaxScale, DType qType) const {
    VerifyBatchView b;
    b.batch = batch;
    b.numQHeads = hq;
    b.maxQueryTokens = maxQueryTokens;
    b.q = q;
    b.blockTable = blockTable.data();
    b.maxBlocks = maxBlocks;
    b.contextLens = contextLens.data();
    b.queryLens = queryLens.data();
    b.softmaxScale = softmaxScale;
    b.qType = qType;
    return b;
  }
  /// materializeContext's view: request b's rows start at outStart[b].
  ContextBatchView contextView(const std::vector<int32_t> &outStart,
                               DType outType) const {
    ContextBatchView b;
    b.batch = int(seqLens.size());
    b.blockTable = blockTable.data();
    b.maxBlocks = maxBlocks;
    b.seqLens = lens.data();
    b.outStart = outStart.data();
    b.outType = outType;
    return b;
  }
};
} // namespace kvarn::test

#endif // KVARN_TEST_RANDOMPAGEDCACHE_H
