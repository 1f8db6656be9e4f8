//===- Mla.cpp - CPU reference of KVarN for MLA latents -------------------===//

#include "kvarn/Reference/Mla.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/Half.h"

#include <cmath>
#include <limits>

using namespace kvarn;

static void storeHalf(uint16_t v, uint8_t *dst) { // little-endian
  dst[0] = uint8_t(v & 0xff);
  dst[1] = uint8_t(v >> 8);
}

static uint16_t loadHalf(const uint8_t *src) {
  return uint16_t(src[0] | (uint16_t(src[1]) << 8));
}

void kvarn::encodeMlaRecord(const MlaRecordLayout &l, const uint16_t *latentRot,
                            const uint16_t *rope, uint8_t *record,
                            SinkhornResult *sinkhornOut) {
  const int r = l.kvLoraRank, g = l.group;
  // The tile is channels x tokens, as the dense path's K tile.
  Matrix m(r, g);
  for (int t = 0; t < g; ++t)
    for (int c = 0; c < r; ++c)
      m.at(c, t) = halfToFloat(latentRot[size_t(t) * r + c]);
  QuantizedTile q =
      normalizeAndQuantize(m, l.bits, l.sinkhornIters, sinkhornOut);
  std::fill(record, record + l.recordBytes, 0);
  const int perByte = l.codesPerByte();
  for (int t = 0; t < g; ++t) {
    uint8_t *row = record + l.codes + t * l.tokenCodeBytes();
    for (int c = 0; c < r; ++c)
      row[c / perByte] |=
          uint8_t(q.codes[size_t(c) * g + t] << ((c % perByte) * l.bits));
  }
  for (int c = 0; c < r; ++c) {
    storeHalf(q.absorbedScale[c], record + l.scale + 2 * c);
    storeHalf(q.absorbedZero[c], record + l.zero + 2 * c);
  }
  for (int t = 0; t < g; ++t)
    storeHalf(q.otherScale[t], record + l.tokenScale + 2 * t);
  for (int64_t i = 0; i < int64_t(g) * l.ropeDim; ++i)
    storeHalf(rope[i], record + l.rope + 2 * i);
}

QuantizedTile kvarn::decodeMlaRecord(const MlaRecordLayout &l,
                                     const uint8_t *record) {
  const int r = l.kvLoraRank, g = l.group, perByte = l.codesPerByte();
  const uint8_t mask = uint8_t((1 << l.bits) - 1);
  QuantizedTile q;
  q.rows = r;
  q.cols = g;
  q.bits = l.bits;
  q.codes.resize(size_t(r) * g);
  q.absorbedScale.resize(r);
  q.absorbedZero.resize(r);
  q.otherScale.resize(g);
  for (int t = 0; t < g; ++t) {
    const uint8_t *row = record + l.codes + t * l.tokenCodeBytes();
    for (int c = 0; c < r; ++c)
      q.codes[size_t(c) * g + t] =
          (row[c / perByte] >> ((c % perByte) * l.bits)) & mask;
  }
  for (int c = 0; c < r; ++c) {
    q.absorbedScale[c] = loadHalf(record + l.scale + 2 * c);
    q.absorbedZero[c] = loadHalf(record + l.zero + 2 * c);
  }
  for (int t = 0; t < g; ++t)
    q.otherScale[t] = loadHalf(record + l.tokenScale + 2 * t);
  return q;
}

void kvarn::dequantizeMlaRecord(const MlaRecordLayout &l, const uint8_t *record,
                                double *latentRot, double *rope) {
  const int r = l.kvLoraRank, g = l.group;
  std::vector<double> x = dequantizeTile(decodeMlaRecord(l, record));
  for (int t = 0; t < g; ++t)
    for (int c = 0; c < r; ++c)
      latentRot[size_t(t) * r + c] = x[size_t(c) * g + t];
  for (int64_t i = 0; i < int64_t(g) * l.ropeDim; ++i)
    rope[i] = halfToFloat(loadHalf(record + l.rope + 2 * i));
}

kvarn::Error kvarn::readMlaBlock(const MlaPagedCacheView &cache, int64_t block,
                                 std::vector<double> &latentRot,
                                 std::vector<double> &rope) {
  const MlaRecordLayout &l = *cache.layout;
  const int r = l.kvLoraRank, g = l.group, e = l.ropeDim;
  if (block < 0 || block >= cache.numBlocks)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "block id {0} is outside [0, {1})", block,
                     cache.numBlocks);
  latentRot.resize(size_t(g) * r);
  rope.resize(size_t(g) * e);
  int32_t slot = cache.blockToSlot[block];
  if (slot < 0) {
    dequantizeMlaRecord(l, cache.records + block * l.recordBytes,
                        latentRot.data(), rope.data());
    return kvarn::Error::success();
  }
  if (slot >= cache.poolSlots)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "block {0} maps to pool slot {1}, but the pool has {2} "
                     "slots",
                     block, slot, cache.poolSlots);
  for (size_t i = 0; i < size_t(g) * r; ++i)
    latentRot[i] = halfToFloat(cache.poolLatent[size_t(slot) * g * r + i]);
  for (size_t i = 0; i < size_t(g) * e; ++i)
    rope[i] = halfToFloat(cache.poolRope[size_t(slot) * g * e + i]);
  return kvarn::Error::success();
}

kvarn::Error kvarn::mlaDecodeAttention(const MlaPagedCacheView &cache,
                                       const MlaDecodeBatchView &batch,
                                       const Rotation &rotation, float *out,
                                       float *lse) {
  const MlaRecordLayout &l = *cache.layout;
  const int r = l.kvLoraRank, g = l.group, e = l.ropeDim, h = batch.numHeads;
  if (rotation.order() != r)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "rotation of order {0} for kv_lora_rank {1}",
                     rotation.order(), r);
  const double negInf = -std::numeric_limits<double>::infinity();
  std::vector<double> qLat(r), qRot(size_t(h) * r), scores, latent, rope;
  std::vector<double> allLatent, allRope, outRot(r), unrotated(r);
  for (int b = 0; b < batch.batch; ++b) {
    const int32_t len = batch.seqLens[b];
    float *outRow = out + size_t(b) * h * r;
    std::fill(outRow, outRow + size_t(h) * r, 0.0f);
    if (lse)
      std::fill(lse + size_t(b) * h, lse + size_t(b + 1) * h, float(negInf));
    if (len <= 0)
      continue;
    const int64_t numBlocks = (int64_t(len) + g - 1) / g;
    if (numBlocks > batch.maxBlocks)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "request {0} has {1} tokens ({2} blocks) but the block "
                       "table holds {3} blocks",
                       b, len, numBlocks, batch.maxBlocks);
    // The context's rotated latent and rope keys, token by token.
    allLatent.assign(size_t(len) * r, 0.0);
    allRope.assign(size_t(len) * e, 0.0);
    for (int64_t i = 0; i < numBlocks; ++i) {
      int64_t block = batch.blockTable[size_t(b) * batch.maxBlocks + i];
      if (kvarn::Error err = readMlaBlock(cache, block, latent, rope))
        return err;
      int64_t tokens = std::min<int64_t>(g, len - i * g);
      std::copy(latent.begin(), latent.begin() + tokens * r,
                allLatent.begin() + i * g * r);
      std::copy(rope.begin(), rope.begin() + tokens * e,
                allRope.begin() + i * g * e);
    }
    for (int head = 0; head < h; ++head) {
      const float *q = batch.q + (size_t(b) * h + head) * (r + e);
      for (int c = 0; c < r; ++c)
        qLat[c] = q[c];
      rotation.rotate(qLat.data(), qRot.data() + size_t(head) * r);
      const double *qr = qRot.data() + size_t(head) * r;
      scores.assign(len, 0.0);
      double mx = negInf;
      for (int32_t t = 0; t < len; ++t) {
        double s = 0;
        for (int c = 0; c < r; ++c)
          s += qr[c] * allLatent[size_t(t) * r + c];
        for (int c = 0; c < e; ++c)
          s += double(q[r + c]) * allRope[size_t(t) * e + c];
        scores[t] = s * batch.softmaxScale;
        mx = std::max(mx, scores[t]);
      }
      double sum = 0;
      std::fill(outRot.begin(), outRot.end(), 0.0);
      for (int32_t t = 0; t < len; ++t) {
        double p = std::exp(scores[t] - mx);
        sum += p;
        for (int c = 0; c < r; ++c)
          outRot[c] += p * allLatent[size_t(t) * r + c];
      }
      for (int c = 0; c < r; ++c)
        outRot[c] /= sum;
      rotation.unrotate(outRot.data(), unrotated.data());
      for (int c = 0; c < r; ++c)
        outRow[size_t(head) * r + c] = float(unrotated[c]);
      if (lse)
        lse[size_t(b) * h + head] = float(mx + std::log(sum));
    }
  }
  return kvarn::Error::success();
}
