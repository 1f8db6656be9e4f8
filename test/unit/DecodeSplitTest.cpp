//===- DecodeSplitTest.cpp - the decode split count's wave model ----------===//
//
// Properties of the choice, checked against wave arithmetic done here from
// its definition, never against counts the code under test printed.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Runtime/DecodeSplit.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/SplitPlan.h"

#include "TestUtil.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace kvarn;

namespace {

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Block-steps of `splits`: waves of (SMs x CTAs per SM) CTAs, each as
/// long as one split's share of a full-length request.
int64_t streamedBlocks(const DecodeDeployment &d, int splits) {
  int64_t slots = int64_t(d.multiprocessors) * d.ctasPerSM;
  return ceilDiv(d.pairs * splits, slots) * ceilDiv(d.maxBlocks, splits);
}

/// The most any count's fixed costs add: startup once per wave at the
/// largest wave count, and combine.
int64_t mostOverhead(const DecodeDeployment &d) {
  int64_t slots = int64_t(d.multiprocessors) * d.ctasPerSM;
  return ceilDiv(d.pairs * kDecodeMaxSplits, slots) * kDecodeCtaStartupBlocks +
         kDecodeCombineBlocks;
}

int chosen(const DecodeDeployment &d) {
  kvarn::Expected<int> s = decodeSplitCount(d);
  if (!s) {
    std::string message;
    consumeError(s.takeError(), message);
    ADD_FAILURE() << message;
    return 0;
  }
  return *s;
}

std::string describe(const DecodeDeployment &d) {
  return std::to_string(d.pairs) + " pairs, " + std::to_string(d.maxBlocks) +
         " blocks, " + std::to_string(d.multiprocessors) + " SMs x " +
         std::to_string(d.ctasPerSM);
}

/// A grid of deployments: pairs around whole and partial waves, short and
/// long contexts, several GPUs and CTA counts.
std::vector<DecodeDeployment> deployments() {
  std::vector<DecodeDeployment> all;
  for (int sms : {1, 16, 78, 108, 132})
    for (int ctas : {1, 3, 4})
      for (int64_t pairs : {1, 2, 7, 8, 32, 63, 64, 65, 100, 256, 288, 395,
                            396, 527, 528, 529, 1024, 2048, 4096})
        for (int64_t blocks : {1, 2, 3, 15, 16, 17, 24, 64, 256, 1024})
          all.push_back({pairs, blocks, sms, ctas});
  return all;
}

} // namespace

TEST(DecodeSplit, BadDeploymentsAreErrorsNamingTheField) {
  struct Case {
    DecodeDeployment d;
    const char *names;
  };
  const int64_t tooMany = int64_t(std::numeric_limits<int32_t>::max()) + 1;
  for (const Case &c : std::vector<Case>{
           {{0, 256, 132, 4}, "pairs"},
           {{-8, 256, 132, 4}, "pairs"},
           {{tooMany, 256, 132, 4}, "pairs"},
           {{64, 0, 132, 4}, "max_blocks"},
           {{64, tooMany, 132, 4}, "max_blocks"},
           {{64, 256, 0, 4}, "multiprocessor"},
           {{64, 256, 132, 0}, "CTAs per SM"},
           {{64, 256, 132, 65}, "CTAs per SM"}}) {
    kvarn::Expected<int> s = decodeSplitCount(c.d);
    ASSERT_FALSE(bool(s)) << describe(c.d);
    std::string message;
    EXPECT_EQ(consumeError(s.takeError(), message),
              KVARN_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(message.find(c.names), std::string::npos) << message;
  }
}

TEST(DecodeSplit, TheCostIsWavesTimesBlocksPlusFixedCosts) {
  for (const DecodeDeployment &d : deployments())
    for (int s = 1; s <= kDecodeMaxSplits; ++s) {
      DecodeSplitCost c = decodeSplitCost(d, s);
      EXPECT_EQ(c.streamedBlocks(), streamedBlocks(d, s)) << describe(d);
      EXPECT_GE(c.overheadBlocks, 0);
      EXPECT_LE(c.overheadBlocks, mostOverhead(d));
      // No count streams less than the pairs' blocks spread over every slot.
      int64_t slots = int64_t(d.multiprocessors) * d.ctasPerSM;
      EXPECT_GE(c.streamedBlocks() * slots, d.pairs * d.maxBlocks);
    }
}

/// Whether `splits` makes at least kDecodeSteppedWaves waves of at least
/// kDecodeMinSplitBlocks blocks, from wave arithmetic done here.
bool desynchronizes(const DecodeDeployment &d, int splits) {
  int64_t slots = int64_t(d.multiprocessors) * d.ctasPerSM;
  return ceilDiv(d.pairs * splits, slots) >= kDecodeSteppedWaves &&
         ceilDiv(d.maxBlocks, splits) >= kDecodeMinSplitBlocks;
}

TEST(DecodeSplit, TheRuleMatchesTheWaveArithmetic) {
  for (const DecodeDeployment &d : deployments())
    for (int s = 1; s <= kDecodeMaxSplits; ++s)
      EXPECT_EQ(decodeSplitDesynchronizes(d, s), desynchronizes(d, s))
          << describe(d) << ", " << s << " splits";
}

TEST(DecodeSplit, TheChoiceIsTheCheapestOfTheCountsTheRulePrefers) {
  for (const DecodeDeployment &d : deployments()) {
    int best = chosen(d);
    ASSERT_GE(best, 1) << describe(d);
    ASSERT_LE(best, kDecodeMaxSplits) << describe(d);
    int64_t slots = int64_t(d.multiprocessors) * d.ctasPerSM;
    // The model's cheapest over every count (fewest splits among equals).
    int cheapest = 1;
    for (int s = 2; s <= kDecodeMaxSplits; ++s)
      if (decodeSplitCost(d, s).total() < decodeSplitCost(d, cheapest).total())
        cheapest = s;
    bool anyPreferred = false;
    for (int s = 1; s <= kDecodeMaxSplits; ++s)
      anyPreferred |= desynchronizes(d, s);
    bool keepsCheapest =
        cheapest == 1 ||
        ceilDiv(d.pairs * cheapest, slots) >= kDecodeSteppedWaves ||
        !anyPreferred;
    if (keepsCheapest) {
      EXPECT_EQ(best, cheapest) << describe(d);
      continue;
    }
    // Otherwise a preferred count, and none of them costs less; ties go to
    // fewer splits.
    EXPECT_TRUE(desynchronizes(d, best)) << describe(d) << ": " << best;
    for (int s = 1; s <= kDecodeMaxSplits; ++s) {
      if (!desynchronizes(d, s))
        continue;
      EXPECT_LE(decodeSplitCost(d, best).total(), decodeSplitCost(d, s).total())
          << describe(d) << ": " << best << " splits vs " << s;
      if (s < best) {
        EXPECT_LT(decodeSplitCost(d, best).total(),
                  decodeSplitCost(d, s).total())
            << describe(d) << ": " << best << " splits vs " << s;
      }
    }
  }
}

TEST(DecodeSplit, SplitsOnlyWhatHelps) {
  for (const DecodeDeployment &d : deployments()) {
    int best = chosen(d);
    int64_t slots = int64_t(d.multiprocessors) * d.ctasPerSM;
    // Pairs that fill enough whole waves leave nothing for splits to do.
    if (d.pairs % slots == 0 && d.pairs / slots >= kDecodeSteppedWaves) {
      EXPECT_EQ(best, 1) << describe(d);
    }
    // A split of no blocks only adds a CTA.
    EXPECT_LE(best, d.maxBlocks) << describe(d);
  }
}

TEST(DecodeSplit, AFewPairsOverALongContextUseEverySplit) {
  // 1 request x 8 KV heads at 32K (256 blocks of 128 tokens) on an H200:
  // 128 CTAs of the most splits fit in one wave.
  EXPECT_EQ(chosen({8, 256, 132, 4}), kDecodeMaxSplits);
  EXPECT_EQ(chosen({1, 1024, 132, 4}), kDecodeMaxSplits);
}

TEST(DecodeSplit, TheBestModelledTimeNeverGrowsWithTheGpuNorShrinksWithWork) {
  // The model's, over every count (the rule's preference aside).
  auto bestTotal = [](const DecodeDeployment &d) {
    int64_t best = decodeSplitCost(d, 1).total();
    for (int s = 2; s <= kDecodeMaxSplits; ++s)
      best = std::min(best, decodeSplitCost(d, s).total());
    return best;
  };
  for (const DecodeDeployment &d : deployments()) {
    DecodeDeployment moreSMs = d, moreCtas = d, morePairs = d, moreBlocks = d;
    moreSMs.multiprocessors += 1;
    moreCtas.ctasPerSM += 1;
    morePairs.pairs += 1;
    moreBlocks.maxBlocks += 1;
    EXPECT_LE(bestTotal(moreSMs), bestTotal(d)) << describe(d);
    EXPECT_LE(bestTotal(moreCtas), bestTotal(d)) << describe(d);
    EXPECT_GE(bestTotal(morePairs), bestTotal(d)) << describe(d);
    EXPECT_GE(bestTotal(moreBlocks), bestTotal(d)) << describe(d);
  }
}

// Issue 14's H200 measurements (132 SMs, Hk 8, 8 x 32K: 64 pairs of 256
// blocks; docs/benchmarks.md): the wave model alone chose 8 splits at 4
// CTAs per SM and 6 at 3 (one wave each); measured, 8 took 325 us at GQA 8
// where 32 took 256, and at head_dim 256 (3 CTAs per SM) 6 took 493 where
// 16 took 404. The choice now makes several waves, as those did, and
// streams no more blocks than the measured best plus the fixed costs.
TEST(DecodeSplit, IssueFourteensShapesLeaveTheOneWaveChoice) {
  struct Measured {
    DecodeDeployment d;
    int modelOnly, measuredBest;
  };
  for (const Measured &m : {Measured{{8 * 8, 32768 / 128, 132, 4}, 8, 32},
                            Measured{{8 * 8, 32768 / 128, 132, 3}, 6, 16}}) {
    int best = chosen(m.d);
    SCOPED_TRACE(describe(m.d) + ": " + std::to_string(best) + " splits");
    int64_t slots = int64_t(m.d.multiprocessors) * m.d.ctasPerSM;
    EXPECT_EQ(ceilDiv(m.d.pairs * m.modelOnly, slots), 1);
    EXPECT_GE(ceilDiv(m.d.pairs * best, slots), kDecodeSteppedWaves);
    EXPECT_LE(streamedBlocks(m.d, best),
              streamedBlocks(m.d, m.measuredBest) + mostOverhead(m.d));
  }
  // 36 x 32K already made five waves with the model's choice: kept.
  DecodeDeployment bulk{36 * 8, 32768 / 128, 132, 4};
  int best = chosen(bulk);
  EXPECT_GE(ceilDiv(bulk.pairs * best, 132 * 4), kDecodeSteppedWaves);
  EXPECT_LE(streamedBlocks(bulk, best),
            streamedBlocks(bulk, 16) + mostOverhead(bulk));
  // 64 x 4K and 128 x 2K, whose measured best is plain decode (187.6 us
  // against 206.0 at 4 splits; 208.3 against 242.6 at 2): the model's
  // cheapest is 1, and no rule splits it.
  for (DecodeDeployment unsplit :
       {DecodeDeployment{64 * 8, 4096 / 128, 132, 4},
        DecodeDeployment{128 * 8, 2048 / 128, 132, 4}})
    EXPECT_EQ(chosen(unsplit), 1) << describe(unsplit);
}

// A sliding window's blocks: the most blocks any window of `window` tokens
// ending anywhere in a context of maxBlocks blocks touches, counted token
// by token.
TEST(DecodeSplit, WindowedBlocksReadAreTheMostAnyWindowTouches) {
  for (int group : {1, 3, 64, 128})
    for (int64_t maxBlocks : {1, 2, 5, 40})
      for (int32_t window : {1, 2, 3, 63, 64, 65, 127, 128, 129, 300, 100000}) {
        int64_t most = 0;
        for (int64_t len = 1; len <= maxBlocks * group; ++len) {
          int64_t lo = std::max<int64_t>(len - window, 0);
          most = std::max(most, (len + group - 1) / group - lo / group);
        }
        kvarn::Expected<int64_t> got =
            decodeBlocksRead(maxBlocks, window, group);
        ASSERT_TRUE(bool(got)) << kvarn::toString(got.takeError());
        EXPECT_EQ(*got, most) << "window " << window << " group " << group
                              << " max_blocks " << maxBlocks;
      }
  kvarn::Expected<int64_t> all = decodeBlocksRead(7, 0, 64);
  ASSERT_TRUE(bool(all));
  EXPECT_EQ(*all, 7);
  kvarn::Expected<int64_t> bad = decodeBlocksRead(7, -1, 64);
  ASSERT_FALSE(bool(bad));
  EXPECT_NE(kvarn::toString(bad.takeError()).find("window (-1)"),
            std::string::npos);
}

//===----------------------------------------------------------------------===//
// splitPlan: a split decode's chunks over the batch
//===----------------------------------------------------------------------===//

namespace {

/// Every program's plan of one batch, checked for what the kernels rely
/// on: every block of every request is attended by exactly one program,
/// every chunk holds at least one block and C at most, no request has more
/// than `maxChunks` chunks, and programs past the chunks take none.
/// Returns the chunks of each request.
std::vector<int> checkPlan(const std::vector<int32_t> &lens, int32_t window,
                           int32_t g, int32_t slots, int32_t maxChunks) {
  const int32_t batch = int32_t(lens.size());
  auto blocksOf = [&](int32_t b) {
    return splitPlanBlocks(lens[b], window, g);
  };
  std::vector<std::vector<int>> seen(batch);
  for (int32_t b = 0; b < batch; ++b)
    seen[b].assign(size_t(blocksOf(b)), 0);
  std::vector<int> chunks(batch, 0);
  int32_t chunkBlocks = -1;
  for (int32_t p = 0; p < slots; ++p) {
    SplitPlan plan = splitPlan(batch, blocksOf, p, slots, maxChunks);
    if (chunkBlocks < 0)
      chunkBlocks = plan.chunkBlocks;
    EXPECT_EQ(plan.chunkBlocks, chunkBlocks) << "program " << p;
    EXPECT_GE(plan.chunkBlocks, 1);
    if (plan.request < 0)
      continue;
    EXPECT_LT(plan.request, batch);
    EXPECT_GE(plan.chunk, 0);
    EXPECT_LT(plan.chunk, maxChunks) << "request " << plan.request;
    int32_t n = blocksOf(plan.request);
    int32_t first = plan.chunk * plan.chunkBlocks,
            last = std::min(first + plan.chunkBlocks, n);
    EXPECT_LT(first, last) << "an empty chunk: program " << p;
    for (int32_t i = first; i < last; ++i)
      ++seen[plan.request][i];
    chunks[plan.request] = std::max(chunks[plan.request], plan.chunk + 1);
  }
  for (int32_t b = 0; b < batch; ++b)
    for (size_t i = 0; i < seen[b].size(); ++i)
      EXPECT_EQ(seen[b][i], 1)
          << "request " << b << " block " << i << " of " << seen[b].size()
          << ", " << slots << " programs";
  return chunks;
}

} // namespace

TEST(SplitPlan, BlocksCountTheWindowAndSkipEmptyRequests) {
  EXPECT_EQ(splitPlanBlocks(0, 0, 128), 0);
  EXPECT_EQ(splitPlanBlocks(-3, 0, 128), 0);
  EXPECT_EQ(splitPlanBlocks(1, 0, 128), 1);
  EXPECT_EQ(splitPlanBlocks(129, 0, 128), 2);
  // Tokens 100..299 of 300 under a window of 200: blocks 0 (from token
  // 100) to 2 at G = 128; at G = 64, blocks 1 to 4.
  EXPECT_EQ(splitPlanBlocks(300, 200, 128), 3);
  EXPECT_EQ(splitPlanBlocks(300, 200, 64), 4);
  EXPECT_EQ(splitPlanBlocks(300, 1, 64), 1);
}

TEST(SplitPlan, EqualLengthsSplitEachRequestIntoEqualParts) {
  // What decode_split did before the plan: ceil(n / splits) blocks a part.
  for (int32_t n : {1, 7, 64, 256, 1000})
    for (int32_t splits : {1, 2, 3, 8, 32, 64})
      for (int32_t batch : {1, 4, 36}) {
        std::vector<int32_t> lens(batch, n * 128);
        SplitPlan plan = splitPlan(
            batch, [&](int32_t b) { return splitPlanBlocks(lens[b], 0, 128); },
            0, batch * splits, 64);
        EXPECT_EQ(plan.chunkBlocks, (n + splits - 1) / splits)
            << n << " blocks, " << splits << " splits, batch " << batch;
        std::vector<int> chunks = checkPlan(lens, 0, 128, batch * splits, 64);
        for (int c : chunks)
          EXPECT_EQ(c, (n + plan.chunkBlocks - 1) / plan.chunkBlocks);
        // decode_split's program (b, h, s) asks for chunk b * splits + s:
        // where each request makes `splits` chunks, that is chunk s of
        // request b, the blocks that program read before the plan.
        if (chunks[0] != splits)
          continue;
        for (int32_t b = 0; b < batch; ++b)
          for (int32_t s = 0; s < splits; ++s) {
            SplitPlan at = splitPlan(
                batch,
                [&](int32_t r) { return splitPlanBlocks(lens[r], 0, 128); },
                b * splits + s, batch * splits, 64);
            EXPECT_EQ(at.request, b) << n << " blocks, split " << s;
            EXPECT_EQ(at.chunk, s) << n << " blocks, request " << b;
          }
      }
}

TEST(SplitPlan, ALongRequestGetsMoreProgramsThanTheSplits) {
  // kvarn-bench's mixed row: one request at 32K among 31 at 1K, 8 splits.
  std::vector<int32_t> lens(32, 1024);
  lens[0] = 32768;
  std::vector<int> chunks = checkPlan(lens, 0, 128, 32 * 8, 64);
  EXPECT_GT(chunks[0], 8);
  EXPECT_LE(chunks[0], 64);
  for (int b = 1; b < 32; ++b)
    EXPECT_LE(chunks[b], 8);
}

TEST(SplitPlan, RandomBatchesAreCoveredOnce) {
  uint64_t seed = test::freshSeed();
  std::mt19937_64 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::uniform_int_distribution<int> batchOf(1, 40), splitsOf(1, 70),
      pick(0, 9);
  for (int trial = 0; trial < 300; ++trial) {
    int batch = batchOf(rng), splits = splitsOf(rng);
    int32_t g = pick(rng) < 5 ? 128 : 64;
    std::vector<int32_t> lens(batch);
    for (int32_t &len : lens) {
      int kind = pick(rng);
      // Padding, one token, a block edge, short, long.
      len = kind == 0   ? -1 + int(rng() % 2)
            : kind == 1 ? 1
            : kind == 2 ? g * int32_t(1 + rng() % 8)
            : kind < 7  ? int32_t(1 + rng() % 3000)
                        : int32_t(1 + rng() % 200000);
    }
    int32_t window = pick(rng) < 7 ? 0 : int32_t(1 + rng() % 5000);
    int32_t slots = batch * std::min(splits, 64);
    checkPlan(lens, window, g, slots, 64);
    if (::testing::Test::HasFailure())
      FAIL() << "trial " << trial << ": batch " << batch << ", " << splits
             << " splits, window " << window;
  }
}
