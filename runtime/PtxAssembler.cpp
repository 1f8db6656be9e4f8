//===- PtxAssembler.cpp - PTX to cubin, two ways --------------------------===//

#include "kvarn/Runtime/PtxAssembler.h"

#include "Internal.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/Regex.h"

#include <cstdint>
#include <cstdlib>
#include <map>

using namespace kvarn;
using namespace kvarn::cuda;

//===----------------------------------------------------------------------===//
// The assembler's log
//===----------------------------------------------------------------------===//

/// The integer before `suffix` in `line` ("40 registers" -> 40), or -1.
static int64_t figureBefore(llvm::StringRef line, llvm::StringRef suffix) {
  llvm::Regex pattern(("([0-9]+) " + suffix).str());
  llvm::SmallVector<llvm::StringRef, 2> match;
  int64_t value = -1;
  if (pattern.match(line, &match))
    llvm::to_integer(match[1], value, 10);
  return value;
}

// ptxas -v (CUDA 13) writes, per entry function:
//   ptxas info    : Compiling entry function 'add' for 'sm_90'
//   ptxas info    : Function properties for add
//       0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
//   ptxas info    : Used 10 registers, used 1 barriers, 1024 bytes smem
// "Function properties" also appear for device functions, which we skip.
std::vector<KernelResources> cuda::parseAssemblerLog(llvm::StringRef log) {
  std::vector<KernelResources> kernels;
  std::map<std::string, size_t> indexByName;
  llvm::Regex entryPattern("Compiling entry function '([^']+)' for '([^']+)'");
  llvm::Regex propertiesPattern("Function properties for ([^ ]+)");
  KernelResources *current = nullptr;     // the entry being compiled
  KernelResources *propertiesOf = nullptr; // whose "stack frame" line is next

  llvm::SmallVector<llvm::StringRef, 0> lines;
  log.split(lines, '\n');
  for (llvm::StringRef line : lines) {
    llvm::SmallVector<llvm::StringRef, 3> match;
    if (entryPattern.match(line, &match)) {
      std::string name = match[1].str();
      auto [it, inserted] = indexByName.try_emplace(name, kernels.size());
      if (inserted) {
        kernels.push_back({});
        kernels.back().name = name;
      }
      current = &kernels[it->second];
      current->arch = match[2].str();
      propertiesOf = nullptr;
      continue;
    }
    if (propertiesPattern.match(line, &match)) {
      auto it = indexByName.find(match[1].trim().str());
      propertiesOf = it == indexByName.end() ? nullptr : &kernels[it->second];
      continue;
    }
    if (line.contains("bytes stack frame")) {
      if (propertiesOf) {
        propertiesOf->stackFrameBytes = figureBefore(line, "bytes stack frame");
        propertiesOf->spillStoreBytes = figureBefore(line, "bytes spill stores");
        propertiesOf->spillLoadBytes = figureBefore(line, "bytes spill loads");
      }
      propertiesOf = nullptr;
      continue;
    }
    if (current && line.contains("Used ") && line.contains(" registers")) {
      current->registers = int(figureBefore(line, "registers"));
      current->barriers = int(figureBefore(line, "barriers"));
      int64_t shared = figureBefore(line, "bytes smem");
      current->sharedBytes = shared < 0 ? 0 : shared;
    }
  }
  return kernels;
}

//===----------------------------------------------------------------------===//
// The driver's linker
//===----------------------------------------------------------------------===//

llvm::Expected<CubinImage> cuda::linkPtxWithDriver(const Context &context,
                                                   llvm::StringRef ptx,
                                                   llvm::StringRef name) {
  const Driver &driver = context.driver();
  KVARN_ENTER_CONTEXT(context);

  JitLogs logs(/*verbose=*/true);
  CUlinkState state = nullptr;
  if (llvm::Error err =
          KVARN_CUDA_CHECK(driver, cuLinkCreate, logs.count(),
                           logs.optionArray(), logs.valueArray(), &state))
    return std::move(err);
  // The driver owns the cubin until cuLinkDestroy: copy it out first.
  auto finish = [&](llvm::Error err) -> llvm::Expected<CubinImage> {
    (void)driver.api().cuLinkDestroy(state);
    return std::move(err);
  };
  auto withLogs = [&](llvm::Error err) {
    return withContext(std::move(err), "linking " + name.str() + " for " +
                                           context.info().arch() +
                                           logs.forMessage());
  };

  // The PTX must be NUL-terminated, and the size counts the NUL.
  std::string text = ptx.str();
  std::string label = name.str();
  if (llvm::Error err = KVARN_CUDA_CHECK(
          driver, cuLinkAddData, state, CU_JIT_INPUT_PTX, text.data(),
          text.size() + 1, label.c_str(), 0, nullptr, nullptr))
    return finish(withLogs(std::move(err)));
  void *cubin = nullptr;
  size_t cubinBytes = 0;
  if (llvm::Error err = KVARN_CUDA_CHECK(driver, cuLinkComplete, state, &cubin,
                                         &cubinBytes))
    return finish(withLogs(std::move(err)));

  CubinImage image;
  image.bytes.assign(static_cast<const char *>(cubin), cubinBytes);
  image.log = logs.info();
  image.kernels = parseAssemblerLog(image.log);
  (void)driver.api().cuLinkDestroy(state);
  return std::move(image);
}

//===----------------------------------------------------------------------===//
// ptxas
//===----------------------------------------------------------------------===//

std::vector<std::string> cuda::ptxasCandidates() {
  std::vector<std::string> candidates;
  if (const char *explicitPath = std::getenv("KVARN_PTXAS");
      explicitPath && *explicitPath)
    candidates.push_back(explicitPath);
  for (const char *variable : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *root = std::getenv(variable); root && *root)
      candidates.push_back((llvm::Twine(root) + "/bin/ptxas").str());
#ifdef KVARN_CUDA_TOOLKIT_DIR
  candidates.push_back(KVARN_CUDA_TOOLKIT_DIR "/bin/ptxas");
#endif
  candidates.push_back("/usr/local/cuda/bin/ptxas");
  if (llvm::ErrorOr<std::string> onPath =
          llvm::sys::findProgramByName("ptxas"))
    candidates.push_back(*onPath);
  return candidates;
}

llvm::Expected<std::string>
cuda::findPtxas(const std::vector<std::string> &candidates,
                std::string *warning) {
  auto usable = [](const std::string &path) {
    return llvm::sys::fs::can_execute(path) &&
           !llvm::sys::fs::is_directory(path);
  };
  const char *explicitPath = std::getenv("KVARN_PTXAS");
  std::string ignored;
  if (explicitPath && *explicitPath && !usable(explicitPath))
    ignored = explicitPath;
  for (const std::string &candidate : candidates)
    if (candidate != ignored && usable(candidate)) {
      // A wrong KVARN_PTXAS is said, not silently replaced.
      if (!ignored.empty() && warning)
        *warning = "KVARN_PTXAS is '" + ignored +
                   "', which is not an executable file; using " + candidate;
      return candidate;
    }
  if (!ignored.empty())
    return makeError(KVARN_ERROR_IO,
                     "KVARN_PTXAS is '{0}', which is not an executable file, "
                     "and no other ptxas was found",
                     ignored);
  return makeError(KVARN_ERROR_IO,
                   "ptxas not found (looked at {0}); install the "
                   "CUDA toolkit or set CUDA_HOME or KVARN_PTXAS",
                   llvm::join(candidates, ", "));
}

namespace {
/// A temporary file, removed when this goes out of scope.
struct TemporaryFile {
  llvm::SmallString<128> path;
  std::optional<llvm::FileRemover> remover;

  static llvm::Expected<std::unique_ptr<TemporaryFile>>
  create(llvm::StringRef suffix) {
    auto file = std::make_unique<TemporaryFile>();
    if (std::error_code ec = llvm::sys::fs::createTemporaryFile(
            "kvarn-ptxas", suffix, file->path))
      return makeError(KVARN_ERROR_IO, "cannot create a temporary .{0} file: {1}",
                       suffix, ec.message());
    file->remover.emplace(file->path);
    return std::move(file);
  }
};
} // namespace

static llvm::Expected<std::string> readWholeFile(llvm::StringRef path) {
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                  /*RequiresNullTerminator=*/false);
  if (!buffer)
    return makeError(KVARN_ERROR_IO, "cannot read {0}: {1}", path,
                     buffer.getError().message());
  return (*buffer)->getBuffer().str();
}

llvm::Expected<CubinImage> cuda::assembleWithPtxas(llvm::StringRef ptx,
                                                   const PtxasOptions &options) {
  std::string ptxas = options.ptxasPath;
  if (ptxas.empty()) {
    llvm::Expected<std::string> found = findPtxas();
    if (!found)
      return found.takeError();
    ptxas = *found;
  }

  auto input = TemporaryFile::create("ptx");
  if (!input)
    return input.takeError();
  auto output = TemporaryFile::create("cubin");
  if (!output)
    return output.takeError();
  auto log = TemporaryFile::create("log");
  if (!log)
    return log.takeError();
  {
    std::error_code ec;
    llvm::raw_fd_ostream os((*input)->path, ec);
    if (ec)
      return makeError(KVARN_ERROR_IO, "cannot write {0}: {1}",
                       (*input)->path, ec.message());
    os << ptx;
  }

  std::string arch = "-arch=" + options.arch;
  std::string optLevel = "-O" + std::to_string(options.optimizationLevel);
  llvm::SmallVector<llvm::StringRef, 12> args = {
      ptxas, arch, optLevel, "-v", "-o", (*output)->path, (*input)->path};
  for (const std::string &extra : options.extraArguments)
    args.push_back(extra);
  // ptxas writes both its -v figures and its errors to stderr; keep stdout in
  // the same log so nothing it says is lost.
  std::optional<llvm::StringRef> redirects[] = {
      llvm::StringRef(""), llvm::StringRef((*log)->path),
      llvm::StringRef((*log)->path)};
  std::string launchError;
  bool launchFailed = false;
  int exitCode = llvm::sys::ExecuteAndWait(
      ptxas, args, /*Env=*/std::nullopt, redirects, /*SecondsToWait=*/0,
      /*MemoryLimit=*/0, &launchError, &launchFailed);
  if (launchFailed)
    return makeError(KVARN_ERROR_IO, "cannot run {0}: {1}", ptxas,
                     launchError);

  llvm::Expected<std::string> logText = readWholeFile((*log)->path);
  if (!logText)
    return logText.takeError();
  if (exitCode != 0)
    return makeError(KVARN_ERROR_COMPILE, "ptxas failed for {0} (exit {1}{2}): {3}",
                     options.arch, exitCode,
                     launchError.empty() ? "" : ", " + launchError,
                     llvm::StringRef(*logText).trim());

  llvm::Expected<std::string> cubin = readWholeFile((*output)->path);
  if (!cubin)
    return cubin.takeError();
  CubinImage image;
  image.bytes = std::move(*cubin);
  image.log = std::move(*logText);
  image.kernels = parseAssemblerLog(image.log);
  return std::move(image);
}
