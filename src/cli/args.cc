#include "cli/args.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace selfcond::cli {

absl::StatusOr<Args> Args::Parse(const CommandSpec& spec, int argc, char** argv) {
  Args a;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      a.help_ = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      a.positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const FlagSpec* f = nullptr;
    for (const auto& s : spec.flags)
      if (s.name == name) f = &s;
    if (f == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option --", name, " for '", spec.name, "' (see --help)"));
    }
    if (f->meta.empty()) {
      if (has_value) return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      value = "1";
    } else if (!has_value) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs a value (", f->meta, ")"));
      }
      value = argv[++i];
    }
    auto& slot = a.values_[name];
    if (!slot.empty() && !f->repeated) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " given more than once"));
    }
    slot.push_back(value);
  }
  if (!a.help_) {
    const int n = static_cast<int>(a.positional_.size());
    if (n < spec.min_positional || n > spec.max_positional) {
      return absl::InvalidArgumentError(absl::StrCat("usage: ", spec.usage, " (see --help)"));
    }
  }
  return a;
}

std::string Args::Help(const CommandSpec& spec) {
  std::string s = absl::StrCat("usage: ", spec.usage, "\n\n", spec.summary, "\n\noptions:\n");
  for (const auto& f : spec.flags) {
    std::string left = absl::StrCat("  --", f.name, f.meta.empty() ? "" : " " + f.meta);
    if (left.size() < 28) left.resize(28, ' ');
    // Continuation lines of a help text line up under its first line.
    const std::string help = absl::StrReplaceAll(f.help, {{"\n", "\n" + std::string(29, ' ')}});
    absl::StrAppend(&s, left, " ", help, f.repeated ? " (repeatable)" : "", "\n");
  }
  absl::StrAppend(&s, std::string("  --help") + std::string(21, ' '), "this help\n");
  return s;
}

std::string Args::Get(const std::string& name, const std::string& def) const {
  auto it = values_.find(name);
  return it == values_.end() ? def : it->second.back();
}

std::vector<std::string> Args::GetAll(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

absl::StatusOr<std::string> Args::Required(const std::string& name) const {
  if (!Has(name)) return absl::InvalidArgumentError(absl::StrCat("--", name, " is required"));
  return Get(name);
}

absl::StatusOr<int> Args::GetInt(const std::string& name, int def, int lo, int hi) const {
  if (!Has(name)) return def;
  int v;
  if (!absl::SimpleAtoi(Get(name), &v)) {
    int64_t wide;
    if (absl::SimpleAtoi(Get(name), &wide)) {  // an integer, just too large for the option
      return absl::OutOfRangeError(
          absl::StrCat("--", name, " must be in [", lo, ", ", hi, "], got ", Get(name)));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": '", Get(name), "' is not an integer"));
  }
  if (v < lo || v > hi) {
    return absl::OutOfRangeError(
        absl::StrCat("--", name, " must be in [", lo, ", ", hi, "], got ", v));
  }
  return v;
}

absl::StatusOr<double> Args::GetDouble(const std::string& name, double def, double lo,
                                       double hi) const {
  if (!Has(name)) return def;
  double v;
  if (!absl::SimpleAtod(Get(name), &v) || !std::isfinite(v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": '", Get(name), "' is not a number"));
  }
  if (v < lo || v > hi) {
    return absl::OutOfRangeError(
        absl::StrCat("--", name, " must be in [", lo, ", ", hi, "], got ", v));
  }
  return v;
}

}  // namespace selfcond::cli
