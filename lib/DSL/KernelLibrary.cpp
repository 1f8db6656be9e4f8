//===- KernelLibrary.cpp - the .kvt kernel library in the binary ----------===//

#include "kvarn/DSL/KernelLibrary.h"

using namespace kvarn::dsl;

static const LibraryFile kLibraryFiles[] = {
#include "kvarn/DSL/KernelLibrarySources.inc"
};

llvm::ArrayRef<LibraryFile> kvarn::dsl::libraryFiles() { return kLibraryFiles; }

const LibraryFile *kvarn::dsl::findLibraryFile(llvm::StringRef name) {
  for (const LibraryFile &file : kLibraryFiles)
    if (file.name == name)
      return &file;
  return nullptr;
}
