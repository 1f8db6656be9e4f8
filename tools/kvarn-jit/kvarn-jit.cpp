//===- kvarn-jit.cpp - the kvarn command line -----------------------------===//
//
//   kvarn-jit [--kernels a,b] [--preset P] [--head-dim N] [--gqa N] [--rope-dim N]
//             [--arch SM] [--emit STAGE] [--source FILE] [--out DIR] [--json]
//             [--dump-ir DIR] [--print-ir-after-all] [--timing]
//   kvarn-jit --list-presets | --list-kernels
//   kvarn-jit ref flush|append|decode --case DIR --out FILE
//   kvarn-jit run flush|append|decode --case DIR --out FILE
//   kvarn-jit run example [--golden DIR]
//   kvarn-jit cache ls|verify|clear|warm|bench
//   kvarn-jit devices
//
// Every error is one line on stderr and a non-zero exit status.
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

using namespace kvarn::jit;

int main(int argc, char **argv) {
  std::vector<Command> commands = {emitCommand()};
  for (Command &c : refCommands())
    commands.push_back(std::move(c));
  for (Command &c : runCommands())
    commands.push_back(std::move(c));
  for (Command &c : cacheCommands())
    commands.push_back(std::move(c));
  commands.push_back(devicesCommand());
  return runCommandLine(commands, std::vector<std::string>(argv + 1, argv + argc));
}
