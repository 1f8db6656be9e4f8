//===- LaunchPolicy.h - how attention kernels are shaped --------*- C++ -*-===//
//
// The launch shape the code generator gives kernels that attend (decode,
// decode_split, verify), shared with the runtime, whose decode split count
// aims to fill the CTA slots this shape leaves per SM. Plain constants: no
// MLIR needed to read them.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_CODEGEN_LAUNCHPOLICY_H
#define KVARN_CODEGEN_LAUNCHPOLICY_H

namespace kvarn {

/// Warps per CTA of an attention kernel: with 128 threads, each thread
/// reduces the scores of several query heads of one token at once.
constexpr int kAttentionNumWarps = 4;

/// CTAs per SM an attention kernel's registers (.minnctapersm) and shared
/// memory are budgeted for: the block loop is latency-bound, so CTAs
/// overlap one another's loads. Measured on the H100 (docs/benchmarks.md):
/// 4 beat 2 and 3 at 32 x 8K and 8 x 32K.
constexpr int kAttentionCtasPerSM = 4;

} // namespace kvarn

#endif // KVARN_CODEGEN_LAUNCHPOLICY_H
