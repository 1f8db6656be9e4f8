//===- MlaRecordLayout.h - byte layout of one KVarN-MLA record --*- C++ -*-===//
//
// The record of one block of an MLA layer's compressed KV latent,
// docs/kvarn.md, "MLA records": the public reference's tile record
// (kvarn_mla_tile_layout in its triton_mla.py), byte for byte. This is the only
// place that computes its offsets and sizes.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_LAYOUT_MLARECORDLAYOUT_H
#define KVARN_LAYOUT_MLARECORDLAYOUT_H

#include "kvarn/Support/Error.h"
#include "kvarn/Support/Span.h"
#include <string_view>

#include <cstdint>

namespace kvarn {

/// An MLA preset: the latent quantized to `bits` bits per channel over
/// `group`-token blocks after `sinkhornIters` Sinkhorn iterations; the rope
/// part kept in fp16. One latent "KV head" per layer, no sink block.
struct MlaPreset {
  const char *name;
  int bits;
  int group;
  int sinkhornIters;
};

/// The MLA presets, default first: kvarn_mla_k4_g128 (the reference's only
/// configuration: it forces the block size to 128).
Span<const MlaPreset> allMlaPresets();
kvarn::Expected<const MlaPreset *> lookupMlaPreset(std::string_view name);
/// Whether `name` is one of allMlaPresets().
bool isMlaPresetName(std::string_view name);

/// Most query heads one MLA latent serves (DeepSeek-V3 has 128).
constexpr int kMaxMlaHeads = 128;

/// What MLA kernels are built for (the kvt spec's verifier and the DSL's
/// Specialization both ask here): a layout MlaRecordLayout::get accepts,
/// a rope key (rope_dim > 0), 1 to kMaxMlaHeads query heads.
kvarn::Error checkMlaKernelShape(const MlaPreset &preset, int kvLoraRank,
                                 int ropeDim, int heads);

struct MlaRecordLayout {
  int kvLoraRank = 0; // R, latent channels
  int ropeDim = 0;    // decoupled RoPE key channels, kept in fp16
  int group = 0;      // tokens per block
  int bits = 0;
  int sinkhornIters = 0;

  // Byte offsets of the fields, in record order.
  int64_t codes = 0;       // u8 [G][R * bits / 8], token-major; code of
                           // channel c at byte c / codesPerByte, low bits
                           // first (4 bits: low nibble = even channel)
  int64_t scale = 0;       // fp16 [R], per channel, Sinkhorn row scale absorbed
  int64_t zero = 0;        // fp16 [R], per channel, likewise
  int64_t tokenScale = 0;  // fp16 [G], the Sinkhorn per-token (column) scale
  int64_t rope = 0;        // fp16 [G][ropeDim], as the model wrote it
  int64_t recordBytes = 0; // no padding: the reference's record stride

  int codesPerByte() const { return 8 / bits; }
  int64_t tokenCodeBytes() const { return int64_t(kvLoraRank) * bits / 8; }
  /// Bytes per token, the reference's spec head_size.
  int64_t bytesPerToken() const { return recordBytes / group; }

  /// The layout of `preset` for a model's kv_lora_rank and rope dim; fails
  /// for ranks that are not powers of two in [64, 512] (the latent's
  /// Hadamard rotation is Sylvester's) and rope dims that are not multiples
  /// of 8 in [0, 256].
  static kvarn::Expected<MlaRecordLayout> get(const MlaPreset &preset,
                                              int kvLoraRank, int ropeDim);
};

} // namespace kvarn

#endif // KVARN_LAYOUT_MLARECORDLAYOUT_H
