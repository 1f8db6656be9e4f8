//===- CacheCommands.cpp - kvarn-jit cache ls|verify|clear|warm|bench -----===//
//
//   kvarn-jit cache ls     [--dir DIR] [--json]     the entries
//   kvarn-jit cache verify [--dir DIR] [--delete]   check every file of each
//   kvarn-jit cache clear  [--dir DIR]              remove every entry
//   kvarn-jit cache warm   --shapes FILE            compile ahead of serving
//   kvarn-jit cache bench                           cold / warm / memory times
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include "kvarn/DSL/KernelLibrary.h"
#include "kvarn/Layout/Preset.h"
#include "kvarn/Runtime/Context.h"
#include "kvarn/Runtime/KernelCache.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/FileIO.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <ctime>
#include <thread>

using namespace kvarn;
using namespace kvarn::jit;
namespace json = llvm::json;

namespace {

/// --dir, else $KVARN_CACHE_DIR, else ~/.cache/kvarn.
std::string cacheDir(const ParsedOptions &opts) {
  return opts.has("dir") ? opts.get("dir")
                         : CacheOptions::fromEnvironment().directory;
}

std::string humanBytes(uint64_t bytes) {
  if (bytes >= (1u << 20))
    return llvm::formatv("{0:f1} MiB", double(bytes) / (1 << 20)).str();
  return llvm::formatv("{0:f1} KiB", double(bytes) / 1024).str();
}

std::string humanAge(int64_t when) {
  int64_t age = std::max<int64_t>(0, int64_t(std::time(nullptr)) - when);
  if (age < 120)
    return std::to_string(age) + " s ago";
  if (age < 7200)
    return std::to_string(age / 60) + " min ago";
  if (age < 2 * 86400)
    return std::to_string(age / 3600) + " h ago";
  return std::to_string(age / 86400) + " days ago";
}

/// `text` with control characters shown as '?': names and problems come
/// from files anyone with write access to the cache may have made, and must
/// not drive the terminal.
std::string printable(llvm::StringRef text) {
  std::string out = text.str();
  for (char &c : out)
    if ((unsigned char)c < 0x20 || c == 0x7f)
      c = '?';
  return out;
}

json::Object entryJson(const DiskEntry &e) {
  return json::Object{{"key", e.key},
                      {"directory", e.directory},
                      {"name", e.name},
                      {"preset", e.preset},
                      {"head_dim", e.headDim},
                      {"gqa", e.gqa},
                      {"rope_dim", e.ropeDim},
                      {"dtype", e.dtype},
                      {"arch", e.chip},
                      {"bytes", int64_t(e.bytes)},
                      {"last_used", e.lastUsed},
                      {"complete", e.complete},
                      {"problem", e.problem.empty() ? json::Value(nullptr)
                                                    : json::Value(e.problem)}};
}

int runList(const ParsedOptions &opts, bool verify) {
  std::string dir = cacheDir(opts);
  if (dir.empty())
    return failure("no cache directory (KVARN_CACHE_DIR is 'off'; give --dir)");
  if (llvm::sys::fs::exists(dir) && !llvm::sys::fs::is_directory(dir))
    return failure("'" + dir + "' is not a directory");
  kvarn::Expected<std::vector<DiskEntry>> entries = listDiskCache(dir, verify);
  if (!entries)
    return failure(entries.takeError());
  uint64_t total = 0;
  size_t bad = 0, removed = 0;
  for (const DiskEntry &e : *entries) {
    total += e.bytes;
    bad += !e.problem.empty();
  }
  // What could not be deleted is said, one line each, and still unusable.
  std::vector<std::string> notDeleted;
  if (verify && opts.has("delete") && bad) {
    for (const DiskEntry &e : *entries) {
      if (e.problem.empty())
        continue;
      CacheRemoval r = removeDiskEntry(dir, e.key);
      removed += r.removed;
      for (const std::string &why : r.failed)
        notDeleted.push_back("cannot delete " + why);
      for (const std::string &why : r.leftAlone)
        notDeleted.push_back("left alone " + why);
    }
  }
  if (opts.has("json")) {
    json::Array list;
    for (const DiskEntry &e : *entries)
      list.push_back(entryJson(e));
    llvm::outs() << llvm::formatv(
        "{0:2}\n", json::Value(json::Object{{"cache_dir", dir},
                                            {"entries", std::move(list)},
                                            {"bytes", int64_t(total)},
                                            {"unusable", int64_t(bad)}}));
  } else {
    for (const DiskEntry &e : *entries) {
      llvm::outs() << llvm::formatv(
          "{0}  {1,-12} {2,-16} head_dim {3,3} gqa {4,2} {5,-4} {6,-7} {7,10}  "
          "{8}",
          e.key, e.name.empty() ? "?" : printable(e.name),
          e.preset.empty() ? "?" : printable(e.preset), e.headDim, e.gqa,
          e.dtype.empty() ? "?" : printable(e.dtype),
          e.chip.empty() ? "?" : printable(e.chip), humanBytes(e.bytes),
          humanAge(e.lastUsed));
      if (e.ropeDim)
        llvm::outs() << "  rope_dim " << e.ropeDim;
      if (!e.problem.empty())
        llvm::outs() << "  UNUSABLE: " << printable(e.problem);
      llvm::outs() << "\n";
    }
    llvm::outs() << llvm::formatv("{0}: {1} entries, {2}", dir,
                                  entries->size(), humanBytes(total));
    if (verify)
      llvm::outs() << llvm::formatv(", {0} usable, {1} unusable",
                                    entries->size() - bad, bad);
    if (removed)
      llvm::outs() << llvm::formatv(" ({0} deleted)", removed);
    llvm::outs() << "\n";
  }
  for (const std::string &line : notDeleted)
    if (llvm::StringRef(line).starts_with("cannot"))
      failure(printable(line));
    else
      llvm::errs() << "kvarn-jit: " << printable(line) << "\n";
  // verify fails on unusable entries it was not asked to delete.
  return verify && bad > removed ? kExitFailure : kExitOk;
}

int runLs(const ParsedOptions &opts) { return runList(opts, false); }
int runVerify(const ParsedOptions &opts) { return runList(opts, true); }

int runClear(const ParsedOptions &opts) {
  std::string dir = cacheDir(opts);
  if (dir.empty())
    return failure("no cache directory (KVARN_CACHE_DIR is 'off'; give --dir)");
  if (llvm::sys::fs::exists(dir) && !llvm::sys::fs::is_directory(dir))
    return failure("'" + dir + "' is not a directory");
  kvarn::Expected<CacheRemoval> report = clearDiskCache(dir);
  if (!report)
    return failure(report.takeError());
  llvm::outs() << llvm::formatv("{0}: removed {1} entries\n", dir,
                                report->removed);
  for (const std::string &why : report->leftAlone)
    llvm::errs() << "kvarn-jit: left alone " << printable(why) << "\n";
  for (const std::string &why : report->failed)
    failure("cannot remove " + printable(why));
  return report->failed.empty() ? kExitOk : kExitFailure;
}

//===----------------------------------------------------------------------===//
// warm: compile a list of shapes ahead of time
//===----------------------------------------------------------------------===//

/// The shapes file, read as any file from outside: a regular file of
/// bounded size (not a FIFO or /dev/zero), then parsed by the cache.
kvarn::Expected<std::vector<WarmShape>>
readShapes(const std::string &path, const std::string &defaultArch) {
  kvarn::Expected<std::string> text =
      readRegularFile(path, ReadOptions{limits::kShapesFileBytes});
  if (!text)
    return text.takeError();
  return parseWarmShapes(*text, path, defaultArch);
}

int runWarm(const ParsedOptions &opts) {
  std::optional<int64_t> threads = opts.getInt("threads", 0);
  if (!threads)
    return kExitUsage;
  if (*threads < 0 || *threads > 1024)
    return usageError("--threads takes 0 (one per core) to 1024");
  std::string arch = opts.has("arch") ? opts.get("arch") : localArch();
  Target target{arch, 0};
  if (kvarn::Error err = validateTarget(target))
    return failure(std::move(err));
  kvarn::Expected<std::vector<WarmShape>> items =
      readShapes(opts.get("shapes"), arch);
  if (!items)
    return failure(items.takeError());
  CacheOptions cacheOptions = CacheOptions::fromEnvironment();
  if (opts.has("dir"))
    cacheOptions.directory = opts.get("dir");
  if (cacheOptions.directory.empty())
    return failure("no cache directory (KVARN_CACHE_DIR is 'off'; give --dir)");
  KernelCache cache(cacheOptions);
  std::vector<KernelRequest> requests;
  std::vector<CompileOptions> options;
  for (const WarmShape &item : *items) {
    requests.push_back(item.request);
    CompileOptions o;
    o.target.chip = item.chip;
    options.push_back(o);
  }
  bool progress = llvm::errs().is_displayed();
  size_t done = 0;
  auto start = std::chrono::steady_clock::now();
  std::vector<kvarn::Expected<CacheResult>> results = cache.getOrCompileAll(
      requests, options, unsigned(*threads), nullptr,
      [&](size_t i, const CacheResult *r) {
        if (!progress)
          return;
        ++done;
        const KernelRequest &q = requests[i];
        llvm::errs() << llvm::formatv("\r\033[K[{0}/{1}] {2} {3}: {4}", done,
                                      requests.size(), q.kernel,
                                      q.spec.describe(),
                                      r ? toString(r->outcome) : "failed");
        if (done == requests.size())
          llvm::errs() << "\r\033[K";
        llvm::errs().flush();
      });
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  int rc = kExitOk;
  size_t compiled = 0, hits = 0;
  json::Array list;
  for (size_t i = 0; i < results.size(); ++i) {
    const KernelRequest &q = requests[i];
    std::string what = llvm::formatv("{0} {1} {2}", q.kernel, q.spec.describe(),
                                     options[i].target.chip);
    if (!results[i]) {
      rc = compileFailure(what, options[i], results[i].takeError());
      continue;
    }
    const CacheResult &r = *results[i];
    // Warming is for the disk: a kernel the cache kept in memory only (an
    // unwritable cache, an obstruction) is a failure here.
    if (r.artifacts->directory.empty()) {
      rc = failure(what + ": not written to '" + cacheOptions.directory +
                   "' (the warning above says why)");
      continue;
    }
    (r.outcome == CacheOutcome::Compiled ? compiled : hits)++;
    if (opts.has("json")) {
      list.push_back(
          json::Object{{"name", q.kernel},
                       {"preset", q.spec.preset},
                       {"head_dim", q.spec.headDim},
                       {"gqa", q.spec.gqa},
                       {"dtype", llvm::StringRef(spell(q.spec.dtype))},
                       {"arch", options[i].target.chip},
                       {"key", r.artifacts->key},
                       {"cache", llvm::StringRef(toString(r.outcome))},
                       {"seconds", r.seconds}});
      continue;
    }
    llvm::outs() << what << ": "
                 << (r.outcome == CacheOutcome::Compiled ? "compiled"
                                                         : "cache hit")
                 << " -> " << r.artifacts->directory << "\n";
  }
  if (opts.has("json"))
    llvm::outs() << llvm::formatv(
        "{0:2}\n", json::Value(json::Object{
                       {"cache_dir", cacheOptions.directory},
                       {"kernels", std::move(list)},
                       {"compiled", int64_t(compiled)},
                       {"hits", int64_t(hits)},
                       {"seconds", seconds}}));
  else
    llvm::outs() << llvm::formatv("{0}: {1} kernels, {2} compiled, {3} already "
                                  "cached, {4:f2} s\n",
                                  cacheOptions.directory, results.size(),
                                  compiled, hits, seconds);
  return rc;
}

//===----------------------------------------------------------------------===//
// bench: cold compile, warm disk load in a new process, memory hit
//===----------------------------------------------------------------------===//

double since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

struct BenchShape {
  dsl::Specialization spec;
  std::vector<KernelRequest> requests;
  CompileOptions options;
};

kvarn::Expected<BenchShape> benchShape(const ParsedOptions &opts) {
  BenchShape b;
  b.spec.preset = opts.get("preset", defaultPreset().name);
  std::optional<int64_t> headDim = opts.getInt("head-dim", 128);
  std::optional<int64_t> gqa = opts.getInt("gqa", 1);
  if (!headDim || !gqa)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT, "bad usage");
  b.spec.headDim = int(std::clamp<int64_t>(*headDim, INT32_MIN, INT32_MAX));
  b.spec.gqa = int(std::clamp<int64_t>(*gqa, INT32_MIN, INT32_MAX));
  kvarn::Expected<DType> dtype = parseDType(opts.get("dtype", "f16"));
  if (!dtype)
    return dtype.takeError();
  b.spec.dtype = *dtype;
  if (kvarn::Error err = b.spec.check())
    return std::move(err);
  b.options.target.chip = opts.has("arch") ? opts.get("arch") : localArch();
  if (kvarn::Error err = validateTarget(b.options.target))
    return std::move(err);
  for (const std::string &k :
       dsl::libraryKernelNames(dsl::kernelFamily(b.spec)))
    b.requests.push_back({k, b.spec, "", ""});
  return b;
}

/// The GPU's context where there is one (its absence is not an error).
std::unique_ptr<cuda::Context> benchContext() {
  kvarn::Expected<cuda::Context> ctx = cuda::Context::create(0);
  if (!ctx) {
    kvarn::consumeError(ctx.takeError());
    return nullptr;
  }
  return std::make_unique<cuda::Context>(std::move(*ctx));
}

/// The child's half: every kernel from a warm disk cache in a fresh process
/// (and into the GPU, where there is one); prints JSON.
int benchWarmChild(const ParsedOptions &opts, BenchShape &b) {
  std::unique_ptr<cuda::Context> ctx = benchContext(); // not timed
  CacheOptions cacheOptions;
  cacheOptions.directory = opts.get("warm-dir");
  KernelCache cache(cacheOptions);
  if (ctx)
    b.options.target.chip = ctx->info().arch();
  auto start = std::chrono::steady_clock::now();
  size_t hits = 0;
  for (const KernelRequest &r : b.requests) {
    if (ctx) {
      kvarn::Expected<std::shared_ptr<const cuda::LoadedKernel>> k =
          cache.load(r, b.options, *ctx);
      if (!k)
        return failure(k.takeError());
    } else {
      kvarn::Expected<CacheResult> a = cache.getOrCompile(r, b.options);
      if (!a)
        return failure(a.takeError());
    }
  }
  double seconds = since(start);
  hits = cache.stats().diskHits;
  llvm::outs() << llvm::formatv(
      "{0}\n", json::Value(json::Object{{"warm_seconds", seconds},
                                        {"disk_hits", int64_t(hits)},
                                        {"compiled",
                                         int64_t(cache.stats().compiled)},
                                        {"loaded_on_gpu", bool(ctx)}}));
  return kExitOk;
}

int runBench(const ParsedOptions &opts) {
  std::optional<int64_t> threads = opts.getInt("threads", 0);
  std::optional<int64_t> reps = opts.getInt("reps", 200000);
  if (!threads || !reps)
    return kExitUsage;
  if (*threads < 0 || *threads > 1024 || *reps < 1)
    return usageError("--threads takes 0 to 1024 and --reps a positive count");
  kvarn::Expected<BenchShape> shape = benchShape(opts);
  if (!shape)
    return failure(shape.takeError());
  if (opts.has("warm-dir"))
    return benchWarmChild(opts, *shape);

  llvm::SmallString<256> dir;
  if (std::error_code ec =
          llvm::sys::fs::createUniqueDirectory("kvarn-cache-bench", dir))
    return failure("cannot make a temporary directory: " + ec.message());
  std::unique_ptr<cuda::Context> ctx = benchContext();
  if (ctx)
    shape->options.target.chip = ctx->info().arch();
  const std::string &chip = shape->options.target.chip;
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  unsigned useThreads = *threads ? unsigned(*threads) : cores;

  // Cold: an empty cache, every kernel compiled (and a cubin made: by the
  // driver with a GPU, else by ptxas where found).
  CacheOptions cacheOptions;
  cacheOptions.directory = dir.str().str();
  KernelCache cache(cacheOptions);
  auto start = std::chrono::steady_clock::now();
  std::vector<kvarn::Expected<CacheResult>> cold = cache.getOrCompileAll(
      shape->requests, {shape->options}, useThreads, ctx.get());
  double coldSeconds = since(start);
  double sumCompile = 0;
  bool cubins = true;
  for (auto &r : cold) {
    if (!r) {
      llvm::sys::fs::remove_directories(dir);
      return failure(r.takeError());
    }
    sumCompile += r->artifacts->compileSeconds;
    cubins &= !r->artifacts->cubin.empty();
  }

  // Warm: a new process reads the entries (and loads them on the GPU).
  std::string exe = llvm::sys::fs::getMainExecutable(nullptr, nullptr);
  llvm::SmallString<256> childOut;
  llvm::sys::fs::createTemporaryFile("kvarn-cache-bench", "json", childOut);
  std::vector<std::string> args = {exe,
                                   "cache",
                                   "bench",
                                   "--warm-dir",
                                   dir.str().str(),
                                   "--preset",
                                   shape->spec.preset,
                                   "--head-dim",
                                   std::to_string(shape->spec.headDim),
                                   "--gqa",
                                   std::to_string(shape->spec.gqa),
                                   "--dtype",
                                   std::string(spell(shape->spec.dtype)),
                                   "--arch",
                                   chip};
  std::vector<llvm::StringRef> argv(args.begin(), args.end());
  std::optional<llvm::StringRef> redirects[] = {
      std::nullopt, llvm::StringRef(childOut), std::nullopt};
  auto childStart = std::chrono::steady_clock::now();
  int rc = llvm::sys::ExecuteAndWait(exe, argv, std::nullopt, redirects, 600);
  double childSeconds = since(childStart);
  double warmSeconds = -1;
  int64_t warmCompiled = -1;
  if (auto text = llvm::MemoryBuffer::getFile(childOut)) {
    if (llvm::Expected<json::Value> v = json::parse((*text)->getBuffer())) {
      if (const json::Object *o = v->getAsObject()) {
        warmSeconds = o->getNumber("warm_seconds").value_or(-1);
        warmCompiled = o->getInteger("compiled").value_or(-1);
      }
    } else {
      llvm::consumeError(v.takeError());
    }
  }
  llvm::sys::fs::remove(childOut);
  if (rc != 0 || warmSeconds < 0) {
    llvm::sys::fs::remove_directories(dir);
    return failure("the warm-cache process failed (exit " + llvm::Twine(rc) +
                   ")");
  }

  // Memory: the same lookups again in this process.
  const KernelRequest &first = shape->requests.front();
  std::shared_ptr<const cuda::LoadedKernel> keep;
  if (ctx) { // the first load() links nothing: the entry has its cubin
    kvarn::Expected<std::shared_ptr<const cuda::LoadedKernel>> k =
        cache.load(first, shape->options, *ctx);
    if (!k)
      return failure(k.takeError());
    keep = *k;
  }
  start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < *reps; ++i) {
    if (ctx) {
      auto k = cache.load(first, shape->options, *ctx);
      if (!k)
        return failure(k.takeError());
    } else {
      auto a = cache.getOrCompile(first, shape->options);
      if (!a)
        return failure(a.takeError());
    }
  }
  double memoryMicros = since(start) * 1e6 / double(*reps);
  llvm::sys::fs::remove_directories(dir);

  std::string machine = ctx ? ctx->info().name
                            : "no GPU (" + std::to_string(cores) + " cores)";
  std::string cubinBy = ctx ? "driver linker" : cubins ? "ptxas" : "none";
  llvm::outs() << llvm::formatv(
      "kernel cache: {0} kernels of {1} for {2}, on {3}\n"
      "  cold, empty cache ({4} threads):   {5,8:f3} s wall, {6:f3} s of "
      "compilation (cubins: {7})\n"
      "  warm disk cache, new process:      {8,8:f2} ms ({9} compiled; the "
      "process ran {10:f0} ms)\n"
      "  memory-cache hit:                  {11,8:f3} us per {12}\n",
      shape->requests.size(), shape->spec.describe(), chip, machine,
      useThreads, coldSeconds, sumCompile, cubinBy, warmSeconds * 1e3, warmCompiled, childSeconds * 1e3,
      memoryMicros, ctx ? "load()" : "getOrCompile()");
  if (opts.has("json")) {
    std::error_code ec;
    llvm::raw_fd_ostream os(opts.get("json"), ec, llvm::sys::fs::OF_Text);
    if (ec)
      return failure("cannot write '" + opts.get("json") + "': " + ec.message());
    os << llvm::formatv(
        "{0:2}\n", json::Value(json::Object{
                       {"machine", machine},
                       {"arch", chip},
                       {"kernels", int64_t(shape->requests.size())},
                       {"preset", shape->spec.preset},
                       {"head_dim", shape->spec.headDim},
                       {"gqa", shape->spec.gqa},
                       {"dtype", llvm::StringRef(spell(shape->spec.dtype))},
                       {"threads", int64_t(useThreads)},
                       {"cold_seconds", coldSeconds},
                       {"cold_compile_seconds_sum", sumCompile},
                       {"cubin_by", cubinBy},
                       {"warm_disk_ms", warmSeconds * 1e3},
                       {"warm_process_ms", childSeconds * 1e3},
                       {"memory_hit_us", memoryMicros},
                       {"memory_hit_of", ctx ? "load" : "getOrCompile"}}));
  }
  return kExitOk;
}

} // namespace

std::vector<Command> kvarn::jit::cacheCommands() {
  OptionSpec dir = {"dir", "DIR",
                    "the cache directory (default: $KVARN_CACHE_DIR, else "
                    "~/.cache/kvarn)"};
  OptionSpec jsonOut = {"json", nullptr, "JSON on stdout"};
  return {
      {"cache ls", "cache ls [--dir DIR] [--json]",
       "list the kernel cache's entries: kernel, preset, shape, chip, size, "
       "last use",
       {dir, jsonOut}, runLs},
      {"cache verify", "cache verify [--dir DIR] [--delete] [--json]",
       "check every entry's metadata, versions and file checksums; exit 1 if "
       "any is unusable (unless --delete removed them)",
       {dir, jsonOut, {"delete", nullptr, "remove the unusable entries"}},
       runVerify},
      {"cache clear", "cache clear [--dir DIR]",
       "remove every entry of the kernel cache", {dir}, runClear},
      {"cache warm", "cache warm --shapes FILE [--dir DIR] [--arch SM] "
                     "[--threads N] [--json]",
       "compile the kernels of every shape in FILE into the cache ahead of "
       "serving. FILE: {\"arch\": \"sm_90\", \"shapes\": [{\"preset\": P, "
       "\"head_dim\": N, \"gqa\": N or [N, ...], \"dtype\": \"f16\" or "
       "\"bf16\", \"kernels\": [...]}]} (preset, gqa, dtype, kernels and "
       "arch optional)",
       {{"shapes", "FILE", "the JSON list of shapes", /*required=*/true},
        dir,
        {"arch", "SM", "target GPU (default: the local GPU's, else sm_90)"},
        {"threads", "N", "compile on N threads (default: one per core)"},
        jsonOut},
       runWarm},
      {"cache bench", "cache bench [--preset P] [--head-dim N] [--gqa N] "
                      "[--dtype f16|bf16] [--arch SM] [--threads N] "
                      "[--json FILE]",
       "time the kernel set of one shape: cold compile into an empty cache, "
       "load from the warm disk cache in a new process, memory-cache hit",
       {{"preset", "NAME", "KVarN preset (default kvarn_k4v2_g128)"},
        {"head-dim", "N", "head_dim (default 128)"},
        {"gqa", "N", "query heads per KV head (default 1)"},
        {"dtype", "TYPE", "activation dtype: f16 or bf16 (default f16)"},
        {"arch", "SM", "target GPU (default: the local GPU's, else sm_90)"},
        {"threads", "N", "compile on N threads (default: one per core)"},
        {"reps", "N", "memory-cache lookups to average (default 200000)"},
        {"json", "FILE", "write the figures here as JSON"},
        {"warm-dir", "DIR", "(internal) the warm-cache half, run in a new "
                            "process"}},
       runBench},
  };
}
