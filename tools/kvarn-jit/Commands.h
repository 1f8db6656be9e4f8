//===- Commands.h - the commands of kvarn-jit -------------------*- C++ -*-===//
#ifndef KVARN_TOOLS_KVARNJIT_COMMANDS_H
#define KVARN_TOOLS_KVARNJIT_COMMANDS_H

#include "CommandLine.h"

#include "kvarn/Golden/GoldenCase.h"

namespace kvarn::jit {

/// The top-level mode: build kernels for a shape and emit them.
Command emitCommand();

/// `ref flush` and `ref decode`: the CPU reference on golden cases.
std::vector<Command> refCommands();

/// `kvarn-jit devices`: the CUDA driver, the GPUs and ptxas.
Command devicesCommand();

/// `kvarn-jit run flush|append|decode`: the generated kernels on the GPU.
std::vector<Command> runCommands();

// Shared by `ref` and `run`: a golden case and how outputs compare with it.
llvm::Expected<GoldenCase> loadCaseOption(const ParsedOptions &opts);
/// Rotated K then V of a flush case's raw tokens, on the CPU.
llvm::Expected<std::vector<uint16_t>> referenceAppend(const GoldenCase &c);
/// "; vs records_ref: codes equal ..." (nothing when the case has none).
llvm::Error describeRecordsAgainstCase(const GoldenCase &c,
                                       llvm::ArrayRef<uint8_t> records);
/// "; rel L2 vs out_exact ..." for fp32 [B, Hq, D].
llvm::Error describeAttentionAgainstCase(const GoldenCase &c,
                                         llvm::ArrayRef<float> out);
/// "; vs k_rot/v_rot: N values differ, at most U ulps".
llvm::Error describeRotationAgainstCase(const GoldenCase &c,
                                        llvm::ArrayRef<uint16_t> rotated);

} // namespace kvarn::jit

#endif // KVARN_TOOLS_KVARNJIT_COMMANDS_H
