//===- Specialization.cpp - what a kernel is built for --------------------===//

#include "kvarn/DSL/Specialization.h"
#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Support/Error.h"

using namespace kvarn;
using namespace kvarn::dsl;

llvm::Error Specialization::check() const {
  llvm::Expected<const Preset *> p = lookupPreset(preset);
  if (!p)
    return p.takeError();
  if (llvm::Error err = checkHeadDim(headDim))
    return err;
  if (gqa < 1 || gqa > kMaxGqa)
    return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                     "gqa ratio {0} is outside [1, {1}]", gqa, kMaxGqa);
  return llvm::Error::success();
}

std::string Specialization::describe() const {
  std::string text = llvm::formatv("{0} head_dim {1} gqa {2}", preset,
                                   headDim, gqa)
                         .str();
  if (dtype != DType::F16)
    text += (" dtype " + spell(dtype)).str();
  return text;
}

std::vector<SpecConstant> kvarn::dsl::specConstants(const Specialization &spec,
                                                    const RecordLayout &l) {
  return {
      {"D", l.headDim, "head_dim"},
      {"G", l.group, "tokens per tile (the block size)"},
      {"KBITS", l.keyBits, "bits per key code"},
      {"VBITS", l.valueBits, "bits per value code"},
      {"ITERS", l.sinkhornIters, "Sinkhorn iterations"},
      {"GQA", spec.gqa, "query heads per KV head"},
      {"RECORD_BYTES", l.recordBytes, "bytes per record (the record stride)"},
      {"RECORD_USED_BYTES", l.unalignedBytes,
       "bytes of a record before its padding"},
      {"POOL_ROWS", poolRowsPerStep(l.group, l.headDim),
       "tokens of an fp16 pool block attended per step (LaunchPolicy.h)"},
      {"MAX_SPLITS", kMaxDecodeSplits,
       "split dimension of decode_split's scratch buffers"},
  };
}
