//===- Commands.h - the commands of kvarn-jit -------------------*- C++ -*-===//
#ifndef KVARN_TOOLS_KVARNJIT_COMMANDS_H
#define KVARN_TOOLS_KVARNJIT_COMMANDS_H

#include "CommandLine.h"

#include "kvarn/Codegen/KernelCompiler.h"
#include "kvarn/Golden/GoldenCase.h"

#include <map>
#include <memory>

namespace kvarn::jit {

/// The top-level mode: build kernels for a shape and emit them.
Command emitCommand();

/// `ref flush` and `ref decode`: the CPU reference on golden cases.
std::vector<Command> refCommands();

/// `kvarn-jit cache ls|verify|clear|warm|bench`.
std::vector<Command> cacheCommands();

/// The DSL text of each kernel to build and where it came from.
struct KernelSource {
  std::string text;
  std::string fileName;
  bool user = false; // a --source file, not the library
};
using KernelSources = std::map<std::string, KernelSource>;

/// The local GPU's chip when it is one kvarn supports, else sm_90.
std::string localArch();

/// --print-ir-after-all, --timing and the crash reproducer's path.
void applyReportingOptions(const ParsedOptions &opts, llvm::StringRef kernel,
                           CompileOptions &options);
/// Prints a compiler failure for `kernel` on one line, with the crash
/// reproducer's path when one was written; returns 1.
int compileFailure(llvm::StringRef kernel, const CompileOptions &options,
                   kvarn::Error err);

/// --dump-ir DIR: the IR after every stage of one kernel, as
/// DIR/<kernel>/NN-<stage>.<ext>. A no-op without the option.
class StageDumper {
public:
  StageDumper(const ParsedOptions &opts, llvm::StringRef kernel);
  void source(llvm::StringRef text);
  /// A stage of CompileOptions::onStage: kvt, kvgpu, nvvm, llir, ptx.
  void stage(llvm::StringRef name, llvm::StringRef ir);
  /// SASS from a cubin, when cuobjdump or nvdisasm is found.
  void sass(llvm::StringRef cubin);
  /// Empty, or why a file could not be written.
  const std::string &problem() const { return error; }

private:
  void write(llvm::StringRef file, llvm::StringRef text);
  std::string dir; // empty: not dumping
  std::string error;
};

/// The default mode: every kernel of `names` through the kernel cache.
int buildThroughCache(const ParsedOptions &opts,
                      const dsl::Specialization &spec, const Target &target,
                      const std::vector<std::string> &names,
                      const KernelSources &sources, unsigned threads);

/// `kvarn-jit devices`: the CUDA driver, the GPUs and ptxas.
Command devicesCommand();

/// `kvarn-jit run flush|append|decode`: the generated kernels on the GPU.
std::vector<Command> runCommands();

// Shared by `ref` and `run`: a golden case and how outputs compare with it.
kvarn::Expected<GoldenCase> loadCaseOption(const ParsedOptions &opts);
/// Rotated K then V of a flush case's raw tokens, on the CPU.
kvarn::Expected<std::vector<uint16_t>> referenceAppend(const GoldenCase &c);
/// "; vs records_ref: codes equal ..." (nothing when the case has none).
kvarn::Error describeRecordsAgainstCase(const GoldenCase &c,
                                        llvm::ArrayRef<uint8_t> records);
/// "; rel L2 vs out_exact ..." for fp32 [B, Hq, D].
kvarn::Error describeAttentionAgainstCase(const GoldenCase &c,
                                          llvm::ArrayRef<float> out);
/// "; vs k_rot/v_rot: N values differ, at most U ulps".
kvarn::Error describeRotationAgainstCase(const GoldenCase &c,
                                         llvm::ArrayRef<uint16_t> rotated);

} // namespace kvarn::jit

#endif // KVARN_TOOLS_KVARNJIT_COMMANDS_H
