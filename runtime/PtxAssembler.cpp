//===- PtxAssembler.cpp - PTX to cubin, two ways --------------------------===//

#include "kvarn/Runtime/PtxAssembler.h"

#include "Internal.h"

#include "kvarn/Support/FileIO.h"

#include "kvarn/Support/Strings.h"

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

using namespace kvarn;
using namespace kvarn::cuda;

//===----------------------------------------------------------------------===//
// The assembler's log
//===----------------------------------------------------------------------===//

/// The integer before `suffix` in `line` ("40 registers" -> 40), or -1.
static int64_t figureBefore(std::string_view line, std::string_view suffix) {
  size_t at = line.find(" " + std::string(suffix));
  if (at == std::string_view::npos)
    return -1;
  std::string_view before = line.substr(0, at);
  size_t last = before.find_last_not_of("0123456789");
  std::string_view digits =
      last == std::string_view::npos ? before : before.substr(last + 1);
  int64_t value = -1;
  if (!parseInteger(digits, value))
    return -1;
  return value;
}

/// The text between `open` and the next `close` after it in `line`, or
/// nothing when `line` lacks either.
static std::optional<std::string_view>
between(std::string_view line, std::string_view open, std::string_view close) {
  size_t from = line.find(open);
  if (from == std::string_view::npos)
    return std::nullopt;
  std::string_view rest = line.substr(from + open.size());
  size_t to = rest.find(close);
  if (to == std::string_view::npos)
    return std::nullopt;
  return rest.substr(0, to);
}

// ptxas -v (CUDA 13) writes, per entry function:
//   ptxas info    : Compiling entry function 'add' for 'sm_90'
//   ptxas info    : Function properties for add
//       0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
//   ptxas info    : Used 10 registers, used 1 barriers, 1024 bytes smem
// "Function properties" also appear for device functions, which we skip.
std::vector<KernelResources> cuda::parseAssemblerLog(std::string_view log) {
  std::vector<KernelResources> kernels;
  std::map<std::string, size_t> indexByName;
  KernelResources *current = nullptr;     // the entry being compiled
  KernelResources *propertiesOf = nullptr; // whose "stack frame" line is next

  for (std::string_view line : split(log, '\n')) {
    std::optional<std::string_view> entry =
        between(line, "Compiling entry function '", "'");
    std::optional<std::string_view> entryArch =
        entry ? between(line, "' for '", "'") : std::nullopt;
    if (entry && !entry->empty() && entryArch && !entryArch->empty()) {
      std::string name = std::string(*entry);
      auto [it, inserted] = indexByName.try_emplace(name, kernels.size());
      if (inserted) {
        kernels.push_back({});
        kernels.back().name = name;
      }
      current = &kernels[it->second];
      current->arch = std::string(*entryArch);
      propertiesOf = nullptr;
      continue;
    }
    if (size_t at = line.find("Function properties for ");
        at != std::string_view::npos &&
        line.size() > at + strlen("Function properties for ")) {
      std::string_view rest =
          line.substr(at + strlen("Function properties for "));
      std::string_view name = trim(rest.substr(0, rest.find(' ')));
      auto it = indexByName.find(std::string(name));
      propertiesOf = it == indexByName.end() ? nullptr : &kernels[it->second];
      continue;
    }
    if (contains(line, "bytes stack frame")) {
      if (propertiesOf) {
        propertiesOf->stackFrameBytes = figureBefore(line, "bytes stack frame");
        propertiesOf->spillStoreBytes = figureBefore(line, "bytes spill stores");
        propertiesOf->spillLoadBytes = figureBefore(line, "bytes spill loads");
      }
      propertiesOf = nullptr;
      continue;
    }
    if (current && contains(line, "Used ") && contains(line, " registers")) {
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

kvarn::Expected<CubinImage> cuda::linkPtxWithDriver(const Context &context,
                                                    std::string_view ptx,
                                                    std::string_view name) {
  const Driver &driver = context.driver();
  KVARN_ENTER_CONTEXT(context);

  JitLogs logs(/*verbose=*/true);
  CUlinkState state = nullptr;
  if (kvarn::Error err =
          KVARN_CUDA_CHECK(driver, cuLinkCreate, logs.count(),
                           logs.optionArray(), logs.valueArray(), &state))
    return std::move(err);
  // The driver owns the cubin until cuLinkDestroy: copy it out first.
  auto finish = [&](kvarn::Error err) -> kvarn::Expected<CubinImage> {
    (void)driver.api().cuLinkDestroy(state);
    return std::move(err);
  };
  auto withLogs = [&](kvarn::Error err) {
    return withContext(std::move(err), "linking " + std::string(name) +
                                           " for " + context.info().arch() +
                                           logs.forMessage());
  };

  // The PTX must be NUL-terminated, and the size counts the NUL.
  std::string text = std::string(ptx);
  std::string label = std::string(name);
  if (kvarn::Error err = KVARN_CUDA_CHECK(
          driver, cuLinkAddData, state, CU_JIT_INPUT_PTX, text.data(),
          text.size() + 1, label.c_str(), 0, nullptr, nullptr))
    return finish(withLogs(std::move(err)));
  void *cubin = nullptr;
  size_t cubinBytes = 0;
  if (kvarn::Error err =
          KVARN_CUDA_CHECK(driver, cuLinkComplete, state, &cubin, &cubinBytes))
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

/// An executable regular file (or a link to one) at `path`.
static bool isExecutableFile(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         ::access(path.c_str(), X_OK) == 0;
}

/// `program` in a directory of $PATH, as a shell would find it.
static std::optional<std::string> findOnPath(const char *program) {
  const char *path = std::getenv("PATH");
  if (!path)
    return std::nullopt;
  for (std::string_view dir : split(path, ':')) {
    std::string candidate =
        (dir.empty() ? "." : std::string(dir)) + "/" + program;
    if (isExecutableFile(candidate))
      return candidate;
  }
  return std::nullopt;
}

std::vector<std::string> cuda::ptxasCandidates() {
  std::vector<std::string> candidates;
  if (const char *explicitPath = std::getenv("KVARN_PTXAS");
      explicitPath && *explicitPath)
    candidates.push_back(explicitPath);
  for (const char *variable : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *root = std::getenv(variable); root && *root)
      candidates.push_back(std::string(root) + "/bin/ptxas");
#ifdef KVARN_CUDA_TOOLKIT_DIR
  candidates.push_back(KVARN_CUDA_TOOLKIT_DIR "/bin/ptxas");
#endif
  candidates.push_back("/usr/local/cuda/bin/ptxas");
  if (std::optional<std::string> onPath = findOnPath("ptxas"))
    candidates.push_back(*onPath);
  return candidates;
}

kvarn::Expected<std::string>
cuda::findPtxas(const std::vector<std::string> &candidates,
                std::string *warning) {
  auto usable = [](const std::string &path) { return isExecutableFile(path); };
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
                   join(candidates, ", "));
}

namespace {
/// A temporary file ($TMPDIR, else /tmp), removed when this goes out of
/// scope.
struct TemporaryFile {
  std::string path;
  ~TemporaryFile() {
    if (!path.empty())
      ::unlink(path.c_str());
  }

  static kvarn::Expected<std::unique_ptr<TemporaryFile>>
  create(std::string_view suffix) {
    const char *dir = std::getenv("TMPDIR");
    std::string name = std::string(dir && *dir ? dir : "/tmp") +
                       "/kvarn-ptxas-XXXXXX." + std::string(suffix);
    int fd = ::mkstemps(name.data(), int(suffix.size()) + 1);
    if (fd < 0)
      return makeError(KVARN_ERROR_IO,
                       "cannot create a temporary .{0} file: {1}", suffix,
                       std::strerror(errno));
    ::close(fd);
    auto file = std::make_unique<TemporaryFile>();
    file->path = std::move(name);
    return std::move(file);
  }
};

/// Writes all of `bytes` to `path` (created or truncated).
kvarn::Error writeWholeFile(const std::string &path, std::string_view bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0)
    return makeError(KVARN_ERROR_IO, "cannot write {0}: {1}", path,
                     std::strerror(errno));
  for (size_t done = 0; done < bytes.size();) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      return makeError(KVARN_ERROR_IO, "cannot write {0}: {1}", path,
                       std::strerror(err));
    }
    done += size_t(n);
  }
  if (::close(fd) != 0)
    return makeError(KVARN_ERROR_IO, "cannot write {0}: {1}", path,
                     std::strerror(errno));
  return kvarn::Error::success();
}

/// Runs `args` (args[0] the program's path) with stdin from /dev/null and
/// stdout and stderr to `logPath`; its exit code, or an error when it
/// could not be started or did not exit normally.
kvarn::Expected<int> runProgram(const std::vector<std::string> &args,
                                const std::string &logPath) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, logPath.c_str(),
                                   O_WRONLY | O_TRUNC, 0);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char *> argv;
  for (const std::string &a : args)
    argv.push_back(const_cast<char *>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  int err = ::posix_spawn(&pid, args[0].c_str(), &actions, nullptr, argv.data(),
                          environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0)
    return makeError(KVARN_ERROR_IO, "cannot run {0}: {1}", args[0],
                     std::strerror(err));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      return makeError(KVARN_ERROR_IO, "waiting for {0}: {1}", args[0],
                       std::strerror(errno));
  if (WIFSIGNALED(status))
    return makeError(KVARN_ERROR_COMPILE, "{0} was killed by signal {1}",
                     args[0], WTERMSIG(status));
  return WEXITSTATUS(status);
}
} // namespace

static kvarn::Expected<std::string> readWholeFile(const std::string &path) {
  // A cubin or a log of any size ptxas writes; the bound only keeps a
  // runaway file from exhausting memory.
  return readRegularFile(path, ReadOptions{limits::kEntryFileBytes});
}

kvarn::Expected<CubinImage>
cuda::assembleWithPtxas(std::string_view ptx, const PtxasOptions &options) {
  std::string ptxas = options.ptxasPath;
  if (ptxas.empty()) {
    kvarn::Expected<std::string> found = findPtxas();
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
  if (kvarn::Error err = writeWholeFile((*input)->path, ptx))
    return std::move(err);

  // ptxas writes both its -v figures and its errors to stderr; stdout goes
  // to the same log so nothing it says is lost.
  std::vector<std::string> args = {
      ptxas,
      "-arch=" + options.arch,
      "-O" + std::to_string(options.optimizationLevel),
      "-v",
      "-o",
      (*output)->path,
      (*input)->path};
  for (const std::string &extra : options.extraArguments)
    args.push_back(extra);
  kvarn::Expected<int> exitCode = runProgram(args, (*log)->path);
  if (!exitCode)
    return exitCode.takeError();

  kvarn::Expected<std::string> logText = readWholeFile((*log)->path);
  if (!logText)
    return logText.takeError();
  if (*exitCode != 0)
    return makeError(KVARN_ERROR_COMPILE,
                     "ptxas failed for {0} (exit {1}): {2}", options.arch,
                     *exitCode, trim(*logText));

  kvarn::Expected<std::string> cubin = readWholeFile((*output)->path);
  if (!cubin)
    return cubin.takeError();
  CubinImage image;
  image.bytes = std::move(*cubin);
  image.log = std::move(*logText);
  image.kernels = parseAssemblerLog(image.log);
  return std::move(image);
}
