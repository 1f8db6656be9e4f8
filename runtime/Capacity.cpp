//===- Capacity.cpp - what a memory budget holds --------------------------===//

#include "kvarn/Runtime/Capacity.h"
#include "kvarn/Support/Error.h"

using namespace kvarn;
using namespace kvarn::pool;

std::optional<int64_t>
kvarn::pool::checkedProduct(std::initializer_list<int64_t> factors) {
  int64_t r = 1;
  for (int64_t f : factors)
    if (__builtin_mul_overflow(r, f, &r))
      return std::nullopt;
  return r;
}

static kvarn::Error tooLarge(const std::string &what) {
  return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                   "{0} do not fit in a 64-bit byte count", what);
}

kvarn::Expected<PoolBytes> kvarn::pool::poolBytes(const RecordLayout &layout,
                                                  const ModelShape &model,
                                                  int64_t numBlocks,
                                                  int64_t numPoolSlots) {
  if (model.numLayers < 0 || model.numKvHeads < 0 || model.headDim < 0 ||
      numBlocks < 0 || numPoolSlots < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "sizes: layers ({0}), KV heads ({1}), head_dim ({2}), "
                     "blocks ({3}) and pool slots ({4}) must not be negative",
                     model.numLayers, model.numKvHeads, model.headDim,
                     numBlocks, numPoolSlots);
  PoolBytes b;
  b.recordBytes = layout.recordBytes;
  std::optional<int64_t> perBlock =
      checkedProduct({model.numLayers, model.numKvHeads, layout.recordBytes});
  std::optional<int64_t> perSlot = checkedProduct(
      {2, model.numLayers, layout.group, model.numKvHeads, model.headDim, 2});
  std::optional<int64_t> cache =
      perBlock ? checkedProduct({numBlocks, *perBlock}) : std::nullopt;
  std::optional<int64_t> pool =
      perSlot ? checkedProduct({numPoolSlots, *perSlot}) : std::nullopt;
  if (!cache || !pool || *cache > INT64_MAX - *pool)
    return tooLarge(format("{0} blocks and {1} pool slots of {2} "
                           "layers x {3} KV heads x head_dim {4}",
                           numBlocks, numPoolSlots, model.numLayers,
                           model.numKvHeads, model.headDim));
  b.cacheBytesPerBlock = *perBlock;
  b.poolBytesPerSlot = *perSlot;
  b.cacheBytes = *cache;
  b.poolBytes = *pool;
  return b;
}

/// A plan's budget and request count: positive and not negative.
static kvarn::Error checkBudget(int64_t budgetBytes,
                                int64_t concurrentRequests) {
  if (budgetBytes <= 0 || concurrentRequests < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "capacity: the budget ({0} bytes) must be positive and "
                     "the request count ({1}) not negative",
                     budgetBytes, concurrentRequests);
  return kvarn::Error::success();
}

std::optional<int64_t> kvarn::pool::defaultPoolSlots(int64_t concurrentRequests,
                                                     int64_t perRequest) {
  std::optional<int64_t> own = checkedProduct({perRequest, concurrentRequests});
  if (!own || *own > INT64_MAX - (concurrentRequests / 8 + 1))
    return std::nullopt;
  return *own + concurrentRequests / 8 + (concurrentRequests % 8 != 0);
}

kvarn::Expected<Capacity>
kvarn::pool::planMlaCapacity(const MlaRecordLayout &layout, int32_t numLayers,
                             int64_t budgetBytes, int64_t concurrentRequests,
                             int64_t numPoolSlots) {
  if (numLayers <= 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "capacity: layers ({0}) must be positive", numLayers);
  if (kvarn::Error err = checkBudget(budgetBytes, concurrentRequests))
    return std::move(err);
  if (numPoolSlots < 0) {
    // A tail per request, no sink.
    std::optional<int64_t> slots =
        defaultPoolSlots(concurrentRequests, /*perRequest=*/1);
    if (!slots)
      return tooLarge("the default pool slots of " +
                      std::to_string(concurrentRequests) + " requests");
    numPoolSlots = *slots;
  }
  int64_t rowBytes = int64_t(layout.kvLoraRank + layout.ropeDim) * 2;
  std::optional<int64_t> blockBytes =
      checkedProduct({numLayers, layout.recordBytes});
  std::optional<int64_t> slotBytes =
      checkedProduct({numLayers, layout.group, rowBytes});
  std::optional<int64_t> poolBytes =
      slotBytes ? checkedProduct({numPoolSlots, *slotBytes}) : std::nullopt;
  // Every live request holds at least one block.
  std::optional<int64_t> firstBlocks =
      blockBytes ? checkedProduct(
                       {std::max<int64_t>(concurrentRequests, 1), *blockBytes})
                 : std::nullopt;
  int64_t left = poolBytes ? budgetBytes - *poolBytes : -1;
  if (!blockBytes || !slotBytes || !poolBytes || !firstBlocks ||
      left < *firstBlocks)
    return makeError(KVARN_ERROR_OUT_OF_MEMORY,
                     "capacity: {0} bytes do not hold {1} pool slots ({2} "
                     "bytes each) and a block for each of {3} requests ({4} "
                     "bytes each)",
                     budgetBytes, numPoolSlots, slotBytes.value_or(-1),
                     concurrentRequests, blockBytes.value_or(-1));
  Capacity c;
  c.numBlocks = std::min<int64_t>(left / *blockBytes, INT32_MAX / layout.group);
  c.numPoolSlots = numPoolSlots;
  c.tokens = c.numBlocks * layout.group;
  c.usedBytes = c.numBlocks * *blockBytes + *poolBytes;
  c.recordBytesPerToken = double(layout.recordBytes) / layout.group;
  c.bytesPerToken = double(c.usedBytes) / (double(c.tokens) * numLayers);
  std::optional<int64_t> fp16PerToken = checkedProduct({numLayers, rowBytes});
  c.fp16Tokens = fp16PerToken ? budgetBytes / *fp16PerToken : 0;
  c.ratioVsFp16 = double(c.tokens) / double(c.fp16Tokens);
  return c;
}

kvarn::Expected<Capacity> kvarn::pool::planCapacity(const RecordLayout &layout,
                                                    const ModelShape &model,
                                                    int64_t budgetBytes,
                                                    int64_t concurrentRequests,
                                                    int64_t numPoolSlots) {
  if (model.numLayers <= 0 || model.numKvHeads <= 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "capacity: layers ({0}) and KV heads ({1}) must be "
                     "positive",
                     model.numLayers, model.numKvHeads);
  if (model.headDim != layout.headDim)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "capacity: head_dim {0} does not match the layout's {1}",
                     model.headDim, layout.headDim);
  if (kvarn::Error err = checkBudget(budgetBytes, concurrentRequests))
    return std::move(err);
  if (numPoolSlots < 0) {
    std::optional<int64_t> slots = defaultPoolSlots(concurrentRequests);
    if (!slots)
      return tooLarge("the default pool slots of " +
                      std::to_string(concurrentRequests) + " requests");
    numPoolSlots = *slots;
  }
  kvarn::Expected<PoolBytes> perOne = poolBytes(layout, model, 1, 1);
  if (!perOne)
    return perOne.takeError();
  const PoolBytes &per = *perOne;
  // Every live request holds at least a block for its sink. A product past
  // int64 is more than any budget.
  std::optional<int64_t> slotBytes =
      checkedProduct({numPoolSlots, per.poolBytesPerSlot});
  std::optional<int64_t> sinkBytes = checkedProduct(
      {std::max<int64_t>(concurrentRequests, 1), per.cacheBytesPerBlock});
  int64_t left = slotBytes ? budgetBytes - *slotBytes : -1;
  if (!slotBytes || !sinkBytes || left < *sinkBytes)
    return makeError(KVARN_ERROR_OUT_OF_MEMORY,
                     "capacity: {0} bytes do not hold {1} pool slots ({2} "
                     "bytes each) and a block for each of {3} requests ({4} "
                     "bytes each)",
                     budgetBytes, numPoolSlots, per.poolBytesPerSlot,
                     concurrentRequests, per.cacheBytesPerBlock);
  Capacity c;
  c.numBlocks = std::min<int64_t>(left / per.cacheBytesPerBlock, INT32_MAX / layout.group);
  c.numPoolSlots = numPoolSlots;
  c.tokens = c.numBlocks * layout.group;
  // Within the budget by construction.
  c.usedBytes =
      kvarn::cantFail(poolBytes(layout, model, c.numBlocks, numPoolSlots))
          .totalBytes();
  c.recordBytesPerToken = double(layout.recordBytes) / layout.group;
  c.bytesPerToken = double(c.usedBytes) /
                    (double(c.tokens) * model.numLayers * model.numKvHeads);
  // At most 2^31 * 2^31 * 2^9 * 4 = 2^73: when that overflows, the fp16
  // cache holds no token of the budget.
  std::optional<int64_t> fp16PerToken = checkedProduct(
      {2, model.numLayers, model.numKvHeads, model.headDim, 2});
  c.fp16Tokens = fp16PerToken ? budgetBytes / *fp16PerToken : 0;
  c.ratioVsFp16 = double(c.tokens) / double(c.fp16Tokens);
  return c;
}

//===----------------------------------------------------------------------===//
// Mixed pools: per-layer kinds and presets
//===----------------------------------------------------------------------===//

int64_t MixedBytes::totalBytes() const {
  int64_t t = poolBytes;
  for (int64_t c : groupCacheBytes)
    t += c;
  return t;
}

kvarn::Expected<MixedBytes>
kvarn::pool::mixedBytes(Span<const LayerSpec> layers, int32_t numKvHeads,
                        int32_t headDim, int32_t blockSize, int64_t numBlocks,
                        int64_t numPoolSlots) {
  if (layers.empty() || numKvHeads <= 0 || headDim <= 0 || blockSize <= 0 ||
      numBlocks < 0 || numPoolSlots < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "sizes: layers ({0}), KV heads ({1}), head_dim ({2}) "
                     "and block size ({3}) must be positive, blocks ({4}) "
                     "and pool slots ({5}) not negative",
                     layers.size(), numKvHeads, headDim, blockSize, numBlocks,
                     numPoolSlots);
  auto overflow = [&] {
    return tooLarge(format("{0} blocks and {1} pool slots of {2} "
                           "layers x {3} KV heads x head_dim {4}",
                           numBlocks, numPoolSlots, layers.size(), numKvHeads,
                           headDim));
  };
  // K and V fp16 rows of one tile: 2 x G x Hk x D x 2 bytes (< 2^40).
  int64_t rowBytes = int64_t(blockSize) * numKvHeads * headDim * 2;
  MixedBytes m;
  m.layers.resize(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerSpec &s = layers[l];
    LayerBytes &b = m.layers[l];
    b.kind = s.kind;
    b.window = s.window;
    b.poolOffset = m.poolRows * rowBytes; // checked below, as poolRows grows
    b.poolRows = m.poolRows;
    std::optional<int64_t> rows;
    if (s.kind == LayerKind::Absent)
      continue;
    ++m.kvLayers;
    if (s.kind == LayerKind::Kvarn) {
      if (s.layout.headDim != headDim || s.layout.group != blockSize)
        return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                         "sizes: layer {0}'s preset has head_dim {1} and "
                         "tiles of {2} tokens; the pool's are {3} and {4}",
                         l, s.layout.headDim, s.layout.group, headDim,
                         blockSize);
      size_t g = 0;
      while (g < m.groupPreset.size() &&
             std::string_view(m.groupPreset[g]) != s.preset)
        ++g;
      if (g == m.groupPreset.size()) {
        m.groupPreset.push_back(s.preset);
        m.groupCacheBytes.push_back(0);
      }
      b.group = int32_t(g);
      b.recordBytes = s.layout.recordBytes;
      b.cacheBytesPerBlock = numKvHeads * s.layout.recordBytes;
      b.poolBytesPerSlot = 2 * rowBytes;
      std::optional<int64_t> cache =
          checkedProduct({numBlocks, b.cacheBytesPerBlock});
      if (!cache || m.groupCacheBytes[g] > INT64_MAX - *cache)
        return overflow();
      b.indexInGroup = 0;
      for (size_t k = 0; k < l; ++k)
        b.indexInGroup += m.layers[k].group == int32_t(g);
      b.cacheOffset = m.groupCacheBytes[g];
      b.cacheBytes = *cache;
      m.groupCacheBytes[g] += *cache;
      m.cacheBytesPerBlock += b.cacheBytesPerBlock;
      m.poolBytesPerSlot += b.poolBytesPerSlot;
      rows = numPoolSlots;
    } else {
      b.poolBytesPerBlock = 2 * rowBytes;
      m.fp16BytesPerBlock += b.poolBytesPerBlock;
      rows = numBlocks;
    }
    std::optional<int64_t> bytes = checkedProduct({2, *rows, rowBytes});
    if (!bytes || m.poolRows > INT64_MAX / 4 - *rows)
      return overflow();
    b.poolBytes = *bytes;
    m.poolRows += *rows;
    if (!checkedProduct({m.poolRows, 2, rowBytes}))
      return overflow();
  }
  if (m.kvLayers == 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "sizes: every one of the {0} layers is absent; a pool "
                     "needs at least one layer with a KV cache",
                     layers.size());
  m.poolBytes = 2 * m.poolRows * rowBytes;
  int64_t total = m.poolBytes;
  for (int64_t c : m.groupCacheBytes)
    if (total > INT64_MAX - c)
      return overflow();
    else
      total += c;
  return m;
}

Capacity kvarn::pool::capacityOf(const MixedBytes &b, int32_t numKvHeads,
                                 int32_t headDim, int32_t blockSize,
                                 int64_t numBlocks, int64_t numPoolSlots) {
  Capacity c;
  c.numBlocks = numBlocks;
  c.numPoolSlots = numPoolSlots;
  c.tokens = numBlocks * blockSize;
  c.usedBytes = b.totalBytes();
  // Per token and KV head, over the layers with KV: records and fp16 rows.
  c.recordBytesPerToken = double(b.cacheBytesPerBlock + b.fp16BytesPerBlock) /
                          (double(blockSize) * numKvHeads * b.kvLayers);
  c.bytesPerToken = c.tokens ? double(c.usedBytes) /
                                   (double(c.tokens) * b.kvLayers * numKvHeads)
                             : 0;
  std::optional<int64_t> fp16PerToken =
      checkedProduct({2, b.kvLayers, numKvHeads, headDim, 2});
  c.fp16Tokens = fp16PerToken ? c.usedBytes / *fp16PerToken : 0;
  c.ratioVsFp16 = c.fp16Tokens ? double(c.tokens) / double(c.fp16Tokens) : 0;
  return c;
}

kvarn::Expected<Capacity>
kvarn::pool::planCapacity(Span<const LayerSpec> layers, int32_t numKvHeads,
                          int32_t headDim, int32_t blockSize,
                          int64_t budgetBytes, int64_t concurrentRequests,
                          int64_t numPoolSlots) {
  if (kvarn::Error err = checkBudget(budgetBytes, concurrentRequests))
    return std::move(err);
  if (numPoolSlots < 0) {
    std::optional<int64_t> slots = defaultPoolSlots(concurrentRequests);
    if (!slots)
      return tooLarge("the default pool slots of " +
                      std::to_string(concurrentRequests) + " requests");
    numPoolSlots = *slots;
  }
  kvarn::Expected<MixedBytes> perOne =
      mixedBytes(layers, numKvHeads, headDim, blockSize, 1, 1);
  if (!perOne)
    return perOne.takeError();
  int64_t perBlock = perOne->cacheBytesPerBlock + perOne->fp16BytesPerBlock;
  std::optional<int64_t> slotBytes =
      checkedProduct({numPoolSlots, perOne->poolBytesPerSlot});
  std::optional<int64_t> sinkBytes =
      checkedProduct({std::max<int64_t>(concurrentRequests, 1), perBlock});
  int64_t left = slotBytes ? budgetBytes - *slotBytes : -1;
  if (!slotBytes || !sinkBytes || left < *sinkBytes)
    return makeError(KVARN_ERROR_OUT_OF_MEMORY,
                     "capacity: {0} bytes do not hold {1} pool slots ({2} "
                     "bytes each) and a block for each of {3} requests ({4} "
                     "bytes each)",
                     budgetBytes, numPoolSlots, perOne->poolBytesPerSlot,
                     concurrentRequests, perBlock);
  int64_t blocks = std::min<int64_t>(left / perBlock, INT32_MAX / blockSize);
  MixedBytes b = kvarn::cantFail(
      mixedBytes(layers, numKvHeads, headDim, blockSize, blocks, numPoolSlots));
  Capacity c =
      capacityOf(b, numKvHeads, headDim, blockSize, blocks, numPoolSlots);
  // Against an fp16 cache of the whole budget, as planCapacity does.
  std::optional<int64_t> fp16PerToken =
      checkedProduct({2, b.kvLayers, numKvHeads, headDim, 2});
  c.fp16Tokens = fp16PerToken ? budgetBytes / *fp16PerToken : 0;
  c.ratioVsFp16 = c.fp16Tokens ? double(c.tokens) / double(c.fp16Tokens) : 0;
  return c;
}

std::vector<FlushLaunch> kvarn::pool::flushLaunches(const MixedBytes &b,
                                                    Span<const int32_t> blocks,
                                                    Span<const int32_t> slots,
                                                    int64_t numBlocks) {
  std::vector<FlushLaunch> launches(b.groupPreset.size());
  for (size_t g = 0; g < launches.size(); ++g)
    launches[g].group = int32_t(g);
  if (blocks.empty())
    return {};
  for (const LayerBytes &l : b.layers) {
    if (l.kind != LayerKind::Kvarn)
      continue;
    FlushLaunch &f = launches[l.group];
    for (size_t i = 0; i < blocks.size(); ++i) {
      f.poolRows.push_back(int32_t(l.poolRows + slots[i]));
      f.cacheBlocks.push_back(int32_t(l.indexInGroup * numBlocks + blocks[i]));
    }
  }
  std::vector<FlushLaunch> out;
  for (FlushLaunch &f : launches)
    if (!f.poolRows.empty())
      out.push_back(std::move(f));
  return out;
}

kvarn::Expected<MixedBytes> kvarn::pool::mlaPoolBytes(const MlaRecordLayout &l,
                                                      const char *preset,
                                                      int32_t numLayers,
                                                      int64_t numBlocks,
                                                      int64_t numPoolSlots) {
  if (numLayers <= 0 || numBlocks < 0 || numPoolSlots < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "MLA pool: {0} layers, {1} blocks, {2} pool slots",
                     numLayers, numBlocks, numPoolSlots);
  const int64_t latentRow = int64_t(l.group) * l.kvLoraRank * 2,
                peRow = int64_t(l.group) * l.ropeDim * 2;
  std::optional<int64_t> cache = checkedProduct({numBlocks, l.recordBytes});
  std::optional<int64_t> latent = checkedProduct({numPoolSlots, latentRow});
  std::optional<int64_t> pe = checkedProduct({numPoolSlots, peRow});
  std::optional<int64_t> allCache =
      cache ? checkedProduct({numLayers, *cache}) : std::nullopt;
  std::optional<int64_t> allPool =
      latent && pe && *latent <= INT64_MAX - *pe
          ? checkedProduct({numLayers, *latent + *pe})
          : std::nullopt;
  if (!allCache || !allPool || *allCache > INT64_MAX - *allPool)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "MLA pool: {0} layers of {1} blocks and {2} pool slots "
                     "do not fit in a 64-bit byte count",
                     numLayers, numBlocks, numPoolSlots);
  MixedBytes b;
  b.groupCacheBytes = {*allCache};
  b.groupPreset = {preset};
  b.poolBytes = *allPool;
  b.poolRows = int64_t(numLayers) * numPoolSlots;
  b.cacheBytesPerBlock = int64_t(numLayers) * l.recordBytes;
  b.poolBytesPerSlot = int64_t(numLayers) * (latentRow + peRow);
  b.kvLayers = numLayers;
  for (int32_t i = 0; i < numLayers; ++i) {
    LayerBytes lb;
    lb.kind = LayerKind::Kvarn;
    lb.group = 0;
    lb.indexInGroup = i;
    lb.recordBytes = l.recordBytes;
    lb.cacheBytesPerBlock = l.recordBytes;
    lb.poolBytesPerSlot = latentRow + peRow;
    lb.cacheOffset = i * *cache;
    lb.cacheBytes = *cache;
    lb.poolRows = int64_t(i) * numPoolSlots;
    lb.poolOffset = i * *latent;
    lb.poolBytes = *latent + *pe;
    b.layers.push_back(lb);
  }
  return b;
}

Capacity kvarn::pool::mlaCapacityOf(const MlaRecordLayout &l,
                                    const MixedBytes &b, int64_t numBlocks,
                                    int64_t numPoolSlots) {
  Capacity c;
  c.numBlocks = numBlocks;
  c.numPoolSlots = numPoolSlots;
  c.tokens = numBlocks * l.group;
  c.usedBytes = b.totalBytes();
  c.recordBytesPerToken = double(l.recordBytes) / l.group;
  c.bytesPerToken =
      c.tokens ? double(c.usedBytes) / (double(c.tokens) * b.kvLayers) : 0;
  std::optional<int64_t> fp16PerToken =
      checkedProduct({b.kvLayers, int64_t(l.kvLoraRank) + l.ropeDim, 2});
  c.fp16Tokens = fp16PerToken ? c.usedBytes / *fp16PerToken : 0;
  c.ratioVsFp16 = c.fp16Tokens ? double(c.tokens) / double(c.fp16Tokens) : 0;
  return c;
}
