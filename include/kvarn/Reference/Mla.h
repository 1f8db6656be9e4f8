//===- Mla.h - CPU reference of KVarN for MLA latents -----------*- C++ -*-===//
//
// docs/kvarn.md, "MLA records": Multi-head Latent Attention layers cache one
// compressed latent per token (kv_lora_rank R channels) and a small decoupled
// RoPE key. KVarN keeps the latent rotated by the order-R Hadamard matrix
// (Rotation.h, Sylvester) and quantizes a block's latent tile M[R, G]
// (channels x tokens) exactly as the dense path quantizes a K tile
// (Quantizer.h: Sinkhorn with best-iterate tracking, round-to-nearest per
// channel); only the record differs (codes token-major, the rope part in
// fp16). Decode attends with the absorbed query: its latent part rotated,
// scores over the dequantized latent plus the rope part, the same latent as
// the value, the output un-rotated.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_REFERENCE_MLA_H
#define KVARN_REFERENCE_MLA_H

#include "kvarn/Layout/MlaRecordLayout.h"
#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Reference/Rotation.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <vector>

namespace kvarn {

/// The flush of one block: `latentRot` is the block's rotated latent, fp16
/// bits [G][R] (the pool's rows: latent * H_R), `rope` its rope keys, fp16
/// bits [G][ropeDim]. Writes layout.recordBytes bytes. `sinkhornOut`, when
/// given, receives the Sinkhorn scales (columns: tokens, rows: channels).
void encodeMlaRecord(const MlaRecordLayout &layout, const uint16_t *latentRot,
                     const uint16_t *rope, uint8_t *record,
                     SinkhornResult *sinkhornOut = nullptr);

/// The quantized latent tile of a record as quantizeTile makes it: [R, G],
/// codes channel-major, absorbedScale/absorbedZero per channel, otherScale
/// per token.
QuantizedTile decodeMlaRecord(const MlaRecordLayout &layout,
                              const uint8_t *record);

/// The dequantized rotated latent, double [G][R] (dequantizeTile's fp32
/// arithmetic, transposed), and the rope keys, double [G][ropeDim].
void dequantizeMlaRecord(const MlaRecordLayout &layout, const uint8_t *record,
                         double *latentRot, double *rope);

/// A paged MLA cache: one latent "KV head" per layer, every full block a
/// record unless block_to_slot maps it to a pool slot.
struct MlaPagedCacheView {
  const MlaRecordLayout *layout = nullptr;
  int64_t numBlocks = 0;
  const uint8_t *records = nullptr;     // [numBlocks, recordBytes]
  const int32_t *blockToSlot = nullptr; // [numBlocks], -1 = a record
  int64_t poolSlots = 0;
  const uint16_t *poolLatent = nullptr; // [poolSlots, G, R], rotated fp16
  const uint16_t *poolRope = nullptr;   // [poolSlots, G, ropeDim] fp16
};

/// One query token per request, every head attending to the one latent.
struct MlaDecodeBatchView {
  int batch = 0;
  int numHeads = 0;
  /// The absorbed query, [batch, numHeads, R + ropeDim]: the latent part
  /// un-rotated (the model's q_nope * W_UK), then the rope part.
  const float *q = nullptr;
  const int32_t *blockTable = nullptr; // [batch, maxBlocks]
  int maxBlocks = 0;
  const int32_t *seqLens = nullptr; // [batch]
  float softmaxScale = 0;
};

/// The latent rows of one block, double [G][R] rotated, and its rope keys,
/// double [G][ropeDim]: the pool rows or the dequantized record. Checks the
/// block id and the pool slot.
kvarn::Error readMlaBlock(const MlaPagedCacheView &cache, int64_t block,
                          std::vector<double> &latentRot,
                          std::vector<double> &rope);

/// out[b, h, :] = softmax(scale * (q_lat H . latent_rot + q_rope . rope))
/// latent_rot, un-rotated (H^T): fp32 [batch, numHeads, R]; `lse`, when
/// given, fp32 [batch, numHeads] (natural log). Requests with seq_len <= 0
/// give zero rows (and -inf). `rotation` must have order R. Validates every
/// index it follows.
kvarn::Error mlaDecodeAttention(const MlaPagedCacheView &cache,
                                const MlaDecodeBatchView &batch,
                                const Rotation &rotation, float *out,
                                float *lse = nullptr);

} // namespace kvarn

#endif // KVARN_REFERENCE_MLA_H
