//===- Attention.h - CPU reference of decode over a paged cache -*- C++ -*-===//
//
// Exact (fp64) attention over what a KVarN paged cache holds: for every block
// of a request either the fp16 pool rows (block_to_slot[block] >= 0) or the
// dequantized record. Queries come un-rotated, in fp16 or bf16 (the
// activation dtype); the output is un-rotated fp32, for the caller to round.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_REFERENCE_ATTENTION_H
#define KVARN_REFERENCE_ATTENTION_H

#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Support/DType.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <vector>

namespace kvarn {

class Rotation;

/// Views of a paged cache, with the shapes of docs/kvarn.md ("Record layout",
/// "The cache at run time").
struct PagedCacheView {
  const RecordLayout *layout = nullptr;
  int numKvHeads = 0;
  int64_t numBlocks = 0;
  const uint8_t *records = nullptr; // [numBlocks, numKvHeads, recordBytes]
  const int32_t *blockToSlot = nullptr; // [numBlocks], -1 = quantized
  int64_t poolSlots = 0;
  const uint16_t *poolK = nullptr; // [poolSlots, G, numKvHeads, D] rotated fp16
  const uint16_t *poolV = nullptr;
};

/// One query token per request.
struct DecodeBatchView {
  int batch = 0;
  int numQHeads = 0;
  const uint16_t *q = nullptr;          // [batch, numQHeads, D] qType, un-rotated
  const int32_t *blockTable = nullptr;  // [batch, maxBlocks]
  int maxBlocks = 0;
  const int32_t *seqLens = nullptr;     // [batch]; <= 0: no output row
  double softmaxScale = 0;
  DType qType = DType::F16;             // of q's elements
  /// Sliding window in tokens (0: none): the query at position p = len - 1
  /// attends tokens t with p - window < t <= p; blocks wholly before the
  /// window are not read. Negative: an error.
  int window = 0;
};

/// The rotated K and V of one (block, KV head) as double [G][D]: the fp16
/// pool rows when block_to_slot[block] >= 0, else the dequantized record.
/// Checks the block id and the pool slot.
kvarn::Error readBlockRows(const PagedCacheView &cache, int64_t block,
                           int kvHead, std::vector<double> &k,
                           std::vector<double> &v);

/// out[b, h, :] = softmax(scale * q_rot . K_rot^T) V_rot, un-rotated (H^T),
/// written as fp32 [batch, numQHeads, D]. Rows with seq_len <= 0 are zero.
/// Validates every index it follows (block ids, pool slots, lengths) and
/// returns an error instead of reading out of bounds.
kvarn::Error decodeAttention(const PagedCacheView &cache,
                             const DecodeBatchView &batch,
                             const Rotation &rotation, float *out);

/// Speculative verification: up to maxQueryTokens query tokens per request,
/// token j of request b attending to the first contextLens[b] + j + 1 tokens
/// of its context (the committed tokens and the drafts up to itself).
struct VerifyBatchView {
  int batch = 0;
  int numQHeads = 0;
  int maxQueryTokens = 0;
  const uint16_t *q = nullptr; // [batch, maxQueryTokens, numQHeads, D] qType, un-rotated
  const int32_t *blockTable = nullptr; // [batch, maxBlocks]
  int maxBlocks = 0;
  const int32_t *contextLens = nullptr; // [batch] tokens before query token 0
  const int32_t *queryLens = nullptr;   // [batch] query tokens in use, <= maxQueryTokens
  double softmaxScale = 0;
  DType qType = DType::F16;             // of q's elements
  /// Sliding window in tokens (0: none), as DecodeBatchView's: token j, at
  /// position contextLens[b] + j, attends its last `window` tokens.
  int window = 0;
};

/// fp32 [batch, maxQueryTokens, numQHeads, D], un-rotated; rows of unused
/// query tokens (j >= queryLens[b]) are zero. decodeAttention on every
/// (request, token) with its causal length.
kvarn::Error verifyAttention(const PagedCacheView &cache,
                             const VerifyBatchView &batch,
                             const Rotation &rotation, float *out);

/// Whole contexts to rebuild in the activation dtype (prefill continuation).
struct ContextBatchView {
  int batch = 0;
  const int32_t *blockTable = nullptr; // [batch, maxBlocks]
  int maxBlocks = 0;
  const int32_t *seqLens = nullptr;  // [batch]; <= 0: nothing
  const int32_t *outStart = nullptr; // [batch] first output row of each request
  DType outType = DType::F16;        // of outK / outV
};

/// Token t < seqLens[b] of request b and KV head h goes to row
/// outStart[b] + t of outK / outV ([outRows, numKvHeads, D] bits of
/// batch.outType): the rotated fp16 pool row or the dequantized record value,
/// rounded once to outType. Other rows are not written.
kvarn::Error materializeContext(const PagedCacheView &cache,
                                const ContextBatchView &batch, int64_t outRows,
                                uint16_t *outK, uint16_t *outV);

} // namespace kvarn

#endif // KVARN_REFERENCE_ATTENTION_H
