//===- DecodeSplit.h - how many splits flash-decoding uses ------*- C++ -*-===//
//
// decode runs one CTA per (request, KV head); with few such pairs most SMs
// idle, so decode_split divides each request's blocks into splits and
// combine merges them. The count depends only on the deployment (batch
// capacity, KV heads, context capacity, GPU, kernel), never on the current
// sequence lengths, so a captured CUDA graph stays valid from step to step.
//
// Why a model of waves: the CTAs of one launch run in waves of (SMs x CTAs
// per SM), and a wave lasts as long as its longest CTA, so what a split
// count costs is (waves) x (blocks one split streams). Filling the CTA
// slots exactly, as the rule before this one did, often made one CTA too
// many: on an H200 (132 SMs, 4 CTAs each) 8 requests x 8 KV heads at 32K
// got 9 splits (576 CTAs: 2 waves of 29 blocks, 726 us) where 8 make one
// wave of 32 blocks (563 us), and 36 x 8 pairs got 2 (2 waves of 128
// blocks, 3399 us) where 16 make 9 waves of 16 blocks (2243 us).
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_DECODESPLIT_H
#define KVARN_RUNTIME_DECODESPLIT_H

#include "kvarn/DSL/Specialization.h"

#include "kvarn/Support/Error.h"

#include <cstdint>

namespace kvarn {

/// Most splits decode_split writes per (request, KV head): the kernels'
/// static scratch dimension.
constexpr int kDecodeMaxSplits = dsl::kMaxDecodeSplits;

/// What fixes a deployment's split count.
struct DecodeDeployment {
  /// Batch capacity x KV heads: the CTAs of plain decode.
  int64_t pairs = 0;
  /// Blocks one request's decode reads: its context capacity / block tokens
  /// (the block table's width, decode's max_blocks), or with a sliding
  /// window the fewer blocks the window spans (decodeBlocksRead).
  int64_t maxBlocks = 0;
  /// The GPU's SMs.
  int multiprocessors = 0;
  /// CTAs of decode_split one SM runs at once: what its launch shape was
  /// built for (LoadedKernel::ctasPerSM(), the metadata's ctas_per_sm).
  int ctasPerSM = 0;
};

/// Fixed costs, in units of one block streamed by one CTA. The block loop
/// is latency-bound, so one block-step of a wave takes about as long as
/// anything else a CTA does once: loading and rotating q, writing its
/// output or partials (startup, paid once per wave since each wave's CTAs
/// do it in parallel), and the combine launch, which reads a few KB per
/// pair (paid once, and only with splits). Their exact size matters only
/// between counts whose waves x blocks are nearly equal, where they favour
/// fewer waves and fewer splits.
constexpr int64_t kDecodeCtaStartupBlocks = 1;
constexpr int64_t kDecodeCombineBlocks = 1;

/// What the model says `splits` costs a deployment.
struct DecodeSplitCost {
  int64_t waves = 0;          // ceil(pairs * splits / (SMs * CTAs per SM))
  int64_t blocksPerSplit = 0; // ceil(maxBlocks / splits): at full context
  int64_t overheadBlocks = 0; // waves x startup, + combine when splits > 1

  /// Block-steps the longest CTA of each wave takes, summed over the waves.
  int64_t streamedBlocks() const { return waves * blocksPerSplit; }
  int64_t total() const { return streamedBlocks() + overheadBlocks; }
};

/// Checks a deployment: pairs and maxBlocks in [1, INT32_MAX] (the
/// kernels' i32 extents), SMs in [1, 4096], CTAs per SM in [1, 64].
kvarn::Error checkDecodeDeployment(const DecodeDeployment &deployment);

/// The model's cost of `splits` (1 to kDecodeMaxSplits; 1 is plain decode)
/// for a deployment that passes checkDecodeDeployment.
DecodeSplitCost decodeSplitCost(const DecodeDeployment &deployment,
                                int splits);

/// Launches of fewer waves than this run their CTAs in step: every CTA of an
/// SM waits for its record at the same time and computes at the same time,
/// where CTAs that start wave after wave drift apart and overlap one
/// another's copies with their arithmetic. Measured on the H200 (issue 14,
/// docs/benchmarks.md): at 8 x 32K, 8 splits (one wave of 32 blocks) took
/// 325 us at GQA 8 where 32 (four waves of 8) took 256, and 493 us at
/// head_dim 256 where 16 took 404; at GQA 4 the two were within 3%. An
/// empirical rule, not a model of the SM: where the model's best makes
/// fewer waves, a count of at least kDecodeSteppedWaves waves whose splits
/// still stream kDecodeMinSplitBlocks blocks is preferred (the one of least
/// cost); with none such (one request, short contexts), the model's best.
/// Not where the model's best is plain decode: splitting that adds the
/// combine pass and the partials' writes, more than the drift saves (H200,
/// c. 2bb439e: 64 x 4K took 187.6 us unsplit against 206.0 at the rule's 4
/// splits, 128 x 2K 208.3 against 242.6 at 2).
constexpr int64_t kDecodeSteppedWaves = 4;
constexpr int64_t kDecodeMinSplitBlocks = 8;

/// Whether `splits` is one the rule above prefers: at least
/// kDecodeSteppedWaves waves, at least kDecodeMinSplitBlocks blocks a split.
bool decodeSplitDesynchronizes(const DecodeDeployment &deployment, int splits);

/// The split count in [1, kDecodeMaxSplits] of least decodeSplitCost total
/// among those decodeSplitDesynchronizes prefers, or among all counts where
/// the best of all is 1 or already makes kDecodeSteppedWaves waves or none
/// is preferred; the fewest splits among equals; 1 means plain decode. Fails
/// with KVARN_ERROR_INVALID_ARGUMENT naming the bad field.
kvarn::Expected<int> decodeSplitCount(const DecodeDeployment &deployment);

/// The most blocks decode reads for one request of at most `maxBlocks`
/// blocks of `group` tokens under a sliding window of `window` tokens (0: no
/// window, all maxBlocks): a window that starts inside a block spans
/// (window + group - 2) / group + 1 blocks. What DecodeDeployment::maxBlocks
/// takes for a windowed layer. window < 0 or group < 1 is an error.
kvarn::Expected<int64_t> decodeBlocksRead(int64_t maxBlocks, int32_t window,
                                          int group);

/// The bytes of decode_split's partials for `batch` requests (decode_split.kvt:
/// part_out [batch, Hk, kDecodeMaxSplits, GQA, D] and part_lse [.., GQA],
/// f32), what every caller allocates. Fails with
/// KVARN_ERROR_INVALID_ARGUMENT for a negative batch, a nonpositive extent
/// or a byte count past int64.
struct DecodeSplitPartialBytes {
  int64_t partOut = 0, partLse = 0;
};
kvarn::Expected<DecodeSplitPartialBytes>
decodeSplitPartialBytes(int64_t batch, int64_t numKvHeads, int64_t gqa,
                        int64_t headDim);

} // namespace kvarn

#endif // KVARN_RUNTIME_DECODESPLIT_H
