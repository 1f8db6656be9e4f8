//===- Preset.h - KVarN presets and supported shapes ------------*- C++ -*-===//
//
// The one table of presets (docs/kvarn.md, "Presets") and the one check of
// supported head dims. Compiler, runtime, C API and tests all read these.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_LAYOUT_PRESET_H
#define KVARN_LAYOUT_PRESET_H

#include "kvarn/Support/Error.h"
#include "kvarn/Support/Span.h"
#include <string_view>

namespace kvarn {

/// How a record stores its scales (docs/kvarn.md, "Scale formats"): fp16
/// (the public reference's format), or e4m3 bytes with one shared exponent
/// byte per field (the zero points stay fp16).
enum class ScaleFormat { F16, E4M3 };

struct Preset {
  const char *name;
  int keyBits;
  int valueBits;
  int group; // tokens per tile, equal to the paged cache's block size
  int sinkhornIters;
  ScaleFormat scales = ScaleFormat::F16;
};

/// The presets of docs/kvarn.md, "Presets", default first.
Span<const Preset> allPresets();
const Preset &defaultPreset();
kvarn::Expected<const Preset *> lookupPreset(std::string_view name);

constexpr int kMinHeadDim = 64;
constexpr int kMaxHeadDim = 512;
constexpr int kHeadDimMultiple = 16;

/// Success for every head_dim that is a multiple of 16 in [64, 512].
kvarn::Error checkHeadDim(int headDim);

} // namespace kvarn

#endif // KVARN_LAYOUT_PRESET_H
