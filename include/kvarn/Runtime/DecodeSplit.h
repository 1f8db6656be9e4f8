//===- DecodeSplit.h - how many splits flash-decoding uses ------*- C++ -*-===//
//
// decode runs one CTA per (request, KV head); with few such pairs most SMs
// idle, so decode_split divides each request's blocks into splits and
// combine merges them. The count depends only on the deployment (batch
// capacity, KV heads, GPU), never on the current sequence lengths, so a
// captured CUDA graph stays valid from step to step.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_DECODESPLIT_H
#define KVARN_RUNTIME_DECODESPLIT_H

#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/DSL/Specialization.h"

#include <algorithm>

namespace kvarn {

/// Most splits decode_split writes per (request, KV head): the kernels'
/// static scratch dimension.
constexpr int kDecodeMaxSplits = dsl::kMaxDecodeSplits;

/// Splits for `pairs` (request, KV head) programs on a GPU with
/// `multiprocessors` SMs: enough CTAs to fill every SM's attention CTA slots
/// (kAttentionCtasPerSM), at most kDecodeMaxSplits; 1 (use plain decode)
/// when the pairs alone fill them.
inline int decodeSplitCount(int pairs, int multiprocessors) {
  if (pairs <= 0 || multiprocessors <= 0)
    return 1;
  int slots = kAttentionCtasPerSM * multiprocessors;
  int wanted = (slots + pairs - 1) / pairs;
  return std::clamp(wanted, 1, kDecodeMaxSplits);
}

} // namespace kvarn

#endif // KVARN_RUNTIME_DECODESPLIT_H
