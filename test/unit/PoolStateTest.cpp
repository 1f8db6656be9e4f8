//===- PoolStateTest.cpp - the managed pool's bookkeeping, one op at a time ===//
//
// Small pools (block size 4) so every block and slot can be named. Each
// error path checks the status and that the whole state (describe()) is the
// same after the failing call as before it.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Runtime/PoolState.h"
#include "kvarn/Support/Error.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>

using namespace kvarn;
using namespace kvarn::pool;

namespace {

constexpr int32_t G = 4;

PoolGeometry smallGeometry() {
  PoolGeometry g;
  g.blockSize = G;
  g.numBlocks = 16;
  g.numPoolSlots = 8;
  g.maxRequests = 4;
  g.maxBlocksPerRequest = 6;
  return g;
}

/// The status of `err` (KVARN_OK for success), consuming it; the message
/// goes to `message`.
kvarn_status_t statusOf(kvarn::Error err, std::string *message = nullptr) {
  std::string m;
  kvarn_status_t s = kvarn::consumeError(std::move(err), m);
  if (message)
    *message = m;
  return s;
}

#define EXPECT_OK(expr) EXPECT_EQ(statusOf(expr), KVARN_OK)
#define ASSERT_OK(expr) ASSERT_EQ(statusOf(expr), KVARN_OK)

/// `expr` fails with `status`, its message contains `needle`, and the pool
/// is exactly as before.
#define EXPECT_FAILS_UNCHANGED(pool, expr, status, needle)                     \
  do {                                                                         \
    std::string before_ = (pool).describe();                                   \
    std::string message_;                                                      \
    EXPECT_EQ(statusOf((expr), &message_), (status)) << message_;              \
    EXPECT_NE(message_.find(needle), std::string::npos) << message_;           \
    EXPECT_EQ((pool).describe(), before_);                                     \
    EXPECT_OK((pool).verify());                                                \
  } while (0)

class PoolStateTest : public ::testing::Test {
protected:
  void SetUp() override {
    kvarn::Expected<PoolState> p = PoolState::create(smallGeometry());
    ASSERT_TRUE(bool(p));
    pool.emplace(std::move(*p));
  }
  void TearDown() override {
    if (pool) {
      EXPECT_OK(pool->verify());
    }
  }
  RequestInfo info(RequestId id) {
    kvarn::Expected<RequestInfo> i = pool->request(id);
    EXPECT_TRUE(bool(i));
    if (!i) {
      kvarn::consumeError(i.takeError());
      return {};
    }
    return *i;
  }
  std::optional<PoolState> pool;
};

TEST(PoolGeometry, RejectsNonPositiveAndOverflowingSizes) {
  PoolGeometry g = smallGeometry();
  EXPECT_OK(g.check());
  for (int32_t PoolGeometry::*field :
       {&PoolGeometry::blockSize, &PoolGeometry::numBlocks,
        &PoolGeometry::numPoolSlots, &PoolGeometry::maxRequests,
        &PoolGeometry::maxBlocksPerRequest}) {
    PoolGeometry bad = g;
    bad.*field = 0;
    EXPECT_EQ(statusOf(bad.check()), KVARN_ERROR_INVALID_ARGUMENT);
    kvarn::Expected<PoolState> p = PoolState::create(bad);
    EXPECT_FALSE(bool(p));
    if (!p)
      kvarn::consumeError(p.takeError());
  }
  PoolGeometry huge = g;
  huge.blockSize = 128;
  huge.numBlocks = INT32_MAX / 64;
  EXPECT_EQ(statusOf(huge.check()), KVARN_ERROR_INVALID_ARGUMENT);
}

TEST_F(PoolStateTest, AppendAllocatesBlocksAndSlotsAndMapsSlots) {
  ASSERT_OK(pool->addRequest(7));
  std::vector<int32_t> mapping;
  ASSERT_OK(pool->append({7}, {6}, &mapping));
  RequestInfo r = info(7);
  EXPECT_EQ(r.length, 6);
  EXPECT_EQ(r.committed, 0);
  ASSERT_EQ(r.blocks.size(), 2u);
  ASSERT_EQ(mapping.size(), 6u);
  for (int32_t p = 0; p < 6; ++p)
    EXPECT_EQ(mapping[p], r.blocks[p / G] * G + p % G);
  EXPECT_EQ(pool->freeBlockCount(), 14);
  EXPECT_EQ(pool->freeSlotCount(), 6);
  for (int32_t b : r.blocks) {
    EXPECT_GE(pool->blockToSlot()[b], 0);
    EXPECT_EQ(pool->refCount(b), 1);
  }
  EXPECT_NE(pool->blockToSlot()[r.blocks[0]], pool->blockToSlot()[r.blocks[1]]);
  // More tokens continue the partial block before taking a new one.
  mapping.clear();
  ASSERT_OK(pool->append({7}, {3}, &mapping));
  EXPECT_EQ(info(7).blocks.size(), 3u);
  EXPECT_EQ(mapping[0], r.blocks[1] * G + 2);
  EXPECT_EQ(mapping[1], r.blocks[1] * G + 3);
  EXPECT_EQ(mapping[2], info(7).blocks[2] * G);
}

TEST_F(PoolStateTest, BatchAppendKeepsRequestOrder) {
  ASSERT_OK(pool->addRequest(1));
  ASSERT_OK(pool->addRequest(2));
  std::vector<int32_t> mapping;
  ASSERT_OK(pool->append({2, 1}, {1, 2}, &mapping));
  ASSERT_EQ(mapping.size(), 3u);
  EXPECT_EQ(mapping[0], info(2).blocks[0] * G);
  EXPECT_EQ(mapping[1], info(1).blocks[0] * G);
  EXPECT_EQ(mapping[2], info(1).blocks[0] * G + 1);
  // A zero count is allowed and changes nothing for that request.
  ASSERT_OK(pool->append({1, 2}, {0, 1}, &mapping));
  EXPECT_EQ(info(1).length, 2);
  EXPECT_EQ(info(2).length, 2);
}

TEST_F(PoolStateTest, AppendErrorsLeaveThePoolUnchanged) {
  ASSERT_OK(pool->addRequest(1));
  ASSERT_OK(pool->addRequest(2));
  ASSERT_OK(pool->append({1}, {5}));
  std::vector<int32_t> mapping = {42};
  EXPECT_FAILS_UNCHANGED(*pool, pool->append({9}, {1}, &mapping),
                         KVARN_ERROR_UNKNOWN_REQUEST, "no request 9");
  EXPECT_FAILS_UNCHANGED(*pool, pool->append({1, 1}, {1, 1}),
                         KVARN_ERROR_INVALID_ARGUMENT, "appears twice");
  EXPECT_FAILS_UNCHANGED(*pool, pool->append({1, 2}, {1}),
                         KVARN_ERROR_INVALID_ARGUMENT, "2 request ids but 1");
  EXPECT_FAILS_UNCHANGED(*pool, pool->append({2, 1}, {1, -1}),
                         KVARN_ERROR_INVALID_ARGUMENT, "negative");
  // Past the block table's width (6 blocks of 4).
  EXPECT_FAILS_UNCHANGED(*pool, pool->append({2, 1}, {1, 20}),
                         KVARN_ERROR_INVALID_ARGUMENT, "max_blocks_per_request");
  // 8 slots, request 1 holds 2: 7 more blocks are too many slots though 14
  // blocks are free. The first request of the batch would fit alone: all or
  // nothing.
  ASSERT_OK(pool->addRequest(3));
  EXPECT_FAILS_UNCHANGED(*pool, pool->append({1, 2, 3}, {3, 16, 12}),
                         KVARN_ERROR_POOL_EXHAUSTED, "pool slots");
  EXPECT_EQ(mapping, std::vector<int32_t>{42});
}

TEST_F(PoolStateTest, OutOfBlocksBeforeSlots) {
  // Slots cannot outnumber blocks; a flushed block frees its slot but keeps
  // its block, so blocks run out first.
  PoolGeometry g = smallGeometry();
  g.numBlocks = 3;
  g.numPoolSlots = 3;
  PoolState p = std::move(*PoolState::create(g));
  ASSERT_OK(p.addRequest(1));
  ASSERT_OK(p.append({1}, {2 * G}));
  ASSERT_OK(p.commit({1}, {2 * G}));
  ASSERT_EQ(p.takeFlushWork().size(), 1u); // block 1; block 0 is the sink
  ASSERT_EQ(p.freeSlotCount(), 2);
  ASSERT_EQ(p.freeBlockCount(), 1);
  EXPECT_FAILS_UNCHANGED(p, p.append({1}, {G + 1}), KVARN_ERROR_POOL_EXHAUSTED,
                         "new blocks");
  EXPECT_OK(p.append({1}, {G}));
}

TEST(PoolGeometry, SizesAreCheckedBeforeAnythingIsAllocated) {
  // INT32_MAX slots for 64 blocks took 39 s and 8.4 GB to fill a free list
  // of slots that can never be used.
  PoolGeometry g = smallGeometry();
  g.numBlocks = 64;
  g.numPoolSlots = INT32_MAX;
  std::string message;
  EXPECT_EQ(statusOf(PoolState::create(g).takeError(), &message),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(message.find("2147483647 pool slots for 64 blocks"),
            std::string::npos) << message;
  g.numPoolSlots = 64;
  EXPECT_OK(g.check());
  // The bookkeeping's host memory against what the machine has.
  g.blockSize = 1;
  g.numBlocks = g.numPoolSlots = 1 << 20;
  EXPECT_OK(g.check(uint64_t(g.hostBytes())));
  EXPECT_EQ(statusOf(g.check(uint64_t(g.hostBytes()) - 1), &message),
            KVARN_ERROR_OUT_OF_MEMORY);
  EXPECT_NE(message.find("needs " + std::to_string(g.hostBytes()) +
                         " bytes of host memory"),
            std::string::npos) << message;
  // Wide limits are fine: what is reserved follows the blocks.
  g = smallGeometry();
  g.maxRequests = INT32_MAX;
  g.maxBlocksPerRequest = INT32_MAX / G;
  kvarn::Expected<PoolState> p = PoolState::create(g);
  ASSERT_TRUE(bool(p));
  EXPECT_OK(p->addRequest(1));
}

TEST_F(PoolStateTest, AddRequestErrors) {
  for (RequestId id : {1, 2, 3, 4})
    ASSERT_OK(pool->addRequest(id));
  EXPECT_FAILS_UNCHANGED(*pool, pool->addRequest(5), KVARN_ERROR_POOL_EXHAUSTED,
                         "max_requests");
  EXPECT_FAILS_UNCHANGED(*pool, pool->addRequest(3),
                         KVARN_ERROR_INVALID_ARGUMENT, "already exists");
  ASSERT_OK(pool->free(3));
  EXPECT_OK(pool->addRequest(5));
}

TEST_F(PoolStateTest, CommitQueuesFullBlocksButNotTheSink) {
  ASSERT_OK(pool->addRequest(1));
  ASSERT_OK(pool->append({1}, {10}));
  EXPECT_EQ(pool->pendingFlushCount(), 0); // nothing committed yet
  ASSERT_OK(pool->commit({1}, {10}));
  RequestInfo r = info(1);
  EXPECT_EQ(r.committed, 10);
  // Blocks 0 and 1 are full and committed; block 0 is the sink.
  EXPECT_EQ(pool->pendingFlushCount(), 1);
  int32_t slot1 = pool->blockToSlot()[r.blocks[1]];
  std::vector<FlushTile> work = pool->takeFlushWork();
  ASSERT_EQ(work.size(), 1u);
  EXPECT_EQ(work[0], (FlushTile{r.blocks[1], slot1}));
  EXPECT_EQ(pool->blockToSlot()[r.blocks[1]], -1);
  EXPECT_GE(pool->blockToSlot()[r.blocks[0]], 0); // the sink stays in fp16
  EXPECT_EQ(pool->freeSlotCount(), 8 - 2);
  EXPECT_TRUE(pool->takeFlushWork().empty());
}

TEST_F(PoolStateTest, CommitRollsBackRejectedTokens) {
  ASSERT_OK(pool->addRequest(1));
  ASSERT_OK(pool->append({1}, {3}));
  ASSERT_OK(pool->commit({1}, {3}));
  // Six speculative tokens: the partial block fills, then two new blocks.
  ASSERT_OK(pool->append({1}, {6}));
  EXPECT_EQ(info(1).blocks.size(), 3u);
  int32_t third = info(1).blocks[2];
  EXPECT_EQ(pool->freeSlotCount(), 5);
  // Accept two: 5 tokens, two blocks; the third block and its slot go back,
  // block 1 (tokens 4..7) holds one committed token and is not full.
  ASSERT_OK(pool->commit({1}, {2}));
  RequestInfo r = info(1);
  EXPECT_EQ(r.length, 5);
  EXPECT_EQ(r.committed, 5);
  EXPECT_EQ(r.blocks.size(), 2u);
  EXPECT_EQ(pool->refCount(third), 0);
  EXPECT_EQ(pool->blockToSlot()[third], -1);
  EXPECT_EQ(pool->freeSlotCount(), 6);
  EXPECT_EQ(pool->pendingFlushCount(), 0);
  // A full block with a rejected token in it is not flushed: append 3 (fill
  // block 1), accept 2.
  ASSERT_OK(pool->append({1}, {3}));
  ASSERT_OK(pool->commit({1}, {2}));
  EXPECT_EQ(info(1).length, 7);
  EXPECT_EQ(pool->pendingFlushCount(), 0);
  ASSERT_OK(pool->append({1}, {1}));
  ASSERT_OK(pool->commit({1}, {1}));
  EXPECT_EQ(pool->pendingFlushCount(), 1);
}

TEST_F(PoolStateTest, RejectingEverythingOfAnEmptyRequestFreesItsSink) {
  ASSERT_OK(pool->addRequest(1));
  ASSERT_OK(pool->append({1}, {2}));
  ASSERT_OK(pool->commit({1}, {0}));
  EXPECT_TRUE(info(1).blocks.empty());
  EXPECT_EQ(pool->freeBlockCount(), 16);
  EXPECT_EQ(pool->freeSlotCount(), 8);
}

TEST_F(PoolStateTest, CommitErrors) {
  ASSERT_OK(pool->addRequest(1));
  ASSERT_OK(pool->addRequest(2));
  ASSERT_OK(pool->append({1, 2}, {3, 2}));
  EXPECT_FAILS_UNCHANGED(*pool, pool->commit({1, 2}, {3, 3}),
                         KVARN_ERROR_INVALID_ARGUMENT, "cannot accept 3");
  EXPECT_FAILS_UNCHANGED(*pool, pool->commit({1}, {-1}),
                         KVARN_ERROR_INVALID_ARGUMENT, "cannot accept -1");
  EXPECT_FAILS_UNCHANGED(*pool, pool->commit({1, 5}, {1, 0}),
                         KVARN_ERROR_UNKNOWN_REQUEST, "no request 5");
  EXPECT_FAILS_UNCHANGED(*pool, pool->commit({2, 2}, {1, 1}),
                         KVARN_ERROR_INVALID_ARGUMENT, "twice");
}

TEST_F(PoolStateTest, FinishFlushesFullBlocksAndDropsThePartialOne) {
  ASSERT_OK(pool->addRequest(1));
  ASSERT_OK(pool->append({1}, {9}));
  ASSERT_OK(pool->commit({1}, {9}));
  ASSERT_OK(pool->append({1}, {4})); // uncommitted at finish: dropped
  std::vector<int32_t> blocks(info(1).blocks.begin(), info(1).blocks.end());
  ASSERT_EQ(blocks.size(), 4u);
  ASSERT_OK(pool->finish(1));
  RequestInfo r = info(1);
  EXPECT_EQ(r.phase, RequestPhase::Finished);
  EXPECT_EQ(r.length, 8);
  EXPECT_EQ(r.committed, 8);
  ASSERT_EQ(r.blocks.size(), 2u);
  EXPECT_EQ(pool->refCount(blocks[2]), 0);
  EXPECT_EQ(pool->refCount(blocks[3]), 0);
  // Block 1 was queued at commit, the sink at finish.
  std::vector<FlushTile> work = pool->takeFlushWork();
  ASSERT_EQ(work.size(), 2u);
  std::vector<int32_t> flushed = {work[0].block, work[1].block};
  std::sort(flushed.begin(), flushed.end());
  std::vector<int32_t> expect = {blocks[0], blocks[1]};
  std::sort(expect.begin(), expect.end());
  EXPECT_EQ(flushed, expect);
  EXPECT_EQ(pool->freeSlotCount(), 8);
  EXPECT_EQ(pool->freeBlockCount(), 14);
  // Finished requests take no more tokens.
  EXPECT_FAILS_UNCHANGED(*pool, pool->append({1}, {1}),
                         KVARN_ERROR_INVALID_ARGUMENT, "finished");
  EXPECT_FAILS_UNCHANGED(*pool, pool->finish(1), KVARN_ERROR_INVALID_ARGUMENT,
                         "finished");
  EXPECT_FAILS_UNCHANGED(*pool, pool->preempt(1), KVARN_ERROR_INVALID_ARGUMENT,
                         "finished");
  ASSERT_OK(pool->free(1));
  EXPECT_EQ(pool->freeBlockCount(), 16);
  EXPECT_FAILS_UNCHANGED(*pool, pool->free(1), KVARN_ERROR_UNKNOWN_REQUEST,
                         "no request 1");
}

TEST_F(PoolStateTest, FreeBeforeFlushCancelsTheFlush) {
  ASSERT_OK(pool->addRequest(1));
  ASSERT_OK(pool->append({1}, {12}));
  ASSERT_OK(pool->commit({1}, {12}));
  EXPECT_EQ(pool->pendingFlushCount(), 2);
  ASSERT_OK(pool->free(1));
  EXPECT_EQ(pool->pendingFlushCount(), 0);
  EXPECT_TRUE(pool->takeFlushWork().empty());
  EXPECT_EQ(pool->freeSlotCount(), 8);
  // The freed blocks are reused; a stale queue entry must not flush them.
  ASSERT_OK(pool->addRequest(2));
  ASSERT_OK(pool->append({2}, {12}));
  EXPECT_TRUE(pool->takeFlushWork().empty());
}

TEST_F(PoolStateTest, PreemptDropsEverythingAndKeepsTheRequestLive) {
  ASSERT_OK(pool->addRequest(1));
  ASSERT_OK(pool->append({1}, {9}));
  ASSERT_OK(pool->commit({1}, {9}));
  ASSERT_OK(pool->preempt(1));
  RequestInfo r = info(1);
  EXPECT_EQ(r.phase, RequestPhase::Live);
  EXPECT_EQ(r.length, 0);
  EXPECT_TRUE(r.blocks.empty());
  EXPECT_EQ(pool->freeBlockCount(), 16);
  EXPECT_EQ(pool->freeSlotCount(), 8);
  EXPECT_TRUE(pool->takeFlushWork().empty());
  ASSERT_OK(pool->append({1}, {9})); // recomputed
  EXPECT_FAILS_UNCHANGED(*pool, pool->preempt(3), KVARN_ERROR_UNKNOWN_REQUEST,
                         "no request 3");
}

TEST_F(PoolStateTest, SharedPrefixIsReferenceCounted) {
  ASSERT_OK(pool->addRequest(1));
  ASSERT_OK(pool->append({1}, {10}));
  ASSERT_OK(pool->commit({1}, {10}));
  std::vector<int32_t> src(info(1).blocks.begin(), info(1).blocks.end());
  ASSERT_OK(pool->addRequest(2));
  int32_t freeSlots = pool->freeSlotCount();
  ASSERT_OK(pool->sharePrefix(2, 1, 8));
  RequestInfo d = info(2);
  EXPECT_EQ(d.length, 8);
  EXPECT_EQ(d.committed, 8);
  ASSERT_EQ(d.blocks.size(), 2u);
  EXPECT_EQ(d.blocks[0], src[0]);
  EXPECT_EQ(d.blocks[1], src[1]);
  EXPECT_EQ(pool->refCount(src[0]), 2);
  EXPECT_EQ(pool->refCount(src[2]), 1);
  EXPECT_EQ(pool->freeSlotCount(), freeSlots); // no copy, no slot
  // Request 2 continues in a block of its own.
  std::vector<int32_t> mapping;
  ASSERT_OK(pool->append({2}, {1}, &mapping));
  EXPECT_NE(info(2).blocks[2], src[2]);
  // The owner finishes: its sink is still request 2's sink, not flushed.
  pool->takeFlushWork();
  ASSERT_OK(pool->finish(1));
  EXPECT_TRUE(pool->takeFlushWork().empty());
  EXPECT_GE(pool->blockToSlot()[src[0]], 0);
  ASSERT_OK(pool->free(1));
  EXPECT_EQ(pool->refCount(src[0]), 1);
  EXPECT_EQ(pool->refCount(src[2]), 0); // the partial block went at finish
  // Request 2 finishes: now the shared sink is flushed.
  ASSERT_OK(pool->finish(2));
  std::vector<FlushTile> work = pool->takeFlushWork();
  ASSERT_EQ(work.size(), 1u);
  EXPECT_EQ(work[0].block, src[0]);
  ASSERT_OK(pool->free(2));
  EXPECT_EQ(pool->freeBlockCount(), 16);
  EXPECT_EQ(pool->freeSlotCount(), 8);
}

TEST_F(PoolStateTest, AFinishedPrefixCanBeSharedAndItsSinkStaysInFp16) {
  ASSERT_OK(pool->addRequest(1));
  ASSERT_OK(pool->append({1}, {8}));
  ASSERT_OK(pool->commit({1}, {8}));
  ASSERT_OK(pool->finish(1));
  // The sink is queued; a live request shares it before the flush: it stays.
  ASSERT_OK(pool->addRequest(2));
  ASSERT_OK(pool->sharePrefix(2, 1, 8));
  std::vector<FlushTile> work = pool->takeFlushWork();
  ASSERT_EQ(work.size(), 1u);
  EXPECT_EQ(work[0].block, info(1).blocks[1]);
  EXPECT_GE(pool->blockToSlot()[info(1).blocks[0]], 0);
  ASSERT_OK(pool->preempt(2)); // the sink is nobody's live sink any more
  EXPECT_EQ(pool->takeFlushWork().size(), 1u);
}

TEST_F(PoolStateTest, SharePrefixErrors) {
  ASSERT_OK(pool->addRequest(1));
  ASSERT_OK(pool->append({1}, {10}));
  ASSERT_OK(pool->commit({1}, {7}));
  ASSERT_OK(pool->addRequest(2));
  ASSERT_OK(pool->addRequest(3));
  ASSERT_OK(pool->append({3}, {1}));
  EXPECT_FAILS_UNCHANGED(*pool, pool->sharePrefix(2, 1, 8),
                         KVARN_ERROR_INVALID_ARGUMENT, "within the 4 full");
  EXPECT_FAILS_UNCHANGED(*pool, pool->sharePrefix(2, 1, 3),
                         KVARN_ERROR_INVALID_ARGUMENT, "multiple");
  EXPECT_FAILS_UNCHANGED(*pool, pool->sharePrefix(2, 1, 0),
                         KVARN_ERROR_INVALID_ARGUMENT, "positive");
  EXPECT_FAILS_UNCHANGED(*pool, pool->sharePrefix(3, 1, 4),
                         KVARN_ERROR_INVALID_ARGUMENT, "already holds");
  EXPECT_FAILS_UNCHANGED(*pool, pool->sharePrefix(2, 9, 4),
                         KVARN_ERROR_UNKNOWN_REQUEST, "no request 9");
  EXPECT_FAILS_UNCHANGED(*pool, pool->sharePrefix(9, 1, 4),
                         KVARN_ERROR_UNKNOWN_REQUEST, "no request 9");
  EXPECT_FAILS_UNCHANGED(*pool, pool->sharePrefix(2, 2, 4),
                         KVARN_ERROR_INVALID_ARGUMENT, "itself");
  EXPECT_OK(pool->sharePrefix(2, 1, 4));
}

TEST_F(PoolStateTest, BlockTableRowsAndLengths) {
  ASSERT_OK(pool->addRequest(1));
  ASSERT_OK(pool->addRequest(2));
  ASSERT_OK(pool->append({1, 2}, {9, 2}));
  kvarn::Expected<int32_t> width = pool->maxBlocksOf({2, 1});
  ASSERT_TRUE(bool(width));
  EXPECT_EQ(*width, 3);
  std::vector<int32_t> table(2 * 3, -7), lens(2, -7);
  ASSERT_OK(pool->fillBlockTable({2, 1}, 3, table.data(), lens.data()));
  EXPECT_EQ(lens, (std::vector<int32_t>{2, 9}));
  EXPECT_EQ(table[0], info(2).blocks[0]);
  EXPECT_EQ(table[1], 0);
  EXPECT_EQ(table[2], 0);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(table[3 + i], info(1).blocks[i]);
  std::vector<int32_t> untouched = table;
  EXPECT_EQ(statusOf(pool->fillBlockTable({1}, 2, table.data(), lens.data())),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(statusOf(pool->fillBlockTable({2, 4}, 3, table.data(), nullptr)),
            KVARN_ERROR_UNKNOWN_REQUEST);
  EXPECT_EQ(table, untouched);
}

TEST_F(PoolStateTest, EverythingReturnsToTheFreeLists) {
  for (RequestId id : {1, 2, 3})
    ASSERT_OK(pool->addRequest(id));
  ASSERT_OK(pool->append({1, 2, 3}, {9, 4, 6}));
  ASSERT_OK(pool->commit({1, 2, 3}, {9, 4, 3}));
  pool->takeFlushWork();
  ASSERT_OK(pool->addRequest(4));
  ASSERT_OK(pool->sharePrefix(4, 1, 8));
  ASSERT_OK(pool->finish(2));
  ASSERT_OK(pool->preempt(3));
  pool->takeFlushWork();
  for (RequestId id : {1, 2, 3, 4})
    ASSERT_OK(pool->free(id));
  EXPECT_EQ(pool->freeBlockCount(), 16);
  EXPECT_EQ(pool->freeSlotCount(), 8);
  EXPECT_EQ(pool->numRequests(), 0);
  std::string fresh = std::move(*PoolState::create(smallGeometry())).describe();
  EXPECT_EQ(pool->describe(), fresh);
}

} // namespace
