//===- RecordLayout.h - byte layout of one KVarN record ---------*- C++ -*-===//
//
// The record of one (block, KV head) tile, docs/kvarn.md, "Record layout".
// This is the only place that computes offsets and sizes.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_LAYOUT_RECORDLAYOUT_H
#define KVARN_LAYOUT_RECORDLAYOUT_H

#include "kvarn/Layout/Preset.h"

#include <cstdint>

namespace kvarn {

/// The scale fields, each with its own shared exponent in E4M3 records, in
/// the order of those exponents.
enum class ScaleField { KScale, KTokenScale, VChannelScale, VScale };
constexpr int kScaleFieldCount = 4;

struct RecordLayout {
  int headDim = 0;
  int group = 0;
  int keyBits = 0;
  int valueBits = 0;
  int sinkhornIters = 0;
  ScaleFormat scaleFormat = ScaleFormat::F16;

  // Byte offsets of the fields, in record order. "scale" is fp16 or, with
  // ScaleFormat::E4M3, one e4m3 byte per element (times 2^ its field's
  // entry of scaleExponents); zeros are always fp16.
  int64_t kCodes = 0;        // u8 [D][G / kCodesPerByte], channel-major
  int64_t kScale = 0;        // scale [D], absorbed scale per channel
  int64_t kZero = 0;         // fp16 [D], absorbed zero per channel
  int64_t kTokenScale = 0;   // scale [G], Sinkhorn column scale
  int64_t vCodes = 0;        // u8 [G][D / vCodesPerByte], token-major
  int64_t vChannelScale = 0; // scale [D], Sinkhorn column scale
  int64_t vScale = 0;        // scale [G], absorbed scale per token
  int64_t vZero = 0;         // fp16 [G], absorbed zero per token
  // E4M3 only: i8 [4], the shared exponents of k_scale, k_token_scale,
  // v_channel_scale and v_scale, in that order (-1 for fp16 scales).
  int64_t scaleExponents = -1;
  int64_t unalignedBytes = 0;
  int64_t recordBytes = 0; // aligned size, the record stride

  /// Byte offset of `field`'s shared exponent (E4M3 records only).
  int64_t scaleExponentOffset(ScaleField field) const {
    return scaleExponents + int64_t(field);
  }
  /// Bytes per element of the scale fields (2 for fp16, 1 for e4m3).
  int scaleBytes() const { return scaleFormat == ScaleFormat::E4M3 ? 1 : 2; }
  int kCodesPerByte() const { return 8 / keyBits; }
  int vCodesPerByte() const { return 8 / valueBits; }
  int64_t kRowBytes() const { return int64_t(group) * keyBits / 8; }
  int64_t vRowBytes() const { return int64_t(headDim) * valueBits / 8; }

  /// The layout for `preset` at `headDim`; fails for unsupported head dims.
  static kvarn::Expected<RecordLayout> get(const Preset &preset, int headDim);
};

/// The aligned record size rule. The reference's rule for its power-of-two
/// head dims: round up to 8 bytes for D <= 128; for D >= 256 round the
/// per-token share up to a power of two. Head dims the reference does not
/// support (not powers of two) are rounded up to 8 bytes, which wastes nothing.
int64_t alignedRecordBytes(int64_t unalignedBytes, int headDim, int group);

} // namespace kvarn

#endif // KVARN_LAYOUT_RECORDLAYOUT_H
