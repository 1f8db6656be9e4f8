//===- MlaRecordLayout.cpp - byte layout of one KVarN-MLA record ----------===//

#include "kvarn/Layout/MlaRecordLayout.h"

#include "kvarn/Support/Error.h"

#include "kvarn/Support/Math.h"

#include <algorithm>

using namespace kvarn;

static const MlaPreset kMlaPresets[] = {
    {"kvarn_mla_k4_g128", /*bits=*/4, /*group=*/128, /*sinkhornIters=*/16},
};

Span<const MlaPreset> kvarn::allMlaPresets() { return kMlaPresets; }

kvarn::Expected<const MlaPreset *>
kvarn::lookupMlaPreset(std::string_view name) {
  for (const MlaPreset &preset : kMlaPresets)
    if (name == preset.name)
      return &preset;
  std::string known;
  for (const MlaPreset &preset : kMlaPresets)
    known += std::string(known.empty() ? "" : ", ") + preset.name;
  return makeError(KVARN_ERROR_UNKNOWN_PRESET,
                   "unknown MLA preset '{0}' (known MLA presets: {1})", name,
                   known);
}

bool kvarn::isMlaPresetName(std::string_view name) {
  return std::any_of(std::begin(kMlaPresets), std::end(kMlaPresets),
                     [&](const MlaPreset &p) { return name == p.name; });
}

kvarn::Error kvarn::checkMlaKernelShape(const MlaPreset &preset, int kvLoraRank,
                                        int ropeDim, int heads) {
  if (kvarn::Error err =
          MlaRecordLayout::get(preset, kvLoraRank, ropeDim).takeError())
    return err;
  if (ropeDim == 0)
    return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                     "MLA kernels need the rope key: rope_dim must be a "
                     "multiple of 8 from 8 to 256, not 0");
  if (heads < 1 || heads > kMaxMlaHeads)
    return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                     "MLA query heads {0} are outside [1, {1}]", heads,
                     kMaxMlaHeads);
  return kvarn::Error::success();
}

kvarn::Expected<MlaRecordLayout>
MlaRecordLayout::get(const MlaPreset &preset, int kvLoraRank, int ropeDim) {
  if (kvLoraRank < 64 || kvLoraRank > 512 || !isPowerOf2(unsigned(kvLoraRank)))
    return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                     "MLA kv_lora_rank {0} is not supported: it must be a "
                     "power of two from 64 to 512",
                     kvLoraRank);
  if (ropeDim < 0 || ropeDim > 256 || ropeDim % 8)
    return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                     "MLA rope dim {0} is not supported: it must be a "
                     "multiple of 8 from 0 to 256",
                     ropeDim);
  MlaRecordLayout l;
  l.kvLoraRank = kvLoraRank;
  l.ropeDim = ropeDim;
  l.group = preset.group;
  l.bits = preset.bits;
  l.sinkhornIters = preset.sinkhornIters;

  const int64_t r = kvLoraRank, g = preset.group, fp16 = 2;
  int64_t offset = 0;
  auto field = [&](int64_t bytes) {
    int64_t at = offset;
    offset += bytes;
    return at;
  };
  l.codes = field(g * r * preset.bits / 8);
  l.scale = field(r * fp16);
  l.zero = field(r * fp16);
  l.tokenScale = field(g * fp16);
  l.rope = field(g * ropeDim * fp16);
  l.recordBytes = offset;
  return l;
}
