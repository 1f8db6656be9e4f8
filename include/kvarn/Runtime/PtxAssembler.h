//===- PtxAssembler.h - PTX to cubin, two ways ------------------*- C++ -*-===//
//
// The compiler hands the runtime PTX text. It becomes a cubin either through
// the driver's own linker (cuLink*, in process, for the context's GPU: what a
// serving machine uses) or through the toolkit's `ptxas` run as a subprocess
// (any sm_XX, no GPU needed: what CI uses to check every kernel, and where
// the register / spill / shared-memory report comes from).
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_PTXASSEMBLER_H
#define KVARN_RUNTIME_PTXASSEMBLER_H

#include "kvarn/Runtime/Context.h"

#include <string_view>

#include <cstdint>
#include <string>
#include <vector>

namespace kvarn::cuda {

/// What the assembler said about one kernel (`ptxas -v`, or the driver's JIT
/// with verbose logging). -1 where the log did not say.
struct KernelResources {
  std::string name;
  std::string arch;            // "sm_90"
  int registers = -1;
  int barriers = -1;
  int64_t sharedBytes = 0;     // static shared memory ("smem")
  int64_t stackFrameBytes = -1;
  int64_t spillStoreBytes = -1;
  int64_t spillLoadBytes = -1;

  bool spills() const { return spillStoreBytes > 0 || spillLoadBytes > 0; }
};

/// Reads the entry functions' figures out of an assembler's verbose log.
/// Functions that are not entries (device functions) are left out.
std::vector<KernelResources> parseAssemblerLog(std::string_view log);

/// A cubin and what the assembler said while making it.
struct CubinImage {
  std::string bytes;  // the ELF image, for Module::loadCubin
  std::string log;    // the assembler's info output (warnings, `-v` figures)
  std::vector<KernelResources> kernels;
};

/// PTX to a cubin for the context's GPU with the driver's linker, in process.
/// A rejected PTX fails with KVARN_ERROR_COMPILE and the JIT's error log in
/// the message. `name` labels the input in the driver's messages.
kvarn::Expected<CubinImage>
linkPtxWithDriver(const Context &context, std::string_view ptx,
                  std::string_view name = "kvarn.ptx");

/// Where `ptxas` is looked for, in order: $KVARN_PTXAS (a file), then
/// bin/ptxas under $CUDA_HOME, $CUDA_PATH, the toolkit kvarn was built
/// against and /usr/local/cuda, then PATH.
std::vector<std::string> ptxasCandidates();

/// The first of `candidates` that is an executable file; else KVARN_ERROR_IO
/// with a message listing where it looked. A $KVARN_PTXAS that is not such a
/// file is passed over for the next candidate, and `warning` (if given) says
/// so; with no other candidate the error names it.
kvarn::Expected<std::string>
findPtxas(const std::vector<std::string> &candidates = ptxasCandidates(),
          std::string *warning = nullptr);

struct PtxasOptions {
  std::string arch = "sm_90";    // what ptxas's -arch takes
  int optimizationLevel = 3;     // -O
  std::string ptxasPath;         // empty: findPtxas()
  std::vector<std::string> extraArguments;
};

/// Runs `ptxas -v` on `ptx` (through temporary files) and returns the cubin,
/// its log and the parsed figures. A rejected PTX fails with
/// KVARN_ERROR_COMPILE and ptxas's messages.
kvarn::Expected<CubinImage> assembleWithPtxas(std::string_view ptx,
                                              const PtxasOptions &options = {});

} // namespace kvarn::cuda

#endif // KVARN_RUNTIME_PTXASSEMBLER_H
