#include "engine/choose_k.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "experts/steer.h"

namespace selfcond {
namespace {

int Percent(double x) { return static_cast<int>(100 * x + 0.5); }

}  // namespace

absl::StatusOr<std::vector<std::string>> ChooseKWords(const ExpertTable& table,
                                                      const Dataset* dataset) {
  std::vector<std::string> words;
  if (dataset != nullptr) {
    for (const auto& w : ConceptWords(*dataset)) words.push_back(w.word);
  } else {
    std::string name = ShortConcept(table.concept);
    words = {absl::AsciiStrToLower(absl::string_view(name.data(), name.size()))};
  }
  if (words.empty() || words[0].empty()) {
    return absl::InvalidArgumentError(
        "choosing k needs words that mark the concept: give the concept's dataset (its "
        "log-odds words), or a table whose concept name is a word");
  }
  return words;
}

absl::StatusOr<AutoKResult> ChooseK(const Model& model, const ExpertTable& table,
                                    const Dataset* dataset, AutoKOptions opts, ThreadPool* pool,
                                    const ExperimentProgress& progress) {
  if (auto st = CheckCompatible(table, model, true); !st.ok()) return st;
  if (!(opts.target_rate > 0 && opts.target_rate <= 1) || !(opts.ppl_budget >= 1)) {
    return absl::InvalidArgumentError("auto k: target rate must be in (0, 1], budget >= 1");
  }
  AutoKResult res;
  if (opts.words.empty()) {
    auto words = ChooseKWords(table, dataset);
    if (!words.ok()) return words.status();
    opts.words = std::move(*words);
  }
  res.words = opts.words;
  const int per_k = static_cast<int>(opts.prompts.size()) * opts.seeds;
  std::vector<int64_t> ks = {0};
  for (int64_t k : opts.candidates) {
    if (k > 0 && k <= static_cast<int64_t>(table.units.size())) ks.push_back(k);
  }
  const int total = per_k * static_cast<int>(ks.size());
  double base_ppl = 0;
  int64_t best_within = 0;  // the largest k tried within the budget
  for (size_t i = 0; i < ks.size(); ++i) {
    auto c = ExpertsCondition(model, table, ks[i], opts.choice, opts.forcing);
    if (!c.ok()) return c.status();
    const int done_before = per_k * static_cast<int>(i);
    auto run = RunConditions(model, {&*c, 1}, opts, pool, [&](int done, int) {
      if (progress) progress(done_before + done, total);
    });
    if (!run.ok()) return run.status();
    const ConditionPoint& p = res.tried.emplace_back(std::move(run->points[0]));
    if (i == 0) {
      base_ppl = p.ppl;
      continue;
    }
    if (p.ppl > opts.ppl_budget * base_ppl) {
      res.k = best_within;
      res.reason = absl::StrCat(
          "k=", ks[i], " mentions the concept in ", Percent(p.mention_rate),
          "% of calibration continuations but its perplexity ", absl::SixDigits(p.ppl), " exceeds ",
          opts.ppl_budget, "x the unconditioned ", absl::SixDigits(base_ppl),
          "; using k=", best_within, ", the largest k within the budget (target ",
          Percent(opts.target_rate), "% not reached)");
      return res;
    }
    best_within = ks[i];
    if (p.mention_rate >= opts.target_rate) {
      res.k = ks[i];
      res.met = true;
      res.reason = absl::StrCat(
          "k=", ks[i], " is the smallest tried k whose continuations mention the concept in ",
          Percent(p.mention_rate), "% (target ", Percent(opts.target_rate), "%) with perplexity ",
          absl::SixDigits(p.ppl), " (", absl::SixDigits(p.ppl / base_ppl), "x the unconditioned ",
          absl::SixDigits(base_ppl), "; budget ", opts.ppl_budget, "x)");
      return res;
    }
  }
  res.k = best_within;
  res.reason = absl::StrCat("no tried k reaches ", Percent(opts.target_rate),
                            "% concept mentions; using the largest tried within the perplexity "
                            "budget, k=",
                            best_within);
  return res;
}

json::Value AutoKResultToJson(const AutoKResult& r, const AutoKOptions& opts) {
  json::Value root = json::Value::Object();
  root.Set("k", json::Value::Number(static_cast<double>(r.k)));
  root.Set("met", json::Value::Bool(r.met));
  root.Set("reason", json::Value::String(r.reason));
  root.Set("words", StrArray(r.words));
  json::Value opt = json::Value::Object();
  opt.Set("candidates", IntArray(opts.candidates));
  opt.Set("target_rate", json::Value::Number(opts.target_rate));
  opt.Set("ppl_budget", json::Value::Number(opts.ppl_budget));
  opt.Set("forcing", json::Value::String(ForcingValueName(opts.forcing)));
  SetChoiceOptions(opts.choice, &opt);
  SetGridOptions(opts, &opt);
  root.Set("options", std::move(opt));
  json::Value tried = json::Value::Array();
  for (const auto& p : r.tried) {
    json::Value v = PointToJson(p);
    v.Set("k", json::Value::Number(static_cast<double>(p.k)));
    tried.Push(std::move(v));
  }
  root.Set("tried", std::move(tried));
  return root;
}

}  // namespace selfcond
