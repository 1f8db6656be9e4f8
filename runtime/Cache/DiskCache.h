//===- DiskCache.h - the on-disk level of the kernel cache ------*- C++ -*-===//
//
// Internal to the cache: one entry directory per key,
//   <root>/<base32 key>/<name>.{kvt,kvt.mlir,kvgpu.mlir,nvvm.mlir,llir,ptx,cubin,json}
//   <root>/<base32 key>/__grp__<name>.json      written last
//   <root>/<base32 key>/<name>.lock             held while compiling
// Every file is written to a temporary name and renamed into place.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_CACHE_DISKCACHE_H
#define KVARN_RUNTIME_CACHE_DISKCACHE_H

#include "kvarn/Runtime/KernelCache.h"

#include "llvm/Support/JSON.h"

namespace kvarn::cache {

std::string groupFileName(llvm::StringRef name);

/// What reading an entry found.
struct EntryRead {
  enum Status { Missing, Ok, Bad } status = Missing;
  std::string problem; // for Bad
  KernelArtifacts artifacts;
  llvm::json::Object metadata;
};

/// Reads the entry of kernel `name` in `dir`. Checks the group file, the
/// metadata (format, kvarn version, build id, LLVM version, name and, when
/// given, the hash), and the checksums of the PTX and cubin, or of every
/// file with `verifyAll`. An entry whose group file is absent is Missing.
EntryRead readEntry(llvm::StringRef dir, llvm::StringRef name,
                    const std::string *expectedHash, bool verifyAll);

/// One file of an entry, by name inside the entry's directory.
struct EntryFile {
  std::string name;
  std::string contents;
};

/// Writes `files` and `<name>.json` (the metadata, with the checksums of
/// `files` added), then the group file. The caller holds the entry's lock.
llvm::Error writeEntry(llvm::StringRef dir, llvm::StringRef name,
                       const std::vector<EntryFile> &files,
                       llvm::json::Object metadata, std::string &metadataText);

/// Writes `contents` to `path` through a temporary file and a rename.
llvm::Error writeFileAtomically(llvm::StringRef path, llvm::StringRef contents);

/// Marks the entry used now (the group file's mtime), for LRU eviction.
void touchEntry(llvm::StringRef dir, llvm::StringRef name);

/// An exclusive lock on a file (flock), released in the destructor or when
/// the process dies, so a crashed compiler never leaves it held.
class FileLock {
public:
  static llvm::Expected<FileLock> acquire(const std::string &path);
  FileLock(FileLock &&other) noexcept : fd(other.fd) { other.fd = -1; }
  FileLock &operator=(FileLock &&) = delete;
  ~FileLock();

private:
  explicit FileLock(int fd) : fd(fd) {}
  int fd = -1;
};

/// Triton's metadata fields and kvarn's, for `artifacts` compiled from
/// `request` under `key`.
llvm::json::Object buildMetadata(const KernelArtifacts &artifacts,
                                 const KernelRequest &request,
                                 const CacheKey &key,
                                 llvm::StringRef cubinMaker);

/// The PTX entry's parameter types, Triton-style, without the trailing
/// scratch pointers.
std::vector<std::string> signatureFromPtx(llvm::StringRef ptx,
                                          llvm::StringRef name);

} // namespace kvarn::cache

#endif // KVARN_RUNTIME_CACHE_DISKCACHE_H
