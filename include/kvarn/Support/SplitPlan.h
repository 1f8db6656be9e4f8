//===- SplitPlan.h - a split decode's blocks over its programs --*- C++ -*-===//
//
// decode_split runs a fixed grid (fixed per deployment, so that a captured
// CUDA graph stays valid) over a batch whose lengths change every step.
// Splitting each request's blocks into the same number of parts made the
// longest request the straggler: one request at 32K among 31 at 1K took
// 2x the time of a uniform batch of the same tokens (H100,
// docs/benchmarks.md). The plan cuts every request into chunks of one size
// C, chosen from the whole batch, so that a long request gets more of the
// grid's programs and a short one fewer.
//
// This is the definition: kvt.split_plan's CPU evaluation calls it, its
// GPU lowering (codegen/KVTToKVGPU/SplitPlan.cpp) computes the same
// integers, and the tests check both against it.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_SUPPORT_SPLITPLAN_H
#define KVARN_SUPPORT_SPLITPLAN_H

#include <algorithm>
#include <cstdint>
#include <functional>

namespace kvarn {

/// Blocks of `blockTokens` tokens a decode of a context of `len` tokens
/// reads under a sliding window of `window` tokens (0 or less: none): the
/// blocks from the one holding token max(len - window, 0) to the last.
/// 0 for len <= 0.
inline int32_t splitPlanBlocks(int32_t len, int32_t window,
                               int32_t blockTokens) {
  if (len <= 0)
    return 0;
  int32_t lo = window > 0 ? std::max(len - window, 0) : 0;
  return (len + blockTokens - 1) / blockTokens - lo / blockTokens;
}

/// What a program of a split decode attends.
struct SplitPlan {
  /// C: blocks a chunk holds (a request's last chunk may hold fewer).
  int32_t chunkBlocks = 1;
  /// The request whose chunk the program takes, -1 for none.
  int32_t request = -1;
  /// Which chunk of it: blocks [chunk * C, min((chunk + 1) * C, n)) of the
  /// request's n blocks (counted from its window's first block).
  int32_t chunk = 0;
};

/// The plan's first choice of C for N = `total` blocks, M = `most` of one
/// request, over `slots` programs (at least 1): max(ceil(N / slots),
/// ceil(M / maxChunks), 1), kept unless its chunks outnumber the slots.
inline int32_t splitPlanFirstChunk(int32_t total, int32_t most, int32_t slots,
                                   int32_t maxChunks) {
  auto cdiv = [](int32_t a, int32_t c) { return (a + c - 1) / c; };
  return std::max(cdiv(total, slots),
                  std::max(cdiv(most, std::max(maxChunks, 1)), 1));
}

/// The plan of program `program` of `slots` (one KV head's programs: batch
/// x splits) over a batch whose request b has `blocksOf(b)` blocks
/// (splitPlanBlocks), b < batch. With N blocks in all, M the most of one
/// request and R the requests with any:
///  - C = max(ceil(N / slots), ceil(M / maxChunks), 1), so that no request
///    has more than maxChunks chunks (the partials' scratch holds that
///    many); with equal lengths n that is ceil(n / splits), the split of
///    each request into `splits` parts it replaces;
///  - where those chunks outnumber the slots (every request's last chunk
///    rounds up), C = max(ceil(N / (slots - R)), ceil(M / maxChunks)), for
///    which sum_b ceil(n_b / C) <= N / C + R <= slots (C = M when slots <=
///    R: one chunk a request);
///  - chunks are numbered request by request in order, program p takes
///    chunk p, and programs past the last chunk take none.
/// N is counted in 32 bits, as on the GPU: contexts that sum to 2^31
/// blocks are out of range.
inline SplitPlan
splitPlan(int32_t batch, const std::function<int32_t(int32_t)> &blocksOf,
          int32_t program, int32_t slots, int32_t maxChunks) {
  int32_t total = 0, most = 0, active = 0;
  for (int32_t b = 0; b < batch; ++b) {
    int32_t n = blocksOf(b);
    total += n;
    most = std::max(most, n);
    active += n > 0;
  }
  auto cdiv = [](int32_t a, int32_t c) { return (a + c - 1) / c; };
  auto chunksAt = [&](int32_t c) {
    int32_t k = 0;
    for (int32_t b = 0; b < batch; ++b)
      k += cdiv(blocksOf(b), c);
    return k;
  };
  SplitPlan plan;
  if (total == 0 || slots < 1)
    return plan;
  int32_t floor = std::max(cdiv(most, std::max(maxChunks, 1)), 1);
  plan.chunkBlocks = splitPlanFirstChunk(total, most, slots, maxChunks);
  if (chunksAt(plan.chunkBlocks) > slots)
    plan.chunkBlocks = std::max(
        slots > active ? cdiv(total, slots - active) : most, floor);
  for (int32_t b = 0, first = 0; b < batch; ++b) {
    int32_t k = cdiv(blocksOf(b), plan.chunkBlocks);
    if (program >= first && program < first + k) {
      plan.request = b;
      plan.chunk = program - first;
      return plan;
    }
    first += k;
  }
  return plan;
}

} // namespace kvarn

#endif // KVARN_SUPPORT_SPLITPLAN_H
