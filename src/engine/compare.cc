#include "engine/compare.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace selfcond {

absl::StatusOr<CompareResult> CompareMethods(const Model& model, const ExpertTable& table,
                                             const Dataset& dataset, const CompareOptions& opts,
                                             ThreadPool* pool, const ExperimentProgress& progress) {
  if (auto st = CheckCompatible(table, model); !st.ok()) return st;
  if (auto st = CheckTableHoldsK(table, opts.ks); !st.ok()) return st;
  if (auto st = ValidateDataset(dataset); !st.ok()) return st;
  for (const auto& m : opts.methods) {
    if (m != "experts" && m != "steer" && m != "bias") {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown method '", m, "' (want experts, steer or bias)"));
    }
  }
  auto has = [&](const char* m) {
    return std::find(opts.methods.begin(), opts.methods.end(), m) != opts.methods.end();
  };
  for (double a : opts.alphas) {
    if (!std::isfinite(a)) return absl::InvalidArgumentError("steering strengths must be finite");
  }
  for (double b : opts.betas) {
    if (!std::isfinite(b)) return absl::InvalidArgumentError("bias strengths must be finite");
  }
  CompareResult res;
  res.options = opts;
  res.concept = ShortConcept(dataset.concept.empty() ? table.concept : dataset.concept);
  res.words = ConceptWords(dataset, opts.concept_words);
  if (res.words.empty()) {
    return absl::InvalidArgumentError(
        "the dataset has no word typical of its positive sentences (need words of 3+ letters "
        "in at least 3 positive sentences)");
  }
  GenerationGrid grid = opts;
  grid.words.clear();
  for (const auto& w : res.words) grid.words.push_back(w.word);

  std::vector<Condition> conditions(1);  // "none"
  if (has("experts")) {
    for (int64_t k : opts.ks) {
      if (k == 0) continue;
      auto c = ExpertsCondition(model, table, k, UnitChoice(), opts.forcing);
      if (!c.ok()) return c.status();
      for (int64_t j = 0; j < k; ++j) c->mean_ap += table.units[j].ap;
      c->mean_ap /= static_cast<double>(k);
      conditions.push_back(std::move(*c));
    }
  }
  res.steer_layer =
      opts.steer_layer >= 0 ? opts.steer_layer : static_cast<int>(model.config().n_layer) / 2;
  if (has("steer")) {
    auto v = ComputeSteeringVector(model, dataset, res.steer_layer, opts.precision, pool);
    if (!v.ok()) return v.status();
    res.steer_norm = SteeringNorm(*v);
    for (double a : opts.alphas) {
      if (a == 0) continue;
      Condition c;
      c.method = "steer";
      c.strength = a;
      c.layer = res.steer_layer;
      c.steering = ScaledSteering(res.steer_layer, *v, a);
      conditions.push_back(std::move(c));
    }
  }
  if (has("bias")) {
    for (double b : opts.betas) {
      if (b == 0) continue;
      Condition c;
      c.method = "bias";
      c.strength = b;
      c.logit_bias = WordLogitBias(model.tokenizer(), res.words, static_cast<float>(b));
      res.bias_tokens = static_cast<int>(c.logit_bias.size());
      conditions.push_back(std::move(c));
    }
  }
  auto run = RunConditions(model, conditions, grid, pool, progress);
  if (!run.ok()) return run.status();
  res.run = std::move(*run);
  return res;
}

json::Value CompareResultToJson(const CompareResult& r) {
  const auto& o = r.options;
  json::Value root = json::Value::Object();
  root.Set("experiment", json::Value::String("compare"));
  root.Set("concept", json::Value::String(r.concept));
  json::Value opt = json::Value::Object();
  opt.Set("methods", StrArray(o.methods));
  opt.Set("ks", IntArray(o.ks));
  opt.Set("alphas", NumArray(o.alphas));
  opt.Set("betas", NumArray(o.betas));
  opt.Set("steer_layer", json::Value::Number(r.steer_layer));
  opt.Set("concept_words", json::Value::Number(o.concept_words));
  SetGridOptions(o, &opt);
  opt.Set("forcing", json::Value::String(ForcingValueName(o.forcing)));
  root.Set("options", std::move(opt));
  json::Value words = json::Value::Array();
  for (const auto& w : r.words) {
    json::Value v = json::Value::Object();
    v.Set("word", json::Value::String(w.word));
    v.Set("log_odds", json::Value::Number(w.log_odds));
    v.Set("positive", json::Value::Number(w.positive));
    v.Set("negative", json::Value::Number(w.negative));
    words.Push(std::move(v));
  }
  root.Set("concept_words", std::move(words));
  root.Set("bias_tokens", json::Value::Number(r.bias_tokens));
  root.Set("steer_norm", json::Value::Number(r.steer_norm));
  json::Value points = json::Value::Array();
  for (const auto& p : r.run.points) {
    json::Value v = PointToJson(p);
    if (p.method == "experts") v.Set("mean_ap", json::Value::Number(p.mean_ap));
    points.Push(std::move(v));
  }
  root.Set("points", std::move(points));
  // Two example continuations per point (seed first_seed of the first two prompts).
  json::Value examples = json::Value::Array();
  const size_t P = o.prompts.size(), S = static_cast<size_t>(o.seeds);
  for (size_t ci = 0; ci < r.run.points.size(); ++ci) {
    for (size_t pi = 0; pi < std::min<size_t>(2, P); ++pi) {
      const ConditionSample& s = r.run.samples[ci * P * S + pi * S];
      json::Value v = json::Value::Object();
      v.Set("point", json::Value::Number(static_cast<double>(ci)));
      v.Set("prompt", json::Value::String(s.prompt));
      v.Set("text", json::Value::String(s.text));
      v.Set("words", StrArray(s.words));
      examples.Push(std::move(v));
    }
  }
  root.Set("examples", std::move(examples));
  return root;
}

}  // namespace selfcond
