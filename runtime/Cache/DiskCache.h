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

#include <nlohmann/json.hpp>

namespace kvarn::cache {

std::string groupFileName(std::string_view name);

/// Whether `file` is a name the cache writes inside an entry: <kernel>.kvt,
/// .kvt.mlir, .kvgpu.mlir, .nvvm.mlir, .llir, .ptx, .cubin, .json, .lock,
/// __grp__<kernel>.json, or one of their temporaries (<file>.tmp.<pid>.<n>).
/// Nothing else is ever deleted.
bool isCacheFileName(std::string_view file);

/// An entry's directory, opened without following a link: every file of
/// the entry is read, written, renamed and removed relative to it, so a
/// link in the entry's place is never written through.
class EntryDir {
public:
  /// Opens `path`, making it (and the cache's root) first with `create`.
  /// Fails with ENOENT in `errnoOut` when absent, and when it is a link, a
  /// file or unreadable (an obstruction).
  static kvarn::Expected<EntryDir> open(const std::string &path, bool create,
                                        int *errnoOut = nullptr);
  EntryDir(EntryDir &&other) noexcept
      : fd(other.fd), dirPath(std::move(other.dirPath)) {
    other.fd = -1;
  }
  EntryDir &operator=(EntryDir &&) = delete;
  ~EntryDir();
  int descriptor() const { return fd; }
  const std::string &path() const { return dirPath; }

private:
  EntryDir(int fd, std::string path) : fd(fd), dirPath(std::move(path)) {}
  int fd = -1;
  std::string dirPath;
};

/// What reading an entry found.
struct EntryRead {
  enum Status { Missing, Ok, Bad } status = Missing;
  std::string problem; // for Bad
  KernelArtifacts artifacts;
  nlohmann::json metadata; // the metadata object, as read
};

/// Reads the entry of kernel `name` in `dir`. Checks the group file, the
/// metadata (format, kvarn version, build id, LLVM version, its own
/// checksum, name and, when given, the hash), the sizes and checksums of
/// every file it lists, and the launch fields against the PTX. An entry
/// whose group file is absent is Missing.
EntryRead readEntry(std::string_view dir, std::string_view name,
                    const std::string *expectedHash);

/// One file of an entry, by name inside the entry's directory.
struct EntryFile {
  std::string name;
  std::string contents;
};

/// Writes `files` and `<name>.json` (the metadata, with the checksums of
/// `files` and its own added), then the group file. The caller holds the
/// entry's lock.
kvarn::Error writeEntry(const EntryDir &dir, std::string_view name,
                        const std::vector<EntryFile> &files,
                        nlohmann::json metadata, std::string &metadataText);

/// Writes `contents` to `file` in `dir` through a temporary file and a
/// rename; never through a link.
kvarn::Error writeFileAtomically(const EntryDir &dir, std::string_view file,
                                 std::string_view contents);

/// Removes `name`'s group file (readers stop using the entry); best effort.
void hideEntry(const EntryDir &dir, std::string_view name);

/// Marks the entry used now (the group file's mtime), for LRU eviction.
void touchEntry(std::string_view dir, std::string_view name);

/// The metadata's checksum of itself: xxh3 of its compact JSON (keys
/// sorted, as nlohmann::json keeps them) without the field
/// `kvarn.metadata_xxh3`, which holds it. Every field a launch uses is
/// covered.
std::string metadataChecksum(const nlohmann::json &metadata);
/// Sets `kvarn.metadata_xxh3`.
void sealMetadata(nlohmann::json &metadata);

/// An exclusive lock on `<name>.lock` in `dir` (flock), released in the
/// destructor or when the process dies, so a crashed compiler never leaves
/// it held. The lock file must be a regular file.
class FileLock {
public:
  static kvarn::Expected<FileLock> acquire(const EntryDir &dir,
                                           std::string_view name);
  FileLock(FileLock &&other) noexcept : fd(other.fd) { other.fd = -1; }
  FileLock &operator=(FileLock &&) = delete;
  ~FileLock();

private:
  explicit FileLock(int fd) : fd(fd) {}
  int fd = -1;
};

/// Triton's metadata fields and kvarn's, for `artifacts` compiled from
/// `request` under `key`.
nlohmann::json buildMetadata(const KernelArtifacts &artifacts,
                             const KernelRequest &request, const CacheKey &key,
                             std::string_view cubinMaker);

/// The PTX entry's parameter types, Triton-style, without the trailing
/// scratch pointers.
std::vector<std::string> signatureFromPtx(std::string_view ptx,
                                          std::string_view name);

} // namespace kvarn::cache

#endif // KVARN_RUNTIME_CACHE_DISKCACHE_H
