//===- Commands.h - the commands of kvarn-jit -------------------*- C++ -*-===//
#ifndef KVARN_TOOLS_KVARNJIT_COMMANDS_H
#define KVARN_TOOLS_KVARNJIT_COMMANDS_H

#include "CommandLine.h"

namespace kvarn::jit {

/// The top-level mode: build kernels for a shape and emit them.
Command emitCommand();

/// `ref flush` and `ref decode`: the CPU reference on golden cases.
std::vector<Command> refCommands();

/// `kvarn-jit devices`: the CUDA driver, the GPUs and ptxas.
Command devicesCommand();

} // namespace kvarn::jit

#endif // KVARN_TOOLS_KVARNJIT_COMMANDS_H
