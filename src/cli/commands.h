// Subcommands of the CLI (one .cc file per group; shared helpers in cli/common.*). Each is an
// options struct whose Spec() declares its flags bound to its fields (cli/args.h) and whose
// Run() does the work through the Engine (or, for convert and bench, the tools).
#ifndef SELFCOND_CLI_COMMANDS_H_
#define SELFCOND_CLI_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cli/args.h"

namespace selfcond::cli {

// Parses argv (after the command name) into a fresh C, then runs it: --help prints the help,
// a syntax error exits 2, a bad value or a failed run prints the error and exits 1.
int RunCommand(const CommandSpec& spec, int argc, char** argv,
               absl::Status (*run)(void* cmd, const Args& args), void* cmd);
template <class C>
int Main(int argc, char** argv) {
  C cmd;
  const CommandSpec spec = cmd.Spec();
  return RunCommand(
      spec, argc, argv, [](void* c, const Args& a) { return static_cast<C*>(c)->Run(a); }, &cmd);
}

// Each command's entry (Main<ItsOptions>), defined in its .cc file.
int ConvertMain(int argc, char** argv);     // cmd_model.cc
int GenerateMain(int argc, char** argv);    // cmd_model.cc
int PplMain(int argc, char** argv);         // cmd_model.cc
int InspectMain(int argc, char** argv);     // cmd_model.cc
int RankMain(int argc, char** argv);        // cmd_experts.cc
int ResponsesMain(int argc, char** argv);   // cmd_experts.cc
int BenchMain(int argc, char** argv);       // cmd_bench.cc
int ExperimentMain(int argc, char** argv);  // cmd_experiment.cc
int PullMain(int argc, char** argv);        // cmd_pull.cc

struct Command {
  const char* name;
  const char* summary;  // one line for `selfcond --help`
  int (*main)(int argc, char** argv);
};
// Every command, in `selfcond --help` order.
const std::vector<Command>& Commands();

}  // namespace selfcond::cli

#endif  // SELFCOND_CLI_COMMANDS_H_
