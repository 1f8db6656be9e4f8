//===- BuildSupport.cpp - building kernels through the cache --------------===//
//
// kvarn-jit's default mode (every kernel of a shape into the kernel cache),
// and what it shares with --emit and `cache warm`: the target of the local
// GPU, IR dumps, crash reproducers and one-line compiler failures.
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include "kvarn/Runtime/Context.h"
#include "kvarn/Runtime/KernelCache.h"
#include "kvarn/Support/Error.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace kvarn;
using namespace kvarn::jit;

std::string jit::localArch() {
  kvarn::Expected<const cuda::Driver &> driver = cuda::Driver::get();
  if (!driver) {
    kvarn::consumeError(driver.takeError());
    return "sm_90";
  }
  if (driver->deviceCount() < 1)
    return "sm_90";
  kvarn::Expected<cuda::DeviceInfo> info = cuda::queryDevice(*driver, 0);
  if (!info) {
    kvarn::consumeError(info.takeError());
    return "sm_90";
  }
  std::string arch = info->arch();
  return llvm::is_contained(supportedChips(), arch) ? arch : "sm_90";
}

static std::string reproducerPath(llvm::StringRef kernel) {
  llvm::SmallString<256> path;
  llvm::sys::path::system_temp_directory(/*ErasedOnReboot=*/true, path);
  llvm::sys::path::append(path, ("kvarn-reproducer-" + kernel + "-" +
                                 llvm::Twine(::getpid()) + ".mlir")
                                    .str());
  return path.str().str();
}

/// Keeps the newest kKeptReproducers of this user's reproducers in the
/// temporary directory and removes the older ones, so failed compiles do not
/// pile up files. Only regular files named kvarn-reproducer-*.mlir and owned
/// by this user go, never through a link.
static constexpr size_t kKeptReproducers = 8;
static void pruneReproducers(llvm::StringRef keep) {
  llvm::StringRef dir = llvm::sys::path::parent_path(keep);
  int dirFd = ::open(dir.str().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd < 0)
    return;
  DIR *d = ::fdopendir(::dup(dirFd));
  std::vector<std::pair<int64_t, std::string>> found; // (mtime, name)
  while (d) {
    struct dirent *e = ::readdir(d);
    if (!e)
      break;
    llvm::StringRef name(e->d_name);
    struct stat st;
    if (!name.starts_with("kvarn-reproducer-") || !name.ends_with(".mlir") ||
        ::fstatat(dirFd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode) || st.st_uid != ::getuid() ||
        name == llvm::sys::path::filename(keep))
      continue;
    found.push_back({int64_t(st.st_mtime), name.str()});
  }
  if (d)
    ::closedir(d);
  std::sort(found.rbegin(), found.rend()); // newest first
  for (size_t i = kKeptReproducers - 1; i < found.size(); ++i)
    ::unlinkat(dirFd, found[i].second.c_str(), 0);
  ::close(dirFd);
}

void jit::applyReportingOptions(const ParsedOptions &opts,
                                llvm::StringRef kernel,
                                CompileOptions &options) {
  // Validated by the command (0: the compiler's choice).
  options.numWarps = int(opts.getInt("num-warps", 0).value_or(0));
  options.minCtasPerSM = int(opts.getInt("min-ctas-per-sm", 0).value_or(0));
  options.warpStates = opts.has("warp-states");
  options.pipelineCopies = opts.has("pipeline-copies");
  options.printIRAfterAll = opts.has("print-ir-after-all");
  options.timing = opts.has("timing");
  options.crashReproducer = reproducerPath(kernel);
  // A reproducer left from an earlier process with this pid is not ours.
  llvm::sys::fs::remove(options.crashReproducer);
}

int jit::compileFailure(llvm::StringRef kernel, const CompileOptions &options,
                        kvarn::Error err) {
  std::string message;
  kvarn::consumeError(std::move(err), message);
  // One line: the errors, without the notes (an operation's dump, where
  // the pass manager put its reproducer) or the pass manager's summary.
  llvm::SmallVector<llvm::StringRef> lines;
  llvm::StringRef(message).split(lines, '\n', -1, false);
  std::string oneLine;
  bool inNote = false;
  for (llvm::StringRef line : lines) {
    bool indented = line.starts_with(" ");
    line = line.trim();
    if (line.starts_with("note:")) {
      inNote = true;
      continue;
    }
    if ((inNote && indented) || line.empty() ||
        line.contains("Failures have been detected while processing an MLIR "
                      "pass pipeline"))
      continue;
    inNote = false;
    oneLine += (oneLine.empty() ? "" : "; ") + line.str();
  }
  if (!options.crashReproducer.empty() &&
      llvm::sys::fs::exists(options.crashReproducer)) {
    pruneReproducers(options.crashReproducer);
    oneLine += " (crash reproducer: " + options.crashReproducer +
               "; replay with kvarn-opt --run-reproducer " +
               options.crashReproducer + ")";
  }
  return failure(kernel + ": " + oneLine);
}

//===----------------------------------------------------------------------===//
// --dump-ir
//===----------------------------------------------------------------------===//

StageDumper::StageDumper(const ParsedOptions &opts, llvm::StringRef kernel) {
  if (!opts.has("dump-ir"))
    return;
  llvm::SmallString<256> path(opts.get("dump-ir"));
  llvm::sys::path::append(path, kernel);
  dir = path.str().str();
  if (std::error_code ec = llvm::sys::fs::create_directories(dir))
    error = "cannot create '" + dir + "': " + ec.message();
}

void StageDumper::write(llvm::StringRef file, llvm::StringRef text) {
  if (dir.empty() || !error.empty())
    return;
  llvm::SmallString<256> path(dir);
  llvm::sys::path::append(path, file);
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec, llvm::sys::fs::OF_Text);
  if (!ec) {
    os << text;
    if (!text.ends_with("\n"))
      os << "\n";
    os.close();
    if (os.has_error())
      ec = os.error();
  }
  if (ec)
    error = "cannot write '" + path.str().str() + "': " + ec.message();
}

void StageDumper::source(llvm::StringRef text) { write("01-source.kvt", text); }

void StageDumper::stage(llvm::StringRef name, llvm::StringRef ir) {
  static const llvm::StringMap<const char *> kFiles = {
      {"kvt", "02-kvt.mlir"},   {"kvgpu", "03-kvgpu.mlir"},
      {"nvvm", "04-nvvm.mlir"}, {"llir", "05-llvm.ll"},
      {"ptx", "06-ptx.ptx"}};
  auto it = kFiles.find(name);
  if (it != kFiles.end())
    write(it->second, ir);
}

void StageDumper::sass(llvm::StringRef cubin) {
  if (dir.empty() || cubin.empty() || !error.empty())
    return;
  // cuobjdump -sass, else nvdisasm, from the toolkit or PATH.
  std::vector<llvm::StringRef> paths;
  std::string cudaBins[3];
  int n = 0;
  for (const char *variable : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *root = std::getenv(variable); root && *root)
      cudaBins[n++] = std::string(root) + "/bin";
  cudaBins[n++] = "/usr/local/cuda/bin";
  for (int i = 0; i < n; ++i)
    paths.push_back(cudaBins[i]);
  std::string tool;
  std::vector<llvm::StringRef> args;
  for (const char *candidate : {"cuobjdump", "nvdisasm"}) {
    llvm::ErrorOr<std::string> found = llvm::sys::findProgramByName(candidate);
    if (!found)
      found = llvm::sys::findProgramByName(candidate, paths);
    if (found) {
      tool = *found;
      break;
    }
  }
  if (tool.empty())
    return; // no disassembler here: no SASS stage
  llvm::SmallString<256> cubinPath(dir), sassPath(dir);
  llvm::sys::path::append(cubinPath, "07-sass.cubin.tmp");
  llvm::sys::path::append(sassPath, "07-sass.sass");
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(cubinPath, ec);
    if (ec)
      return;
    os << cubin;
  }
  bool isCuobjdump = llvm::sys::path::filename(tool) == "cuobjdump";
  std::vector<llvm::StringRef> argv = {tool};
  if (isCuobjdump)
    argv.push_back("-sass");
  argv.push_back(cubinPath);
  std::optional<llvm::StringRef> redirects[] = {std::nullopt,
                                                llvm::StringRef(sassPath),
                                                llvm::StringRef("")};
  int rc = llvm::sys::ExecuteAndWait(tool, argv, std::nullopt, redirects, 60);
  llvm::sys::fs::remove(cubinPath);
  if (rc != 0) {
    llvm::sys::fs::remove(sassPath);
    error = "'" + tool + "' could not disassemble the cubin";
  }
}

//===----------------------------------------------------------------------===//
// The default mode
//===----------------------------------------------------------------------===//

int jit::buildThroughCache(const ParsedOptions &opts,
                           const dsl::Specialization &spec,
                           const Target &target,
                           const std::vector<std::string> &names,
                           const KernelSources &sources, unsigned threads) {
  CacheOptions cacheOptions = CacheOptions::fromEnvironment();
  if (opts.has("out"))
    cacheOptions.directory = opts.get("out");
  bool printsPerPass = opts.has("print-ir-after-all") || opts.has("timing");
  // Stages and pass reports come from a compilation, not from a hit.
  if (printsPerPass || opts.has("dump-ir"))
    cacheOptions.alwaysCompile = true;
  if (printsPerPass)
    threads = 1; // one compilation's report after another's
  KernelCache cache(cacheOptions);

  std::vector<KernelRequest> requests;
  std::vector<CompileOptions> options;
  std::vector<std::unique_ptr<StageDumper>> dumpers;
  for (const std::string &name : names) {
    const KernelSource &source = sources.at(name);
    KernelRequest request;
    request.kernel = name;
    request.spec = spec;
    if (source.user) {
      request.source = source.text;
      request.sourceName = source.fileName;
    }
    requests.push_back(std::move(request));
    CompileOptions o;
    o.target = target;
    applyReportingOptions(opts, name, o);
    dumpers.push_back(std::make_unique<StageDumper>(opts, name));
    StageDumper *dumper = dumpers.back().get();
    dumper->source(source.text);
    o.onStage = [dumper](llvm::StringRef stage, llvm::StringRef ir) {
      dumper->stage(stage, ir);
    };
    options.push_back(std::move(o));
  }

  // A progress line per kernel where a person watches.
  bool progress = llvm::errs().is_displayed() && !printsPerPass;
  size_t done = 0;
  auto onDone = [&](size_t i, const CacheResult *r) {
    if (!progress)
      return;
    ++done;
    llvm::errs() << llvm::formatv("\r\033[K[{0}/{1}] {2}: {3}", done,
                                  requests.size(), requests[i].kernel,
                                  r ? toString(r->outcome) : "failed");
    if (done == requests.size())
      llvm::errs() << "\r\033[K";
    llvm::errs().flush();
  };
  std::vector<kvarn::Expected<CacheResult>> results =
      cache.getOrCompileAll(requests, options, threads, nullptr, onDone);

  int rc = kExitOk;
  llvm::json::Array kernels;
  for (size_t i = 0; i < results.size(); ++i) {
    const std::string &name = requests[i].kernel;
    if (!results[i]) {
      rc = compileFailure(name, options[i], results[i].takeError());
      continue;
    }
    const CacheResult &r = *results[i];
    const KernelArtifacts &a = *r.artifacts;
    dumpers[i]->sass(a.cubin);
    if (!dumpers[i]->problem().empty())
      rc = failure(dumpers[i]->problem());
    std::string where = a.directory.empty() ? "memory only" : a.directory;
    // --out asks for files; the cache may fall back to memory, --out not.
    if (opts.has("out") && a.directory.empty()) {
      rc = failure(name + ": not written to '" + opts.get("out") +
                   "' (the warning above says why)");
      continue;
    }
    if (opts.has("json")) {
      llvm::json::Array signature;
      for (const std::string &t : a.signature)
        signature.push_back(t);
      kernels.push_back(llvm::json::Object{
          {"name", name},
          {"preset", spec.preset},
          {"head_dim", spec.headDim},
          {"gqa", spec.gqa},
          {"rope_dim", spec.ropeDim},
          {"dtype", llvm::StringRef(spell(spec.dtype))},
          {"arch", a.chip},
          {"ptx_version", a.ptxVersion},
          {"key", a.key},
          {"hash", a.hash},
          {"directory", a.directory},
          {"cache", llvm::StringRef(toString(r.outcome))},
          {"seconds", r.seconds},
          {"compile_seconds", a.compileSeconds},
          {"num_warps", a.numWarps},
          {"programs_per_cta", a.programsPerCta},
          {"ctas_per_sm", a.ctasPerSM},
          {"shared", a.sharedBytes},
          {"signature", std::move(signature)},
          {"cubin", !a.cubin.empty()},
      });
      continue;
    }
    llvm::outs() << llvm::formatv(
        "{0}: {1} {2}: {3} in {4:f3} s -> {5} ({6} warps, "
        "{7} bytes of shared memory, {8})\n",
        name, spec.describe(), a.chip,
        r.outcome == CacheOutcome::Compiled ? "compiled" : "cache hit",
        r.seconds, where, a.numWarps, a.sharedBytes,
        a.cubin.empty() ? "PTX only" : "PTX and cubin");
  }
  if (opts.has("json"))
    llvm::outs() << llvm::formatv(
        "{0:2}\n", llvm::json::Value(llvm::json::Object{
                       {"cache_dir", cacheOptions.directory},
                       {"kernels", std::move(kernels)}}));
  return rc;
}
