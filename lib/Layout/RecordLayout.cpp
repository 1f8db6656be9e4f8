//===- RecordLayout.cpp - byte layout of one KVarN record -----------------===//

#include "kvarn/Layout/RecordLayout.h"

#include "kvarn/Support/Math.h"

using namespace kvarn;

int64_t kvarn::alignedRecordBytes(int64_t unalignedBytes, int headDim,
                                  int group) {
  if (headDim >= 256 && isPowerOf2(headDim)) {
    int64_t perToken = divideCeil(unalignedBytes, group);
    return int64_t(powerOf2Ceil(perToken)) * group;
  }
  return alignTo(unalignedBytes, 8);
}

kvarn::Expected<RecordLayout> RecordLayout::get(const Preset &preset,
                                                int headDim) {
  if (kvarn::Error err = checkHeadDim(headDim))
    return std::move(err);
  RecordLayout l;
  l.headDim = headDim;
  l.group = preset.group;
  l.keyBits = preset.keyBits;
  l.valueBits = preset.valueBits;
  l.sinkhornIters = preset.sinkhornIters;
  l.scaleFormat = preset.scales;

  const int64_t d = headDim, g = preset.group, fp16 = 2, scale = l.scaleBytes();
  int64_t offset = 0;
  auto field = [&](int64_t bytes) {
    int64_t at = offset;
    offset += bytes;
    return at;
  };
  l.kCodes = field(d * g * preset.keyBits / 8);
  l.kScale = field(d * scale);
  l.kZero = field(d * fp16);
  l.kTokenScale = field(g * scale);
  l.vCodes = field(g * d * preset.valueBits / 8);
  l.vChannelScale = field(d * scale);
  l.vScale = field(g * scale);
  l.vZero = field(g * fp16);
  if (preset.scales == ScaleFormat::E4M3)
    l.scaleExponents = field(kScaleFieldCount);
  l.unalignedBytes = offset;
  l.recordBytes = alignedRecordBytes(offset, headDim, preset.group);
  // kvarn's own format: records 16-byte aligned, as the fp16 ones of the
  // head dims served are, so that they are copied by 16-byte vectors.
  if (preset.scales == ScaleFormat::E4M3)
    l.recordBytes = alignTo(l.recordBytes, 16);
  return l;
}
