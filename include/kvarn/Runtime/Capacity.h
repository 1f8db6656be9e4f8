//===- Capacity.h - what a memory budget holds, quantized vs fp16 -*- C++ -*-===//
//
// The sizes of the managed pool's device memory and how many tokens a budget
// holds, counting everything the pool keeps: the records of every block (the
// sink's and the tail's included, which live in fp16 until flushed but keep
// their record space), and the fp16 pool slots. Plain arithmetic over the one
// record layout (lib/Layout); no CUDA.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_CAPACITY_H
#define KVARN_RUNTIME_CAPACITY_H

#include "kvarn/Layout/RecordLayout.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <initializer_list>
#include <optional>

namespace kvarn::pool {

/// The model side of a pool.
struct ModelShape {
  int32_t numLayers = 0;
  int32_t numKvHeads = 0;
  int32_t headDim = 0;
};

/// Device bytes of a pool, per layer and in total.
struct PoolBytes {
  int64_t recordBytes = 0;      // one (block, KV head) record
  int64_t cacheBytesPerBlock = 0; // one block, every layer and KV head
  int64_t poolBytesPerSlot = 0; // K and V fp16 rows of one slot, every layer
  int64_t cacheBytes = 0;       // [layers, blocks, Hk, record]
  int64_t poolBytes = 0;        // 2 x [layers, slots, G, Hk, D] fp16
  int64_t totalBytes() const { return cacheBytes + poolBytes; }
};

/// KVARN_ERROR_INVALID_ARGUMENT when a count is negative or a byte count
/// does not fit in int64: callers size allocations from these, so a wrapped
/// value must never come back.
llvm::Expected<PoolBytes> poolBytes(const RecordLayout &layout,
                                    const ModelShape &model, int64_t numBlocks,
                                    int64_t numPoolSlots);

/// The product of `factors`, or nullopt when it overflows int64.
std::optional<int64_t> checkedProduct(std::initializer_list<int64_t> factors);

struct Capacity {
  int64_t numBlocks = 0;
  int64_t numPoolSlots = 0;
  int64_t tokens = 0;               // numBlocks * G
  int64_t usedBytes = 0;            // of the budget
  double recordBytesPerToken = 0;   // per token and KV head: record / G
  double bytesPerToken = 0;         // per token, KV head and layer, all in
  int64_t fp16Tokens = 0;           // the same budget as an fp16 K/V cache
  double ratioVsFp16 = 0;           // tokens / fp16Tokens
};

/// The most blocks a budget of `budgetBytes` holds with `numPoolSlots` fp16
/// slots, and what that is worth against an fp16 cache of the same bytes.
/// `numPoolSlots` < 0 asks for the default for `concurrentRequests`:
/// defaultPoolSlots().
llvm::Expected<Capacity> planCapacity(const RecordLayout &layout,
                                      const ModelShape &model,
                                      int64_t budgetBytes,
                                      int64_t concurrentRequests,
                                      int64_t numPoolSlots = -1);

/// Two slots per request (its sink and its partial tail) plus one per eight
/// requests for blocks that fill during a step and wait for its flush;
/// nullopt when that overflows int64.
std::optional<int64_t> defaultPoolSlots(int64_t concurrentRequests);

} // namespace kvarn::pool

#endif // KVARN_RUNTIME_CAPACITY_H
