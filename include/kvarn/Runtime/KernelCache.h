//===- KernelCache.h - compiled kernels, in memory and on disk --*- C++ -*-===//
//
// Every way of getting a kernel to run goes through here: look the kernel up
// in this process's memory, then in the disk cache ($KVARN_CACHE_DIR, laid out
// the way Triton lays out its cache), and compile it only when neither has
// it. docs/cache.md describes the key, the files, the locking and the
// environment variables.
//
// The header keeps MLIR out: a request is a KernelRequest and CompileOptions
// (kvarn/Codegen/KernelCompiler.h is plain C++: no LLVM either).
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_KERNELCACHE_H
#define KVARN_RUNTIME_KERNELCACHE_H

#include "kvarn/Codegen/KernelCompiler.h"
#include "kvarn/Runtime/Module.h"

#include "kvarn/Support/Error.h"
#include "kvarn/Support/Span.h"
#include <string_view>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kvarn {

namespace cuda {
class Context;
} // namespace cuda
namespace cache { // the disk level (runtime/Cache/DiskCache.h)
struct EntryFile;
} // namespace cache

//===----------------------------------------------------------------------===//
// The key
//===----------------------------------------------------------------------===//

/// Everything that changes the generated code of one kernel, as named text
/// fields in a fixed order. The cache key is the SHA-256 of their
/// serialization; the directory is its base32 spelling (as Triton names its
/// cache directories).
struct CacheKey {
  std::vector<std::pair<std::string, std::string>> fields;
  std::string hash;      // 64 hex digits
  std::string directory; // 52 characters of [A-Z2-7]

  const std::string *find(std::string_view field) const;
};

/// The key of `request` compiled with `options`. Fails like compileKernel on
/// an unknown preset, a bad shape or an unsupported target, and on a library
/// kernel that does not exist.
kvarn::Expected<CacheKey> computeCacheKey(const KernelRequest &request,
                                          const CompileOptions &options);

/// RFC 4648 base32 without padding, the alphabet A-Z2-7.
std::string base32Encode(Span<const uint8_t> bytes);

/// Whether `name` looks like a cache entry's directory name.
bool isCacheKeyDirectory(std::string_view name);

/// The environment variables that change compilation; their values are part
/// of every key.
Span<const char *const> keyedEnvironmentVariables();

/// The compiler's identity: the kvarn version, a hash of the compiler's
/// sources (build id) and the LLVM version it was built with.
struct CompilerIdentity {
  std::string kvarnVersion;
  std::string buildId;
  std::string llvmVersion;
};
const CompilerIdentity &compilerIdentity();

//===----------------------------------------------------------------------===//
// Cache entries
//===----------------------------------------------------------------------===//

/// Where a kernel came from this time.
enum class CacheOutcome { Compiled, DiskHit, MemoryHit };
std::string_view toString(CacheOutcome outcome);

/// One compiled kernel: what a loader needs, and where its files are.
struct KernelArtifacts {
  std::string name;      // the entry function
  std::string hash;      // the key, hex
  std::string key;       // the key, base32: the directory name
  std::string directory; // the entry's directory; empty without a disk level
  std::string chip;      // "sm_90"
  int ptxVersion = 0;
  std::string ptx;
  std::string cubin; // empty when no assembler was at hand
  int numWarps = 0;
  int programsPerCta = 1; // grid points along x per CTA
  int ctasPerSM = 1;      // CTAs per SM the launch shape was budgeted for
  int64_t sharedBytes = 0;
  int numArgs = 0;
  bool launchPdl = false; // a programmatic dependent launch (launch_pdl)
  /// Triton-style parameter types without the two scratch pointers: "*i8"
  /// for a pointer, "i32", "i64", "fp32".
  std::vector<std::string> signature;
  /// The parameters' names and types and the grid rule (the compiler's;
  /// from the metadata's "abi" on a disk hit, empty in entries older than
  /// it).
  KernelAbi abi;
  std::string metadataJson; // <name>.json as written
  double compileSeconds = 0; // of the compilation that made it

  cuda::KernelImage image() const;
};

/// What one lookup returned.
struct CacheResult {
  std::shared_ptr<const KernelArtifacts> artifacts;
  CacheOutcome outcome = CacheOutcome::Compiled;
  double seconds = 0; // this lookup, compilation included
};

struct CacheOptions {
  /// The disk level's root; empty: memory only.
  std::string directory;
  /// KVARN_ALWAYS_COMPILE: compile even on a hit (and write the result).
  bool alwaysCompile = false;
  /// The disk level's size cap in bytes; 0: none. Least recently used
  /// entries are removed after a write takes the cache over it.
  uint64_t maxBytes = 0;
  /// Assemble a cubin with ptxas when no GPU context is given and ptxas is
  /// found (with a context the driver's linker makes it).
  bool assembleWithPtxas = true;
  /// Keep the per-stage IR files (<name>.kvt.mlir, .kvgpu.mlir, .nvvm.mlir,
  /// .llir) in each entry, as Triton keeps ttir/ttgir/llir.
  bool keepIR = true;
  /// Where warnings go (one line each, no newline); default: stderr.
  std::function<void(std::string_view)> warn;

  /// $KVARN_CACHE_DIR (default ~/.cache/kvarn; "" or "off": memory only),
  /// $KVARN_ALWAYS_COMPILE, $KVARN_CACHE_MAX_SIZE (bytes, or with a K, M or G
  /// suffix; default 1G; 0: no cap).
  static CacheOptions fromEnvironment();
};

/// Bytes from "512M", "2G", "1048576", "0". None on a malformed value.
std::optional<uint64_t> parseByteSize(std::string_view text);

/// One kernel of a shapes file (`kvarn-jit cache warm`).
struct WarmShape {
  KernelRequest request;
  std::string chip;
};

/// The shapes file's text: {"arch": "sm_90" or 90, "shapes": [{"preset": P,
/// "head_dim": N, "gqa": N or [N, ...], "dtype": "f16" or "bf16",
/// "kernels": [...], "arch": SM}, ...]} or just the list of shapes, as the
/// kernels to build. Errors name `path` and the shape, in one line.
kvarn::Expected<std::vector<WarmShape>>
parseWarmShapes(std::string_view text, std::string_view path,
                std::string_view defaultArch);

/// Counters since the cache was made.
struct CacheStats {
  uint64_t compiled = 0;
  uint64_t diskHits = 0;
  uint64_t memoryHits = 0;
  uint64_t rebuilt = 0; // entries found corrupt, stale or foreign and rebuilt
  uint64_t evicted = 0;
};

/// Compiles one kernel: compileKernel (KernelCompiler.h).
using KernelCompileFn = kvarn::Expected<CompiledModule> (*)(
    const KernelRequest &request, const CompileOptions &options);

/// The compiler linked into this program, chosen at link time: compileKernel
/// where the JIT is linked (libkvarn.so, the tools: KvarnCache,
/// runtime/Cache/LinkedCompiler.cpp), null in the runtime core
/// (libkvarn_runtime.so: KvarnCacheCore, runtime/Cache/NoCompiler.cpp),
/// which serves what the disk cache holds and reports any other kernel as
/// KVARN_ERROR_KERNEL_NOT_CACHED.
KernelCompileFn linkedCompiler();

/// The two-level kernel cache. Thread-safe; compilation of several kernels
/// runs on several threads (each compilation has its own MLIRContext).
class KernelCache {
public:
  explicit KernelCache(CacheOptions options = CacheOptions::fromEnvironment());
  ~KernelCache();
  KernelCache(const KernelCache &) = delete;
  KernelCache &operator=(const KernelCache &) = delete;

  const CacheOptions &options() const { return opts; }

  /// The kernel's artifacts: from memory, else disk, else compiled (and
  /// written to disk). With `context`, a cubin is linked for its GPU by the
  /// driver; without, by ptxas where found.
  kvarn::Expected<CacheResult>
  getOrCompile(const KernelRequest &request, const CompileOptions &options,
               const cuda::Context *context = nullptr);

  /// getOrCompile for each request on up to `threads` threads (0: one per
  /// core), with `options[i]`, or `options[0]` for all when there is one.
  /// `onDone(i, result)` is called as request i finishes (result null if
  /// it failed), from the worker thread, one call at a time.
  std::vector<kvarn::Expected<CacheResult>> getOrCompileAll(
      Span<const KernelRequest> requests, Span<const CompileOptions> options,
      unsigned threads = 0, const cuda::Context *context = nullptr,
      std::function<void(size_t, const CacheResult *)> onDone = nullptr);

  /// The kernel compiled for `context`'s GPU (the chip in `options` is
  /// replaced by the GPU's) and loaded into it; later calls for the same
  /// kernel and context return the same LoadedKernel from memory. The
  /// context must outlive this cache.
  kvarn::Expected<std::shared_ptr<const cuda::LoadedKernel>>
  load(const KernelRequest &request, CompileOptions options,
       const cuda::Context &context);

  CacheStats stats() const;

private:
  /// An entry's directory held under its lock while this process writes it
  /// (KernelCache.cpp).
  struct ClaimedEntry;
  /// Disk, else compile (KernelCache.cpp says the steps).
  kvarn::Expected<CacheResult> lookupOrCompile(const KernelRequest &request,
                                               const CompileOptions &options,
                                               const cuda::Context *context);
  /// The entry in `dir` when usable (with a cubin for `context`); else
  /// null, and why, when it is corrupt, in `problem`.
  std::shared_ptr<KernelArtifacts> readUsableEntry(const std::string &dir,
                                                   const std::string &name,
                                                   const CacheKey &key,
                                                   const cuda::Context *context,
                                                   std::string &problem);
  /// The runtime core's lookup (no compiler linked): the entry in `dir` as
  /// it is, one with PTX only linked for `context`'s GPU by the driver, in
  /// memory (the core never writes the cache); a missing or unusable entry
  /// is KVARN_ERROR_KERNEL_NOT_CACHED, saying how to warm it.
  kvarn::Expected<CacheResult> serveCachedOnly(const KernelRequest &request,
                                               const CompileOptions &options,
                                               const CacheKey &key,
                                               const std::string &dir,
                                               const cuda::Context *context);
  /// Opens and locks the entry for writing into `claim`, or, where the disk
  /// fails, warns and clears `dir`; the entry if another process wrote it
  /// meanwhile.
  std::shared_ptr<KernelArtifacts>
  claimEntry(std::string &dir, const std::string &name, const CacheKey &key,
             const cuda::Context *context, std::string &badEntry,
             ClaimedEntry &claim);
  /// Compiles the kernel into artifacts (the IR of its stages into `files`
  /// when the entry keeps them) and assembles its cubin.
  kvarn::Expected<std::shared_ptr<KernelArtifacts>> compileArtifacts(
      const KernelRequest &request, const CompileOptions &options,
      const CacheKey &key, const std::string &dir, const cuda::Context *context,
      std::vector<cache::EntryFile> &files, std::string &cubinMaker);
  /// A cubin: the driver's linker with `context`, else ptxas where found
  /// (none: PTX only); `maker` says which.
  kvarn::Error assembleCubin(KernelArtifacts &artifacts,
                             const cuda::Context *context, std::string &maker);
  /// Writes the claimed entry (source, stages, PTX, cubin, metadata),
  /// releases its lock and evicts past the size cap.
  void storeEntry(ClaimedEntry &claim, const KernelRequest &request,
                  const CacheKey &key, KernelArtifacts &artifacts,
                  std::vector<cache::EntryFile> files,
                  const std::string &cubinMaker);
  void warnOnce(const std::string &key, const std::string &message);

  CacheOptions opts;
  mutable std::mutex mutex;
  std::map<std::string, std::shared_ptr<const KernelArtifacts>> artifacts;
  std::map<std::string, std::shared_ptr<const cuda::LoadedKernel>> loaded;
  std::map<std::string, bool> warned;
  struct Counters {
    std::atomic<uint64_t> compiled{0}, diskHits{0}, memoryHits{0}, rebuilt{0},
        evicted{0};
  } counters;
};

//===----------------------------------------------------------------------===//
// The disk level, for tools (kvarn-jit cache ls|verify|clear)
//===----------------------------------------------------------------------===//

/// One directory of the disk cache as found.
struct DiskEntry {
  std::string key;       // the directory name
  std::string directory; // full path
  std::string name;      // the kernel, from __grp__<name>.json; empty if none
  uint64_t bytes = 0;
  int64_t lastUsed = 0; // seconds since the epoch (the group file's mtime)
  bool complete = false; // has a group file
  /// Empty when the entry checks out; else why it cannot be used.
  std::string problem;
  /// From the metadata, when readable (dtype "f16" for entries that predate
  /// the field).
  std::string preset, chip, dtype;
  int headDim = 0, gqa = 0;
  int ropeDim = 0; // MLA presets; 0 for dense ones
};

/// Every entry under `root`, and whatever else is named like one. Each
/// complete entry is read and checked as a lookup checks it (metadata,
/// versions, checksums of every file); `problem` says what failed, or what
/// is in an entry's place (a link, a file, an unreadable directory).
/// (`verify` is kept for callers; listing and verifying read the same.)
kvarn::Expected<std::vector<DiskEntry>> listDiskCache(std::string_view root,
                                                      bool verify);

/// What removing entries did. Only the cache's own file names are removed,
/// never through a link; a directory holding anything else keeps it.
struct CacheRemoval {
  size_t removed = 0;                 // entries whose files went
  std::vector<std::string> leftAlone; // "PATH: why", not (all) kvarn's
  std::vector<std::string> failed;    // "PATH: why", could not be removed
};

/// Removes every cache entry (and leftovers of interrupted removals) under
/// `root`.
kvarn::Expected<CacheRemoval> clearDiskCache(std::string_view root);

/// Removes the entry `key` (a directory name) under `root`.
CacheRemoval removeDiskEntry(std::string_view root, std::string_view key);

/// Removes least recently used complete entries until the cache holds at
/// most `maxBytes`; `keep` (a directory name) is never removed. Returns how
/// many went.
kvarn::Expected<size_t> evictDiskCache(std::string_view root, uint64_t maxBytes,
                                       std::string_view keep = "");

} // namespace kvarn

#endif // KVARN_RUNTIME_KERNELCACHE_H
