//===- Capacity.cpp - what a memory budget holds --------------------------===//

#include "kvarn/Runtime/Capacity.h"
#include "kvarn/Support/Error.h"

#include "llvm/Support/FormatVariadic.h"

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

static llvm::Error tooLarge(const llvm::Twine &what) {
  return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                   "{0} do not fit in a 64-bit byte count", what.str());
}

llvm::Expected<PoolBytes> kvarn::pool::poolBytes(const RecordLayout &layout,
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
    return tooLarge(llvm::formatv("{0} blocks and {1} pool slots of {2} "
                                  "layers x {3} KV heads x head_dim {4}",
                                  numBlocks, numPoolSlots, model.numLayers,
                                  model.numKvHeads, model.headDim)
                        .str());
  b.cacheBytesPerBlock = *perBlock;
  b.poolBytesPerSlot = *perSlot;
  b.cacheBytes = *cache;
  b.poolBytes = *pool;
  return b;
}

std::optional<int64_t> kvarn::pool::defaultPoolSlots(int64_t concurrentRequests) {
  std::optional<int64_t> two = checkedProduct({2, concurrentRequests});
  if (!two || *two > INT64_MAX - (concurrentRequests / 8 + 1))
    return std::nullopt;
  return *two + concurrentRequests / 8 + (concurrentRequests % 8 != 0);
}

llvm::Expected<Capacity> kvarn::pool::planCapacity(const RecordLayout &layout,
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
  if (budgetBytes <= 0 || concurrentRequests < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "capacity: the budget ({0} bytes) must be positive and "
                     "the request count ({1}) not negative",
                     budgetBytes, concurrentRequests);
  if (numPoolSlots < 0) {
    std::optional<int64_t> slots = defaultPoolSlots(concurrentRequests);
    if (!slots)
      return tooLarge("the default pool slots of " +
                      llvm::Twine(concurrentRequests) + " requests");
    numPoolSlots = *slots;
  }
  llvm::Expected<PoolBytes> perOne = poolBytes(layout, model, 1, 1);
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
      llvm::cantFail(poolBytes(layout, model, c.numBlocks, numPoolSlots))
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
