//===- Specialization.cpp - what a kernel is built for --------------------===//

#include "kvarn/DSL/Specialization.h"
#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Support/Error.h"

#include <algorithm>

using namespace kvarn;
using namespace kvarn::dsl;

kvarn::Error Specialization::check() const {
  if (isMla()) {
    const MlaPreset *p = kvarn::cantFail(lookupMlaPreset(preset));
    return checkMlaKernelShape(*p, headDim, ropeDim, gqa);
  }
  if (ropeDim != 0)
    return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                     "rope_dim is for MLA presets; {0} is not one", preset);
  kvarn::Expected<const Preset *> p = lookupPreset(preset);
  if (!p)
    return p.takeError();
  if (kvarn::Error err = checkHeadDim(headDim))
    return err;
  if (gqa < 1 || gqa > kMaxGqa)
    return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                     "gqa ratio {0} is outside [1, {1}]", gqa, kMaxGqa);
  return kvarn::Error::success();
}

std::string Specialization::describe() const {
  std::string text = format("{0} head_dim {1} gqa {2}", preset, headDim, gqa);
  if (isMla())
    text += format(" rope_dim {0}", ropeDim);
  if (dtype != DType::F16)
    text += " dtype " + std::string(spell(dtype));
  return text;
}

std::vector<SpecConstant>
kvarn::dsl::specConstants(const Specialization &spec) {
  if (spec.isMla()) {
    const MlaPreset *p = kvarn::cantFail(lookupMlaPreset(spec.preset));
    MlaRecordLayout l =
        kvarn::cantFail(MlaRecordLayout::get(*p, spec.headDim, spec.ropeDim));
    return {
        {"R", l.kvLoraRank, "latent channels (kv_lora_rank)"},
        {"E", l.ropeDim, "rope key channels, kept in fp16"},
        {"G", l.group, "tokens per tile (the block size)"},
        {"BITS", l.bits, "bits per latent code"},
        {"ITERS", l.sinkhornIters, "Sinkhorn iterations"},
        {"HEADS", spec.gqa, "query heads attending to the latent"},
        {"HEAD_GROUP", mlaHeadsPerProgram(spec.gqa),
         "query heads one decode program serves (LaunchPolicy.h)"},
        {"HEAD_GROUPS", spec.gqa / mlaHeadsPerProgram(spec.gqa),
         "decode programs per request (HEADS / HEAD_GROUP)"},
        {"RECORD_BYTES", l.recordBytes, "bytes per record (the stride)"},
        {"POOL_ROWS", poolRowsPerStep(l.group, l.kvLoraRank),
         "tokens of an fp16 pool block attended per step (LaunchPolicy.h)"},
        {"MAX_SPLITS", kMaxDecodeSplits,
         "split dimension of mla_decode_split's scratch buffers"},
    };
  }
  const Preset *p = kvarn::cantFail(lookupPreset(spec.preset));
  RecordLayout l = kvarn::cantFail(RecordLayout::get(*p, spec.headDim));
  long poolRowsBytes =
      spec.poolRowsBytes
          ? spec.poolRowsBytes
          : attentionPoolRowsBytes(l.group, l.headDim, 0,
                                   findChip(kDefaultChip)->sharedPerSM,
                                   /*pipelineCopies=*/false);
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
      {"POOL_ROWS", poolRowsPerStep(l.group, l.headDim, poolRowsBytes),
       "tokens of an fp16 pool block attended per step (LaunchPolicy.h)"},
      {"MAX_SPLITS", kMaxDecodeSplits,
       "split dimension of decode_split's scratch buffers"},
  };
}
