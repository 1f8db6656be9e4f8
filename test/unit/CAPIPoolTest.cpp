//===- CAPIPoolTest.cpp - the managed pool and sizes through the C API ----===//
//
// Pools without a context (bookkeeping only) so this runs in CI; the same
// pool on a GPU is test/gpu/PoolGpuTest.cpp. Several host threads drive
// different requests of one pool.
//
//===----------------------------------------------------------------------===//

#include "kvarn/kvarn.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace {

kvarn_pool_config_t smallConfig() {
  kvarn_pool_config_t c;
  std::memset(&c, 0, sizeof c);
  c.preset = "kvarn_k4v2_g64";
  c.num_layers = 2;
  c.num_kv_heads = 2;
  c.num_q_heads = 8;
  c.head_dim = 64;
  c.num_blocks = 32;
  c.pool_slots = 12;
  c.max_requests = 8;
  c.max_blocks_per_request = 8;
  return c;
}

/// Everything the C API shows of a pool, to compare before and after.
std::string snapshot(kvarn_pool_t *pool, std::vector<int64_t> ids) {
  std::string s;
  kvarn_pool_stats_t st;
  EXPECT_EQ(kvarn_pool_stats(pool, &st), KVARN_OK);
  s += std::to_string(st.num_requests) + "/" + std::to_string(st.free_blocks) +
       "/" + std::to_string(st.free_slots) + "/" +
       std::to_string(st.pending_flush) + "/" + std::to_string(st.open_steps);
  std::vector<int32_t> b2s(32);
  EXPECT_EQ(kvarn_pool_block_to_slot(pool, b2s.data(), 32), KVARN_OK);
  for (int32_t x : b2s)
    s += " " + std::to_string(x);
  for (int64_t id : ids) {
    kvarn_request_info_t info;
    if (kvarn_pool_request_info(pool, id, &info) != KVARN_OK) {
      s += "|none";
      continue;
    }
    s += "|" + std::to_string(info.live) + "," + std::to_string(info.length) +
         "," + std::to_string(info.committed);
    int32_t blocks[64], n = 0;
    EXPECT_EQ(kvarn_pool_request_blocks(pool, id, blocks, 64, &n), KVARN_OK);
    for (int i = 0; i < n; ++i)
      s += " " + std::to_string(blocks[i]);
  }
  return s;
}

std::string lastError() { return kvarn_last_error(); }

TEST(CAPISizes, CacheShapeAndScratch) {
  kvarn_cache_shape_t s;
  ASSERT_EQ(kvarn_cache_shape("kvarn_k4v2_g128", 128, 8, 100, 10, &s), KVARN_OK);
  EXPECT_EQ(s.record_bytes, 13824);
  EXPECT_EQ(s.block_size, 128);
  EXPECT_EQ(s.cache_bytes, 100LL * 8 * 13824);
  EXPECT_EQ(s.pool_bytes, 10LL * 128 * 8 * 128 * 2);
  EXPECT_EQ(kvarn_cache_shape("nope", 128, 8, 1, 1, &s),
            KVARN_ERROR_UNKNOWN_PRESET);
  EXPECT_EQ(kvarn_cache_shape("kvarn_k4v2_g128", 128, 0, 1, 1, &s),
            KVARN_ERROR_INVALID_ARGUMENT);
  int64_t out = 0, lse = 0;
  ASSERT_EQ(kvarn_decode_split_scratch_bytes(3, 8, 4, 128, &out, &lse),
            KVARN_OK);
  EXPECT_EQ(lse, 3LL * 8 * 64 * 4 * 4); // MAX_SPLITS = 64
  EXPECT_EQ(out, lse * 128);
}

// The split count's arguments are checked before it needs a GPU; a bad one
// names itself and leaves *num_splits alone.
TEST(CAPISizes, DecodeSplitCountRejectsBadDeployments) {
  int32_t splits = -7;
  EXPECT_EQ(kvarn_decode_split_count(nullptr, 8, 256, 8, nullptr),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("num_splits"), std::string::npos) << lastError();
  for (auto [batch, blocks, heads] :
       {std::tuple{0, 256, 8}, std::tuple{8, 0, 8}, std::tuple{8, 256, -1}}) {
    EXPECT_EQ(kvarn_decode_split_count(nullptr, batch, blocks, heads, &splits),
              KVARN_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(lastError().find("must be positive"), std::string::npos)
        << lastError();
  }
  EXPECT_EQ(kvarn_decode_split_count(nullptr, 8, 256, 8, &splits),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("kernels"), std::string::npos) << lastError();
  EXPECT_EQ(splits, -7);
}

// Callers size allocations from these: a byte count past int64 is an error,
// never KVARN_OK with a wrapped value, and `out` is left as it was.
TEST(CAPISizes, ByteCountsThatOverflowAreErrors) {
  const int64_t perBlock = 8 * 13824; // 8 KV heads of kvarn_k4v2_g128, D=128
  kvarn_cache_shape_t s, untouched;
  std::memset(&untouched, 0x5a, sizeof untouched);
  s = untouched;
  EXPECT_EQ(kvarn_cache_shape("kvarn_k4v2_g128", 128, 8, INT64_MAX, 0, &s),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("do not fit in a 64-bit byte count"),
            std::string::npos) << lastError();
  EXPECT_EQ(std::memcmp(&s, &untouched, sizeof s), 0);
  EXPECT_EQ(kvarn_cache_shape("kvarn_k4v2_g128", 128, 8, 0, INT64_MAX, &s),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_cache_shape("kvarn_k4v2_g128", 128, INT32_MAX,
                              INT64_MAX / 13824 / 1000, 0, &s),
            KVARN_ERROR_INVALID_ARGUMENT);
  // The largest cache that fits is exact; one more block is an error, and so
  // is a pool whose bytes no longer fit beside it.
  ASSERT_EQ(kvarn_cache_shape("kvarn_k4v2_g128", 128, 8, INT64_MAX / perBlock,
                              0, &s),
            KVARN_OK);
  EXPECT_EQ(s.cache_bytes, INT64_MAX / perBlock * perBlock);
  EXPECT_EQ(kvarn_cache_shape("kvarn_k4v2_g128", 128, 8,
                              INT64_MAX / perBlock + 1, 0, &s),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_cache_shape("kvarn_k4v2_g128", 128, 8, INT64_MAX / perBlock,
                              1000, &s),
            KVARN_ERROR_INVALID_ARGUMENT);

  int64_t out = -1, lse = -1;
  EXPECT_EQ(kvarn_decode_split_scratch_bytes(INT32_MAX, INT32_MAX, INT32_MAX,
                                             512, &out, &lse),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_decode_split_scratch_bytes(INT32_MAX, INT32_MAX, 1, 512,
                                             &out, &lse),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(out, -1);
  EXPECT_EQ(lse, -1);
  ASSERT_EQ(kvarn_decode_split_scratch_bytes(INT32_MAX, 1, 1, 512, &out, &lse),
            KVARN_OK);
  EXPECT_EQ(lse, int64_t(INT32_MAX) * 64 * 4);
  EXPECT_EQ(out, lse * 512);

  kvarn_capacity_t c;
  EXPECT_EQ(kvarn_capacity_plan("kvarn_k4v2_g128", 128, INT32_MAX, INT32_MAX,
                                INT64_MAX, 64, -1, &c),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_capacity_plan("kvarn_k4v2_g128", 128, 32, 8, INT64_MAX,
                                INT64_MAX, -1, &c),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_capacity_plan("kvarn_k4v2_g128", 128, 32, 8, INT64_MAX,
                                INT64_MAX, 136, &c),
            KVARN_ERROR_OUT_OF_MEMORY);
  EXPECT_EQ(kvarn_capacity_plan("kvarn_k4v2_g128", 128, 32, 8, INT64_MAX, 64,
                                INT64_MAX, &c),
            KVARN_ERROR_OUT_OF_MEMORY);
  // A budget past any fp16 cache's per-token bytes still plans.
  ASSERT_EQ(kvarn_capacity_plan("kvarn_k4v2_g128", 128, 32, 8, INT64_MAX, 64,
                                -1, &c),
            KVARN_OK);
  EXPECT_EQ(c.num_blocks, INT32_MAX / 128);
  EXPECT_GT(c.used_bytes, 0);
}

TEST(CAPISizes, CapacityPlanOfTheIssueFigure) {
  kvarn_capacity_t c;
  ASSERT_EQ(kvarn_capacity_plan("kvarn_k4v2_g128", 128, 32, 8, int64_t(60) << 30,
                                64, -1, &c),
            KVARN_OK);
  EXPECT_GE(c.ratio_vs_fp16, 4.5);
  EXPECT_EQ(c.tokens, c.num_blocks * 128);
  EXPECT_EQ(kvarn_capacity_plan("kvarn_k4v2_g128", 128, 32, 8, 1 << 20, 64, -1,
                                &c),
            KVARN_ERROR_OUT_OF_MEMORY);
}

TEST(CAPIPool, ConfigErrors) {
  kvarn_pool_t *pool = nullptr;
  kvarn_pool_config_t c = smallConfig();
  c.block_size = 128; // the g64 preset's tile is 64
  EXPECT_EQ(kvarn_pool_create(nullptr, &c, &pool),
            KVARN_ERROR_UNSUPPORTED_SHAPE);
  EXPECT_NE(lastError().find("block_size 128"), std::string::npos);
  c = smallConfig();
  c.preset = "kvarn_k3v3";
  EXPECT_EQ(kvarn_pool_create(nullptr, &c, &pool), KVARN_ERROR_UNKNOWN_PRESET);
  c = smallConfig();
  c.num_q_heads = 7;
  EXPECT_EQ(kvarn_pool_create(nullptr, &c, &pool),
            KVARN_ERROR_UNSUPPORTED_SHAPE);
  c = smallConfig();
  c.head_dim = 100;
  EXPECT_EQ(kvarn_pool_create(nullptr, &c, &pool),
            KVARN_ERROR_UNSUPPORTED_SHAPE);
  c = smallConfig();
  c.pool_slots = 0;
  EXPECT_EQ(kvarn_pool_create(nullptr, &c, &pool),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_pool_create(nullptr, nullptr, &pool),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(pool, nullptr);
  // Sizes are checked before anything is allocated: slots a pool can never
  // use (this took 39 s and 8.4 GB), byte counts past int64, and layer-wide
  // block and slot indices past the flush kernel's i32.
  c = smallConfig();
  c.pool_slots = INT32_MAX;
  EXPECT_EQ(kvarn_pool_create(nullptr, &c, &pool),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("2147483647 pool slots for 32 blocks"),
            std::string::npos) << lastError();
  c = smallConfig();
  c.num_layers = c.num_kv_heads = c.num_q_heads = INT32_MAX;
  EXPECT_EQ(kvarn_pool_create(nullptr, &c, &pool),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("64-bit byte count"), std::string::npos)
      << lastError();
  c = smallConfig();
  c.num_layers = 1 << 27;
  EXPECT_EQ(kvarn_pool_create(nullptr, &c, &pool),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("32-bit block and slot indices"),
            std::string::npos) << lastError();
  EXPECT_EQ(pool, nullptr);
  c = smallConfig();
  c.block_size = 64;
  ASSERT_EQ(kvarn_pool_create(nullptr, &c, &pool), KVARN_OK);
  EXPECT_EQ(kvarn_pool_destroy(pool), KVARN_OK);
}

TEST(CAPIPool, AServingLoopWithoutADevice) {
  kvarn_pool_config_t c = smallConfig();
  kvarn_pool_t *pool = nullptr;
  ASSERT_EQ(kvarn_pool_create(nullptr, &c, &pool), KVARN_OK);
  kvarn_step_t *step = nullptr;
  ASSERT_EQ(kvarn_step_create(pool, &step), KVARN_OK);
  for (int64_t id : {10, 11})
    ASSERT_EQ(kvarn_pool_add_request(pool, id), KVARN_OK);
  // Prompts of 100 and 30 tokens.
  int64_t ids[] = {10, 11};
  int32_t prompt[] = {100, 30};
  ASSERT_EQ(kvarn_step_begin(step, 2, ids, prompt), KVARN_OK);
  int32_t n = 0;
  std::vector<int32_t> mapping(130);
  ASSERT_EQ(kvarn_step_slot_mapping(step, mapping.data(), 130, &n), KVARN_OK);
  EXPECT_EQ(n, 130);
  int32_t blocks[8], nb = 0;
  ASSERT_EQ(kvarn_pool_request_blocks(pool, 10, blocks, 8, &nb), KVARN_OK);
  ASSERT_EQ(nb, 2);
  EXPECT_EQ(mapping[0], blocks[0] * 64);
  EXPECT_EQ(mapping[99], blocks[1] * 64 + 35);
  // No device: kernels refuse, saying why.
  EXPECT_EQ(kvarn_step_write_kv(step, 0, 1, 1), KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("without a context"), std::string::npos);
  // A flush while a step is open would free slots its tables name.
  EXPECT_EQ(kvarn_pool_flush(pool, nullptr), KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_pool_finish(pool, 10), KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_step_destroy(step), KVARN_ERROR_INVALID_ARGUMENT);
  ASSERT_EQ(kvarn_step_commit(step, nullptr), KVARN_OK);
  int32_t flushed = -1;
  ASSERT_EQ(kvarn_pool_flush(pool, &flushed), KVARN_OK);
  EXPECT_EQ(flushed, 0); // block 1 of request 10 is not full
  // Speculative: 3 drafts for 10, 1 token for 11; accept 1 and 1.
  int32_t draft[] = {3, 1}, accepted[] = {1, 1};
  ASSERT_EQ(kvarn_step_begin(step, 2, ids, draft), KVARN_OK);
  int32_t tooMany[] = {4, 1};
  std::string before = snapshot(pool, {10, 11});
  EXPECT_EQ(kvarn_step_commit(step, tooMany), KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(snapshot(pool, {10, 11}), before);
  ASSERT_EQ(kvarn_step_commit(step, accepted), KVARN_OK);
  kvarn_request_info_t info;
  ASSERT_EQ(kvarn_pool_request_info(pool, 10, &info), KVARN_OK);
  EXPECT_EQ(info.length, 101);
  EXPECT_EQ(info.committed, 101);
  // Request 10 reaches 128: block 1 full and committed, flushed.
  int32_t fill[] = {27};
  ASSERT_EQ(kvarn_step_begin(step, 1, ids, fill), KVARN_OK);
  ASSERT_EQ(kvarn_step_commit(step, nullptr), KVARN_OK);
  ASSERT_EQ(kvarn_pool_flush(pool, &flushed), KVARN_OK);
  EXPECT_EQ(flushed, 1);
  // Share its first two blocks with a new request.
  ASSERT_EQ(kvarn_pool_add_request(pool, 12), KVARN_OK);
  ASSERT_EQ(kvarn_pool_share_prefix(pool, 12, 10, 128), KVARN_OK);
  ASSERT_EQ(kvarn_pool_request_info(pool, 12, &info), KVARN_OK);
  EXPECT_EQ(info.length, 128);
  kvarn_capacity_t cap;
  ASSERT_EQ(kvarn_pool_capacity(pool, &cap), KVARN_OK);
  EXPECT_EQ(cap.tokens, 32 * 64);
  EXPECT_GT(cap.ratio_vs_fp16, 1.0);
  for (int64_t id : {10, 11, 12})
    ASSERT_EQ(kvarn_pool_free(pool, id), KVARN_OK);
  kvarn_pool_stats_t st;
  ASSERT_EQ(kvarn_pool_stats(pool, &st), KVARN_OK);
  EXPECT_EQ(st.free_blocks, 32);
  EXPECT_EQ(st.free_slots, 12);
  EXPECT_EQ(kvarn_pool_destroy(pool), KVARN_ERROR_INVALID_ARGUMENT); // a step
  ASSERT_EQ(kvarn_step_destroy(step), KVARN_OK);
  EXPECT_EQ(kvarn_pool_destroy(pool), KVARN_OK);
}

TEST(CAPIPool, FailingCallsLeaveThePoolAsItWas) {
  kvarn_pool_config_t c = smallConfig();
  kvarn_pool_t *pool = nullptr;
  ASSERT_EQ(kvarn_pool_create(nullptr, &c, &pool), KVARN_OK);
  kvarn_step_t *step = nullptr, *other = nullptr;
  ASSERT_EQ(kvarn_step_create(pool, &step), KVARN_OK);
  ASSERT_EQ(kvarn_step_create(pool, &other), KVARN_OK);
  for (int64_t id : {1, 2, 3})
    ASSERT_EQ(kvarn_pool_add_request(pool, id), KVARN_OK);
  int64_t ids[] = {1, 2, 3, 99};
  int32_t counts[] = {64, 64, 1, 1};
  ASSERT_EQ(kvarn_step_begin(step, 2, ids, counts), KVARN_OK);
  ASSERT_EQ(kvarn_step_commit(step, nullptr), KVARN_OK);
  std::vector<int64_t> all = {1, 2, 3, 99};
  std::string before = snapshot(pool, all);
  auto unchanged = [&](kvarn_status_t got, kvarn_status_t want,
                       const char *needle) {
    EXPECT_EQ(got, want) << lastError();
    EXPECT_NE(lastError().find(needle), std::string::npos) << lastError();
    EXPECT_EQ(snapshot(pool, all), before);
  };
  unchanged(kvarn_step_begin(step, 4, ids, counts),
            KVARN_ERROR_UNKNOWN_REQUEST, "99");
  int32_t huge[] = {1, 1, 9 * 64};
  unchanged(kvarn_step_begin(step, 3, ids, huge), KVARN_ERROR_INVALID_ARGUMENT,
            "max_blocks_per_request");
  int32_t slots[] = {64 * 4, 64 * 4, 64 * 4}; // 12 blocks, 10 slots free
  unchanged(kvarn_step_begin(step, 3, ids, slots), KVARN_ERROR_POOL_EXHAUSTED,
            "pool slots");
  unchanged(kvarn_step_begin(step, -1, ids, counts),
            KVARN_ERROR_INVALID_ARGUMENT, "negative");
  unchanged(kvarn_step_begin(step, 1, nullptr, counts),
            KVARN_ERROR_INVALID_ARGUMENT, "ids");
  unchanged(kvarn_pool_add_request(pool, 1), KVARN_ERROR_INVALID_ARGUMENT,
            "already exists");
  unchanged(kvarn_pool_finish(pool, 99), KVARN_ERROR_UNKNOWN_REQUEST, "99");
  unchanged(kvarn_pool_preempt(pool, 99), KVARN_ERROR_UNKNOWN_REQUEST, "99");
  unchanged(kvarn_pool_free(pool, 99), KVARN_ERROR_UNKNOWN_REQUEST, "99");
  unchanged(kvarn_pool_share_prefix(pool, 3, 1, 32),
            KVARN_ERROR_INVALID_ARGUMENT, "multiple");
  unchanged(kvarn_step_commit(step, nullptr), KVARN_ERROR_INVALID_ARGUMENT,
            "not open");
  unchanged(kvarn_step_decode(step, 0, 1, 1, 1.0f),
            KVARN_ERROR_INVALID_ARGUMENT, "not open");
  // A request in another open step.
  ASSERT_EQ(kvarn_step_begin(other, 1, ids, counts), KVARN_OK);
  before = snapshot(pool, all);
  unchanged(kvarn_step_begin(step, 1, ids, counts), KVARN_ERROR_INVALID_ARGUMENT,
            "another open step");
  unchanged(kvarn_pool_free(pool, 1), KVARN_ERROR_INVALID_ARGUMENT,
            "open step");
  ASSERT_EQ(kvarn_step_commit(other, nullptr), KVARN_OK);
  EXPECT_EQ(kvarn_step_destroy(step), KVARN_OK);
  EXPECT_EQ(kvarn_step_destroy(other), KVARN_OK);
  EXPECT_EQ(kvarn_pool_destroy(pool), KVARN_OK);
  // Null handles.
  EXPECT_EQ(kvarn_pool_add_request(nullptr, 1), KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_step_begin(nullptr, 0, nullptr, nullptr),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_pool_destroy(nullptr), KVARN_OK);
  EXPECT_EQ(kvarn_kernels_create(nullptr, nullptr, 128, 1, nullptr),
            KVARN_ERROR_INVALID_ARGUMENT);
}

// Threads each own some requests and a step, and run prompt, decode and
// speculative steps, finishing and freeing requests; one more thread flushes
// whenever no step is open. The mutex serializes them; at the end every
// block and slot is free and the bookkeeping never failed unexpectedly.
TEST(CAPIPool, SeveralThreadsDriveDifferentRequests) {
  kvarn_pool_config_t c = smallConfig();
  c.num_blocks = 256;
  c.pool_slots = 128;
  c.max_requests = 64;
  c.max_blocks_per_request = 16;
  kvarn_pool_t *pool = nullptr;
  ASSERT_EQ(kvarn_pool_create(nullptr, &c, &pool), KVARN_OK);
  constexpr int kThreads = 4;
  std::atomic<int> failures{0}, done{0};
  std::atomic<long> flushedBlocks{0};
  auto worker = [&](int t) {
    std::mt19937 rng(t);
    kvarn_step_t *step = nullptr;
    if (kvarn_step_create(pool, &step) != KVARN_OK) {
      ++failures;
      return;
    }
    for (int round = 0; round < 40; ++round) {
      int64_t ids[2] = {t * 1000 + round * 2, t * 1000 + round * 2 + 1};
      for (int64_t id : ids)
        failures += kvarn_pool_add_request(pool, id) != KVARN_OK;
      int32_t prompt[2] = {int32_t(rng() % 200 + 1), int32_t(rng() % 200 + 1)};
      kvarn_status_t s = kvarn_step_begin(step, 2, ids, prompt);
      if (s == KVARN_OK) {
        failures += kvarn_step_commit(step, nullptr) != KVARN_OK;
        for (int i = 0; i < 20; ++i) {
          int32_t counts[2] = {int32_t(rng() % 4 + 1), 1};
          if (kvarn_step_begin(step, 2, ids, counts) != KVARN_OK)
            break; // out of slots until a flush: fine
          int32_t accepted[2] = {int32_t(rng() % (counts[0] + 1)), 1};
          failures += kvarn_step_commit(step, accepted) != KVARN_OK;
        }
      } else if (s != KVARN_ERROR_POOL_EXHAUSTED) {
        ++failures;
      }
      failures += kvarn_pool_finish(pool, ids[0]) != KVARN_OK;
      for (int64_t id : ids)
        failures += kvarn_pool_free(pool, id) != KVARN_OK;
    }
    failures += kvarn_step_destroy(step) != KVARN_OK;
    ++done;
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back(worker, t);
  std::thread flusher([&] {
    while (done.load() < kThreads) {
      int32_t n = 0;
      kvarn_status_t s = kvarn_pool_flush(pool, &n);
      if (s == KVARN_OK)
        flushedBlocks += n;
      else if (s != KVARN_ERROR_INVALID_ARGUMENT) // steps open: try again
        ++failures;
      std::this_thread::yield();
    }
  });
  for (std::thread &t : threads)
    t.join();
  flusher.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(kvarn_pool_flush(pool, nullptr), KVARN_OK);
  kvarn_pool_stats_t st;
  ASSERT_EQ(kvarn_pool_stats(pool, &st), KVARN_OK);
  EXPECT_EQ(st.num_requests, 0);
  EXPECT_EQ(st.free_blocks, 256);
  EXPECT_EQ(st.free_slots, 128);
  EXPECT_EQ(st.open_steps, 0);
  EXPECT_EQ(kvarn_pool_destroy(pool), KVARN_OK);
}

} // namespace

// An MLA pool, bookkeeping only: its bytes from the format's arithmetic,
// every full block flushed (no sink held back, unlike a dense pool), and
// its refusals.
TEST(CAPIPool, MlaPoolKeepsNoSink) {
  kvarn_pool_config_t c;
  std::memset(&c, 0, sizeof c);
  c.num_layers = 3;
  c.num_kv_heads = 1;
  c.num_q_heads = 16;
  c.head_dim = 512; // kv_lora_rank
  c.num_blocks = 10;
  c.pool_slots = 4;
  c.max_requests = 4;
  c.max_blocks_per_request = 5;
  kvarn_pool_t *pool = nullptr;
  ASSERT_EQ(kvarn_mla_pool_create(nullptr, &c, 64, &pool), KVARN_OK)
      << kvarn_last_error();
  const int64_t record = 128 * 512 / 2 + 4 * 512 + 2 * 128 + 2 * 128 * 64;
  const int64_t slot = 128 * (512 + 64) * 2;
  kvarn_capacity_t cap;
  ASSERT_EQ(kvarn_pool_capacity(pool, &cap), KVARN_OK) << kvarn_last_error();
  EXPECT_EQ(cap.num_blocks, 10);
  EXPECT_EQ(cap.tokens, 10 * 128);
  EXPECT_EQ(cap.used_bytes, 3 * (10 * record + 4 * slot));
  EXPECT_DOUBLE_EQ(cap.record_bytes_per_token, 402.0);
  EXPECT_EQ(cap.fp16_tokens, cap.used_bytes / (3 * (512 + 64) * 2));
  kvarn_layer_info_t info;
  std::memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  ASSERT_EQ(kvarn_pool_layer_info(pool, 2, &info), KVARN_OK)
      << kvarn_last_error();
  EXPECT_STREQ(info.preset, "kvarn_mla_k4_g128");
  EXPECT_EQ(info.record_bytes, record);
  EXPECT_EQ(info.cache_bytes, 10 * record);
  EXPECT_EQ(info.pool_bytes, 4 * slot);
  EXPECT_EQ(info.fp16_bytes, 10 * 128 * (512 + 64) * 2);
  EXPECT_EQ(info.cache, 0u); // no context
  kvarn_pool_buffers_t buffers;
  EXPECT_EQ(kvarn_pool_buffers(pool, &buffers), KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvarn_last_error()).find("kvarn_pool_layer_info"),
            std::string::npos);

  // A prompt of a block and 5 tokens: its first block is flushed at once.
  ASSERT_EQ(kvarn_pool_add_request(pool, 7), KVARN_OK);
  kvarn_step_t *step = nullptr;
  ASSERT_EQ(kvarn_step_create(pool, &step), KVARN_OK);
  int64_t ids[] = {7};
  int32_t counts[] = {128 + 5};
  ASSERT_EQ(kvarn_step_begin(step, 1, ids, counts), KVARN_OK)
      << kvarn_last_error();
  EXPECT_EQ(kvarn_step_verify(step, 0, 0, 0, 1.0f),
            KVARN_ERROR_INVALID_ARGUMENT); // no context
  ASSERT_EQ(kvarn_step_commit(step, nullptr), KVARN_OK);
  kvarn_pool_stats_t st;
  ASSERT_EQ(kvarn_pool_stats(pool, &st), KVARN_OK);
  EXPECT_EQ(st.pending_flush, 1);
  int32_t flushed = -1;
  ASSERT_EQ(kvarn_pool_flush(pool, &flushed), KVARN_OK) << kvarn_last_error();
  EXPECT_EQ(flushed, 1);
  ASSERT_EQ(kvarn_pool_stats(pool, &st), KVARN_OK);
  EXPECT_EQ(st.free_slots, 3); // the tail's slot only
  kvarn_step_destroy(step);
  kvarn_pool_destroy(pool);

  // The same prompt in a dense pool keeps its first block (the sink).
  kvarn_pool_config_t d = smallConfig();
  ASSERT_EQ(kvarn_pool_create(nullptr, &d, &pool), KVARN_OK);
  ASSERT_EQ(kvarn_pool_add_request(pool, 7), KVARN_OK);
  ASSERT_EQ(kvarn_step_create(pool, &step), KVARN_OK);
  int32_t denseCounts[] = {64 + 5};
  ASSERT_EQ(kvarn_step_begin(step, 1, ids, denseCounts), KVARN_OK);
  ASSERT_EQ(kvarn_step_commit(step, nullptr), KVARN_OK);
  ASSERT_EQ(kvarn_pool_flush(pool, &flushed), KVARN_OK);
  EXPECT_EQ(flushed, 0);
  kvarn_step_destroy(step);
  kvarn_pool_destroy(pool);

  // Refusals, the handle untouched.
  kvarn_pool_t *untouched = reinterpret_cast<kvarn_pool_t *>(0x1);
  pool = untouched;
  kvarn_pool_config_t bad = c;
  bad.preset = "kvarn_mla_k4_g128";
  EXPECT_EQ(kvarn_pool_create(nullptr, &bad, &pool),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvarn_last_error()).find("kvarn_mla_pool_create"),
            std::string::npos);
  bad.preset = "kvarn_k4v2_g128";
  EXPECT_EQ(kvarn_mla_pool_create(nullptr, &bad, 64, &pool),
            KVARN_ERROR_UNKNOWN_PRESET);
  bad = c;
  bad.num_kv_heads = 2;
  EXPECT_EQ(kvarn_mla_pool_create(nullptr, &bad, 64, &pool),
            KVARN_ERROR_UNSUPPORTED_SHAPE);
  EXPECT_EQ(kvarn_mla_pool_create(nullptr, &c, 0, &pool),
            KVARN_ERROR_UNSUPPORTED_SHAPE);
  bad = c;
  bad.head_dim = 384;
  EXPECT_EQ(kvarn_mla_pool_create(nullptr, &bad, 64, &pool),
            KVARN_ERROR_UNSUPPORTED_SHAPE);
  bad = c;
  bad.block_size = 64;
  EXPECT_EQ(kvarn_mla_pool_create(nullptr, &bad, 64, &pool),
            KVARN_ERROR_UNSUPPORTED_SHAPE);
  EXPECT_EQ(kvarn_mla_pool_create(nullptr, nullptr, 64, &pool),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(pool, untouched);
}
