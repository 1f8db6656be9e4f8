//===- KernelLibrary.h - the .kvt kernel library in the binary --*- C++ -*-===//
//
// lib/kernels/*.kvt, embedded at build time: one file per kernel of the ABI
// (docs/dsl.md fixes their arguments) plus modules of shared fns that
// kernels `import`.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DSL_KERNELLIBRARY_H
#define KVARN_DSL_KERNELLIBRARY_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

namespace kvarn::dsl {

struct LibraryFile {
  llvm::StringRef name;     // "decode": the kernel or module name
  llvm::StringRef fileName; // "decode.kvt"
  llvm::StringRef text;
  bool isKernel; // defines kernel `name`; else a module of fns and consts
};

/// Kernels first, in ABI order (append, flush, decode, decode_split, combine,
/// verify, materialize), then modules.
llvm::ArrayRef<LibraryFile> libraryFiles();

/// The library file named `name` ("decode" or "paged"), or null.
const LibraryFile *findLibraryFile(llvm::StringRef name);

} // namespace kvarn::dsl

#endif // KVARN_DSL_KERNELLIBRARY_H
