//===- CAPIMixedPoolTest.cpp - pools with per-layer kinds (issue 17) ------===//
//
// Bookkeeping-only pools (no context) whose layers are kvarn with two
// presets, fp16 and absent: the per-layer bytes against a layout computed
// here from kvarn_record_layout alone, capacity, config errors, calls on
// absent layers, and free lists after random serving sequences.
//
//===----------------------------------------------------------------------===//

#include "kvarn/kvarn.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

std::string lastError() { return kvarn_last_error(); }

constexpr int32_t kHk = 2, kD = 64, kG = 64;

kvarn_pool_config_t config(int32_t layers) {
  kvarn_pool_config_t c;
  std::memset(&c, 0, sizeof c);
  c.preset = "kvarn_k4v2_g64";
  c.num_layers = layers;
  c.num_kv_heads = kHk;
  c.num_q_heads = 4 * kHk;
  c.head_dim = kD;
  c.num_blocks = 40;
  c.pool_slots = 16;
  c.max_requests = 8;
  c.max_blocks_per_request = 10;
  return c;
}

kvarn_layer_config_t layer(int32_t kind, int32_t window = 0,
                           const char *preset = nullptr) {
  kvarn_layer_config_t l;
  std::memset(&l, 0, sizeof l);
  l.kind = kind;
  l.window = window;
  l.preset = preset;
  return l;
}

kvarn_pool_options_t options(const std::vector<kvarn_layer_config_t> &l) {
  kvarn_pool_options_t o;
  std::memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.layer_config_size = sizeof(kvarn_layer_config_t);
  o.layers = l.data();
  return o;
}

// kvarn with the pool's preset, fp16, absent, kvarn k4v4, fp16 windowed,
// kvarn k4v2 named explicitly.
std::vector<kvarn_layer_config_t> mixedLayers() {
  return {layer(KVARN_LAYER_KVARN),
          layer(KVARN_LAYER_FP16),
          layer(KVARN_LAYER_ABSENT),
          layer(KVARN_LAYER_KVARN, 0, "kvarn_k4v4_g64"),
          layer(KVARN_LAYER_FP16, 1024),
          layer(KVARN_LAYER_KVARN, 512, "kvarn_k4v2_g64")};
}

int64_t recordBytes(const char *preset) {
  kvarn_record_layout_t r;
  EXPECT_EQ(kvarn_record_layout(preset, kD, &r), KVARN_OK);
  return r.record_bytes;
}

/// The bytes a layer should take, from the definition of each kind (kvarn.h)
/// and kvarn_record_layout only.
struct Expected {
  int32_t kind, window;
  const char *preset;
  int64_t record, cache, pool;
};
std::vector<Expected> expectedBytes(const std::vector<kvarn_layer_config_t> &ls,
                                    const char *poolPreset, int64_t blocks,
                                    int64_t slots) {
  std::vector<Expected> out;
  int64_t rows = int64_t(kG) * kHk * kD * 2; // one fp16 tile of K (or V)
  for (const kvarn_layer_config_t &l : ls) {
    Expected e{l.kind, l.window, nullptr, 0, 0, 0};
    if (l.kind == KVARN_LAYER_KVARN) {
      e.preset = l.preset ? l.preset : poolPreset;
      e.record = recordBytes(e.preset);
      e.cache = blocks * kHk * e.record;
      e.pool = 2 * slots * rows;
    } else if (l.kind == KVARN_LAYER_FP16) {
      e.pool = 2 * blocks * rows;
    }
    out.push_back(e);
  }
  return out;
}

kvarn_layer_info_t info(kvarn_pool_t *pool, int32_t l) {
  kvarn_layer_info_t i;
  std::memset(&i, 0, sizeof i);
  i.struct_size = sizeof i;
  EXPECT_EQ(kvarn_pool_layer_info(pool, l, &i), KVARN_OK) << lastError();
  return i;
}

TEST(CAPIMixedPool, PerLayerBytesAndCapacity) {
  std::vector<kvarn_layer_config_t> ls = mixedLayers();
  kvarn_pool_config_t c = config(int32_t(ls.size()));
  kvarn_pool_options_t o = options(ls);
  kvarn_pool_t *pool = nullptr;
  ASSERT_EQ(kvarn_pool_create_ex(nullptr, &c, &o, &pool), KVARN_OK)
      << lastError();
  std::vector<Expected> want =
      expectedBytes(ls, c.preset, c.num_blocks, c.pool_slots);
  // The two presets really differ, so a mix-up would show.
  ASSERT_NE(want[0].record, want[3].record);
  int64_t total = 0, fp16Layers = 0;
  for (int32_t l = 0; l < c.num_layers; ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    kvarn_layer_info_t i = info(pool, l);
    EXPECT_EQ(i.kind, want[l].kind);
    EXPECT_EQ(i.window, want[l].window);
    if (want[l].preset)
      EXPECT_STREQ(i.preset, want[l].preset);
    else
      EXPECT_EQ(i.preset, nullptr);
    EXPECT_EQ(i.record_bytes, want[l].record);
    EXPECT_EQ(i.cache_bytes, want[l].cache);
    EXPECT_EQ(i.pool_bytes, want[l].pool);
    bool kv = want[l].kind != KVARN_LAYER_ABSENT;
    EXPECT_EQ(i.fp16_bytes, kv ? int64_t(c.num_blocks) * kG * kHk * kD * 4 : 0);
    EXPECT_EQ(i.cache, 0u); // no context: no device memory
    total += want[l].cache + want[l].pool;
    fp16Layers += kv;
  }
  kvarn_capacity_t cap;
  ASSERT_EQ(kvarn_pool_capacity(pool, &cap), KVARN_OK);
  EXPECT_EQ(cap.used_bytes, total);
  EXPECT_EQ(cap.tokens, int64_t(c.num_blocks) * kG);
  int64_t fp16PerToken = 4 * fp16Layers * kHk * kD;
  EXPECT_EQ(cap.fp16_tokens, total / fp16PerToken);
  EXPECT_DOUBLE_EQ(cap.ratio_vs_fp16,
                   double(cap.tokens) / double(total / fp16PerToken));
  // Out of range and a wrong struct size are errors, out unchanged.
  kvarn_layer_info_t i;
  std::memset(&i, 0, sizeof i);
  i.struct_size = sizeof i;
  EXPECT_EQ(kvarn_pool_layer_info(pool, 6, &i), KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("layer 6 is not in [0, 6)"), std::string::npos);
  i.struct_size = 8;
  EXPECT_EQ(kvarn_pool_layer_info(pool, 0, &i), KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("struct_size"), std::string::npos);
  // A caller built against a larger kvarn_layer_info_t: its unknown tail
  // comes back zero, the known fields filled.
  struct Bigger {
    kvarn_layer_info_t i;
    uint64_t future;
  } big;
  std::memset(&big, 0xff, sizeof big);
  big.i.struct_size = sizeof big;
  ASSERT_EQ(kvarn_pool_layer_info(pool, 3, &big.i), KVARN_OK) << lastError();
  EXPECT_EQ(big.future, 0u);
  EXPECT_EQ(big.i.cache_bytes, want[3].cache);
  EXPECT_EQ(big.i.struct_size, sizeof big);
  // No common stride: kvarn_pool_buffers refuses, saying what to use.
  kvarn_pool_buffers_t b;
  EXPECT_EQ(kvarn_pool_buffers(pool, &b), KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("kvarn_pool_layer_info"), std::string::npos);
  EXPECT_EQ(kvarn_pool_destroy(pool), KVARN_OK);
}

TEST(CAPIMixedPool, UniformOptionsAreTheOldPool) {
  // Every layer kvarn with the pool's preset, said explicitly or not: the
  // same bytes, capacity and buffers as kvarn_pool_create.
  kvarn_pool_config_t c = config(3);
  std::vector<kvarn_layer_config_t> ls(3, layer(KVARN_LAYER_KVARN));
  kvarn_pool_options_t o = options(ls);
  kvarn_pool_t *a = nullptr, *b = nullptr;
  ASSERT_EQ(kvarn_pool_create(nullptr, &c, &a), KVARN_OK);
  ASSERT_EQ(kvarn_pool_create_ex(nullptr, &c, &o, &b), KVARN_OK);
  kvarn_capacity_t ca, cb;
  ASSERT_EQ(kvarn_pool_capacity(a, &ca), KVARN_OK);
  ASSERT_EQ(kvarn_pool_capacity(b, &cb), KVARN_OK);
  EXPECT_EQ(ca.used_bytes, cb.used_bytes);
  EXPECT_EQ(ca.fp16_tokens, cb.fp16_tokens);
  kvarn_cache_shape_t s;
  ASSERT_EQ(
      kvarn_cache_shape(c.preset, kD, kHk, c.num_blocks, c.pool_slots, &s),
      KVARN_OK);
  EXPECT_EQ(ca.used_bytes, 3 * (s.cache_bytes + 2 * s.pool_bytes));
  kvarn_pool_buffers_t ba;
  ASSERT_EQ(kvarn_pool_buffers(a, &ba), KVARN_OK);
  EXPECT_EQ(ba.cache_layer_stride, s.cache_bytes);
  EXPECT_EQ(ba.pool_layer_stride, s.pool_bytes);
  EXPECT_EQ(kvarn_pool_destroy(a), KVARN_OK);
  EXPECT_EQ(kvarn_pool_destroy(b), KVARN_OK);
}

TEST(CAPIMixedPool, CapacityPlanPerLayer) {
  std::vector<kvarn_layer_config_t> ls = mixedLayers();
  kvarn_pool_config_t c = config(int32_t(ls.size()));
  kvarn_pool_options_t o = options(ls);
  const int64_t budget = int64_t(3) << 30, requests = 16;
  kvarn_capacity_t cap;
  std::vector<kvarn_layer_info_t> per(ls.size());
  per[0].struct_size = sizeof(kvarn_layer_info_t);
  ASSERT_EQ(kvarn_capacity_plan_ex(&c, &o, budget, requests, -1, &cap,
                                   per.data(), int32_t(per.size())),
            KVARN_OK)
      << lastError();
  // Per-layer bytes at the planned size, from the definition.
  std::vector<Expected> want =
      expectedBytes(ls, c.preset, cap.num_blocks, cap.pool_slots);
  int64_t total = 0, perBlock = 0, kvLayers = 0;
  for (size_t l = 0; l < ls.size(); ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    EXPECT_EQ(per[l].kind, want[l].kind);
    EXPECT_EQ(per[l].cache_bytes, want[l].cache);
    EXPECT_EQ(per[l].pool_bytes, want[l].pool);
    total += want[l].cache + want[l].pool;
    if (want[l].kind == KVARN_LAYER_KVARN)
      perBlock += kHk * want[l].record;
    if (want[l].kind == KVARN_LAYER_FP16)
      perBlock += 2 * int64_t(kG) * kHk * kD * 2;
    kvLayers += want[l].kind != KVARN_LAYER_ABSENT;
  }
  EXPECT_EQ(cap.used_bytes, total);
  EXPECT_LE(cap.used_bytes, budget);
  EXPECT_GT(cap.used_bytes + perBlock, budget); // as many blocks as fit
  EXPECT_EQ(cap.tokens, cap.num_blocks * kG);
  EXPECT_EQ(cap.fp16_tokens, budget / (4 * kvLayers * kHk * kD));
  EXPECT_DOUBLE_EQ(cap.ratio_vs_fp16,
                   double(cap.tokens) / double(cap.fp16_tokens));
  // Two fp16 layers of five with KV: below the all-kvarn ratio, above 1.
  kvarn_capacity_t all;
  ASSERT_EQ(kvarn_capacity_plan(c.preset, kD, int32_t(kvLayers), kHk, budget,
                                requests, -1, &all),
            KVARN_OK);
  EXPECT_LT(cap.ratio_vs_fp16, all.ratio_vs_fp16);
  EXPECT_GT(cap.ratio_vs_fp16, 1.0);
  // NULL options: the same as kvarn_capacity_plan.
  kvarn_capacity_t plain, ex;
  ASSERT_EQ(kvarn_capacity_plan(c.preset, kD, c.num_layers, kHk, budget,
                                requests, -1, &plain),
            KVARN_OK);
  ASSERT_EQ(kvarn_capacity_plan_ex(&c, nullptr, budget, requests, -1, &ex,
                                   nullptr, 0),
            KVARN_OK);
  EXPECT_EQ(plain.num_blocks, ex.num_blocks);
  EXPECT_EQ(plain.used_bytes, ex.used_bytes);
  EXPECT_DOUBLE_EQ(plain.ratio_vs_fp16, ex.ratio_vs_fp16);
  // Errors.
  EXPECT_EQ(
      kvarn_capacity_plan_ex(&c, &o, budget, requests, -1, &cap, nullptr, 3),
      KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(
      kvarn_capacity_plan_ex(&c, &o, 1000, requests, -1, &cap, nullptr, 0),
      KVARN_ERROR_OUT_OF_MEMORY);
  per[0].struct_size = 4;
  EXPECT_EQ(
      kvarn_capacity_plan_ex(&c, &o, budget, requests, -1, &cap, per.data(), 3),
      KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("layers[0].struct_size 4"), std::string::npos)
      << lastError();
}

TEST(CAPIMixedPool, BadConfigsAreRejectedClearly) {
  kvarn_pool_config_t c = config(3);
  kvarn_pool_t *pool = nullptr;
  auto rejects = [&](std::vector<kvarn_layer_config_t> ls, kvarn_status_t want,
                     const char *needle,
                     kvarn_pool_options_t *custom = nullptr) {
    kvarn_pool_options_t o = options(ls);
    EXPECT_EQ(kvarn_pool_create_ex(nullptr, &c, custom ? custom : &o, &pool),
              want)
        << needle;
    EXPECT_NE(lastError().find(needle), std::string::npos) << lastError();
    EXPECT_EQ(pool, nullptr);
    // The same check in the capacity plan.
    kvarn_capacity_t cap;
    EXPECT_EQ(kvarn_capacity_plan_ex(&c, custom ? custom : &o, 1LL << 32, 4, -1,
                                     &cap, nullptr, 0),
              want);
  };
  kvarn_layer_config_t k = layer(KVARN_LAYER_KVARN);
  rejects({k, layer(7), k}, KVARN_ERROR_INVALID_ARGUMENT, "layer 1: kind 7");
  rejects({k, layer(KVARN_LAYER_FP16, -5), k}, KVARN_ERROR_INVALID_ARGUMENT,
          "layer 1: window -5 is negative");
  rejects({k, k, layer(KVARN_LAYER_ABSENT, 128)}, KVARN_ERROR_INVALID_ARGUMENT,
          "layer 2 is absent");
  rejects({k, layer(KVARN_LAYER_FP16, 0, "kvarn_k4v4_g64"), k},
          KVARN_ERROR_INVALID_ARGUMENT, "only kvarn layers have a preset");
  rejects({k, layer(KVARN_LAYER_KVARN, 0, "kvarn_k4v2_g128"), k},
          KVARN_ERROR_UNSUPPORTED_SHAPE, "share its block size");
  rejects({k, layer(KVARN_LAYER_KVARN, 0, "kvarn_nope"), k},
          KVARN_ERROR_UNKNOWN_PRESET, "layer 1");
  std::vector<kvarn_layer_config_t> none(3, layer(KVARN_LAYER_ABSENT));
  rejects(none, KVARN_ERROR_INVALID_ARGUMENT, "every one of the 3 layers");
  // Struct sizes: too small, and a larger struct whose unknown tail is set.
  std::vector<kvarn_layer_config_t> ok(3, k);
  kvarn_pool_options_t o = options(ok);
  o.struct_size = 4;
  rejects(ok, KVARN_ERROR_INVALID_ARGUMENT, "struct_size 4", &o);
  o = options(ok);
  o.layer_config_size = 8;
  rejects(ok, KVARN_ERROR_INVALID_ARGUMENT, "layer_config_size 8", &o);
  struct Bigger {
    kvarn_pool_options_t o;
    uint64_t future;
  } big;
  std::memset(&big, 0, sizeof big);
  big.o = options(ok);
  big.o.struct_size = sizeof big;
  big.future = 1;
  rejects(ok, KVARN_ERROR_INVALID_ARGUMENT, "past the", &big.o);
  // The same larger struct with its tail zero is a valid call, and so are
  // larger layer entries whose tails are zero.
  big.future = 0;
  struct BigLayer {
    kvarn_layer_config_t l;
    uint64_t future;
  };
  std::vector<BigLayer> bl(3);
  std::memset(bl.data(), 0, bl.size() * sizeof(BigLayer));
  bl[1].l.kind = KVARN_LAYER_FP16;
  big.o.layers = &bl[0].l;
  big.o.layer_config_size = sizeof(BigLayer);
  ASSERT_EQ(kvarn_pool_create_ex(nullptr, &c, &big.o, &pool), KVARN_OK)
      << lastError();
  EXPECT_EQ(info(pool, 1).kind, KVARN_LAYER_FP16);
  EXPECT_EQ(kvarn_pool_destroy(pool), KVARN_OK);
  pool = nullptr;
  bl[2].future = 3;
  EXPECT_EQ(kvarn_pool_create_ex(nullptr, &c, &big.o, &pool),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("layer 2 sets fields past"), std::string::npos)
      << lastError();
  EXPECT_EQ(pool, nullptr);
}

TEST(CAPIMixedPool, CallsOnAbsentLayersAreErrors) {
  std::vector<kvarn_layer_config_t> ls = mixedLayers();
  kvarn_pool_config_t c = config(int32_t(ls.size()));
  kvarn_pool_options_t o = options(ls);
  kvarn_pool_t *pool = nullptr;
  ASSERT_EQ(kvarn_pool_create_ex(nullptr, &c, &o, &pool), KVARN_OK);
  kvarn_step_t *step = nullptr;
  ASSERT_EQ(kvarn_step_create(pool, &step), KVARN_OK);
  ASSERT_EQ(kvarn_pool_add_request(pool, 1), KVARN_OK);
  int64_t id = 1;
  int32_t count = 1;
  ASSERT_EQ(kvarn_step_begin(step, 1, &id, &count), KVARN_OK);
  for (kvarn_status_t s : {kvarn_step_write_kv(step, 2, 1, 1),
                           kvarn_step_decode(step, 2, 1, 1, 1.0f),
                           kvarn_step_verify(step, 2, 1, 1, 1.0f)}) {
    EXPECT_EQ(s, KVARN_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(lastError().find("layer 2 is absent"), std::string::npos)
        << lastError();
  }
  // A layer with KV gets as far as the missing device.
  EXPECT_EQ(kvarn_step_decode(step, 1, 1, 1, 1.0f),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("without a context"), std::string::npos);
  ASSERT_EQ(kvarn_step_commit(step, nullptr), KVARN_OK);
  kvarn_pool_stats_t st;
  ASSERT_EQ(kvarn_pool_stats(pool, &st), KVARN_OK);
  EXPECT_EQ(st.free_blocks, c.num_blocks - 1);
  EXPECT_EQ(kvarn_step_destroy(step), KVARN_OK);
  EXPECT_EQ(kvarn_pool_destroy(pool), KVARN_OK);
}

// Random serving sequences on a mixed pool: requests come and go, steps
// append and accept drafts, prefixes are shared, flushes run; at every
// step the free counts match the blocks the requests hold, and once every
// request is freed the free lists are complete.
TEST(CAPIMixedPool, FreeListsCompleteAfterRandomServing) {
  std::vector<kvarn_layer_config_t> ls = mixedLayers();
  kvarn_pool_config_t c = config(int32_t(ls.size()));
  kvarn_pool_options_t o = options(ls);
  int64_t steps = 0, flushed = 0, shared = 0, refused = 0;
  for (int round = 0; round < 20; ++round) {
    uint64_t seed = std::random_device{}();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::printf("CAPIMixedPool random serving: seed %llu\n",
                (unsigned long long)seed);
    std::mt19937_64 rng(seed);
    auto pick = [&](int n) { return int(rng() % uint64_t(n)); };
    kvarn_pool_t *pool = nullptr;
    ASSERT_EQ(kvarn_pool_create_ex(nullptr, &c, &o, &pool), KVARN_OK);
    kvarn_step_t *step = nullptr;
    ASSERT_EQ(kvarn_step_create(pool, &step), KVARN_OK);
    std::vector<int64_t> live, finished;
    int64_t next = 1;
    for (int op = 0; op < 300; ++op) {
      int what = pick(10);
      if (what == 0 && int(live.size() + finished.size()) < c.max_requests) {
        ASSERT_EQ(kvarn_pool_add_request(pool, next), KVARN_OK);
        // Sometimes a shared prefix of a committed request.
        if (!live.empty() && pick(2)) {
          int64_t src = live[pick(int(live.size()))];
          kvarn_request_info_t si;
          ASSERT_EQ(kvarn_pool_request_info(pool, src, &si), KVARN_OK);
          int32_t full = si.committed / kG;
          if (full > 0)
            ASSERT_EQ(
                kvarn_pool_share_prefix(pool, next, src, (1 + pick(full)) * kG),
                KVARN_OK)
                << lastError();
          shared += full > 0;
        }
        live.push_back(next++);
      } else if (what <= 5 && !live.empty()) {
        // A step over some live requests; exhaustion is a clean refusal.
        std::vector<int64_t> ids;
        std::vector<int32_t> counts, accepted;
        for (int64_t id : live)
          if (pick(2)) {
            ids.push_back(id);
            counts.push_back(pick(3) ? 1 + pick(4) : pick(150));
          }
        if (ids.empty())
          continue;
        kvarn_pool_stats_t before;
        ASSERT_EQ(kvarn_pool_stats(pool, &before), KVARN_OK);
        kvarn_status_t s = kvarn_step_begin(step, int32_t(ids.size()),
                                            ids.data(), counts.data());
        if (s != KVARN_OK) {
          ASSERT_TRUE(s == KVARN_ERROR_POOL_EXHAUSTED ||
                      s == KVARN_ERROR_INVALID_ARGUMENT)
              << lastError();
          kvarn_pool_stats_t after;
          ASSERT_EQ(kvarn_pool_stats(pool, &after), KVARN_OK);
          ASSERT_EQ(after.free_blocks, before.free_blocks);
          ASSERT_EQ(after.free_slots, before.free_slots);
          ++refused;
          continue;
        }
        for (int32_t n : counts)
          accepted.push_back(pick(n + 1));
        ASSERT_EQ(kvarn_step_commit(step, accepted.data()), KVARN_OK);
        ++steps;
      } else if (what == 6) {
        int32_t n = -1;
        ASSERT_EQ(kvarn_pool_flush(pool, &n), KVARN_OK);
        flushed += n;
        kvarn_pool_stats_t st;
        ASSERT_EQ(kvarn_pool_stats(pool, &st), KVARN_OK);
        ASSERT_EQ(st.pending_flush, 0);
      } else if (what == 7 && !live.empty()) {
        size_t i = pick(int(live.size()));
        ASSERT_EQ(kvarn_pool_finish(pool, live[i]), KVARN_OK);
        finished.push_back(live[i]);
        live.erase(live.begin() + i);
      } else if (what == 8 && !live.empty()) {
        ASSERT_EQ(kvarn_pool_preempt(pool, live[pick(int(live.size()))]),
                  KVARN_OK);
      } else if (what == 9 && !finished.empty()) {
        size_t i = pick(int(finished.size()));
        ASSERT_EQ(kvarn_pool_free(pool, finished[i]), KVARN_OK);
        finished.erase(finished.begin() + i);
      }
      // Free blocks: every block not held by some request (shared blocks
      // counted once).
      std::map<int32_t, int> held;
      for (const auto *list : {&live, &finished})
        for (int64_t id : *list) {
          int32_t blocks[64], n = 0;
          ASSERT_EQ(kvarn_pool_request_blocks(pool, id, blocks, 64, &n),
                    KVARN_OK);
          for (int32_t k = 0; k < n; ++k)
            ++held[blocks[k]];
        }
      kvarn_pool_stats_t st;
      ASSERT_EQ(kvarn_pool_stats(pool, &st), KVARN_OK);
      ASSERT_EQ(st.free_blocks, c.num_blocks - int32_t(held.size()));
      std::vector<int32_t> b2s(c.num_blocks);
      ASSERT_EQ(kvarn_pool_block_to_slot(pool, b2s.data(), c.num_blocks),
                KVARN_OK);
      int32_t inPool = 0;
      for (int32_t b = 0; b < c.num_blocks; ++b) {
        ASSERT_TRUE(b2s[b] < 0 || held.count(b)) << "block " << b;
        inPool += b2s[b] >= 0;
      }
      ASSERT_EQ(st.free_slots, c.pool_slots - inPool);
    }
    for (int64_t id : live)
      ASSERT_EQ(kvarn_pool_finish(pool, id), KVARN_OK);
    for (int64_t id : live)
      ASSERT_EQ(kvarn_pool_free(pool, id), KVARN_OK);
    for (int64_t id : finished)
      ASSERT_EQ(kvarn_pool_free(pool, id), KVARN_OK);
    kvarn_pool_stats_t st;
    ASSERT_EQ(kvarn_pool_stats(pool, &st), KVARN_OK);
    EXPECT_EQ(st.num_requests, 0);
    EXPECT_EQ(st.free_blocks, c.num_blocks);
    EXPECT_EQ(st.free_slots, c.pool_slots);
    EXPECT_EQ(st.pending_flush, 0);
    EXPECT_EQ(kvarn_step_destroy(step), KVARN_OK);
    EXPECT_EQ(kvarn_pool_destroy(pool), KVARN_OK);
  }
  // The sequences did what they are for.
  std::printf("steps %lld, refused %lld, flushed %lld, shared %lld\n",
              (long long)steps, (long long)refused, (long long)flushed,
              (long long)shared);
  EXPECT_GT(steps, 100);
  EXPECT_GT(refused, 0);
  EXPECT_GT(flushed, 20);
  EXPECT_GT(shared, 0);
}

} // namespace
