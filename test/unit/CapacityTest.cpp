//===- CapacityTest.cpp - what a memory budget holds ----------------------===//

#include "kvarn/Runtime/Capacity.h"
#include "kvarn/Support/Error.h"

#include <gtest/gtest.h>

using namespace kvarn;
using namespace kvarn::pool;

namespace {

RecordLayout layoutOf(const char *preset, int d) {
  return *RecordLayout::get(**lookupPreset(preset), d);
}

TEST(Capacity, PoolBytesCountRecordsAndBothFp16Pools) {
  RecordLayout l = layoutOf("kvarn_k4v2_g128", 128);
  PoolBytes b = llvm::cantFail(poolBytes(l, {32, 8, 128}, 10, 3));
  EXPECT_EQ(b.recordBytes, 13824);
  EXPECT_EQ(b.cacheBytesPerBlock, 32 * 8 * 13824);
  EXPECT_EQ(b.poolBytesPerSlot, 2 * 32 * 128 * 8 * 128 * 2);
  EXPECT_EQ(b.totalBytes(), 10 * b.cacheBytesPerBlock + 3 * b.poolBytesPerSlot);
}

// Byte counts past int64 are errors, not wrapped values: the pool and the C
// API allocate from them.
TEST(Capacity, ByteCountsPastInt64AreErrors) {
  RecordLayout l = layoutOf("kvarn_k4v2_g128", 128);
  auto status = [](auto e) {
    std::string m;
    return consumeError(e.takeError(), m);
  };
  const int64_t perBlock = 32 * 8 * 13824;
  EXPECT_EQ(status(poolBytes(l, {32, 8, 128}, INT64_MAX, 0)),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(status(poolBytes(l, {32, 8, 128}, 0, INT64_MAX)),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(status(poolBytes(l, {INT32_MAX, INT32_MAX, 128}, 1, 1)),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(status(poolBytes(l, {32, 8, 128}, -1, 0)),
            KVARN_ERROR_INVALID_ARGUMENT);
  // Each count fits, their sum does not.
  int64_t blocks = INT64_MAX / perBlock;
  llvm::Expected<PoolBytes> most = poolBytes(l, {32, 8, 128}, blocks, 0);
  ASSERT_TRUE(bool(most));
  EXPECT_EQ(most->cacheBytes, blocks * perBlock);
  EXPECT_EQ(status(poolBytes(l, {32, 8, 128}, blocks, 1 << 20)),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_FALSE(defaultPoolSlots(INT64_MAX / 2).has_value());
  EXPECT_EQ(defaultPoolSlots(64), 136);
  EXPECT_EQ(defaultPoolSlots(65), 130 + 9);
}

// The figure of issue 7: Hq/Hk 32/8, D=128, 32 layers, 60 GiB of cache, 64
// concurrent requests. Computed independently here from the record size of
// docs/kvarn.md, "Record layout" (13,824 bytes per 128-token record).
TEST(Capacity, K4V2At60GiBHoldsOver4Point5TimesFp16) {
  const int64_t budget = int64_t(60) << 30;
  RecordLayout l = layoutOf("kvarn_k4v2_g128", 128);
  llvm::Expected<Capacity> c = planCapacity(l, {32, 8, 128}, budget, 64);
  ASSERT_TRUE(bool(c));
  int64_t slots = 2 * 64 + 8;
  EXPECT_EQ(c->numPoolSlots, slots);
  int64_t slotBytes = 2LL * 32 * 128 * 8 * 128 * 2; // K and V, fp16
  int64_t blockBytes = 32LL * 8 * 13824;
  int64_t blocks = (budget - slots * slotBytes) / blockBytes;
  EXPECT_EQ(c->numBlocks, blocks);
  EXPECT_EQ(c->tokens, blocks * 128);
  int64_t fp16Tokens = budget / (2LL * 32 * 8 * 128 * 2);
  EXPECT_EQ(c->fp16Tokens, fp16Tokens);
  EXPECT_DOUBLE_EQ(c->ratioVsFp16, double(blocks * 128) / fp16Tokens);
  EXPECT_DOUBLE_EQ(c->recordBytesPerToken, 108.0);
  EXPECT_GE(c->ratioVsFp16, 4.5);
  EXPECT_LT(c->ratioVsFp16, 512.0 / 108.0); // the format's bound
  EXPECT_LE(c->usedBytes, budget);
  EXPECT_GT(c->bytesPerToken, 108.0);
}

TEST(Capacity, Errors) {
  RecordLayout l = layoutOf("kvarn_k4v2_g128", 128);
  std::string m;
  auto status = [&](llvm::Expected<Capacity> c) {
    if (c)
      return KVARN_OK;
    return kvarn::consumeError(c.takeError(), m);
  };
  EXPECT_EQ(status(planCapacity(l, {0, 8, 128}, 1 << 30, 1)),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(status(planCapacity(l, {32, 8, 64}, 1 << 30, 1)),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(status(planCapacity(l, {32, 8, 128}, 0, 1)),
            KVARN_ERROR_INVALID_ARGUMENT);
  // 1 MiB does not even hold one pool slot of this model.
  EXPECT_EQ(status(planCapacity(l, {32, 8, 128}, 1 << 20, 1)),
            KVARN_ERROR_OUT_OF_MEMORY);
}

} // namespace
