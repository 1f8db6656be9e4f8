//===- CommandLine.cpp - kvarn-jit's commands and options -----------------===//

#include "CommandLine.h"

#include "kvarn/Support/Error.h"
#include "kvarn/Version.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

using namespace kvarn;
using namespace kvarn::jit;

int jit::usageError(const llvm::Twine &message) {
  llvm::outs().flush();
  llvm::errs() << "kvarn-jit: error: " << message
               << " (see kvarn-jit --help)\n";
  return kExitUsage;
}

int jit::failure(kvarn::Error err) {
  std::string message;
  (void)kvarn::consumeError(std::move(err), message);
  return failure(message);
}

int jit::failure(const llvm::Twine &message) {
  llvm::outs().flush(); // what was said before the error comes first
  llvm::errs() << "kvarn-jit: error: " << message << "\n";
  return kExitFailure;
}

std::optional<int64_t> ParsedOptions::getInt(llvm::StringRef name,
                                             int64_t fallback) const {
  auto it = values.find(name);
  if (it == values.end())
    return fallback;
  int64_t value;
  if (llvm::StringRef(it->second).getAsInteger(10, value)) {
    usageError("option '--" + name + "' needs an integer, got '" +
               it->second + "'");
    return std::nullopt;
  }
  return value;
}

static void printHelp(const std::vector<Command> &commands,
                      const Command *only) {
  llvm::raw_ostream &os = llvm::outs();
  if (!only) {
    os << "kvarn-jit " << KVARN_VERSION_STRING
       << ": JIT kernel generator for KVarN-quantized KV caches\n\n"
          "usage: kvarn-jit <command> [options]\n";
    for (const Command &c : commands)
      if (!*c.path)
        os << "       kvarn-jit " << c.usage << "\n";
    os << "\ncommands:\n";
    for (const Command &c : commands)
      os << llvm::formatv("  {0,-12} {1}\n",
                          *c.path ? c.path : "(no command)", c.summary);
    os << "\n  --help       this text; `kvarn-jit <command> --help` for a "
          "command\n  --version    the version\n";
    return;
  }
  os << "usage: kvarn-jit " << only->usage << "\n\n" << only->summary
     << "\n\noptions:\n";
  for (const OptionSpec &o : only->options) {
    std::string left = std::string("--") + o.name;
    if (o.valueName)
      left += std::string(" ") + o.valueName;
    os << llvm::formatv("  {0,-18} {1}\n", left, o.help);
  }
}

int jit::runCommandLine(const std::vector<Command> &commands,
                        const std::vector<std::string> &args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    printHelp(commands, nullptr);
    return kExitOk;
  }
  if (!args.empty() && args[0] == "--version") {
    llvm::outs() << "kvarn-jit " << KVARN_VERSION_STRING << " (LLVM "
                 << KVARN_LLVM_VERSION_STRING << ")\n";
    return kExitOk;
  }

  // The longest command path that prefixes the arguments; arguments that
  // start with an option select the top-level mode.
  const Command *command = nullptr;
  size_t consumed = 0;
  for (const Command &c : commands) {
    llvm::SmallVector<llvm::StringRef, 2> words;
    llvm::StringRef(c.path).split(words, ' ', -1, /*KeepEmpty=*/false);
    if (words.size() > args.size())
      continue;
    bool match = true;
    for (size_t i = 0; i < words.size(); ++i)
      match &= args[i] == words[i];
    if (match && (!command || words.size() > consumed)) {
      command = &c;
      consumed = words.size();
    }
  }
  if (!command || (consumed == 0 && !args.empty() &&
                   !llvm::StringRef(args[0]).starts_with("-"))) {
    // A group of commands ("cache", "run", "ref") without a known one.
    std::vector<const Command *> group;
    if (!args.empty())
      for (const Command &c : commands)
        if (llvm::StringRef(c.path).starts_with(args[0] + " "))
          group.push_back(&c);
    bool wantsHelp = args.size() > 1 && (args[1] == "--help" || args[1] == "-h");
    if (!group.empty() && (args.size() == 1 || wantsHelp)) {
      std::vector<std::string> names;
      for (const Command *c : group)
        names.push_back(llvm::StringRef(c->path).split(' ').second.str());
      if (!wantsHelp)
        return usageError("'" + args[0] + "' needs a command: " +
                          llvm::join(names, ", "));
      llvm::outs() << "usage: kvarn-jit " << args[0] << " <command> [options]\n"
                   << "\ncommands:\n";
      for (const Command *c : group)
        llvm::outs() << llvm::formatv("  {0,-14} {1}\n",
                                      llvm::StringRef(c->path).split(' ').second,
                                      c->summary);
      llvm::outs() << "\n`kvarn-jit " << args[0]
                   << " <command> --help` for a command's options\n";
      return kExitOk;
    }
    std::string cmd = args.empty() ? "" : args[0];
    if (args.size() > 1 && !llvm::StringRef(args[1]).starts_with("-"))
      cmd += " " + args[1];
    return usageError("unknown command '" + cmd + "'");
  }

  ParsedOptions opts;
  for (size_t i = consumed; i < args.size(); ++i) {
    llvm::StringRef arg = args[i];
    if (arg == "--help" || arg == "-h") {
      printHelp(commands, command);
      return kExitOk;
    }
    std::string where =
        *command->path ? std::string(" for '") + command->path + "'" : "";
    if (!arg.starts_with("--"))
      return usageError("unexpected argument '" + arg + "'" + where);
    llvm::StringRef name = arg.drop_front(2), value;
    bool inlineValue = false;
    if (name.contains('=')) {
      std::tie(name, value) = name.split('=');
      inlineValue = true;
    }
    const OptionSpec *spec = nullptr;
    for (const OptionSpec &o : command->options)
      if (name == o.name)
        spec = &o;
    if (!spec)
      return usageError("unknown option '--" + name + "'" + where);
    if (!spec->valueName) {
      if (inlineValue)
        return usageError("option '--" + name + "' takes no value");
      opts.values[name] = "";
      continue;
    }
    if (!inlineValue) {
      if (i + 1 >= args.size())
        return usageError("option '--" + name + "' needs a value");
      value = args[++i];
    }
    if (value.empty())
      return usageError("option '--" + name + "' needs a value");
    opts.values[name] = value.str();
  }
  for (const OptionSpec &o : command->options)
    if (o.required && !opts.has(o.name))
      return usageError(llvm::Twine("'") + command->path + "' needs --" +
                        o.name);
  return command->run(opts);
}
