#include "cli/args.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace selfcond::cli {
namespace {

std::string ShowNumber(double x) {
  return x == static_cast<double>(static_cast<int64_t>(x)) ? std::to_string(static_cast<int64_t>(x))
                                                           : absl::StrCat(x);
}

absl::Status IntValue(const std::string& name, const std::string& text, double lo, double hi,
                      int* out) {
  int v;
  if (!absl::SimpleAtoi(text, &v)) {
    int64_t wide;
    if (absl::SimpleAtoi(text, &wide)) {  // an integer, just too large for the option
      return absl::OutOfRangeError(absl::StrCat("--", name, " must be in [", ShowNumber(lo), ", ",
                                                ShowNumber(hi), "], got ", text));
    }
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", text, "' is not an integer"));
  }
  if (v < lo || v > hi) {
    return absl::OutOfRangeError(absl::StrCat("--", name, " must be in [", ShowNumber(lo), ", ",
                                              ShowNumber(hi), "], got ", v));
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status RealValue(const std::string& name, const std::string& text, double lo, double hi,
                       double* out) {
  double v;
  if (!absl::SimpleAtod(text, &v) || !std::isfinite(v)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", text, "' is not a number"));
  }
  if (v < lo || v > hi) {
    return absl::OutOfRangeError(absl::StrCat("--", name, " must be in [", ShowNumber(lo), ", ",
                                              ShowNumber(hi), "], got ", v));
  }
  *out = v;
  return absl::OkStatus();
}

FlagSpec Bound(FlagSpec::Kind kind, void* target, std::string name, std::string meta,
               std::string help, std::string shown) {
  FlagSpec f;
  f.name = std::move(name);
  f.meta = std::move(meta);
  f.help = std::move(help);
  f.kind = kind;
  f.target = target;
  f.shown_default = std::move(shown);
  return f;
}

}  // namespace

FlagSpec Switch(bool* v, std::string name, std::string help) {
  return Bound(FlagSpec::Kind::kSwitch, v, std::move(name), "", std::move(help), "");
}

FlagSpec Text(std::string* v, std::string name, std::string meta, std::string help) {
  return Bound(FlagSpec::Kind::kText, v, std::move(name), std::move(meta), std::move(help), *v);
}

FlagSpec Int(int* v, std::string name, std::string meta, std::string help, int lo, int hi) {
  FlagSpec f = Bound(FlagSpec::Kind::kInt, v, std::move(name), std::move(meta), std::move(help),
                     std::to_string(*v));
  f.lo = lo;
  f.hi = hi;
  return f;
}

FlagSpec Real(double* v, std::string name, std::string meta, std::string help, double lo,
              double hi) {
  FlagSpec f = Bound(FlagSpec::Kind::kReal, v, std::move(name), std::move(meta), std::move(help),
                     ShowNumber(*v));
  f.lo = lo;
  f.hi = hi;
  return f;
}

FlagSpec OneOf(std::string* v, std::string name, std::vector<std::string> choices,
               std::string help) {
  FlagSpec f = Bound(FlagSpec::Kind::kOneOf, v, std::move(name), absl::StrJoin(choices, "|"),
                     std::move(help), *v);
  f.choices = std::move(choices);
  return f;
}

FlagSpec Texts(std::vector<std::string>* v, std::string name, std::string meta, std::string help) {
  FlagSpec f =
      Bound(FlagSpec::Kind::kTexts, v, std::move(name), std::move(meta), std::move(help), "");
  f.repeated = true;
  return f;
}

absl::Status Args::Bind(const CommandSpec& spec) const {
  for (const FlagSpec& f : spec.flags) {
    if (f.kind == FlagSpec::Kind::kNone) continue;
    if (!Has(f.name)) {
      if (f.required) return absl::InvalidArgumentError(absl::StrCat("--", f.name, " is required"));
      continue;
    }
    const std::string value = Get(f.name);
    switch (f.kind) {
      case FlagSpec::Kind::kSwitch:
        *static_cast<bool*>(f.target) = true;
        break;
      case FlagSpec::Kind::kText:
        *static_cast<std::string*>(f.target) = value;
        break;
      case FlagSpec::Kind::kInt:
        if (auto st = IntValue(f.name, value, f.lo, f.hi, static_cast<int*>(f.target)); !st.ok())
          return st;
        break;
      case FlagSpec::Kind::kReal:
        if (auto st = RealValue(f.name, value, f.lo, f.hi, static_cast<double*>(f.target));
            !st.ok())
          return st;
        break;
      case FlagSpec::Kind::kOneOf:
        if (std::find(f.choices.begin(), f.choices.end(), value) == f.choices.end()) {
          return absl::InvalidArgumentError(absl::StrCat("--", f.name, ": unknown value '", value,
                                                         "' (expected ",
                                                         absl::StrJoin(f.choices, ", "), ")"));
        }
        *static_cast<std::string*>(f.target) = value;
        break;
      case FlagSpec::Kind::kTexts:
        *static_cast<std::vector<std::string>*>(f.target) = GetAll(f.name);
        break;
      case FlagSpec::Kind::kNone:
        break;
    }
  }
  return absl::OkStatus();
}

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
    std::string extra;
    if (f.required) extra = " (required)";
    if (!f.shown_default.empty() && f.kind != FlagSpec::Kind::kSwitch) {
      extra = absl::StrCat(" (default ", f.shown_default, ")");
    }
    absl::StrAppend(&s, left, " ", help, extra, f.repeated ? " (repeatable)" : "", "\n");
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

}  // namespace selfcond::cli
