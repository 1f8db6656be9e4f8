//===- KernelCache.cpp - compiled kernels, in memory and on disk ----------===//

#include "kvarn/Runtime/KernelCache.h"

#include "DiskCache.h"

#include "kvarn/DSL/KernelLibrary.h"
#include "kvarn/Runtime/Context.h"
#include "kvarn/Runtime/PtxAssembler.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/FileIO.h"

#include "kvarn/Support/Strings.h"

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <thread>
#include <unistd.h>

using namespace kvarn;
using namespace kvarn::cache;

std::string_view kvarn::toString(CacheOutcome outcome) {
  switch (outcome) {
  case CacheOutcome::Compiled:
    return "compiled";
  case CacheOutcome::DiskHit:
    return "disk";
  case CacheOutcome::MemoryHit:
    return "memory";
  }
  return "?";
}

cuda::KernelImage KernelArtifacts::image() const {
  cuda::KernelImage image;
  image.name = name;
  image.ptx = ptx;
  image.cubin = cubin;
  image.numWarps = numWarps;
  image.programsPerCta = programsPerCta;
  image.ctasPerSM = ctasPerSM;
  image.sharedBytes = int(sharedBytes);
  image.launchPdl = launchPdl;
  image.abi = abi;
  return image;
}

std::optional<uint64_t> kvarn::parseByteSize(std::string_view text) {
  text = trim(text);
  uint64_t scale = 1;
  if (!text.empty()) {
    switch (toUpper(text.back())) {
    case 'K':
      scale = 1ull << 10;
      break;
    case 'M':
      scale = 1ull << 20;
      break;
    case 'G':
      scale = 1ull << 30;
      break;
    case 'T':
      scale = 1ull << 40;
      break;
    default:
      break;
    }
    if (scale != 1)
      text.remove_suffix(1);
  }
  uint64_t value;
  if (!parseInteger(text, value) || (value && value > UINT64_MAX / scale))
    return std::nullopt;
  return value * scale;
}

CacheOptions CacheOptions::fromEnvironment() {
  CacheOptions o;
  const char *dir = std::getenv("KVARN_CACHE_DIR");
  if (dir) {
    o.directory = std::string_view(dir) == "off" ? "" : dir;
  } else {
    if (const char *xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
      o.directory = joinPath(xdg, "kvarn");
    else if (const char *h = std::getenv("HOME"); h && *h)
      o.directory = joinPath(joinPath(h, ".cache"), "kvarn");
  }
  const char *always = std::getenv("KVARN_ALWAYS_COMPILE");
  o.alwaysCompile = always && *always && std::string_view(always) != "0";
  o.maxBytes = 1ull << 30;
  if (const char *cap = std::getenv("KVARN_CACHE_MAX_SIZE"); cap && *cap) {
    if (std::optional<uint64_t> bytes = parseByteSize(cap))
      o.maxBytes = *bytes;
    else
      std::cerr << "kvarn: warning: KVARN_CACHE_MAX_SIZE='" << cap
                << "' is not a size (e.g. 512M, 2G, 0 for none); using 1G\n";
  }
  return o;
}

KernelCache::KernelCache(CacheOptions options) : opts(std::move(options)) {
  if (!opts.warn)
    opts.warn = [](std::string_view line) {
      std::cerr << "kvarn: warning: " << line << "\n";
    };
}

KernelCache::~KernelCache() = default;

CacheStats KernelCache::stats() const {
  CacheStats s;
  s.compiled = counters.compiled;
  s.diskHits = counters.diskHits;
  s.memoryHits = counters.memoryHits;
  s.rebuilt = counters.rebuilt;
  s.evicted = counters.evicted;
  return s;
}

void KernelCache::warnOnce(const std::string &key, const std::string &message) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!warned.emplace(key, true).second)
      return;
  }
  opts.warn(message);
}

namespace {

/// The memory level's key: the request as given (no hashing of the library,
/// which cannot change within a process).
std::string memoryKey(const KernelRequest &r, const CompileOptions &o) {
  std::string key =
      r.kernel + "|" + r.spec.preset + "|" + std::to_string(r.spec.headDim) +
      "|" + std::to_string(r.spec.gqa) + "|" + std::to_string(r.spec.ropeDim) +
      "|" + std::string(spell(r.spec.dtype)) + "|" + o.target.chip + "|" +
      std::to_string(o.target.ptxVersion) + "|" + std::to_string(o.numWarps) +
      "|" + std::to_string(o.minCtasPerSM) + (o.warpStates ? "|ws" : "") +
      (o.pipelineCopies ? "|pc" : "");
  if (!r.source.empty())
    key += "|" + r.sourceName + "|" +
           hexString(std::hash<std::string>()(r.source), /*lowerCase=*/false);
  return key;
}

std::string messageOf(kvarn::Error err) {
  std::string message;
  kvarn::consumeError(std::move(err), message);
  return message;
}

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

} // namespace

kvarn::Expected<CacheResult>
KernelCache::getOrCompile(const KernelRequest &request,
                          const CompileOptions &options,
                          const cuda::Context *context) {
  auto start = std::chrono::steady_clock::now();
  std::string memKey = memoryKey(request, options);
  if (!opts.alwaysCompile) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = artifacts.find(memKey);
    // An entry made without a cubin does not do for a caller with a GPU.
    if (it != artifacts.end() && (!context || !it->second->cubin.empty())) {
      ++counters.memoryHits;
      return CacheResult{it->second, CacheOutcome::MemoryHit,
                         secondsSince(start)};
    }
  }
  kvarn::Expected<CacheResult> result =
      lookupOrCompile(request, options, context);
  if (!result)
    return result.takeError();
  result->seconds = secondsSince(start);
  std::lock_guard<std::mutex> lock(mutex);
  artifacts[memKey] = result->artifacts;
  return result;
}

// lookupOrCompile's steps, in order: look on disk without waiting; claim
// the entry (its directory, under its lock; look again, since another
// process may have written it meanwhile); compile, assemble a cubin; write
// the entry and evict what the size cap says. The disk level is best effort
// throughout: any failure there means a warning and a kernel in memory.

struct KernelCache::ClaimedEntry {
  std::optional<EntryDir> dir;
  std::optional<FileLock> lock;
};

std::shared_ptr<KernelArtifacts>
KernelCache::readUsableEntry(const std::string &dir, const std::string &name,
                             const CacheKey &key, const cuda::Context *context,
                             std::string &problem) {
  if (dir.empty() || opts.alwaysCompile)
    return nullptr;
  EntryRead r = readEntry(dir, name, &key.hash);
  if (r.status == EntryRead::Ok && (!context || !r.artifacts.cubin.empty())) {
    touchEntry(dir, name);
    return std::make_shared<KernelArtifacts>(std::move(r.artifacts));
  }
  if (r.status == EntryRead::Bad)
    problem = r.problem;
  return nullptr;
}

std::shared_ptr<KernelArtifacts>
KernelCache::claimEntry(std::string &dir, const std::string &name,
                        const CacheKey &key, const cuda::Context *context,
                        std::string &badEntry, ClaimedEntry &claim) {
  // An unwritable cache or an obstruction in the entry's place (a file, a
  // link, a lock that is not a file) means compiling in memory, with one
  // warning, never failing the kernel.
  int err = 0;
  kvarn::Error problem = kvarn::Error::success();
  if (kvarn::Expected<EntryDir> opened =
          EntryDir::open(dir, /*create=*/true, &err)) {
    claim.dir.emplace(std::move(*opened));
    if (kvarn::Expected<FileLock> held = FileLock::acquire(*claim.dir, name))
      claim.lock.emplace(std::move(*held));
    else
      problem = held.takeError();
  } else {
    problem = opened.takeError();
  }
  if (problem) {
    std::string why = messageOf(std::move(problem));
    bool readOnly = ::access(opts.directory.c_str(), W_OK) != 0 ||
                    err == EACCES || err == EROFS || err == EPERM;
    if (!badEntry.empty())
      warnOnce(key.directory, "kernel cache entry " + dir + ": " + badEntry +
                                  "; compiling '" + name + "' in memory" +
                                  (why == badEntry ? "" : " (" + why + ")"));
    else if (readOnly)
      warnOnce("unwritable", "kernel cache " + opts.directory +
                                 " is not writable (" + why +
                                 "); compiling in memory");
    else
      warnOnce(key.directory, "kernel cache entry " + dir + ": " + why +
                                  "; compiling '" + name + "' in memory");
    claim.lock.reset();
    claim.dir.reset();
    dir.clear();
    return nullptr;
  }
  // Another process may have compiled it while this one waited.
  badEntry.clear();
  if (std::shared_ptr<KernelArtifacts> hit =
          readUsableEntry(dir, name, key, context, badEntry))
    return hit;
  if (!badEntry.empty())
    warnOnce(key.directory, "kernel cache entry " + dir + ": " + badEntry +
                                "; compiling '" + name + "' again");
  // Readers must not see a bad entry's group file while it is rewritten.
  hideEntry(*claim.dir, name);
  return nullptr;
}

kvarn::Expected<std::shared_ptr<KernelArtifacts>> KernelCache::compileArtifacts(
    const KernelRequest &request, const CompileOptions &options,
    const CacheKey &key, const std::string &dir, const cuda::Context *context,
    std::vector<EntryFile> &files, std::string &cubinMaker) {
  const std::string &name = request.kernel;
  // Compile, keeping the IR of every stage for the entry.
  auto start = std::chrono::steady_clock::now();
  CompileOptions compileOptions = options;
  compileOptions.onStage = [&](std::string_view stage, std::string_view ir) {
    if (options.onStage)
      options.onStage(stage, ir);
    if (!opts.keepIR || stage == "ptx" || dir.empty())
      return;
    static const std::map<std::string, std::string, std::less<>> kExtension = {
        {"kvt", "kvt.mlir"},
        {"kvgpu", "kvgpu.mlir"},
        {"nvvm", "nvvm.mlir"},
        {"llir", "llir"}};
    auto ext = kExtension.find(stage);
    if (ext != kExtension.end())
      files.push_back(EntryFile{name + "." + ext->second, std::string(ir)});
  };
  kvarn::Expected<CompiledModule> compiled =
      linkedCompiler()(request, compileOptions);
  if (!compiled)
    return compiled.takeError();
  if (compiled->kernels.size() != 1 || compiled->kernels[0].name != name)
    return makeError(KVARN_ERROR_INTERNAL,
                     "compiling '{0}' gave {1} kernels", name,
                     compiled->kernels.size());

  auto a = std::make_shared<KernelArtifacts>();
  Target target = options.target;
  // computeCacheKey has checked it; this fills in the defaulted PTX version.
  if (kvarn::Error err = validateTarget(target))
    return std::move(err);
  const CompiledKernel &k = compiled->kernels[0];
  a->name = name;
  a->hash = key.hash;
  a->key = key.directory;
  a->directory = dir;
  a->chip = target.chip;
  a->ptxVersion = target.ptxVersion;
  a->ptx = std::move(compiled->ptx);
  a->numWarps = k.numWarps;
  a->programsPerCta = k.programsPerCta;
  a->ctasPerSM = k.ctasPerSM;
  a->sharedBytes = k.sharedBytes;
  a->numArgs = k.numArgs;
  a->launchPdl = k.launchPdl;
  a->signature = signatureFromPtx(a->ptx, name);
  a->abi = k.abi;
  if (kvarn::Error err = assembleCubin(*a, context, cubinMaker))
    return std::move(err);
  a->compileSeconds = secondsSince(start);
  return a;
}

kvarn::Error KernelCache::assembleCubin(KernelArtifacts &a,
                                        const cuda::Context *context,
                                        std::string &maker) {
  // The driver's linker for a caller's GPU, else ptxas if found.
  if (context) {
    kvarn::Expected<cuda::CubinImage> cubin =
        cuda::linkPtxWithDriver(*context, a.ptx, a.name + ".ptx");
    if (!cubin)
      return cubin.takeError();
    a.cubin = std::move(cubin->bytes);
    maker = "driver";
    return kvarn::Error::success();
  }
  if (!opts.assembleWithPtxas)
    return kvarn::Error::success();
  std::string ptxasWarning;
  kvarn::Expected<std::string> ptxas =
      cuda::findPtxas(cuda::ptxasCandidates(), &ptxasWarning);
  if (!ptxasWarning.empty())
    warnOnce("ptxas", ptxasWarning);
  if (!ptxas) {
    std::string why = messageOf(ptxas.takeError());
    // No ptxas at all is normal (PTX only; the driver JITs it); a
    // KVARN_PTXAS that leads nowhere is said once.
    if (startsWith(why, "KVARN_PTXAS"))
      warnOnce("ptxas", why + "; the entry has PTX only");
    return kvarn::Error::success();
  }
  cuda::PtxasOptions ptxasOptions;
  ptxasOptions.arch = a.chip;
  ptxasOptions.ptxasPath = *ptxas;
  kvarn::Expected<cuda::CubinImage> cubin =
      cuda::assembleWithPtxas(a.ptx, ptxasOptions);
  if (!cubin)
    return cubin.takeError();
  a.cubin = std::move(cubin->bytes);
  maker = "ptxas";
  return kvarn::Error::success();
}

void KernelCache::storeEntry(ClaimedEntry &claim, const KernelRequest &request,
                             const CacheKey &key, KernelArtifacts &a,
                             std::vector<EntryFile> files,
                             const std::string &cubinMaker) {
  const std::string &name = request.kernel;
  std::string sourceText;
  if (request.source.empty()) {
    if (const dsl::LibraryFile *f = dsl::findLibraryFile(name))
      sourceText = std::string(f->text);
  } else {
    sourceText = request.source;
  }
  files.insert(files.begin(), EntryFile{name + ".kvt", std::move(sourceText)});
  files.push_back(EntryFile{name + ".ptx", a.ptx});
  if (!a.cubin.empty())
    files.push_back(EntryFile{name + ".cubin", a.cubin});
  nlohmann::json metadata = buildMetadata(a, request, key, cubinMaker);
  if (kvarn::Error err = writeEntry(*claim.dir, name, files,
                                    std::move(metadata), a.metadataJson)) {
    // The kernel is good; only the disk level failed.
    warnOnce(key.directory + "/write",
             messageOf(std::move(err)) + "; the kernel stays in memory");
    hideEntry(*claim.dir, name);
    a.directory.clear();
  }
  claim.lock.reset();
  if (opts.maxBytes) {
    kvarn::Expected<size_t> evicted =
        evictDiskCache(opts.directory, opts.maxBytes, key.directory);
    if (evicted)
      counters.evicted += *evicted;
    else
      warnOnce("evict", messageOf(evicted.takeError()));
  }
}

kvarn::Expected<CacheResult> KernelCache::serveCachedOnly(
    const KernelRequest &request, const CompileOptions &options,
    const CacheKey &key, const std::string &dir, const cuda::Context *context) {
  const std::string &name = request.kernel;
  std::string why = "it has no entry " + key.directory;
  if (dir.empty()) {
    why = "there is no disk cache (KVARN_CACHE_DIR is off)";
  } else if (opts.alwaysCompile) {
    why = "KVARN_ALWAYS_COMPILE is set";
  } else {
    cache::EntryRead r = cache::readEntry(dir, name, &key.hash);
    if (r.status == cache::EntryRead::Ok) {
      auto a = std::make_shared<KernelArtifacts>(std::move(r.artifacts));
      std::string maker;
      if (context && a->cubin.empty())
        if (kvarn::Error err = assembleCubin(*a, context, maker))
          return std::move(err);
      touchEntry(dir, name);
      ++counters.diskHits;
      return CacheResult{std::move(a), CacheOutcome::DiskHit, 0};
    }
    if (r.status == cache::EntryRead::Bad)
      why = "its entry " + key.directory + " is unusable (" + r.problem + ")";
  }
  std::string launch;
  if (options.numWarps)
    launch += ", " + std::to_string(options.numWarps) + " warps";
  if (options.minCtasPerSM)
    launch += ", " + std::to_string(options.minCtasPerSM) + " CTAs per SM";
  if (options.warpStates)
    launch += ", warp states";
  if (options.pipelineCopies)
    launch += ", pipelined copies";
  return makeError(KVARN_ERROR_KERNEL_NOT_CACHED,
                   "kernel '{0}' ({1}, {2}{3}) cannot be served from the "
                   "kernel cache {4}: {5}; this is the runtime core, which "
                   "has no compiler: warm the cache ahead of serving with "
                   "`kvarn-jit cache warm` (docs/cache.md)",
                   name, request.spec.describe(), options.target.chip, launch,
                   opts.directory.empty() ? "(none)" : opts.directory, why);
}

kvarn::Expected<CacheResult>
KernelCache::lookupOrCompile(const KernelRequest &request,
                             const CompileOptions &options,
                             const cuda::Context *context) {
  kvarn::Expected<CacheKey> key = computeCacheKey(request, options);
  if (!key)
    return key.takeError();
  const std::string &name = request.kernel;
  std::string dir; // empty: no disk level
  if (!opts.directory.empty()) {
    dir = joinPath(opts.directory, key->directory);
  }
  if (!linkedCompiler())
    return serveCachedOnly(request, options, *key, dir, context);
  // Why the entry on disk could not be used, for the one warning.
  std::string badEntry;
  // Readers never wait: a complete entry is used without locking.
  if (std::shared_ptr<KernelArtifacts> hit =
          readUsableEntry(dir, name, *key, context, badEntry)) {
    ++counters.diskHits;
    return CacheResult{std::move(hit), CacheOutcome::DiskHit, 0};
  }
  ClaimedEntry claim;
  if (!dir.empty())
    if (std::shared_ptr<KernelArtifacts> hit =
            claimEntry(dir, name, *key, context, badEntry, claim)) {
      ++counters.diskHits;
      return CacheResult{std::move(hit), CacheOutcome::DiskHit, 0};
    }
  bool sawBadEntry = !badEntry.empty();

  std::vector<EntryFile> files;
  std::string cubinMaker;
  kvarn::Expected<std::shared_ptr<KernelArtifacts>> a =
      compileArtifacts(request, options, *key, dir, context, files, cubinMaker);
  if (!a)
    return a.takeError();
  ++counters.compiled;
  if (sawBadEntry)
    ++counters.rebuilt;
  if (claim.dir)
    storeEntry(claim, request, *key, **a, std::move(files), cubinMaker);
  return CacheResult{std::move(*a), CacheOutcome::Compiled, 0};
}

std::vector<kvarn::Expected<CacheResult>> KernelCache::getOrCompileAll(
    Span<const KernelRequest> requests, Span<const CompileOptions> options,
    unsigned threads, const cuda::Context *context,
    std::function<void(size_t, const CacheResult *)> onDone) {
  assert(options.size() == 1 || options.size() == requests.size());
  std::vector<std::optional<kvarn::Expected<CacheResult>>> slots(
      requests.size());
  if (threads == 0)
    threads = std::max(1u, std::thread::hardware_concurrency());
  threads = std::min<unsigned>(threads, std::max<size_t>(requests.size(), 1));
  std::atomic<size_t> next{0};
  std::mutex doneMutex;
  auto work = [&] {
    for (size_t i = next++; i < requests.size(); i = next++) {
      kvarn::Expected<CacheResult> r = getOrCompile(
          requests[i], options.size() == 1 ? options[0] : options[i], context);
      if (onDone) {
        std::lock_guard<std::mutex> lock(doneMutex);
        onDone(i, r ? &*r : nullptr);
      }
      slots[i].emplace(std::move(r));
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t)
    pool.emplace_back(work);
  work();
  for (std::thread &t : pool)
    t.join();
  std::vector<kvarn::Expected<CacheResult>> results;
  results.reserve(slots.size());
  for (auto &slot : slots)
    results.push_back(std::move(*slot));
  return results;
}

kvarn::Expected<std::shared_ptr<const cuda::LoadedKernel>>
KernelCache::load(const KernelRequest &request, CompileOptions options,
                  const cuda::Context &context) {
  options.target.chip = context.info().arch();
  std::string key = memoryKey(request, options) + "|ctx:" +
                    hexString(uintptr_t(context.handle()), /*lowerCase=*/false);
  if (!opts.alwaysCompile) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = loaded.find(key);
    if (it != loaded.end()) {
      ++counters.memoryHits;
      return it->second;
    }
  }
  kvarn::Expected<CacheResult> found = getOrCompile(request, options, &context);
  if (!found)
    return found.takeError();
  kvarn::Expected<cuda::LoadedKernel> kernel =
      cuda::LoadedKernel::load(context, found->artifacts->image());
  if (!kernel)
    return kernel.takeError();
  auto shared = std::make_shared<const cuda::LoadedKernel>(std::move(*kernel));
  std::lock_guard<std::mutex> lock(mutex);
  return loaded.emplace(key, std::move(shared)).first->second;
}
