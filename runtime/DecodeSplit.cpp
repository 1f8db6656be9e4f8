//===- DecodeSplit.cpp - how many splits flash-decoding uses --------------===//

#include "kvarn/Runtime/DecodeSplit.h"
#include "kvarn/Runtime/Capacity.h"
#include "kvarn/Support/Error.h"

#include <cassert>
#include <cstdint>
#include <limits>

using namespace kvarn;

kvarn::Error kvarn::checkDecodeDeployment(const DecodeDeployment &d) {
  constexpr int64_t kMaxExtent = std::numeric_limits<int32_t>::max();
  auto bad = [](const char *what, int64_t value, const char *range) {
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "decode split count: {0} is {1}, must be {2}", what,
                     value, range);
  };
  if (d.pairs < 1 || d.pairs > kMaxExtent)
    return bad("pairs (batch capacity x KV heads)", d.pairs,
               "1 to 2147483647");
  if (d.maxBlocks < 1 || d.maxBlocks > kMaxExtent)
    return bad("max_blocks (context capacity / block tokens)", d.maxBlocks,
               "1 to 2147483647");
  if (d.multiprocessors < 1 || d.multiprocessors > 4096)
    return bad("the multiprocessor count", d.multiprocessors, "1 to 4096");
  if (d.ctasPerSM < 1 || d.ctasPerSM > 64)
    return bad("CTAs per SM", d.ctasPerSM, "1 to 64");
  return kvarn::Error::success();
}

DecodeSplitCost kvarn::decodeSplitCost(const DecodeDeployment &d, int splits) {
  assert(splits >= 1 && splits <= kDecodeMaxSplits && "splits out of range");
  // Within checkDecodeDeployment's bounds nothing here overflows: waves <
  // 2^36 and waves x blocksPerSplit <= pairs x maxBlocks + 16 x pairs +
  // maxBlocks + 1 < 2^63.
  int64_t slots = int64_t(d.multiprocessors) * d.ctasPerSM;
  DecodeSplitCost c;
  c.waves = (d.pairs * splits + slots - 1) / slots;
  c.blocksPerSplit = (d.maxBlocks + splits - 1) / splits;
  c.overheadBlocks = c.waves * kDecodeCtaStartupBlocks +
                     (splits > 1 ? kDecodeCombineBlocks : 0);
  return c;
}

bool kvarn::decodeSplitDesynchronizes(const DecodeDeployment &d, int splits) {
  DecodeSplitCost c = decodeSplitCost(d, splits);
  return c.waves >= kDecodeSteppedWaves &&
         c.blocksPerSplit >= kDecodeMinSplitBlocks;
}

kvarn::Expected<int> kvarn::decodeSplitCount(const DecodeDeployment &d) {
  if (kvarn::Error e = checkDecodeDeployment(d))
    return std::move(e);
  // The count of least cost among those `eligible` accepts, or 0.
  auto cheapest = [&](auto eligible) {
    int best = 0;
    int64_t bestTotal = 0;
    for (int s = 1; s <= kDecodeMaxSplits; ++s) {
      if (!eligible(s))
        continue;
      if (int64_t total = decodeSplitCost(d, s).total();
          !best || total < bestTotal) {
        best = s;
        bestTotal = total;
      }
    }
    return best;
  };
  int best = cheapest([](int) { return true; });
  if (best == 1 || decodeSplitCost(d, best).waves >= kDecodeSteppedWaves)
    return best;
  int stepped =
      cheapest([&](int s) { return decodeSplitDesynchronizes(d, s); });
  return stepped ? stepped : best;
}

kvarn::Expected<int64_t> kvarn::decodeBlocksRead(int64_t maxBlocks,
                                                 int32_t window, int group) {
  if (window < 0 || group < 1 || maxBlocks < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "decode blocks read: window ({0}) and max_blocks ({1}) "
                     "must be >= 0 and the group ({2}) >= 1",
                     window, maxBlocks, group);
  if (window == 0)
    return maxBlocks;
  return std::min<int64_t>(maxBlocks,
                           (int64_t(window) + group - 2) / group + 1);
}

kvarn::Expected<kvarn::DecodeSplitPartialBytes>
kvarn::decodeSplitPartialBytes(int64_t batch, int64_t numKvHeads, int64_t gqa,
                               int64_t headDim) {
  if (batch < 0 || numKvHeads <= 0 || gqa <= 0 || headDim <= 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "decode_split partials: batch {0}, num_kv_heads {1}, gqa "
                     "{2}, head_dim {3}",
                     batch, numKvHeads, gqa, headDim);
  // batch * Hk * MAX_SPLITS * gqa * head_dim * 4 reaches 2^101.
  std::optional<int64_t> lse =
      pool::checkedProduct({batch, numKvHeads, kDecodeMaxSplits, gqa, 4});
  std::optional<int64_t> out =
      lse ? pool::checkedProduct({*lse, headDim}) : std::nullopt;
  if (!out)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "decode_split partials: batch {0} x num_kv_heads {1} x "
                     "{2} splits x gqa {3} x head_dim {4} fp32 values do not "
                     "fit in a 64-bit byte count",
                     batch, numKvHeads, kDecodeMaxSplits, gqa, headDim);
  return DecodeSplitPartialBytes{*out, *lse};
}
