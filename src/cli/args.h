// A tiny command-line parser for the subcommands: --name value, --name=value, repeated flags,
// positionals, per-command --help, and range-checked typed getters whose errors name the flag.
#ifndef SELFCOND_CLI_ARGS_H_
#define SELFCOND_CLI_ARGS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace selfcond::cli {

struct FlagSpec {
  std::string name;  // without "--"
  std::string meta;  // e.g. "N"; empty = boolean switch
  std::string help;
  bool repeated = false;
};

struct CommandSpec {
  std::string name;
  std::string usage;  // e.g. "selfcond convert HF_DIR OUT [options]"
  std::string summary;
  std::vector<FlagSpec> flags;
  int min_positional = 0;
  int max_positional = 0;
};

class Args {
 public:
  // Parses argv (after the subcommand name). --help sets help().
  static absl::StatusOr<Args> Parse(const CommandSpec& spec, int argc, char** argv);
  static std::string Help(const CommandSpec& spec);

  bool help() const { return help_; }
  const std::vector<std::string>& positional() const { return positional_; }
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& def = "") const;
  std::vector<std::string> GetAll(const std::string& name) const;
  absl::StatusOr<std::string> Required(const std::string& name) const;
  absl::StatusOr<int> GetInt(const std::string& name, int def, int lo, int hi) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double def, double lo, double hi) const;

 private:
  bool help_ = false;
  std::vector<std::string> positional_;
  std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace selfcond::cli

#endif  // SELFCOND_CLI_ARGS_H_
