//===- Preset.cpp - KVarN presets and supported shapes --------------------===//

#include "kvarn/Layout/Preset.h"
#include "kvarn/Support/Error.h"

using namespace kvarn;

static const Preset kPresets[] = {
    {"kvarn_k4v2_g128", 4, 2, 128, 8},
    {"kvarn_k4v2_g64", 4, 2, 64, 8},
    {"kvarn_k4v4_g128", 4, 4, 128, 8},
    {"kvarn_k4v4_g64", 4, 4, 64, 8},
    {"kvarn_k4v2_g128_e4m3", 4, 2, 128, 8, ScaleFormat::E4M3},
    {"kvarn_k4v2_g64_e4m3", 4, 2, 64, 8, ScaleFormat::E4M3},
    {"kvarn_k4v4_g128_e4m3", 4, 4, 128, 8, ScaleFormat::E4M3},
    {"kvarn_k4v4_g64_e4m3", 4, 4, 64, 8, ScaleFormat::E4M3},
};

Span<const Preset> kvarn::allPresets() { return kPresets; }

const Preset &kvarn::defaultPreset() { return kPresets[0]; }

kvarn::Expected<const Preset *> kvarn::lookupPreset(std::string_view name) {
  for (const Preset &preset : kPresets)
    if (name == preset.name)
      return &preset;
  std::string known;
  for (const Preset &preset : kPresets)
    known += (known.empty() ? "" : ", ") + std::string(preset.name);
  return makeError(KVARN_ERROR_UNKNOWN_PRESET,
                   "unknown preset '{0}' (known presets: {1})", name, known);
}

kvarn::Error kvarn::checkHeadDim(int headDim) {
  if (headDim < kMinHeadDim || headDim > kMaxHeadDim ||
      headDim % kHeadDimMultiple != 0)
    return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                     "head_dim {0} is not supported: it must be a multiple of "
                     "{1} from {2} to {3}",
                     headDim, kHeadDimMultiple, kMinHeadDim, kMaxHeadDim);
  return kvarn::Error::success();
}
