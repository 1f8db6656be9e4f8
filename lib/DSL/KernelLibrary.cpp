//===- KernelLibrary.cpp - the .kvt kernel library in the binary ----------===//

#include "kvarn/DSL/KernelLibrary.h"
#include "kvarn/Support/Error.h"

#include "kvarn/Support/Strings.h"

using namespace kvarn;
using namespace kvarn::dsl;

static const LibraryFile kLibraryFiles[] = {
#include "kvarn/DSL/KernelLibrarySources.inc"
};

Span<const LibraryFile> kvarn::dsl::libraryFiles() { return kLibraryFiles; }

const LibraryFile *kvarn::dsl::findLibraryFile(std::string_view name) {
  for (const LibraryFile &file : kLibraryFiles)
    if (file.name == name)
      return &file;
  return nullptr;
}

KernelFamily kvarn::dsl::kernelFamily(const Specialization &spec) {
  return spec.isMla() ? KernelFamily::Mla : KernelFamily::Dense;
}

std::vector<std::string> kvarn::dsl::libraryKernelNames(KernelFamily family) {
  std::vector<std::string> names;
  for (const LibraryFile &file : kLibraryFiles)
    if (file.isKernel && file.family == family)
      names.push_back(std::string(file.name));
  return names;
}

kvarn::Expected<const LibraryFile *>
kvarn::dsl::findLibraryKernel(std::string_view name,
                              const Specialization &spec) {
  KernelFamily family = kernelFamily(spec);
  const char *kind = family == KernelFamily::Mla ? "MLA" : "dense";
  const LibraryFile *file = findLibraryFile(name);
  if (!file || !file->isKernel)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "unknown kernel '{0}' (the library's {1} kernels: {2})",
                     name, kind, join(libraryKernelNames(family), ", "));
  if (file->family != family)
    return makeError(
        KVARN_ERROR_INVALID_ARGUMENT,
        "kernel '{0}' is built for {1} presets, and {2} is {3} "
        "(its kernels: {4})",
        name, family == KernelFamily::Mla ? "dense" : "MLA", spec.preset,
        family == KernelFamily::Mla ? "an MLA preset" : "a dense preset",
        join(libraryKernelNames(family), ", "));
  return file;
}
