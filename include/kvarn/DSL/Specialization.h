//===- Specialization.h - what a kernel is built for ------------*- C++ -*-===//
//
// A .kvt kernel is generic over the preset, head_dim, GQA ratio and
// activation dtype; building it for one Specialization binds the DSL's named
// constants (D, G, KBITS, ...) from kvarn's one layout table, the way Triton
// binds constexprs, so every tile shape in the kvt IR is static, and its
// named type ACT to the activation dtype. An MLA preset's kernels (the
// mla_ kernels) get their own constants (R, E, BITS, HEADS, ...).
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DSL_SPECIALIZATION_H
#define KVARN_DSL_SPECIALIZATION_H

#include "kvarn/Layout/MlaRecordLayout.h"
#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Support/DType.h"

#include "kvarn/Support/Error.h"

#include <string>
#include <vector>

namespace kvarn::dsl {

struct Specialization {
  std::string preset = "kvarn_k4v2_g128";
  /// The width of a KV head; for an MLA preset the latent's, kv_lora_rank.
  int headDim = 128;
  /// Query heads per KV head; for an MLA preset the query heads that all
  /// attend to the one latent.
  int gqa = 1;
  /// The activations' element type (the DSL's ACT): q, append's k/v and the
  /// decode family's outputs. The pool and the records are fp16 and bytes
  /// whatever it is.
  DType dtype = DType::F16;
  /// MLA presets only: the width of the fp16 rope key beside the latent.
  int ropeDim = 0;
  /// Dense presets: the bytes of a pool block's chunk of fp16 K (or V) rows,
  /// which sizes POOL_ROWS (poolRowsPerStep); 0: attentionPoolRowsBytes at
  /// the launch policy's CTAs an SM on kDefaultChip. specializationFor
  /// (KernelCompiler.h) sets it from the compile options: their CTAs an SM,
  /// chip and pipelineCopies.
  long poolRowsBytes = 0;

  /// Whether the preset is an MLA preset (kvarn_mla_*).
  bool isMla() const { return isMlaPresetName(preset); }

  /// Checks the preset, head_dim and GQA ratio (1 to kMaxGqa); for MLA the
  /// latent's rank and rope dim (MlaRecordLayout::get) and heads (1 to
  /// kMaxMlaHeads); dense presets have no rope dim.
  kvarn::Error check() const;

  /// "kvarn_k4v2_g128 head_dim 128 gqa 1", with " dtype bf16" appended for
  /// bf16: how tools and errors name a specialization (f16, the default,
  /// is not spelled, so fp16 lines read as they always did); MLA adds
  /// " rope_dim 64".
  std::string describe() const;
};

constexpr int kMaxGqa = 64;

/// Most partial results decode_split writes per (request, KV head): the
/// static split dimension of the scratch buffers and of combine's kvt.merge.
/// 64: one request of 8 KV heads then fills 512 CTAs, the 4 a decode CTA
/// shares an SM with on 132 SMs (16 left three quarters of an H200 idle).
constexpr int kMaxDecodeSplits = 64;

/// The DSL's name for the activation dtype: `ptr<ACT>`, `ACT(x)`.
constexpr std::string_view kActivationTypeName = "ACT";

/// A named integer constant of the DSL.
struct SpecConstant {
  const char *name;
  int64_t value;
  const char *meaning;
};

/// The DSL's constants for `spec` (which must pass check()): D, G, KBITS,
/// VBITS, ITERS, GQA, RECORD_BYTES, RECORD_USED_BYTES, POOL_ROWS and
/// MAX_SPLITS; for an MLA preset R, E, G, BITS, ITERS, HEADS, HEAD_GROUP,
/// HEAD_GROUPS, RECORD_BYTES, POOL_ROWS and MAX_SPLITS.
std::vector<SpecConstant> specConstants(const Specialization &spec);

} // namespace kvarn::dsl

#endif // KVARN_DSL_SPECIALIZATION_H
