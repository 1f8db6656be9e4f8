//===- Specialization.h - what a kernel is built for ------------*- C++ -*-===//
//
// A .kvt kernel is generic over the preset, head_dim, GQA ratio and
// activation dtype; building it for one Specialization binds the DSL's named
// constants (D, G, KBITS, ...) from kvarn's one layout table, the way Triton
// binds constexprs, so every tile shape in the kvt IR is static, and its
// named type ACT to the activation dtype.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DSL_SPECIALIZATION_H
#define KVARN_DSL_SPECIALIZATION_H

#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Support/DType.h"

#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace kvarn::dsl {

struct Specialization {
  std::string preset = "kvarn_k4v2_g128";
  int headDim = 128;
  int gqa = 1; // query heads per KV head
  /// The activations' element type (the DSL's ACT): q, append's k/v and the
  /// decode family's outputs. The pool and the records are fp16 and bytes
  /// whatever it is.
  DType dtype = DType::F16;

  /// Checks the preset, head_dim and GQA ratio (1 to kMaxGqa).
  llvm::Error check() const;

  /// "kvarn_k4v2_g128 head_dim 128 gqa 1", with " dtype bf16" appended for
  /// bf16: how tools and errors name a specialization (f16, the default,
  /// is not spelled, so fp16 lines read as they always did).
  std::string describe() const;
};

constexpr int kMaxGqa = 64;

/// Most partial results decode_split writes per (request, KV head): the
/// static split dimension of the scratch buffers and of combine's kvt.merge.
/// 64: one request of 8 KV heads then fills 512 CTAs, the 4 a decode CTA
/// shares an SM with on 132 SMs (16 left three quarters of an H200 idle).
constexpr int kMaxDecodeSplits = 64;

/// The DSL's name for the activation dtype: `ptr<ACT>`, `ACT(x)`.
constexpr llvm::StringLiteral kActivationTypeName = "ACT";

/// A named integer constant of the DSL.
struct SpecConstant {
  const char *name;
  int64_t value;
  const char *meaning;
};

/// D, G, KBITS, VBITS, ITERS, GQA, RECORD_BYTES, RECORD_USED_BYTES,
/// POOL_ROWS and MAX_SPLITS for `spec` (which must pass check()).
std::vector<SpecConstant> specConstants(const Specialization &spec,
                                        const RecordLayout &layout);

} // namespace kvarn::dsl

#endif // KVARN_DSL_SPECIALIZATION_H
