// A tiny command-line parser for the subcommands: --name value, --name=value, repeated flags,
// positionals and per-command --help. A command declares each flag once (gemma.cpp's ArgsBase
// idea): a builder (Switch, Text, Int, Real, OneOf, Texts) binds the flag to a field of the
// command's options struct, with its help text, its range or choices, and its default (the
// field's initial value). Parsing, the value checks (errors name the flag and what it wants) and
// --help (which shows each default) all come from that one declaration.
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
  // The binding (the builders below set it): where the checked value goes and what it must be.
  enum class Kind { kNone, kSwitch, kText, kInt, kReal, kOneOf, kTexts };
  Kind kind = Kind::kNone;
  void* target = nullptr;
  double lo = 0, hi = 0;             // kInt, kReal: the accepted range
  std::vector<std::string> choices;  // kOneOf
  std::string shown_default;         // for --help ("" = none to show)
  bool required = false;

  FlagSpec& Required() {
    required = true;
    return *this;
  }
  // What --help shows as the default when the field's value would mislead (0 meaning "all").
  FlagSpec& ShowDefault(std::string shown) {
    shown_default = std::move(shown);
    return *this;
  }
};

// A switch (no value): sets *v to true when given.
FlagSpec Switch(bool* v, std::string name, std::string help);
// A string value.
FlagSpec Text(std::string* v, std::string name, std::string meta, std::string help);
// An integer in [lo, hi].
FlagSpec Int(int* v, std::string name, std::string meta, std::string help, int lo, int hi);
// A finite number in [lo, hi].
FlagSpec Real(double* v, std::string name, std::string meta, std::string help, double lo,
              double hi);
// One of the choices (meta shows them: "int8|f32").
FlagSpec OneOf(std::string* v, std::string name, std::vector<std::string> choices,
               std::string help);
// A repeatable string value: every occurrence, in order.
FlagSpec Texts(std::vector<std::string>* v, std::string name, std::string meta, std::string help);

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
  // Parses argv (after the subcommand name): the syntax only (unknown flags, missing values).
  // --help sets help().
  static absl::StatusOr<Args> Parse(const CommandSpec& spec, int argc, char** argv);
  // Checks every bound flag's value and stores it in its field; required flags must be given.
  absl::Status Bind(const CommandSpec& spec) const;
  static std::string Help(const CommandSpec& spec);

  bool help() const { return help_; }
  const std::vector<std::string>& positional() const { return positional_; }
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& def = "") const;
  std::vector<std::string> GetAll(const std::string& name) const;

 private:
  bool help_ = false;
  std::vector<std::string> positional_;
  std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace selfcond::cli

#endif  // SELFCOND_CLI_ARGS_H_
