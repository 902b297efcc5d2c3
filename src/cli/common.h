// Helpers shared by CLI commands: progress bars, loading a model for a precision.
#ifndef SELFCOND_CLI_COMMON_H_
#define SELFCOND_CLI_COMMON_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cli/args.h"
#include "engine/engine.h"
#include "experts/expert_table.h"
#include "model/model.h"
#include "model/units.h"
#include "util/parallel.h"

namespace selfcond::cli {

// A one-line progress bar on stderr (only redrawn when the percentage changes).
class Progress {
 public:
  explicit Progress(std::string label);
  void Update(double fraction, const std::string& extra = "");
  void Done(const std::string& extra = "");

 private:
  std::string label_;
  int last_ = -1;
  std::chrono::steady_clock::time_point start_;
};

// What a command that runs the model holds: the engine (model + thread pool) and one session.
struct Runtime {
  std::shared_ptr<Engine> engine;
  std::unique_ptr<Session> session;
  const Model& model() const { return engine->model(); }
};

// Integrity by default: every command that loads a model recomputes its SHA-256 content hash
// and refuses a mismatch, unless --no-verify (cost: see README "Integrity"). Expert tables without
// a model hash are refused unless --allow-unhashed.
FlagSpec NoVerifyFlag();
FlagSpec CopyModelFlag();
// The flags of a command that loads a model and runs it on a thread pool: --model first, then
// `flags`, then --precision, --threads, --no-verify and --copy-model.
std::vector<FlagSpec> WithModelFlags(std::vector<FlagSpec> flags);
FlagSpec AllowUnhashedFlag();
// need_float for precision f32; verify_hash unless --no-verify.
Model::LoadOptions ModelLoadOptions(const Args& args, Precision precision);
// The same as the engine's options, with `threads` for its pool.
EngineOptions EngineLoadOptions(const Args& args, Precision precision, int threads);

// Loads --model (default: the committed demo model) for --precision with --threads, verifying
// its hash unless --no-verify.
// n_ctx: the session's context (0: the model's; -1: no session yet, see LoadRuntimeSession).
absl::StatusOr<Runtime> LoadRuntime(const Args& args, int threads, int n_ctx = 0);

// Replaces rt.session by one holding n_ctx positions (same precision and threads).
// kv_cache: "f32" or "f16" (SessionOptions::kv_type).
// max_memory_mib: the session's memory budget (0: the default, half the machine's memory).
absl::Status LoadRuntimeSession(Runtime& rt, const std::string& precision, int n_ctx,
                                const std::string& kv_cache = "f32", int64_t max_memory_mib = 0);

std::string DefaultModelPath();

// generate's conditioning flags on rt.session: --experts (with the unit-choice flags and
// TABLE:auto), --steer and --bias (cli/cmd_model.cc).
absl::Status ApplyConditioning(const Args& args, Runtime& rt);

// Which units of a table to force (experts/expert_table.h UnitChoice), the same flags on
// generate and experiment: --metric, --rank-offset, --random-units SEED, --layers L,L.
std::vector<FlagSpec> UnitChoiceFlags();
absl::StatusOr<UnitChoice> ParseUnitChoice(const Args& args);
// " --metric gap --layers 1,2" for the flags that differ from the default (recorded commands).
std::string UnitChoiceCommand(const UnitChoice& c);

// Parses --experts TABLE[:K] (repeatable) and --forcing, checks each table against the model,
// and combines the chosen K units of each table into one Forcing (cli/cmd_experts.cc).
absl::StatusOr<Forcing> BuildForcingFromArgs(const Engine& engine,
                                             const std::vector<std::string>& specs,
                                             const std::string& forcing_value, bool only_last_token,
                                             bool allow_unhashed, const UnitChoice& choice = {});

}  // namespace selfcond::cli

#endif  // SELFCOND_CLI_COMMON_H_
