//===- Attention.cpp - CPU reference of decode over a paged cache ---------===//

#include "kvarn/Reference/Attention.h"
#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Reference/Rotation.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/Half.h"

#include <cmath>
#include <vector>

using namespace kvarn;

namespace {
/// The rotated K and V of one (block, KV head), gathered from wherever the
/// block lives, as double [G][D].
struct BlockRows {
  std::vector<double> k, v;
};
} // namespace

static llvm::Error loadBlock(const PagedCacheView &cache, int64_t block,
                             int kvHead, BlockRows &rows) {
  const RecordLayout &l = *cache.layout;
  const int d = l.headDim, g = l.group;
  rows.k.resize(size_t(g) * d);
  rows.v.resize(size_t(g) * d);
  int32_t slot = cache.blockToSlot[block];
  if (slot < 0) {
    const uint8_t *record =
        cache.records + (block * cache.numKvHeads + kvHead) * l.recordBytes;
    dequantizeRecord(l, record, rows.k.data(), rows.v.data());
    return llvm::Error::success();
  }
  if (slot >= cache.poolSlots)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "block {0} maps to pool slot {1}, but the pool has {2} "
                     "slots",
                     block, slot, cache.poolSlots);
  for (int t = 0; t < g; ++t)
    for (int c = 0; c < d; ++c) {
      size_t at = ((size_t(slot) * g + t) * cache.numKvHeads + kvHead) * d + c;
      rows.k[size_t(t) * d + c] = halfToFloat(cache.poolK[at]);
      rows.v[size_t(t) * d + c] = halfToFloat(cache.poolV[at]);
    }
  return llvm::Error::success();
}

llvm::Error kvarn::decodeAttention(const PagedCacheView &cache,
                                   const DecodeBatchView &batch,
                                   const Rotation &rotation, float *out) {
  const RecordLayout &l = *cache.layout;
  const int d = l.headDim, g = l.group;
  if (rotation.order() != d)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "rotation of order {0} for head_dim {1}", rotation.order(),
                     d);
  if (cache.numKvHeads <= 0 || batch.numQHeads % cache.numKvHeads != 0)
    return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                     "{0} query heads cannot share {1} KV heads evenly",
                     batch.numQHeads, cache.numKvHeads);
  const int ratio = batch.numQHeads / cache.numKvHeads;

  std::vector<double> qRot(size_t(ratio) * d), scores, outRot(d), tmp(d);
  BlockRows rows;
  for (int b = 0; b < batch.batch; ++b) {
    const int32_t len = batch.seqLens[b];
    float *outRow = out + size_t(b) * batch.numQHeads * d;
    std::fill(outRow, outRow + size_t(batch.numQHeads) * d, 0.0f);
    if (len <= 0)
      continue;
    const int numBlocks = (len + g - 1) / g;
    if (numBlocks > batch.maxBlocks)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "request {0} has {1} tokens ({2} blocks) but the block "
                       "table holds {3} blocks",
                       b, len, numBlocks, batch.maxBlocks);
    for (int kvh = 0; kvh < cache.numKvHeads; ++kvh) {
      // Rotate the query heads of this KV head.
      for (int j = 0; j < ratio; ++j) {
        const uint16_t *q = batch.q + (size_t(b) * batch.numQHeads +
                                       size_t(kvh) * ratio + j) * d;
        for (int c = 0; c < d; ++c)
          tmp[c] = halfToFloat(q[c]);
        rotation.rotate(tmp.data(), qRot.data() + size_t(j) * d);
      }
      // Scores for every token, then a plain (two-pass) softmax.
      std::vector<double> kAll(size_t(len) * d), vAll(size_t(len) * d);
      for (int blk = 0; blk < numBlocks; ++blk) {
        int32_t block = batch.blockTable[size_t(b) * batch.maxBlocks + blk];
        if (block < 0 || block >= cache.numBlocks)
          return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                           "request {0}, block {1}: block id {2} is outside "
                           "[0, {3})",
                           b, blk, block, cache.numBlocks);
        if (llvm::Error err = loadBlock(cache, block, kvh, rows))
          return err;
        int tokens = std::min(g, len - blk * g);
        std::copy_n(rows.k.begin(), size_t(tokens) * d,
                    kAll.begin() + size_t(blk) * g * d);
        std::copy_n(rows.v.begin(), size_t(tokens) * d,
                    vAll.begin() + size_t(blk) * g * d);
      }
      for (int j = 0; j < ratio; ++j) {
        const double *qj = qRot.data() + size_t(j) * d;
        scores.assign(len, 0.0);
        double maxScore = -INFINITY;
        for (int t = 0; t < len; ++t) {
          double s = 0;
          for (int c = 0; c < d; ++c)
            s += qj[c] * kAll[size_t(t) * d + c];
          scores[t] = s * batch.softmaxScale;
          maxScore = std::max(maxScore, scores[t]);
        }
        double denom = 0;
        std::fill(outRot.begin(), outRot.end(), 0.0);
        for (int t = 0; t < len; ++t) {
          double p = std::exp(scores[t] - maxScore);
          denom += p;
          for (int c = 0; c < d; ++c)
            outRot[c] += p * vAll[size_t(t) * d + c];
        }
        for (int c = 0; c < d; ++c)
          outRot[c] /= denom;
        rotation.unrotate(outRot.data(), tmp.data());
        float *o = outRow + (size_t(kvh) * ratio + j) * d;
        for (int c = 0; c < d; ++c)
          o[c] = float(tmp[c]);
      }
    }
  }
  return llvm::Error::success();
}
