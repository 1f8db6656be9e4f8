//===- CommandLine.h - kvarn-jit's commands and options ---------*- C++ -*-===//
//
// A small table-driven parser: each command (the top-level emit mode, `ref
// flush`, ...) lists its options; `--name VALUE`, `--name=VALUE` and flags.
// Every error is one line on stderr and a non-zero exit.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_TOOLS_KVARNJIT_COMMANDLINE_H
#define KVARN_TOOLS_KVARNJIT_COMMANDLINE_H

#include "kvarn/Support/Error.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace kvarn::jit {

/// Exit statuses: 0 success, 1 a failure while working, 2 bad usage.
enum ExitCode { kExitOk = 0, kExitFailure = 1, kExitUsage = 2 };

struct OptionSpec {
  const char *name;
  const char *valueName; // null: a flag without a value
  const char *help;
  bool required = false;
};

/// The options given to one command.
class ParsedOptions {
public:
  bool has(llvm::StringRef name) const { return values.count(name); }
  std::string get(llvm::StringRef name, llvm::StringRef fallback = "") const {
    auto it = values.find(name);
    return it == values.end() ? fallback.str() : it->second;
  }
  /// The option as an integer; a usage error is printed when it is not one.
  std::optional<int64_t> getInt(llvm::StringRef name, int64_t fallback) const;

  llvm::StringMap<std::string> values; // flags map to ""
};

struct Command {
  const char *path; // "" for the top-level mode, else e.g. "ref flush"
  const char *usage;
  const char *summary;
  std::vector<OptionSpec> options;
  std::function<int(const ParsedOptions &)> run;
};

/// Prints "kvarn-jit: error: MESSAGE (see kvarn-jit --help)"; returns 2.
int usageError(const llvm::Twine &message);
/// Prints "kvarn-jit: error: MESSAGE" for a kvarn error; returns 1.
int failure(kvarn::Error err);
int failure(const llvm::Twine &message);

/// Dispatches argv to a command (help and version included).
int runCommandLine(const std::vector<Command> &commands,
                   const std::vector<std::string> &args);

} // namespace kvarn::jit

#endif // KVARN_TOOLS_KVARNJIT_COMMANDLINE_H
