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
  PoolBytes b = kvarn::cantFail(poolBytes(l, {32, 8, 128}, 10, 3));
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
  kvarn::Expected<PoolBytes> most = poolBytes(l, {32, 8, 128}, blocks, 0);
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
  kvarn::Expected<Capacity> c = planCapacity(l, {32, 8, 128}, budget, 64);
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
  auto status = [&](kvarn::Expected<Capacity> c) {
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

// A mixed pool: kvarn layers of two presets, fp16 and absent ones. The byte
// layout and the flush launches against a layout worked out here from the
// definitions (ManagedPool.h): rows in layer order, a slot's worth per
// kvarn layer, a block's worth per fp16 layer; one record cache per preset.
TEST(Capacity, MixedLayersBytesAndFlushOnlyKvarnLayers) {
  const int32_t hk = 2, d = 64, g = 64, blocks = 30, slots = 7;
  RecordLayout a = layoutOf("kvarn_k4v2_g64", d);
  RecordLayout b = layoutOf("kvarn_k4v4_g64", d);
  ASSERT_NE(a.recordBytes, b.recordBytes);
  auto kv = [](RecordLayout l, const char *p) {
    LayerSpec s;
    s.layout = l;
    s.preset = p;
    return s;
  };
  auto other = [](LayerKind k, int32_t w = 0) {
    LayerSpec s;
    s.kind = k;
    s.window = w;
    return s;
  };
  std::vector<LayerSpec> specs = {
      kv(a, "kvarn_k4v2_g64"),  other(LayerKind::Fp16, 256),
      other(LayerKind::Absent), kv(b, "kvarn_k4v4_g64"),
      kv(a, "kvarn_k4v2_g64"),  other(LayerKind::Fp16)};
  MixedBytes m = kvarn::cantFail(mixedBytes(specs, hk, d, g, blocks, slots));
  int64_t tile = int64_t(g) * hk * d * 2; // one K (or V) tile, fp16
  int64_t row = 0, cacheA = 0, cacheB = 0;
  std::vector<int64_t> firstRow, group, index;
  for (size_t l = 0; l < specs.size(); ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    const LayerBytes &lb = m.layers[l];
    firstRow.push_back(row);
    EXPECT_EQ(lb.poolOffset, row * tile);
    EXPECT_EQ(lb.window, specs[l].window);
    if (specs[l].kind == LayerKind::Kvarn) {
      bool isA = specs[l].layout.recordBytes == a.recordBytes;
      int64_t &cache = isA ? cacheA : cacheB;
      EXPECT_EQ(lb.cacheOffset, cache);
      EXPECT_EQ(lb.cacheBytes,
                int64_t(blocks) * hk * specs[l].layout.recordBytes);
      EXPECT_EQ(lb.poolBytes, 2 * slots * tile);
      group.push_back(isA ? 0 : 1);
      index.push_back(cache /
                      (int64_t(blocks) * hk * specs[l].layout.recordBytes));
      cache += lb.cacheBytes;
      row += slots;
    } else {
      EXPECT_EQ(lb.cacheBytes, 0);
      EXPECT_EQ(lb.poolBytes,
                specs[l].kind == LayerKind::Fp16 ? 2 * blocks * tile : 0);
      row += specs[l].kind == LayerKind::Fp16 ? blocks : 0;
      group.push_back(-1);
      index.push_back(-1);
    }
  }
  ASSERT_EQ(m.groupCacheBytes.size(), 2u);
  EXPECT_EQ(m.groupCacheBytes[0], cacheA);
  EXPECT_EQ(m.groupCacheBytes[1], cacheB);
  EXPECT_EQ(m.poolBytes, 2 * row * tile);
  EXPECT_EQ(m.totalBytes(), cacheA + cacheB + 2 * row * tile);
  EXPECT_EQ(m.kvLayers, 5);

  std::vector<int32_t> fb = {3, 17, 29}, fs = {0, 6, 2};
  std::vector<FlushLaunch> launches = flushLaunches(m, fb, fs, blocks);
  ASSERT_EQ(launches.size(), 2u);
  for (const FlushLaunch &f : launches) {
    SCOPED_TRACE("group " + std::to_string(f.group));
    std::vector<int32_t> rows, cacheBlocks;
    for (size_t l = 0; l < specs.size(); ++l)
      if (group[l] == f.group)
        for (size_t i = 0; i < fb.size(); ++i) {
          rows.push_back(int32_t(firstRow[l] + fs[i]));
          cacheBlocks.push_back(int32_t(index[l] * blocks + fb[i]));
        }
    EXPECT_EQ(f.poolRows, rows);
    EXPECT_EQ(f.cacheBlocks, cacheBlocks);
    // No row of an fp16 layer is flushed.
    for (int32_t r : f.poolRows)
      for (size_t l = 0; l < specs.size(); ++l)
        if (specs[l].kind == LayerKind::Fp16)
          EXPECT_FALSE(r >= firstRow[l] && r < firstRow[l] + blocks) << r;
  }
  EXPECT_TRUE(flushLaunches(m, {}, {}, blocks).empty());
  // fp16 and absent layers only: nothing to flush.
  std::vector<LayerSpec> exact = {other(LayerKind::Fp16),
                                  other(LayerKind::Absent)};
  MixedBytes e = kvarn::cantFail(mixedBytes(exact, hk, d, g, blocks, slots));
  EXPECT_TRUE(flushLaunches(e, fb, fs, blocks).empty());
  // Every layer absent, or a preset of another block size: errors.
  std::vector<LayerSpec> none = {other(LayerKind::Absent)};
  kvarn::Expected<MixedBytes> bad = mixedBytes(none, hk, d, g, blocks, slots);
  ASSERT_FALSE(bool(bad));
  kvarn::consumeError(bad.takeError());
  std::vector<LayerSpec> g128 = {
      kv(layoutOf("kvarn_k4v2_g128", d), "kvarn_k4v2_g128")};
  bad = mixedBytes(g128, hk, d, g, blocks, slots);
  ASSERT_FALSE(bool(bad));
  kvarn::consumeError(bad.takeError());
}

// The uniform pool through the mixed planner: the same plan.
TEST(Capacity, UniformMixedPlanIsTheOldPlan) {
  RecordLayout l = layoutOf("kvarn_k4v2_g128", 128);
  LayerSpec s;
  s.layout = l;
  s.preset = "kvarn_k4v2_g128";
  std::vector<LayerSpec> specs(32, s);
  Capacity old = kvarn::cantFail(planCapacity(l, {32, 8, 128}, 60LL << 30, 64));
  Capacity mix =
      kvarn::cantFail(planCapacity(specs, 8, 128, 128, 60LL << 30, 64));
  EXPECT_EQ(old.numBlocks, mix.numBlocks);
  EXPECT_EQ(old.usedBytes, mix.usedBytes);
  EXPECT_EQ(old.fp16Tokens, mix.fp16Tokens);
  EXPECT_DOUBLE_EQ(old.ratioVsFp16, mix.ratioVsFp16);
  EXPECT_DOUBLE_EQ(old.bytesPerToken, mix.bytesPerToken);
  EXPECT_DOUBLE_EQ(old.recordBytesPerToken, mix.recordBytesPerToken);
}

} // namespace
