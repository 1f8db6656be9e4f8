//===- PoolRandomTest.cpp - random operation sequences against a model ----===//
//
// A deliberately simple model of the pool, written from docs/kvarn.md, "The
// cache at run time", and not from PoolState: requests with lengths and block
// lists, a per-block "in the fp16 pool" flag, and the flush rule stated
// directly (held, in the pool, full and committed by a holder, not a live
// request's first block unless the pool keeps no sinks, as MLA pools). The model predicts whether each random operation
// succeeds; the pool's choice of block ids for new blocks is adopted after
// checking that they were free. After every operation the two must agree on
// every request, every block's holders and pool residence, and the free
// counts; a failing operation must leave describe() unchanged.
//
//===----------------------------------------------------------------------===//

#include "TestUtil.h"

#include "kvarn/Runtime/PoolState.h"
#include "kvarn/Support/Error.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

using namespace kvarn;
using namespace kvarn::pool;

namespace {

bool ok(kvarn::Error err) {
  std::string message;
  return kvarn::consumeError(std::move(err), message) == KVARN_OK;
}

struct Model {
  struct Req {
    bool live = true;
    int length = 0, committed = 0;
    std::vector<int> blocks;
  };
  PoolGeometry g;
  std::map<RequestId, Req> reqs;
  std::vector<bool> inPool;

  explicit Model(const PoolGeometry &geometry)
      : g(geometry), inPool(geometry.numBlocks, false) {}

  std::vector<int> holders() const {
    std::vector<int> h(g.numBlocks, 0);
    for (const auto &[id, r] : reqs)
      for (int b : r.blocks)
        ++h[b];
    return h;
  }
  int freeBlocks() const {
    std::vector<int> h = holders();
    return int(std::count(h.begin(), h.end(), 0));
  }
  int freeSlots() const {
    return g.numPoolSlots - int(std::count(inPool.begin(), inPool.end(), true));
  }
  /// Blocks nobody holds leave the pool.
  void dropUnheld() {
    std::vector<int> h = holders();
    for (int b = 0; b < g.numBlocks; ++b)
      if (!h[b])
        inPool[b] = false;
  }
  std::set<int> flushable() const {
    std::set<int> full, sinks;
    for (const auto &[id, r] : reqs) {
      for (size_t i = 0; i < r.blocks.size(); ++i)
        if (int(i + 1) * g.blockSize <= r.committed)
          full.insert(r.blocks[i]);
      if (g.keepSinks && r.live && !r.blocks.empty())
        sinks.insert(r.blocks[0]);
    }
    std::set<int> out;
    for (int b : full)
      if (inPool[b] && !sinks.count(b))
        out.insert(b);
    return out;
  }
  bool isLive(RequestId id) const {
    auto it = reqs.find(id);
    return it != reqs.end() && it->second.live;
  }
};

class PoolRandomTest : public ::testing::TestWithParam<int> {};

void compare(const PoolState &pool, const Model &model, const char *op) {
  SCOPED_TRACE(op);
  ASSERT_EQ(pool.numRequests(), int32_t(model.reqs.size()));
  for (const auto &[id, r] : model.reqs) {
    kvarn::Expected<RequestInfo> info = pool.request(id);
    ASSERT_TRUE(bool(info)) << id;
    EXPECT_EQ(info->phase == RequestPhase::Live, r.live) << id;
    EXPECT_EQ(info->length, r.length) << id;
    EXPECT_EQ(info->committed, r.committed) << id;
    EXPECT_EQ(std::vector<int>(info->blocks.begin(), info->blocks.end()),
              r.blocks)
        << id;
  }
  std::vector<int> h = model.holders();
  for (int b = 0; b < model.g.numBlocks; ++b) {
    EXPECT_EQ(pool.refCount(b), h[b]) << "block " << b;
    EXPECT_EQ(pool.blockToSlot()[b] >= 0, bool(model.inPool[b]))
        << "block " << b;
  }
  EXPECT_EQ(pool.freeBlockCount(), model.freeBlocks());
  EXPECT_EQ(pool.freeSlotCount(), model.freeSlots());
  EXPECT_EQ(pool.pendingFlushCount(), int32_t(model.flushable().size()));
  std::string message;
  EXPECT_EQ(kvarn::consumeError(pool.verify(), message), KVARN_OK) << message;
}

TEST_P(PoolRandomTest, MatchesTheModel) {
  uint64_t seed = kvarn::test::freshSeed() + uint64_t(GetParam()) * 7919;
  SCOPED_TRACE("seed offset " + std::to_string(GetParam()));
  std::mt19937_64 rng(seed);
  auto uniform = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  PoolGeometry g;
  g.blockSize = std::array<int, 3>{1, 4, 16}[uniform(0, 2)];
  g.numBlocks = uniform(4, 40);
  g.numPoolSlots = std::min(uniform(2, 24), g.numBlocks); // slots <= blocks
  g.maxRequests = uniform(1, 8);
  g.maxBlocksPerRequest = uniform(1, 10);
  // Offsets 40 and up: an MLA pool's bookkeeping, which keeps no sinks.
  g.keepSinks = GetParam() < 40;
  PoolState pool = std::move(*PoolState::create(g));
  Model model(g);
  const int G = g.blockSize;
  const int idRange = g.maxRequests + 2; // some ids never exist
  auto someIds = [&](int n) {
    std::vector<RequestId> ids;
    for (int i = 0; i < n; ++i)
      ids.push_back(uniform(0, idRange));
    return ids;
  };
  for (int step = 0; step < 600; ++step) {
    std::string before = pool.describe();
    bool expectOk = false, wasOk = false;
    const char *op = "";
    switch (uniform(0, 9)) {
    case 0: { // add
      op = "add";
      RequestId id = uniform(0, idRange);
      expectOk = !model.reqs.count(id) &&
                 int(model.reqs.size()) < g.maxRequests;
      wasOk = ok(pool.addRequest(id));
      if (wasOk && expectOk)
        model.reqs[id] = {};
      break;
    }
    case 1:
    case 2:
    case 3: { // append
      op = "append";
      std::vector<RequestId> ids = someIds(uniform(0, 3));
      std::vector<int32_t> counts;
      for (size_t i = 0; i < ids.size(); ++i)
        counts.push_back(uniform(0, 10) == 0 ? uniform(-1, 4 * G)
                                             : uniform(0, G + 1));
      std::set<RequestId> distinct(ids.begin(), ids.end());
      expectOk = distinct.size() == ids.size();
      int newBlocks = 0;
      for (size_t i = 0; i < ids.size() && expectOk; ++i) {
        if (!model.isLive(ids[i]) || counts[i] < 0) {
          expectOk = false;
          break;
        }
        const Model::Req &r = model.reqs[ids[i]];
        int length = r.length + counts[i];
        if (length > g.maxBlocksPerRequest * G)
          expectOk = false;
        newBlocks += (length + G - 1) / G - int(r.blocks.size());
      }
      expectOk = expectOk && newBlocks <= model.freeBlocks() &&
                 newBlocks <= model.freeSlots();
      std::vector<int32_t> mapping;
      wasOk = ok(pool.append(ids, counts, &mapping));
      if (wasOk && expectOk) {
        std::vector<int> h = model.holders();
        size_t at = 0;
        for (size_t i = 0; i < ids.size(); ++i) {
          Model::Req &r = model.reqs[ids[i]];
          kvarn::Expected<RequestInfo> info = pool.request(ids[i]);
          ASSERT_TRUE(bool(info));
          for (size_t b = r.blocks.size(); b < info->blocks.size(); ++b) {
            int block = info->blocks[b];
            ASSERT_EQ(h[block], 0) << "block " << block << " was not free";
            h[block] = 1;
            r.blocks.push_back(block);
            model.inPool[block] = true;
          }
          for (int p = r.length; p < r.length + counts[i]; ++p, ++at) {
            ASSERT_LT(at, mapping.size());
            EXPECT_EQ(mapping[at], r.blocks[p / G] * G + p % G);
          }
          r.length += counts[i];
        }
        EXPECT_EQ(at, mapping.size());
      }
      break;
    }
    case 4:
    case 5: { // commit
      op = "commit";
      std::vector<RequestId> ids = someIds(uniform(0, 3));
      std::vector<int32_t> accepted;
      std::set<RequestId> distinct(ids.begin(), ids.end());
      expectOk = distinct.size() == ids.size();
      for (RequestId id : ids) {
        int pending = model.isLive(id)
                          ? model.reqs[id].length - model.reqs[id].committed
                          : 0;
        int a = uniform(0, 12) == 0 ? pending + 1 : uniform(0, pending);
        accepted.push_back(a);
        if (!model.isLive(id) || a > pending)
          expectOk = false;
      }
      wasOk = ok(pool.commit(ids, accepted));
      if (wasOk && expectOk) {
        for (size_t i = 0; i < ids.size(); ++i) {
          Model::Req &r = model.reqs[ids[i]];
          r.committed += accepted[i];
          r.length = r.committed;
          r.blocks.resize((r.length + G - 1) / G);
        }
        model.dropUnheld();
      }
      break;
    }
    case 6: { // finish or preempt
      RequestId id = uniform(0, idRange);
      bool finish = uniform(0, 1);
      op = finish ? "finish" : "preempt";
      expectOk = model.isLive(id);
      wasOk = ok(finish ? pool.finish(id) : pool.preempt(id));
      if (wasOk && expectOk) {
        Model::Req &r = model.reqs[id];
        int keep = finish ? r.committed / G : 0;
        r.blocks.resize(keep);
        r.length = r.committed = keep * G;
        r.live = !finish;
        model.dropUnheld();
      }
      break;
    }
    case 7: { // free
      op = "free";
      RequestId id = uniform(0, idRange);
      expectOk = model.reqs.count(id) != 0;
      wasOk = ok(pool.free(id));
      if (wasOk && expectOk) {
        model.reqs.erase(id);
        model.dropUnheld();
      }
      break;
    }
    case 8: { // share a prefix
      op = "share_prefix";
      RequestId dst = uniform(0, idRange), src = uniform(0, idRange);
      int tokens = uniform(0, 3) * G + (uniform(0, 8) == 0 ? 1 : 0);
      expectOk = model.isLive(dst) && model.reqs.count(src) && dst != src &&
                 model.reqs[dst].length == 0 && tokens > 0 &&
                 tokens % G == 0 &&
                 tokens <= model.reqs[src].committed / G * G;
      wasOk = ok(pool.sharePrefix(dst, src, tokens));
      if (wasOk && expectOk) {
        Model::Req &d = model.reqs[dst];
        const Model::Req &s = model.reqs[src];
        d.blocks.assign(s.blocks.begin(), s.blocks.begin() + tokens / G);
        d.length = d.committed = tokens;
      }
      break;
    }
    case 9: { // flush
      op = "flush";
      expectOk = wasOk = true;
      std::set<int> expected = model.flushable();
      std::vector<int32_t> slotsBefore(pool.blockToSlot().begin(),
                                       pool.blockToSlot().end());
      std::vector<FlushTile> peeked = pool.flushWork();
      std::vector<FlushTile> work = pool.takeFlushWork();
      EXPECT_EQ(peeked, work);
      std::set<int> got;
      for (const FlushTile &t : work) {
        EXPECT_TRUE(got.insert(t.block).second) << "block flushed twice";
        EXPECT_EQ(t.slot, slotsBefore[t.block]);
      }
      EXPECT_EQ(got, expected);
      for (int b : expected)
        model.inPool[b] = false;
      break;
    }
    }
    ASSERT_EQ(wasOk, expectOk) << op << " at step " << step << "\n" << before;
    if (!wasOk) {
      ASSERT_EQ(pool.describe(), before) << op << " changed the pool";
    }
    compare(pool, model, op);
    if (HasFailure())
      return;
  }
  // Every block and slot comes back.
  std::vector<RequestId> ids;
  for (const auto &[id, r] : model.reqs)
    ids.push_back(id);
  for (RequestId id : ids)
    ASSERT_TRUE(ok(pool.free(id)));
  EXPECT_TRUE(pool.takeFlushWork().empty());
  EXPECT_EQ(pool.freeBlockCount(), g.numBlocks);
  EXPECT_EQ(pool.freeSlotCount(), g.numPoolSlots);
  EXPECT_EQ(pool.describe(), std::move(*PoolState::create(g)).describe());
}

INSTANTIATE_TEST_SUITE_P(Seeds, PoolRandomTest, ::testing::Range(0, 60));

} // namespace
