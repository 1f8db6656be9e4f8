//===- KernelLibrary.h - the .kvt kernel library in the binary --*- C++ -*-===//
//
// lib/kernels/*.kvt, embedded at build time: one file per kernel of the ABI
// (docs/dsl.md fixes their arguments) plus modules of shared fns that
// kernels `import`.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DSL_KERNELLIBRARY_H
#define KVARN_DSL_KERNELLIBRARY_H

#include "kvarn/DSL/Specialization.h"

#include "kvarn/Support/Error.h"
#include "kvarn/Support/Span.h"
#include <string_view>

#include <string>
#include <vector>

namespace kvarn::dsl {

/// The specializations a library kernel is built for: the dense presets'
/// (one record per block and KV head) or the MLA presets' (one latent
/// record per block).
enum class KernelFamily { Dense, Mla };

/// The family of kernels `spec` builds (its preset's).
KernelFamily kernelFamily(const Specialization &spec);

struct LibraryFile {
  std::string_view name;     // "decode": the kernel or module name
  std::string_view fileName; // "decode.kvt"
  std::string_view text;
  bool isKernel; // defines kernel `name`; else a module of fns and consts
  KernelFamily family; // kernels: what they are built for
};

/// The dense kernels first, in ABI order (append, flush, decode,
/// decode_split, combine, verify, materialize), then the MLA kernels
/// (mla_append, mla_flush, mla_decode, mla_decode_split, mla_combine,
/// mla_verify), then
/// modules.
Span<const LibraryFile> libraryFiles();

/// The library file named `name` ("decode" or "paged"), or null.
const LibraryFile *findLibraryFile(std::string_view name);

/// The names of the library's kernels of `family`, in library order.
std::vector<std::string> libraryKernelNames(KernelFamily family);

/// The library kernel `name` if it is one built for `spec`; otherwise an
/// error that says why (unknown, a module, or the other family's).
kvarn::Expected<const LibraryFile *>
findLibraryKernel(std::string_view name, const Specialization &spec);

} // namespace kvarn::dsl

#endif // KVARN_DSL_KERNELLIBRARY_H
