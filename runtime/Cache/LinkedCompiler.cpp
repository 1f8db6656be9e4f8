//===- LinkedCompiler.cpp - the kernel cache with the JIT -----------------===//
//
// Linked where the compiler is (libkvarn.so, kvarn-jit, kvarn-bench, the
// tests): a kernel the cache lacks is compiled. NoCompiler.cpp is the
// runtime core's counterpart.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Runtime/KernelCache.h"

kvarn::KernelCompileFn kvarn::linkedCompiler() { return compileKernel; }
