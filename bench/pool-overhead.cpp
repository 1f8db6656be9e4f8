//===- pool-overhead.cpp - host cost of the managed pool's bookkeeping ----===//
//
// The per-step host time of a serving loop's pool calls for 256 requests
// (issue 7's target: <= 50 us per step): kvarn_step_begin (append, block
// tables, lengths), kvarn_step_commit and kvarn_pool_flush, through the C
// API on a bookkeeping-only pool (no device, so the uploads and launches a
// GPU pool adds are not in the figure). Decode steps (one token each) and
// speculative steps (4 drafts, random acceptance).
//
//   kvarn-pool-overhead [--requests N] [--steps N]
//
//===----------------------------------------------------------------------===//

#include "kvarn/kvarn.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#define CHECK(call)                                                            \
  do {                                                                         \
    kvarn_status_t s_ = (call);                                                \
    if (s_ != KVARN_OK) {                                                      \
      std::fprintf(stderr, "%s -> %s: %s\n", #call, kvarn_status_string(s_),   \
                   kvarn_last_error());                                        \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

int main(int argc, char **argv) {
  int requests = 256, steps = 2000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--requests"))
      requests = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--steps"))
      steps = std::atoi(argv[i + 1]);
  }
  const int G = 128, maxBlocks = 64; // contexts up to 8K tokens
  kvarn_pool_config_t cfg{"kvarn_k4v2_g128", 32, 8, 32, 128, 0,
                          requests * maxBlocks, 3 * requests, requests,
                          maxBlocks};
  kvarn_pool_t *pool = nullptr;
  CHECK(kvarn_pool_create(nullptr, &cfg, &pool));
  kvarn_step_t *step = nullptr;
  CHECK(kvarn_step_create(pool, &step));
  std::mt19937 rng(1);
  std::vector<int64_t> ids(requests);
  std::vector<int32_t> prompt(requests);
  for (int r = 0; r < requests; ++r) {
    ids[r] = r;
    prompt[r] = int32_t(rng() % (4 * G)) + 1;
    CHECK(kvarn_pool_add_request(pool, r));
  }
  CHECK(kvarn_step_begin(step, requests, ids.data(), prompt.data()));
  CHECK(kvarn_step_commit(step, nullptr));
  CHECK(kvarn_pool_flush(pool, nullptr));

  std::vector<int32_t> ones(requests, 1), drafts(requests, 4),
      accepted(requests);
  for (int speculative = 0; speculative < 2; ++speculative) {
    std::vector<double> us;
    for (int s = 0; s < steps; ++s) {
      for (int r = 0; r < requests; ++r)
        accepted[r] = int32_t(rng() % 5);
      auto t0 = std::chrono::steady_clock::now();
      CHECK(kvarn_step_begin(step, requests, ids.data(),
                             speculative ? drafts.data() : ones.data()));
      CHECK(kvarn_step_commit(step, speculative ? accepted.data() : nullptr));
      CHECK(kvarn_pool_flush(pool, nullptr));
      auto t1 = std::chrono::steady_clock::now();
      us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      // Keep contexts bounded: requests near the end start over.
      for (int r = 0; r < requests; ++r) {
        kvarn_request_info_t info;
        CHECK(kvarn_pool_request_info(pool, r, &info));
        if (info.length > (maxBlocks - 1) * G) {
          CHECK(kvarn_pool_free(pool, r));
          CHECK(kvarn_pool_add_request(pool, r));
          CHECK(kvarn_step_begin(step, 1, &ids[r], &prompt[r]));
          CHECK(kvarn_step_commit(step, nullptr));
        }
      }
    }
    std::sort(us.begin(), us.end());
    double mean = 0;
    for (double u : us)
      mean += u / us.size();
    std::printf("%s steps, %d requests: begin+commit+flush per step: median "
                "%.1f us, mean %.1f us, p99 %.1f us\n",
                speculative ? "speculative (4 drafts)" : "decode", requests,
                us[us.size() / 2], mean, us[us.size() * 99 / 100]);
  }
  kvarn_capacity_t c;
  CHECK(kvarn_capacity_plan("kvarn_k4v2_g128", 128, 32, 8, int64_t(60) << 30,
                            64, -1, &c));
  std::printf("capacity, Hq/Hk 32/8, D=128, 32 layers, 60 GiB, 64 requests: "
              "%lld tokens (kvarn_k4v2_g128, %lld blocks, %lld pool slots) vs "
              "%lld fp16: %.3fx; %.1f B/token/head/layer all in (records %.1f)\n",
              (long long)c.tokens, (long long)c.num_blocks,
              (long long)c.pool_slots, (long long)c.fp16_tokens,
              c.ratio_vs_fp16, c.bytes_per_token, c.record_bytes_per_token);
  CHECK(kvarn_capacity_plan("kvarn_k4v2_g128", 128, 32, 8, 60000000000LL, 64,
                            -1, &c));
  std::printf("same with 60e9 bytes: %lld tokens vs %lld fp16: %.3fx\n",
              (long long)c.tokens, (long long)c.fp16_tokens, c.ratio_vs_fp16);
  CHECK(kvarn_step_destroy(step));
  CHECK(kvarn_pool_destroy(pool));
  return 0;
}
