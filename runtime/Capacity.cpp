//===- Capacity.cpp - what a memory budget holds --------------------------===//

#include "kvarn/Runtime/Capacity.h"
#include "kvarn/Support/Error.h"

using namespace kvarn;
using namespace kvarn::pool;

PoolBytes kvarn::pool::poolBytes(const RecordLayout &layout,
                                 const ModelShape &model, int64_t numBlocks,
                                 int64_t numPoolSlots) {
  PoolBytes b;
  b.recordBytes = layout.recordBytes;
  b.cacheBytesPerBlock =
      int64_t(model.numLayers) * model.numKvHeads * layout.recordBytes;
  b.poolBytesPerSlot = 2 * int64_t(model.numLayers) * layout.group *
                       model.numKvHeads * model.headDim * 2;
  b.cacheBytes = numBlocks * b.cacheBytesPerBlock;
  b.poolBytes = numPoolSlots * b.poolBytesPerSlot;
  return b;
}

int64_t kvarn::pool::defaultPoolSlots(int64_t concurrentRequests) {
  return 2 * concurrentRequests + (concurrentRequests + 7) / 8;
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
  if (numPoolSlots < 0)
    numPoolSlots = defaultPoolSlots(concurrentRequests);
  PoolBytes per = poolBytes(layout, model, 1, 1);
  int64_t left = budgetBytes - numPoolSlots * per.poolBytesPerSlot;
  // Every live request holds at least a block for its sink.
  if (left < std::max<int64_t>(concurrentRequests, 1) * per.cacheBytesPerBlock)
    return makeError(KVARN_ERROR_OUT_OF_MEMORY,
                     "capacity: {0} bytes do not hold {1} pool slots ({2} "
                     "bytes each) and a block per request",
                     budgetBytes, numPoolSlots, per.poolBytesPerSlot);
  Capacity c;
  c.numBlocks = std::min<int64_t>(left / per.cacheBytesPerBlock, INT32_MAX / layout.group);
  c.numPoolSlots = numPoolSlots;
  c.tokens = c.numBlocks * layout.group;
  c.usedBytes = poolBytes(layout, model, c.numBlocks, numPoolSlots).totalBytes();
  c.recordBytesPerToken = double(layout.recordBytes) / layout.group;
  c.bytesPerToken = double(c.usedBytes) /
                    (double(c.tokens) * model.numLayers * model.numKvHeads);
  int64_t fp16PerToken =
      2 * int64_t(model.numLayers) * model.numKvHeads * model.headDim * 2;
  c.fp16Tokens = budgetBytes / fp16PerToken;
  c.ratioVsFp16 = double(c.tokens) / double(c.fp16Tokens);
  return c;
}
