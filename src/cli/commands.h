// Subcommands of the CLI (one .cc file each; shared helpers in cli/common.*).
#ifndef SELFCOND_CLI_COMMANDS_H_
#define SELFCOND_CLI_COMMANDS_H_

#include "absl/status/status.h"
#include "cli/args.h"

namespace selfcond::cli {

const CommandSpec& ConvertSpec();
absl::Status RunConvert(const Args& args);
const CommandSpec& GenerateSpec();
absl::Status RunGenerate(const Args& args);
const CommandSpec& PplSpec();
absl::Status RunPpl(const Args& args);
const CommandSpec& InspectSpec();
absl::Status RunInspect(const Args& args);
const CommandSpec& RankSpec();
absl::Status RunRank(const Args& args);
const CommandSpec& ResponsesSpec();
absl::Status RunResponses(const Args& args);
const CommandSpec& BenchSpec();
absl::Status RunBench(const Args& args);
const CommandSpec& ExperimentSpec();
absl::Status RunExperiment(const Args& args);

}  // namespace selfcond::cli

#endif  // SELFCOND_CLI_COMMANDS_H_
