//===- NoCompiler.cpp - the kernel cache without the JIT ------------------===//
//
// Linked into the runtime core (libkvarn_runtime.so), which carries no LLVM
// code generator or MLIR: kernels come from a cache warmed ahead of time
// (`kvarn-jit cache warm`, docs/cache.md). LinkedCompiler.cpp is the JIT's
// counterpart.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Runtime/KernelCache.h"

kvarn::KernelCompileFn kvarn::linkedCompiler() { return nullptr; }
