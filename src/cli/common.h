// Helpers shared by CLI commands: progress bars, loading a model for a precision.
#ifndef SELFCOND_CLI_COMMON_H_
#define SELFCOND_CLI_COMMON_H_

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cli/args.h"
#include "engine/engine.h"
#include "experts/expert_table.h"
#include "model/model.h"
#include "model/units.h"
#include "tools/convert.h"
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
// The flags of every command that loads a model, declared once: --model first, the command's
// own flags, then --precision, --threads, --no-verify and --copy-model.
struct ModelFlags {
  std::string model;  // "" = the demo model (DefaultModelPath)
  std::string precision = "int8";
  int threads = 0;  // 0: every core
  bool no_verify = false;
  bool copy_model = false;
  // --packed-cache DIR (default: $SELFCOND_PACKED_CACHE; empty: no cache)
  std::string packed_cache = [] {
    const char* e = std::getenv("SELFCOND_PACKED_CACHE");
    return std::string(e != nullptr ? e : "");
  }();

  std::vector<FlagSpec> Around(std::vector<FlagSpec> own);
  std::string path() const;
  Precision prec() const;
  // Integrity by default: the model's SHA-256 content hash is recomputed and a mismatch
  // refused, unless --no-verify (cost: see README "Integrity").
  EngineOptions engine_options() const;
  absl::StatusOr<std::shared_ptr<Engine>> Load() const;
};

// Tables without a model hash are refused unless --allow-unhashed.
FlagSpec AllowUnhashedFlag(bool* v);

// Which units of a table to force (experts/expert_table.h UnitChoice): the same flags on
// generate and experiment: --metric, --rank-offset, --random-units SEED, --layers L,L.
struct UnitChoiceFlags {
  std::string metric;
  int rank_offset = 0;
  int random_units = 0;
  std::string layers;
  std::vector<FlagSpec> Flags();
  absl::StatusOr<UnitChoice> Parse(const Args& args) const;
};
// " --metric gap --layers 1,2" for the flags that differ from the default (recorded commands).
std::string UnitChoiceCommand(const UnitChoice& c);

// What a command that runs the model holds: the engine (model + thread pool) and one session.
struct Runtime {
  std::shared_ptr<Engine> engine;
  std::unique_ptr<Session> session;
  const Model& model() const { return engine->model(); }
};
// The engine of --model for --precision on --threads, and a session of n_ctx positions (0: the
// model's context) with the KV cache kv_cache ("f32" | "f16") and a memory budget of
// max_memory_mib (0: half the machine's memory).
absl::StatusOr<Runtime> LoadRuntime(const ModelFlags& m, int n_ctx,
                                    const std::string& kv_cache = "f32",
                                    int64_t max_memory_mib = 0);
// Replaces rt.session by one holding n_ctx positions (same precision).
absl::Status ResizeSession(Runtime& rt, Precision precision, int n_ctx,
                           const std::string& kv_cache = "f32", int64_t max_memory_mib = 0);

std::string DefaultModelPath();

// Converts a checkpoint directory with a progress bar, then loads the result (verifying its
// hash) and prints "wrote OUT (N MiB, hash H)": convert and pull end the same way.
absl::Status ConvertAndReport(const std::string& hf_dir, const std::string& out,
                              const ConvertOptions& opts);

// Parses --experts TABLE[:K] (repeatable) and --forcing, checks each table against the model,
// and combines the chosen K units of each table into one Forcing (cli/cmd_experts.cc).
absl::StatusOr<Forcing> BuildForcingFromArgs(const Engine& engine,
                                             const std::vector<std::string>& specs,
                                             const std::string& forcing_value, bool only_last_token,
                                             bool allow_unhashed, const UnitChoice& choice = {});

}  // namespace selfcond::cli

#endif  // SELFCOND_CLI_COMMON_H_
