//===- ReferenceOnCase.cpp - the CPU reference run on golden cases --------===//

#include "kvarn/Golden/ReferenceOnCase.h"
#include "kvarn/Reference/Attention.h"
#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Reference/Rotation.h"
#include "kvarn/Support/Error.h"

using namespace kvarn;

static kvarn::Error shapeError(const GoldenCase &c, const llvm::Twine &what) {
  return makeError(KVARN_ERROR_CORRUPT_DATA, "{0}: {1}", c.dir(), what.str());
}

kvarn::Expected<std::vector<uint8_t>>
kvarn::referenceFlush(const GoldenCase &c) {
  if (c.kind() != "flush")
    return shapeError(c, "is a '" + c.kind() + "' case, not a flush case");
  const RecordLayout &l = c.recordLayout();
  kvarn::Expected<Tensor> k = c.tensor("k_rot", "float16", 3);
  if (!k)
    return k.takeError();
  kvarn::Expected<Tensor> v = c.tensor("v_rot", "float16", 3);
  if (!v)
    return v.takeError();
  if (k->shape != v->shape || k->shape[1] != l.group ||
      k->shape[2] != l.headDim)
    return shapeError(c, llvm::formatv("k_rot/v_rot must both be [tiles, {0}, "
                                       "{1}]",
                                       l.group, l.headDim)
                             .str());
  const int64_t tiles = k->shape[0];
  const size_t tileElems = size_t(l.group) * l.headDim;
  std::vector<uint8_t> records(size_t(tiles) * l.recordBytes);
  for (int64_t t = 0; t < tiles; ++t)
    encodeRecord(l, k->as<uint16_t>() + t * tileElems,
                 v->as<uint16_t>() + t * tileElems,
                 records.data() + t * l.recordBytes);
  return records;
}

kvarn::Expected<std::vector<float>>
kvarn::referenceDecode(const GoldenCase &c, DecodeShape *shapeOut) {
  if (c.kind() != "decode")
    return shapeError(c, "is a '" + c.kind() + "' case, not a decode case");
  const RecordLayout &l = c.recordLayout();
  const int d = l.headDim, g = l.group;
  kvarn::Expected<Tensor> q = c.tensor("q", "float16", 3);
  if (!q)
    return q.takeError();
  kvarn::Expected<Tensor> table = c.tensor("block_table", "int32", 2);
  if (!table)
    return table.takeError();
  kvarn::Expected<Tensor> lens = c.tensor("seq_lens", "int32", 1);
  if (!lens)
    return lens.takeError();
  kvarn::Expected<Tensor> toSlot = c.tensor("block_to_slot", "int32", 1);
  if (!toSlot)
    return toSlot.takeError();
  kvarn::Expected<Tensor> cache = c.tensor("kv_cache", "uint8", 3);
  if (!cache)
    return cache.takeError();
  kvarn::Expected<Tensor> poolK = c.tensor("pool_k", "float16", 4);
  if (!poolK)
    return poolK.takeError();
  kvarn::Expected<Tensor> poolV = c.tensor("pool_v", "float16", 4);
  if (!poolV)
    return poolV.takeError();
  kvarn::Expected<double> scale = c.getNumber("softmax_scale");
  if (!scale)
    return scale.takeError();

  const int64_t batch = q->shape[0], hq = q->shape[1];
  const int64_t blocks = cache->shape[0], hk = cache->shape[1];
  if (q->shape[2] != d)
    return shapeError(c, "q's last dimension is not head_dim");
  if (table->shape[0] != batch || lens->shape[0] != batch)
    return shapeError(c, "block_table and seq_lens must have one row per "
                         "request of q");
  if (cache->shape[2] != l.recordBytes)
    return shapeError(c, llvm::formatv("kv_cache records are {0} bytes, the "
                                       "layout says {1}",
                                       cache->shape[2], l.recordBytes)
                             .str());
  if (toSlot->shape[0] != blocks)
    return shapeError(c, "block_to_slot must have one entry per cache block");
  if (poolK->shape != poolV->shape || poolK->shape[1] != g ||
      poolK->shape[2] != hk || poolK->shape[3] != d)
    return shapeError(c, llvm::formatv("pool_k/pool_v must both be [slots, "
                                       "{0}, {1}, {2}]",
                                       g, hk, d)
                             .str());
  if (hk <= 0 || hq % hk != 0)
    return shapeError(c, "query heads must be a multiple of KV heads");

  kvarn::Expected<Rotation> rotation = Rotation::get(d);
  if (!rotation)
    return rotation.takeError();

  PagedCacheView view;
  view.layout = &l;
  view.numKvHeads = int(hk);
  view.numBlocks = blocks;
  view.records = cache->as<uint8_t>();
  view.blockToSlot = toSlot->as<int32_t>();
  view.poolSlots = poolK->shape[0];
  view.poolK = poolK->as<uint16_t>();
  view.poolV = poolV->as<uint16_t>();

  DecodeBatchView bv;
  bv.batch = int(batch);
  bv.numQHeads = int(hq);
  bv.q = q->as<uint16_t>();
  bv.blockTable = table->as<int32_t>();
  bv.maxBlocks = int(table->shape[1]);
  bv.seqLens = lens->as<int32_t>();
  bv.softmaxScale = *scale;

  std::vector<float> out(size_t(batch) * hq * d);
  if (kvarn::Error err = decodeAttention(view, bv, *rotation, out.data()))
    return std::move(err);
  if (shapeOut)
    *shapeOut = {int(batch), int(hq), d};
  return out;
}
