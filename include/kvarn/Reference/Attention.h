//===- Attention.h - CPU reference of decode over a paged cache -*- C++ -*-===//
//
// Exact (fp64) attention over what a KVarN paged cache holds: for every block
// of a request either the fp16 pool rows (block_to_slot[block] >= 0) or the
// dequantized record. Queries come un-rotated; the output is un-rotated.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_REFERENCE_ATTENTION_H
#define KVARN_REFERENCE_ATTENTION_H

#include "kvarn/Layout/RecordLayout.h"

#include "llvm/Support/Error.h"

#include <cstdint>

namespace kvarn {

class Rotation;

/// Views of a paged cache, with the shapes of KVARN_SPEC.md sections 6-7.
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
  const uint16_t *q = nullptr;          // [batch, numQHeads, D] fp16, un-rotated
  const int32_t *blockTable = nullptr;  // [batch, maxBlocks]
  int maxBlocks = 0;
  const int32_t *seqLens = nullptr;     // [batch]; <= 0: no output row
  double softmaxScale = 0;
};

/// out[b, h, :] = softmax(scale * q_rot . K_rot^T) V_rot, un-rotated (H^T),
/// written as fp32 [batch, numQHeads, D]. Rows with seq_len <= 0 are zero.
/// Validates every index it follows (block ids, pool slots, lengths) and
/// returns an error instead of reading out of bounds.
llvm::Error decodeAttention(const PagedCacheView &cache,
                            const DecodeBatchView &batch,
                            const Rotation &rotation, float *out);

} // namespace kvarn

#endif // KVARN_REFERENCE_ATTENTION_H
