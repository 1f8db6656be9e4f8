//===- RecordLayout.cpp - byte layout of one KVarN record -----------------===//

#include "kvarn/Layout/RecordLayout.h"

#include "llvm/Support/MathExtras.h"

using namespace kvarn;

int64_t kvarn::alignedRecordBytes(int64_t unalignedBytes, int headDim,
                                  int group) {
  if (headDim >= 256 && llvm::isPowerOf2_32(headDim)) {
    int64_t perToken = llvm::divideCeil(unalignedBytes, group);
    return int64_t(llvm::PowerOf2Ceil(perToken)) * group;
  }
  return llvm::alignTo(unalignedBytes, 8);
}

llvm::Expected<RecordLayout> RecordLayout::get(const Preset &preset,
                                               int headDim) {
  if (llvm::Error err = checkHeadDim(headDim))
    return std::move(err);
  RecordLayout l;
  l.headDim = headDim;
  l.group = preset.group;
  l.keyBits = preset.keyBits;
  l.valueBits = preset.valueBits;
  l.sinkhornIters = preset.sinkhornIters;

  const int64_t d = headDim, g = preset.group, fp16 = 2;
  int64_t offset = 0;
  auto field = [&](int64_t bytes) {
    int64_t at = offset;
    offset += bytes;
    return at;
  };
  l.kCodes = field(d * g * preset.keyBits / 8);
  l.kScale = field(d * fp16);
  l.kZero = field(d * fp16);
  l.kTokenScale = field(g * fp16);
  l.vCodes = field(g * d * preset.valueBits / 8);
  l.vChannelScale = field(d * fp16);
  l.vScale = field(g * fp16);
  l.vZero = field(g * fp16);
  l.unalignedBytes = offset;
  l.recordBytes = alignedRecordBytes(offset, headDim, preset.group);
  return l;
}
