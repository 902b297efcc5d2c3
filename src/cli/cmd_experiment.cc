// `selfcond experiment`: the paper's experiments (work in progress).
#include "absl/status/status.h"
#include "cli/args.h"
#include "cli/commands.h"

namespace selfcond::cli {

const CommandSpec& ExperimentSpec() {
  static const CommandSpec spec{"experiment", "selfcond experiment football|gender [options]",
                                "Reproduces the paper's experiments (football, gender)", {}, 1, 1};
  return spec;
}

absl::Status RunExperiment(const Args&) { return absl::UnimplementedError("not yet"); }

}  // namespace selfcond::cli
