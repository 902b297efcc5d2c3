#include "tools/paper_experiments.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "experts/dataset.h"  // FindInvalidUtf8
#include "model/generate.h"
#include "util/parallel.h"

namespace selfcond {
namespace {

int NumWorkers(ThreadPool* pool) { return pool ? std::max(1, pool->size()) : 1; }

// The mean AP of the k units `choice` picks from the table (0 for k = 0): a condition's
// mean_ap, ml-selfcond's mean_metric.
absl::StatusOr<double> MeanAp(const ExpertTable& table, int64_t k, const UnitChoice& choice) {
  if (k <= 0) return 0.0;
  auto picked = SelectUnits(table, k, choice);
  if (!picked.ok()) return picked.status();
  double sum = 0;
  for (int64_t j : *picked) sum += table.units[j].ap;
  return sum / static_cast<double>(k);
}

}  // namespace

// ---- football -------------------------------------------------------------------------------

absl::StatusOr<FootballExperimentResult> RunFootballExperiment(
    const Model& model, const ExpertTable& football, const FootballExperimentOptions& opts,
    ThreadPool* pool, const ExperimentProgress& progress) {
  if (auto st = CheckCompatible(football, model); !st.ok()) return st;
  if (auto st = CheckTableHoldsK(football, opts.ks); !st.ok()) return st;
  if (opts.ks.empty()) return absl::InvalidArgumentError("need at least one k");
  if (opts.per_layer && opts.per_linear_layer) {
    return absl::InvalidArgumentError("per block or per linear layer, not both");
  }
  // (block, site) of each run; -1 = any.
  std::vector<std::pair<int, int>> runs = {{-1, -1}};
  if (opts.per_layer) {
    runs.clear();
    for (int l = 0; l < static_cast<int>(model.config().n_layer); ++l) runs.push_back({l, -1});
  }
  const UnitLayout layout = football.layout();
  if (opts.per_linear_layer) {
    runs.clear();
    std::vector<std::pair<std::string, int>> named;  // sorted by name, as ml-selfcond sorts
    for (int s = 0; s < layout.num_sites(); ++s) named.push_back({layout.SiteName(s), s});
    std::sort(named.begin(), named.end());
    for (const auto& [name, s] : named) runs.push_back({layout.site_layer(s), s});
  }
  std::vector<Condition> conditions;
  for (const auto& [layer, site] : runs) {
    UnitChoice choice = opts.choice;
    if (layer >= 0) choice.layers = {layer};
    if (site >= 0) choice.sites = {site};
    for (int64_t k : opts.ks) {
      auto c = ExpertsCondition(model, football, k, choice, opts.forcing, opts.only_last_token);
      if (!c.ok()) return c.status();
      c->layer = layer;
      if (site >= 0) c->site = layout.SiteName(site);
      auto mean_ap = MeanAp(football, k, choice);
      if (!mean_ap.ok()) return mean_ap.status();
      c->mean_ap = *mean_ap;
      conditions.push_back(std::move(*c));
    }
  }
  auto run = RunConditions(model, conditions, opts, pool, progress);
  if (!run.ok()) return run.status();
  FootballExperimentResult res;
  res.options = opts;
  res.points = std::move(run->points);
  res.samples = std::move(run->samples);
  return res;
}

std::string PythonFloat(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  // Shortest round-trip digits, as repr(float) prints them; repr switches to exponent form
  // below 1e-4 and from 1e16.
  const double a = std::fabs(v);
  const bool sci = a != 0 && (a < 1e-4 || a >= 1e16);
  auto res = std::to_chars(buf, buf + sizeof(buf), v,
                           sci ? std::chars_format::scientific : std::chars_format::fixed);
  std::string out(buf, res.ptr);
  if (sci) {
    // "1e-05" like Python: at least two exponent digits (to_chars writes "1e-05" already).
    return out;
  }
  if (out.find('.') == std::string::npos) out += ".0";
  return out;
}

namespace {

// The rows of one concept's files: the samples whose condition `take` accepts.
std::vector<NamedText> WriteGenSentences(absl::Span<const ConditionPoint> points,
                                         absl::Span<const ConditionSample> samples,
                                         ForcingValue forcing, const UnitChoice& ch,
                                         const std::string& concept,
                                         const std::function<bool(int)>& take) {
  const std::string header =
      ",forcing_value,num_units,top_n,seed,sentence,mean_metric,forced_layer,perplexity,context,"
      "concept\n";
  std::vector<NamedText> files;
  std::map<std::string, size_t> by_prompt;  // prompt -> index into files
  std::vector<int64_t> rows;                // rows written per file
  for (const ConditionSample& s : samples) {
    if (!take(s.condition)) continue;
    auto [it, fresh] = by_prompt.emplace(s.prompt, files.size());
    if (fresh) {
      std::string name = s.prompt;
      for (char& c : name)
        if (c == ' ' || c == '/' || c == '\\' || c == '\0') c = '_';
      files.push_back({absl::StrCat("gen_sentences_", concept, "_", name, ".csv"), header});
      rows.push_back(0);
    }
    const ConditionPoint& p = points[s.condition];
    const int64_t top_n = ch.random ? 0 : 1 + (s.k > 0 ? ch.offset / s.k : 0);
    std::string& t = files[it->second].text;
    absl::StrAppend(&t, rows[it->second]++, ",", ForcingValueName(forcing), ",", s.k, ",", top_n,
                    ",", s.seed, ",", CsvField(s.prompt + s.text), ",", PythonFloat(p.mean_ap), ",",
                    !p.site.empty() ? p.site
                    : p.layer < 0   ? ""
                                    : std::to_string(p.layer),
                    ",", PythonFloat(s.scorer_ppl()), ",", CsvField(s.prompt), ",",
                    CsvField(concept), "\n");
  }
  return files;
}

}  // namespace

std::vector<NamedText> GenSentencesCsvs(const FootballExperimentResult& r,
                                        const ExpertTable& table) {
  return WriteGenSentences(r.points, r.samples, r.options.forcing, r.options.choice, table.concept,
                           [](int) { return true; });
}

json::Value FootballResultToJson(const FootballExperimentResult& r) {
  const auto& o = r.options;
  json::Value root = json::Value::Object();
  root.Set("experiment", json::Value::String("football"));
  json::Value opt = json::Value::Object();
  opt.Set("ks", IntArray(o.ks));
  SetGridOptions(o, &opt);
  opt.Set("forcing", json::Value::String(ForcingValueName(o.forcing)));
  opt.Set("only_last_token", json::Value::Bool(o.only_last_token));
  opt.Set("football_words", StrArray(o.words));
  SetChoiceOptions(o.choice, &opt);
  opt.Set("per_layer", json::Value::Bool(o.per_layer));
  opt.Set("per_linear_layer", json::Value::Bool(o.per_linear_layer));
  root.Set("options", std::move(opt));
  json::Value points = json::Value::Array();
  for (const auto& p : r.points) {
    json::Value v = PointToJson(p);
    v.Set("k", json::Value::Number(static_cast<double>(p.k)));
    v.Set("mean_ap", json::Value::Number(p.mean_ap));
    json::Value mpp = json::Value::Array();
    for (int m : p.mentions_per_prompt) mpp.Push(json::Value::Number(m));
    v.Set("mentions_per_prompt", std::move(mpp));
    json::Value wc = json::Value::Object();
    for (const auto& [w, c] : p.word_counts) wc.Set(w, json::Value::Number(c));
    v.Set("word_counts", std::move(wc));
    points.Push(std::move(v));
  }
  root.Set("points", std::move(points));
  json::Value samples = json::Value::Array();
  for (const auto& s : r.samples) {
    json::Value v = json::Value::Object();
    v.Set("k", json::Value::Number(static_cast<double>(s.k)));
    v.Set("point", json::Value::Number(s.condition));
    v.Set("prompt", json::Value::String(s.prompt));
    v.Set("seed", json::Value::Number(static_cast<double>(s.seed)));
    v.Set("text", json::Value::String(s.text));
    v.Set("words", StrArray(s.words));
    v.Set("ppl", json::Value::Number(s.ppl()));
    v.Set("scored_tokens", json::Value::Number(s.scored_tokens));
    v.Set("scorer_ppl", json::Value::Number(s.scorer_ppl()));
    samples.Push(std::move(v));
  }
  root.Set("samples", std::move(samples));
  // Examples: the first examples_per_k samples of each k, spread over the prompts (seed 0 of
  // prompt 0, 1, ...), so the report can show them without reading every sample.
  json::Value examples = json::Value::Array();
  const size_t P = o.prompts.size(), S = static_cast<size_t>(o.seeds);
  for (size_t ki = 0; ki < r.points.size(); ++ki) {
    for (int e = 0; e < o.examples_per_k; ++e) {
      const size_t pi = e % P, si = e / P;
      if (si >= S) break;
      const size_t idx = ki * P * S + pi * S + si;
      if (idx < r.samples.size()) examples.Push(json::Value::Number(static_cast<double>(idx)));
    }
  }
  root.Set("example_indices", std::move(examples));
  return root;
}

// ---- gender ---------------------------------------------------------------------------------

const std::vector<std::string>& SheWords() {
  static const std::vector<std::string> w = {" she", " her", " She", " Her"};
  return w;
}
const std::vector<std::string>& HeWords() {
  static const std::vector<std::string> w = {" he", " his", " He", " His"};
  return w;
}

bool CountsAsFirstWord(std::string_view continuation, absl::Span<const std::string> words) {
  // Python slices characters, we slice bytes: equal whenever the window is ASCII, and a
  // non-ASCII character in it cannot be part of a match anyway.
  const std::string head = absl::AsciiStrToLower(
      absl::string_view(continuation.data(), std::min<size_t>(5, continuation.size())));
  for (const auto& w : words) {
    for (const char* suffix : {" ", ".", ",", ";", ":", "'"}) {
      if (head.find(absl::StrCat(" ", std::string(w), suffix)) != std::string::npos) return true;
    }
  }
  return false;
}

absl::StatusOr<std::vector<OccupationPrompt>> ParseOccupationPrompts(std::string_view json_text,
                                                                     int max_per_group) {
  auto doc = json::Parse(json_text);
  if (!doc.ok()) return doc.status();
  auto strings = [&](const char* key) -> absl::StatusOr<std::vector<std::string>> {
    const json::Value* v = doc->Find(key);
    if (v == nullptr || !v->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat("occupations: missing array '", key, "'"));
    }
    std::vector<std::string> out;
    for (const auto& item : v->items()) {
      if (!item.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat("occupations: '", key, "' not strings"));
      }
      out.emplace_back(item.as_string());
    }
    return out;
  };
  auto templates = strings("templates");
  if (!templates.ok()) return templates.status();
  auto female = strings("female_occupations");
  if (!female.ok()) return female.status();
  auto male_all = strings("male_occupations");
  if (!male_all.ok()) return male_all.status();
  std::vector<std::string> male;
  const json::Value* idx = doc->Find("fixed_random_male_idx");
  if (idx == nullptr) {
    male = *male_all;
  } else {
    if (!idx->is_array()) {
      return absl::InvalidArgumentError("occupations: 'fixed_random_male_idx' is not an array");
    }
    for (const auto& item : idx->items()) {
      const double d = item.is_number() ? item.as_number() : -1;
      if (!(d >= 0 && d < static_cast<double>(male_all->size())) || d != std::floor(d)) {
        return absl::OutOfRangeError(
            absl::StrCat("occupations: fixed_random_male_idx entry out of range (",
                         male_all->size(), " male occupations)"));
      }
      male.push_back((*male_all)[static_cast<size_t>(d)]);
    }
  }
  if (max_per_group > 0) {
    if (female->size() > static_cast<size_t>(max_per_group)) female->resize(max_per_group);
    if (male.size() > static_cast<size_t>(max_per_group)) male.resize(max_per_group);
  }
  std::vector<OccupationPrompt> out;
  for (const auto& t : *templates) {
    const size_t at = t.find("<occupation>");
    if (at == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("template without <occupation>: ", t));
    }
    auto add = [&](const std::vector<std::string>& occs, const char* group) {
      for (const auto& o : occs) {
        std::string text = t;
        text.replace(at, 12, o);
        out.push_back({std::move(text), o, group});
      }
    };
    add(*female, "female");
    add(male, "male");
  }
  if (out.empty()) return absl::InvalidArgumentError("occupations: no prompts");
  return out;
}

namespace {

// The single token ids of words (each must be one token for this tokenizer).
absl::StatusOr<std::vector<int32_t>> SingleTokens(const Tokenizer& tok,
                                                  const std::vector<std::string>& words) {
  std::vector<int32_t> ids;
  for (const auto& w : words) {
    auto e = tok.Encode(w);
    if (e.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", w, "' is ", e.size(), " tokens for this tokenizer, expected 1"));
    }
    ids.push_back(e[0]);
  }
  return ids;
}

// What every prompt of one condition is scored with.
struct PronounScorer {
  std::vector<int32_t> she, he;
  int top_k = 0;  // the sampler's top-k (V: all)
  double inv_t = 1;
};

// p(she-words) and p(he-words) of the next token, under the full softmax and restricted to the
// sampler's top-k set (the k largest logits, ties broken by lower id, as Sampler).
void ScorePronouns(const PronounScorer& s, const float* z, int V, std::vector<int32_t>& order,
                   GenderCell* cell) {
  double mx = z[0];
  for (int j = 1; j < V; ++j) mx = std::max<double>(mx, z[j]);
  double sum_all = 0;
  for (int j = 0; j < V; ++j) sum_all += std::exp((z[j] - mx) * s.inv_t);
  for (int j = 0; j < V; ++j) order[j] = j;
  auto better = [z](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); };
  std::nth_element(order.begin(), order.begin() + (s.top_k - 1), order.end(), better);
  double sum_top = 0;
  for (int j = 0; j < s.top_k; ++j) sum_top += std::exp((z[order[j]] - mx) * s.inv_t);
  auto in_topk = [&](int32_t id) {
    return std::find(order.begin(), order.begin() + s.top_k, id) != order.begin() + s.top_k;
  };
  for (const auto& [ids, full, top] : {std::tuple{&s.she, &cell->p_she_full, &cell->p_she},
                                       std::tuple{&s.he, &cell->p_he_full, &cell->p_he}}) {
    for (int32_t id : *ids) {
      const double e = std::exp((z[id] - mx) * s.inv_t);
      *full += e / sum_all;
      if (in_topk(id)) *top += e / sum_top;
    }
  }
}

// The sampled cross-check: opts.samples continuations counted as ml-selfcond does.
absl::Status SamplePronouns(Session& session, const std::vector<int32_t>& prompt,
                            const GenderExperimentOptions& opts, GenderCell* cell) {
  static const std::vector<std::string> kShe = {"she", "her"}, kHe = {"he", "his"};
  const Tokenizer& tok = session.model().tokenizer();
  GenerateOptions g;
  g.max_new_tokens = opts.sample_tokens;
  g.sampling.temperature = opts.temperature;
  g.sampling.top_k = opts.sampler_top_k;
  g.stop_at_eos = false;
  int she_n = 0, he_n = 0;
  for (int i = 0; i < opts.samples; ++i) {
    g.sampling.seed = static_cast<uint64_t>(i);
    auto gen = Generate(session, prompt, g, nullptr);
    if (!gen.ok()) return gen.status();
    std::vector<int32_t> visible;
    for (int32_t t : gen->tokens) {
      if (!tok.is_eos(t)) visible.push_back(t);
    }
    const std::string text = tok.Decode(visible);
    she_n += CountsAsFirstWord(text, kShe);
    he_n += CountsAsFirstWord(text, kHe);
  }
  cell->sampled_she = static_cast<double>(she_n) / opts.samples;
  cell->sampled_he = static_cast<double>(he_n) / opts.samples;
  return absl::OkStatus();
}

// Concept c's curve over the prompts of one group (means per k).
GenderCurve Curve(const GenderExperimentResult& res, size_t c, const char* group) {
  const GenderExperimentOptions& opts = res.options;
  GenderCurve curve;
  curve.concept = res.concepts[c];
  curve.group = group;
  curve.ks = opts.ks;
  for (size_t ki = 0; ki < opts.ks.size(); ++ki) {
    double s = 0, h = 0, sf = 0, hf = 0, ss = 0, sh = 0;
    int n = 0;
    for (size_t p = 0; p < res.prompts.size(); ++p) {
      if (curve.group != "all" && res.prompts[p].group != curve.group) continue;
      const GenderCell& cell = res.cells[c][ki][p];
      s += cell.p_she;
      h += cell.p_he;
      sf += cell.p_she_full;
      hf += cell.p_he_full;
      ss += cell.sampled_she;
      sh += cell.sampled_he;
      ++n;
    }
    const double d = n > 0 ? n : 1;
    curve.p_she.push_back(s / d);
    curve.p_he.push_back(h / d);
    curve.p_she_full.push_back(sf / d);
    curve.p_he_full.push_back(hf / d);
    if (opts.samples > 0) {
      curve.sampled_she.push_back(ss / d);
      curve.sampled_he.push_back(sh / d);
    }
  }
  return curve;
}

// The condition of every (concept, k > 0), with its forced units' mean AP: index 0 is no
// forcing (ml-selfcond's num_units 0); cond_of[c][ki] the index.
absl::Status GenderConditions(const Model& model, absl::Span<const ExpertTable* const> tables,
                              const GenderExperimentOptions& opts, GenderExperimentResult* res,
                              std::vector<Condition>* conditions,
                              std::vector<std::vector<int>>* cond_of) {
  conditions->assign(1, Condition());
  (*conditions)[0].method = "experts";
  cond_of->assign(tables.size(), std::vector<int>(opts.ks.size(), 0));
  for (size_t c = 0; c < tables.size(); ++c) {
    const ExpertTable& t = *tables[c];
    if (auto st = CheckCompatible(t, model); !st.ok()) return st;
    if (auto st = CheckTableHoldsK(t, opts.ks); !st.ok()) return st;
    res->concepts.push_back(ShortConcept(t.concept));
    for (size_t ki = 0; ki < opts.ks.size(); ++ki) {
      if (opts.ks[ki] == 0) continue;
      auto cond =
          ExpertsCondition(model, t, opts.ks[ki], opts.choice, opts.forcing, opts.only_last_token);
      if (!cond.ok()) return cond.status();
      auto mean_ap = MeanAp(t, opts.ks[ki], opts.choice);
      if (!mean_ap.ok()) return mean_ap.status();
      cond->mean_ap = *mean_ap;
      (*cond_of)[c][ki] = static_cast<int>(conditions->size());
      conditions->push_back(std::move(*cond));
    }
  }
  return absl::OkStatus();
}

// Continuations of every occupation prompt under no forcing and each concept's k > 0.
absl::Status GenerateForGender(const Model& model, const std::vector<Condition>& conditions,
                               const std::vector<std::vector<int>>& cond_of,
                               const GenderExperimentOptions& opts, ThreadPool* pool,
                               const ExperimentProgress& progress, GenderExperimentResult* res) {
  GenerationGrid grid;
  grid.prompts.clear();
  for (const auto& p : res->prompts) grid.prompts.push_back(p.text);
  grid.seeds = opts.generate;
  grid.first_seed = 0;
  grid.new_tokens = opts.new_tokens;
  grid.temperature = opts.temperature;
  grid.top_p = 1.0f;  // generate_batch.py: --top-p 0.0, i.e. no nucleus
  grid.top_k = opts.sampler_top_k;
  grid.precision = opts.precision;
  grid.words = {"she", "her", "he", "his"};
  grid.bleu_ngram = opts.bleu_ngram;
  auto run = RunConditions(model, conditions, grid, pool, progress);
  if (!run.ok()) return run.status();
  res->gen_points = std::move(run->points);
  res->gen_samples = std::move(run->samples);
  res->gen_cond = cond_of;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GenderExperimentResult> RunGenderExperiment(
    const Model& model, absl::Span<const ExpertTable* const> tables,
    std::vector<OccupationPrompt> prompts, const GenderExperimentOptions& opts, ThreadPool* pool,
    const ExperimentProgress& progress) {
  if (tables.empty() || prompts.empty() || opts.ks.empty()) {
    return absl::InvalidArgumentError("need at least one expert table, prompt and k");
  }
  if (!(opts.temperature > 0) || !std::isfinite(opts.temperature) || opts.sampler_top_k < 0 ||
      opts.samples < 0 || opts.sample_tokens < 1) {
    return absl::InvalidArgumentError(
        "temperature must be > 0, sampler top-k >= 0, samples >= 0 and sample tokens >= 1");
  }
  const Tokenizer& tok = model.tokenizer();
  const int V = static_cast<int>(model.config().vocab_size);
  PronounScorer scorer;
  auto she = SingleTokens(tok, SheWords());
  if (!she.ok()) return she.status();
  auto he = SingleTokens(tok, HeWords());
  if (!he.ok()) return he.status();
  scorer.she = std::move(*she);
  scorer.he = std::move(*he);
  scorer.top_k = opts.sampler_top_k > 0 ? std::min(opts.sampler_top_k, V) : V;
  scorer.inv_t = 1.0 / opts.temperature;
  GenderExperimentResult res;
  res.options = opts;
  res.prompts = std::move(prompts);
  std::vector<Condition> conditions;
  std::vector<std::vector<int>> cond_of;
  if (auto st = GenderConditions(model, tables, opts, &res, &conditions, &cond_of); !st.ok()) {
    return st;
  }
  const size_t C = conditions.size(), P = res.prompts.size();
  std::vector<std::vector<int32_t>> ids(P);
  for (size_t p = 0; p < P; ++p) {
    ids[p] = tok.Encode(res.prompts[p].text);
    if (ids[p].empty() || ids[p].size() >= model.config().n_ctx) {
      return absl::InvalidArgumentError(absl::StrCat("bad prompt: '", res.prompts[p].text, "'"));
    }
  }
  std::vector<GenderCell> by_cond(C * P);  // (conditions, prompts)
  const size_t total = C * P;
  ProgressCounter counter(progress, static_cast<int>(total));
  const int workers = NumWorkers(pool);
  SessionOptions so;
  so.precision = opts.precision;
  auto st = ForEachWorkerSession(model, so, pool, [&](int w, Session& session) {
    std::vector<int32_t> order(V);
    // Condition-major so a worker changes its forcing rarely.
    for (size_t idx = w; idx < total; idx += workers) {
      const size_t c = idx / P, p = idx % P;
      Session::Conditioning cond;
      if (c != 0) cond.forcing = conditions[c].forcing;
      if (auto s = session.SetConditioning(std::move(cond)); !s.ok()) return s;
      session.Reset();
      auto logits = session.Forward(ids[p], Session::Logits::kLast);
      if (!logits.ok()) return logits.status();
      ScorePronouns(scorer, logits->data(), V, order, &by_cond[idx]);
      if (opts.samples > 0) {
        if (auto s = SamplePronouns(session, ids[p], opts, &by_cond[idx]); !s.ok()) return s;
      }
      counter.Tick();
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  res.cells.assign(tables.size(), std::vector<std::vector<GenderCell>>(opts.ks.size()));
  for (size_t c = 0; c < tables.size(); ++c) {
    for (size_t ki = 0; ki < opts.ks.size(); ++ki) {
      const size_t cond = static_cast<size_t>(cond_of[c][ki]);
      res.cells[c][ki].assign(by_cond.begin() + cond * P, by_cond.begin() + (cond + 1) * P);
    }
    for (const char* group : {"all", "female", "male"}) res.curves.push_back(Curve(res, c, group));
    // Parity points: the forced concept's pronouns catch up with the other's.
    const bool man = res.concepts[c] == "man";
    res.parity.emplace_back(P);
    res.parity_ml.emplace_back(P, std::numeric_limits<double>::quiet_NaN());
    res.biased.emplace_back(P, 0);
    for (size_t p = 0; p < P; ++p) {
      std::vector<double> delta, she_minus_he;
      for (size_t ki = 0; ki < opts.ks.size(); ++ki) {
        const GenderCell& cell = res.cells[c][ki][p];
        delta.push_back(man ? cell.p_he - cell.p_she : cell.p_she - cell.p_he);
        she_minus_he.push_back(cell.p_she - cell.p_he);
      }
      res.parity[c][p] = ParityPoint(opts.ks, delta);
      // ml-selfcond: biased toward the other gender at k = 0 (the grid's first k).
      res.biased[c][p] = delta[0] < 0;
      if (res.biased[c][p]) res.parity_ml[c][p] = MlSelfcondRoot(opts.ks, she_minus_he);
    }
  }
  if (opts.generate > 0) {
    if (auto s = GenerateForGender(model, conditions, cond_of, opts, pool, progress, &res);
        !s.ok()) {
      return s;
    }
  }
  return res;
}

double MlSelfcondRoot(absl::Span<const int64_t> ks, absl::Span<const double> y) {
  const size_t n = std::min(ks.size(), y.size());
  bool pos = false, neg = false;
  for (size_t i = 0; i < n; ++i) {
    pos = pos || y[i] > 0;
    neg = neg || y[i] < 0;
  }
  if (!pos || !neg) return std::numeric_limits<double>::quiet_NaN();
  auto sign = [](double v) { return v > 0 ? 1 : v < 0 ? -1 : 0; };
  for (size_t i = 0; i + 1 < n; ++i) {
    if (sign(y[i]) == sign(y[i + 1])) continue;
    // np.polyfit(deg=1) through two points, then np.roots: the line's zero.
    const double x0 = static_cast<double>(ks[i]), x1 = static_cast<double>(ks[i + 1]);
    const double slope = (y[i + 1] - y[i]) / (x1 - x0);
    return x0 - y[i] / slope;
  }
  return std::numeric_limits<double>::quiet_NaN();
}

double Interp(double x, absl::Span<const double> xp, absl::Span<const double> fp) {
  const size_t n = std::min(xp.size(), fp.size());
  if (n == 0) return std::numeric_limits<double>::quiet_NaN();
  if (x <= xp[0]) return fp[0];
  for (size_t i = 1; i < n; ++i) {
    if (x <= xp[i]) {
      return fp[i - 1] + (fp[i] - fp[i - 1]) * (x - xp[i - 1]) / (xp[i] - xp[i - 1]);
    }
  }
  return fp[n - 1];
}

std::vector<NamedText> GenSentencesCsvs(const GenderExperimentResult& r,
                                        absl::Span<const ExpertTable* const> tables) {
  std::vector<NamedText> all;
  for (size_t c = 0; c < r.gen_cond.size() && c < tables.size(); ++c) {
    std::set<int> mine = {0};
    for (int cond : r.gen_cond[c]) mine.insert(cond);
    auto files =
        WriteGenSentences(r.gen_points, r.gen_samples, r.options.forcing, r.options.choice,
                          tables[c]->concept, [&](int cond) { return mine.count(cond) > 0; });
    for (auto& f : files) all.push_back(std::move(f));
  }
  return all;
}

double ParityPoint(absl::Span<const int64_t> ks, absl::Span<const double> delta) {
  for (size_t i = 0; i < ks.size() && i < delta.size(); ++i) {
    if (delta[i] < 0) continue;
    if (i == 0) return static_cast<double>(ks[0]);
    const double k0 = static_cast<double>(ks[i - 1]), k1 = static_cast<double>(ks[i]);
    const double d0 = delta[i - 1], d1 = delta[i];  // d0 < 0 <= d1
    return k0 + (k1 - k0) * (-d0) / (d1 - d0);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

namespace {

json::Value GenderOptionsJson(const GenderExperimentOptions& o) {
  json::Value opt = json::Value::Object();
  opt.Set("ks", IntArray(o.ks));
  opt.Set("temperature", json::Value::Number(o.temperature));
  opt.Set("sampler_top_k", json::Value::Number(o.sampler_top_k));
  opt.Set("forcing", json::Value::String(ForcingValueName(o.forcing)));
  opt.Set("only_last_token", json::Value::Bool(o.only_last_token));
  opt.Set("precision", json::Value::String(o.precision == Precision::kF32 ? "f32" : "int8"));
  opt.Set("samples", json::Value::Number(o.samples));
  opt.Set("sample_tokens", json::Value::Number(o.sample_tokens));
  opt.Set("generate", json::Value::Number(o.generate));
  if (o.generate > 0) {
    opt.Set("new_tokens", json::Value::Number(o.new_tokens));
    opt.Set("bleu_ngram", json::Value::Number(o.bleu_ngram));
  }
  SetChoiceOptions(o.choice, &opt);
  opt.Set("she_words", StrArray(SheWords()));
  opt.Set("he_words", StrArray(HeWords()));
  return opt;
}

json::Value CurveJson(const GenderCurve& c) {
  json::Value v = json::Value::Object();
  v.Set("concept", json::Value::String(c.concept));
  v.Set("group", json::Value::String(c.group));
  v.Set("ks", IntArray(c.ks));
  v.Set("p_she", NumArray(c.p_she));
  v.Set("p_he", NumArray(c.p_he));
  v.Set("p_she_full", NumArray(c.p_she_full));
  v.Set("p_he_full", NumArray(c.p_he_full));
  if (!c.sampled_she.empty()) {
    v.Set("sampled_she", NumArray(c.sampled_she));
    v.Set("sampled_he", NumArray(c.sampled_he));
  }
  return v;
}

// Per occupation (mean over templates), per concept and k: [p_she, p_he] (top-k restricted).
json::Value PerOccupationJson(const GenderExperimentResult& r) {
  std::vector<std::string> occupations;  // in first-seen order
  std::map<std::string, std::string> group_of;
  for (const auto& p : r.prompts) {
    if (group_of.emplace(p.occupation, p.group).second) occupations.push_back(p.occupation);
  }
  json::Value per_occ = json::Value::Array();
  for (const auto& occ : occupations) {
    json::Value v = json::Value::Object();
    v.Set("occupation", json::Value::String(occ));
    v.Set("group", json::Value::String(group_of[occ]));
    for (size_t c = 0; c < r.cells.size(); ++c) {
      std::vector<double> she, he;
      for (size_t ki = 0; ki < r.cells[c].size(); ++ki) {
        double s = 0, h = 0;
        int n = 0;
        for (size_t p = 0; p < r.prompts.size(); ++p) {
          if (r.prompts[p].occupation != occ) continue;
          s += r.cells[c][ki][p].p_she;
          h += r.cells[c][ki][p].p_he;
          ++n;
        }
        she.push_back(n ? s / n : 0);
        he.push_back(n ? h / n : 0);
      }
      json::Value cv = json::Value::Object();
      cv.Set("p_she", NumArray(she));
      cv.Set("p_he", NumArray(he));
      v.Set(r.concepts[c], std::move(cv));
    }
    per_occ.Push(std::move(v));
  }
  return per_occ;
}

// Concept c's p(she), p(he) and delta = p(she) - p(he) as (prompts) rows of (ks) values.
json::Value PerPromptJson(const GenderExperimentResult& r, size_t c) {
  json::Value she = json::Value::Array(), he = json::Value::Array(), delta = json::Value::Array();
  for (size_t p = 0; p < r.prompts.size(); ++p) {
    std::vector<double> s_row, h_row, d_row;
    for (size_t ki = 0; ki < r.cells[c].size(); ++ki) {
      const GenderCell& cell = r.cells[c][ki][p];
      s_row.push_back(cell.p_she);
      h_row.push_back(cell.p_he);
      d_row.push_back(cell.p_she - cell.p_he);
    }
    she.Push(NumArray(s_row));
    he.Push(NumArray(h_row));
    delta.Push(NumArray(d_row));
  }
  json::Value cv = json::Value::Object();
  cv.Set("p_she", std::move(she));
  cv.Set("p_he", std::move(he));
  cv.Set("delta_p", std::move(delta));
  return cv;
}

// Each prompt's parity point (null: not reached) and their quartiles.
json::Value ParityJson(const std::vector<double>& points_in) {
  json::Value points = json::Value::Array();
  std::vector<double> reached;
  for (double x : points_in) {
    points.Push(std::isnan(x) ? json::Value::Null() : json::Value::Number(x));
    if (!std::isnan(x)) reached.push_back(x);
  }
  std::sort(reached.begin(), reached.end());
  auto quantile = [&](double q) {
    if (reached.empty()) return json::Value::Null();
    const double at = q * static_cast<double>(reached.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(at));
    const size_t hi = std::min(lo + 1, reached.size() - 1);
    return json::Value::Number(reached[lo] + (reached[hi] - reached[lo]) * (at - lo));
  };
  json::Value pv = json::Value::Object();
  pv.Set("points", std::move(points));
  pv.Set("reached", json::Value::Number(static_cast<double>(reached.size())));
  pv.Set("contexts", json::Value::Number(static_cast<double>(points_in.size())));
  pv.Set("p10", quantile(0.1));
  pv.Set("p25", quantile(0.25));
  pv.Set("median", quantile(0.5));
  pv.Set("p75", quantile(0.75));
  pv.Set("p90", quantile(0.9));
  return pv;
}

// Quantiles (numpy's linear method) of the finite values.
json::Value QuantileJson(std::vector<double> v) {
  std::vector<double> x;
  for (double d : v)
    if (std::isfinite(d)) x.push_back(d);
  std::sort(x.begin(), x.end());
  json::Value out = json::Value::Object();
  out.Set("n", json::Value::Number(static_cast<double>(x.size())));
  for (auto [name, q] :
       {std::pair<const char*, double>{"p10", 0.1}, {"median", 0.5}, {"p90", 0.9}}) {
    if (x.empty()) {
      out.Set(name, json::Value::Null());
      continue;
    }
    const double at = q * static_cast<double>(x.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(at));
    const size_t hi = std::min(lo + 1, x.size() - 1);
    out.Set(name, json::Value::Number(x[lo] + (x[hi] - x[lo]) * (at - lo)));
  }
  return out;
}

// Concept c's generated curve (per k: samples, ml-selfcond's mean perplexity, Self-BLEU) and
// the perplexity and Self-BLEU interpolated at each context's parity point, for both parity
// definitions (all_plots.py plot_perplexity_vs_parity: np.interp over the grid).
json::Value GeneratedJson(const GenderExperimentResult& r, size_t c) {
  const auto& ks = r.options.ks;
  std::vector<double> xs, ppl, bleu, pooled;
  json::Value samples = json::Value::Array();
  for (size_t ki = 0; ki < ks.size(); ++ki) {
    const ConditionPoint& pt = r.gen_points[r.gen_cond[c][ki]];
    xs.push_back(static_cast<double>(ks[ki]));
    ppl.push_back(pt.scorer_mean_ppl);
    pooled.push_back(pt.scorer_ppl);
    bleu.push_back(pt.self_bleu);
    samples.Push(json::Value::Number(pt.samples));
  }
  json::Value g = json::Value::Object();
  g.Set("ks", IntArray(ks));
  g.Set("samples", std::move(samples));
  g.Set("mean_ppl", NumArray(ppl));
  g.Set("pooled_ppl", NumArray(pooled));
  g.Set("self_bleu", NumArray(bleu));
  for (auto [name, points] :
       {std::pair<const char*, const std::vector<double>*>{"at_parity", &r.parity[c]},
        {"at_parity_ml_selfcond", &r.parity_ml[c]}}) {
    std::vector<double> at_ppl, at_bleu;
    for (double k : *points) {
      if (!std::isfinite(k)) continue;
      at_ppl.push_back(Interp(k, xs, ppl));
      at_bleu.push_back(Interp(k, xs, bleu));
    }
    json::Value a = json::Value::Object();
    a.Set("ppl", QuantileJson(at_ppl));
    a.Set("self_bleu", QuantileJson(at_bleu));
    g.Set(name, std::move(a));
  }
  return g;
}

}  // namespace

json::Value GenderResultToJson(const GenderExperimentResult& r) {
  json::Value root = json::Value::Object();
  root.Set("experiment", json::Value::String("gender"));
  root.Set("options", GenderOptionsJson(r.options));
  root.Set("concepts", StrArray(r.concepts));
  int n_female = 0, n_male = 0;
  for (const auto& p : r.prompts) (p.group == "female" ? n_female : n_male)++;
  root.Set("num_prompts", json::Value::Number(static_cast<double>(r.prompts.size())));
  root.Set("num_prompts_female", json::Value::Number(n_female));
  root.Set("num_prompts_male", json::Value::Number(n_male));
  json::Value examples = json::Value::Array();
  for (size_t p = 0; p < r.prompts.size() && p < 4; ++p) {
    examples.Push(json::Value::String(r.prompts[p].text));
  }
  root.Set("example_prompts", std::move(examples));
  json::Value curves = json::Value::Array();
  for (const auto& c : r.curves) curves.Push(CurveJson(c));
  root.Set("curves", std::move(curves));
  root.Set("per_occupation", PerOccupationJson(r));
  json::Value prompts = json::Value::Array();
  json::Value groups = json::Value::Array();
  for (const auto& p : r.prompts) {
    prompts.Push(json::Value::String(p.text));
    groups.Push(json::Value::String(p.group));
  }
  json::Value per_prompt = json::Value::Object();
  per_prompt.Set("prompts", std::move(prompts));
  per_prompt.Set("groups", std::move(groups));
  json::Value parity = json::Value::Object(), parity_ml = json::Value::Object();
  json::Value generated = json::Value::Object();
  for (size_t c = 0; c < r.cells.size(); ++c) {
    per_prompt.Set(r.concepts[c], PerPromptJson(r, c));
    if (c < r.parity.size()) parity.Set(r.concepts[c], ParityJson(r.parity[c]));
    if (c < r.parity_ml.size()) {
      // Over the biased contexts only (the others are not part of ml-selfcond's analysis).
      std::vector<double> biased;
      for (size_t p = 0; p < r.parity_ml[c].size(); ++p) {
        if (r.biased[c][p]) biased.push_back(r.parity_ml[c][p]);
      }
      json::Value v = ParityJson(biased);
      json::Value all = json::Value::Array();
      for (size_t p = 0; p < r.parity_ml[c].size(); ++p) {
        all.Push(std::isfinite(r.parity_ml[c][p]) ? json::Value::Number(r.parity_ml[c][p])
                                                  : json::Value::Null());
      }
      v.Set("points", std::move(all));  // per prompt (null: not biased, or no root)
      parity_ml.Set(r.concepts[c], std::move(v));
    }
    if (c < r.gen_cond.size()) generated.Set(r.concepts[c], GeneratedJson(r, c));
  }
  root.Set("per_prompt", std::move(per_prompt));
  root.Set("parity", std::move(parity));
  root.Set("parity_ml_selfcond", std::move(parity_ml));
  if (!r.gen_cond.empty()) root.Set("generated", std::move(generated));
  return root;
}

}  // namespace selfcond
