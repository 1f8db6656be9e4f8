//===- Attention.cpp - CPU reference of decode over a paged cache ---------===//

#include "kvarn/Reference/Attention.h"
#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Reference/Rotation.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/Half.h"

#include <cmath>
#include <vector>

using namespace kvarn;

kvarn::Error kvarn::readBlockRows(const PagedCacheView &cache, int64_t block,
                                  int kvHead, std::vector<double> &k,
                                  std::vector<double> &v) {
  const RecordLayout &l = *cache.layout;
  const int d = l.headDim, g = l.group;
  if (block < 0 || block >= cache.numBlocks)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "block id {0} is outside [0, {1})", block,
                     cache.numBlocks);
  k.resize(size_t(g) * d);
  v.resize(size_t(g) * d);
  int32_t slot = cache.blockToSlot[block];
  if (slot < 0) {
    const uint8_t *record =
        cache.records + (block * cache.numKvHeads + kvHead) * l.recordBytes;
    dequantizeRecord(l, record, k.data(), v.data());
    return kvarn::Error::success();
  }
  if (slot >= cache.poolSlots)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "block {0} maps to pool slot {1}, but the pool has {2} "
                     "slots",
                     block, slot, cache.poolSlots);
  for (int t = 0; t < g; ++t)
    for (int c = 0; c < d; ++c) {
      size_t at = ((size_t(slot) * g + t) * cache.numKvHeads + kvHead) * d + c;
      k[size_t(t) * d + c] = halfToFloat(cache.poolK[at]);
      v[size_t(t) * d + c] = halfToFloat(cache.poolV[at]);
    }
  return kvarn::Error::success();
}

kvarn::Error kvarn::decodeAttention(const PagedCacheView &cache,
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
  std::vector<double> blockK, blockV;
  if (batch.window < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "the sliding window is {0} tokens; it must be >= 0 (0: "
                     "no window)",
                     batch.window);
  for (int b = 0; b < batch.batch; ++b) {
    const int32_t len = batch.seqLens[b];
    float *outRow = out + size_t(b) * batch.numQHeads * d;
    std::fill(outRow, outRow + size_t(batch.numQHeads) * d, 0.0f);
    if (len <= 0)
      continue;
    // In 64 bits: len + g - 1 overflows an int32 near INT32_MAX.
    const int64_t numBlocks = (int64_t(len) + g - 1) / g;
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
          tmp[c] = dtypeToFloat(q[c], batch.qType);
        rotation.rotate(tmp.data(), qRot.data() + size_t(j) * d);
      }
      // Scores for every token of the window [lo, len), then a plain
      // (two-pass) softmax. Blocks wholly before lo are not read.
      const int32_t lo =
          batch.window > 0 ? std::max<int32_t>(len - batch.window, 0) : 0;
      std::vector<double> kAll(size_t(len) * d), vAll(size_t(len) * d);
      for (int blk = lo / g; blk < numBlocks; ++blk) {
        int32_t block = batch.blockTable[size_t(b) * batch.maxBlocks + blk];
        if (block < 0 || block >= cache.numBlocks)
          return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                           "request {0}, block {1}: block id {2} is outside "
                           "[0, {3})",
                           b, blk, block, cache.numBlocks);
        if (kvarn::Error err = readBlockRows(cache, block, kvh, blockK, blockV))
          return err;
        int tokens = std::min(g, len - blk * g);
        std::copy_n(blockK.begin(), size_t(tokens) * d,
                    kAll.begin() + size_t(blk) * g * d);
        std::copy_n(blockV.begin(), size_t(tokens) * d,
                    vAll.begin() + size_t(blk) * g * d);
      }
      for (int j = 0; j < ratio; ++j) {
        const double *qj = qRot.data() + size_t(j) * d;
        scores.assign(len, 0.0);
        double maxScore = -INFINITY;
        for (int t = lo; t < len; ++t) {
          double s = 0;
          for (int c = 0; c < d; ++c)
            s += qj[c] * kAll[size_t(t) * d + c];
          scores[t] = s * batch.softmaxScale;
          maxScore = std::max(maxScore, scores[t]);
        }
        double denom = 0;
        std::fill(outRot.begin(), outRot.end(), 0.0);
        for (int t = lo; t < len; ++t) {
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
  return kvarn::Error::success();
}

kvarn::Error kvarn::verifyAttention(const PagedCacheView &cache,
                                    const VerifyBatchView &batch,
                                    const Rotation &rotation, float *out) {
  // Every (request, query token) is one decode row with its causal length;
  // q and out of [B, T, Hq, D] are already [B * T, Hq, D].
  const int t = batch.maxQueryTokens;
  if (int64_t(batch.batch) * t > INT32_MAX)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0} requests of {1} query tokens are more than 2^31 "
                     "rows",
                     batch.batch, t);
  for (int b = 0; b < batch.batch; ++b) {
    if (batch.queryLens[b] > t)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "request {0} has {1} query tokens, more than {2}", b,
                       batch.queryLens[b], t);
    // Its last token attends to context + query tokens, an int32 length.
    if (batch.queryLens[b] > 0 &&
        int64_t(batch.contextLens[b]) + batch.queryLens[b] > INT32_MAX)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "request {0}: {1} context and {2} query tokens are "
                       "more than 2^31 - 1",
                       b, batch.contextLens[b], batch.queryLens[b]);
  }
  std::vector<int32_t> table(size_t(batch.batch) * t * batch.maxBlocks);
  std::vector<int32_t> lens(size_t(batch.batch) * t);
  for (int b = 0; b < batch.batch; ++b) {
    for (int j = 0; j < t; ++j) {
      size_t row = size_t(b) * t + j;
      std::copy_n(batch.blockTable + size_t(b) * batch.maxBlocks,
                  batch.maxBlocks, table.begin() + row * batch.maxBlocks);
      lens[row] = j < batch.queryLens[b] ? batch.contextLens[b] + j + 1 : 0;
    }
  }
  DecodeBatchView rows;
  rows.batch = batch.batch * t;
  rows.numQHeads = batch.numQHeads;
  rows.q = batch.q;
  rows.qType = batch.qType;
  rows.blockTable = table.data();
  rows.maxBlocks = batch.maxBlocks;
  rows.seqLens = lens.data();
  rows.softmaxScale = batch.softmaxScale;
  rows.window = batch.window;
  return decodeAttention(cache, rows, rotation, out);
}

kvarn::Error kvarn::materializeContext(const PagedCacheView &cache,
                                       const ContextBatchView &batch,
                                       int64_t outRows, uint16_t *outK,
                                       uint16_t *outV) {
  const RecordLayout &l = *cache.layout;
  const int d = l.headDim, g = l.group, hk = cache.numKvHeads;
  std::vector<double> k, v;
  for (int b = 0; b < batch.batch; ++b) {
    const int32_t len = batch.seqLens[b];
    if (len <= 0)
      continue;
    const int64_t numBlocks = (int64_t(len) + g - 1) / g;
    const int64_t start = batch.outStart[b];
    if (numBlocks > batch.maxBlocks || start < 0 || start > outRows - len)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "request {0}: {1} tokens from row {2} do not fit {3} "
                       "blocks and {4} output rows",
                       b, len, start, batch.maxBlocks, outRows);
    for (int blk = 0; blk < numBlocks; ++blk) {
      int32_t block = batch.blockTable[size_t(b) * batch.maxBlocks + blk];
      for (int h = 0; h < hk; ++h) {
        if (kvarn::Error err = readBlockRows(cache, block, h, k, v))
          return err;
        for (int t = 0; t < std::min(g, len - blk * g); ++t)
          for (int c = 0; c < d; ++c) {
            size_t at = ((size_t(start) + size_t(blk) * g + t) * hk + h) * d + c;
            outK[at] = floatToDType(float(k[size_t(t) * d + c]), batch.outType);
            outV[at] = floatToDType(float(v[size_t(t) * d + c]), batch.outType);
          }
      }
    }
  }
  return kvarn::Error::success();
}
