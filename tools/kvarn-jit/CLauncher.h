//===- CLauncher.h - Triton-style AOT C launchers for kernels ---*- C++ -*-===//
//
// `kvarn-jit --emit c-launcher`: for one compiled kernel, a .h/.c pair in
// the style of `python -m triton.tools.compile`, so that a C or C++ engine
// can link a kernel with only the CUDA driver: the image (cubin, or PTX for
// the driver to JIT) embedded, load_<name>() / unload_<name>(), and
// CUresult <name>(CUstream, params...) building the grid and the arguments
// from the kernel's ABI (KernelAbi) and launch shape, as kvarn's runtime
// does.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_TOOLS_KVARN_JIT_CLAUNCHER_H
#define KVARN_TOOLS_KVARN_JIT_CLAUNCHER_H

#include "kvarn/Codegen/Pipeline.h"

#include "llvm/ADT/StringRef.h"

#include <string>

namespace kvarn::jit {

struct CLauncher {
  std::string header, source; // <name>.h, <name>.c
};

/// The launcher of `kernel`, embedding `image` (a cubin when `isCubin`,
/// else PTX text); `describe` (the shape and chip) goes into the comments.
/// Fails for a kernel without an ABI or with a parameter name C cannot
/// take as given.
kvarn::Expected<CLauncher> makeCLauncher(const CompiledKernel &kernel,
                                         llvm::StringRef image, bool isCubin,
                                         llvm::StringRef describe);

} // namespace kvarn::jit

#endif // KVARN_TOOLS_KVARN_JIT_CLAUNCHER_H
