#include "tools/paper_experiments.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "experts/dataset.h"  // FindInvalidUtf8
#include "model/generate.h"
#include "util/parallel.h"

namespace selfcond {
namespace {

// Length of the word character at text[i] (0 if text[i] starts a boundary). Python's \w on str
// is ASCII letters, digits, '_' and Unicode letters/digits; without Unicode tables here, every
// non-ASCII character counts as a word character except the common punctuation below (curly
// quotes, guillemets, dashes, ellipsis, no-break space), which generated text does contain.
size_t WordCharLength(std::string_view text, size_t i) {
  const unsigned char c = static_cast<unsigned char>(text[i]);
  if (c < 0x80) return absl::ascii_isalnum(c) || c == '_' ? 1 : 0;
  static constexpr std::string_view kPunct[] = {
      "\xE2\x80\x98", "\xE2\x80\x99", "\xE2\x80\x9C", "\xE2\x80\x9D",  // ‘ ’ “ ”
      "\xC2\xAB",     "\xC2\xBB",     "\xC2\xA0",                      // « » nbsp
      "\xE2\x80\x93", "\xE2\x80\x94", "\xE2\x80\xA6"};                 // – — …
  for (std::string_view p : kPunct) {
    if (text.substr(i, p.size()) == p) return 0;
  }
  return 1;  // one byte at a time: continuation bytes are word characters too
}

// Replaces each invalid UTF-8 sequence with U+FFFD, so results always serialize as valid JSON
// (a 30-token continuation can end in the middle of a multi-byte character).
std::string SanitizeUtf8(std::string s) {
  std::string out;
  std::string_view rest = s;
  while (!rest.empty()) {
    const int64_t bad = FindInvalidUtf8(rest);
    if (bad < 0) {
      out.append(rest.data(), rest.size());
      break;
    }
    out.append(rest.data(), static_cast<size_t>(bad));
    out += "\xEF\xBF\xBD";
    rest.remove_prefix(static_cast<size_t>(bad) + 1);
  }
  return out;
}

int NumWorkers(ThreadPool* pool) { return pool ? std::max(1, pool->size()) : 1; }

// Runs fn(worker, session) on every worker, each with its own single-threaded Session.
absl::Status ForEachWorker(const Model& model, Precision precision, ThreadPool* pool,
                           const std::function<absl::Status(int, Session&)>& fn) {
  SessionOptions so;
  so.precision = precision;
  return ForEachWorkerSession(model, so, pool, fn);
}

// Serializes progress callbacks from worker threads.
class ProgressCounter {
 public:
  ProgressCounter(const ExperimentProgress& fn, int total) : fn_(fn), total_(total) {}
  void Tick() {
    if (!fn_) return;
    std::lock_guard<std::mutex> lock(mu_);
    fn_(++done_, total_);
  }

 private:
  const ExperimentProgress& fn_;
  int total_;
  int done_ = 0;
  std::mutex mu_;
};

absl::Status CheckTableHoldsK(const ExpertTable& t, absl::Span<const int64_t> ks) {
  for (int64_t k : ks) {
    if (k < 0) return absl::InvalidArgumentError(absl::StrCat("k must be >= 0, got ", k));
    if (k > static_cast<int64_t>(t.units.size())) {
      return absl::OutOfRangeError(absl::StrCat("k = ", k, " but the expert table for '", t.concept,
                                                "' holds only ", t.units.size(), " units"));
    }
  }
  return absl::OkStatus();
}

// "woman-1_18_00__" -> "woman" (ml-selfcond's concept_from_df).
std::string ShortConcept(const std::string& c) { return c.substr(0, c.find('-')); }

const char* ForcingValueName(ForcingValue v) {
  switch (v) {
    case ForcingValue::kOnP50:
      return "on_p50";
    case ForcingValue::kOnP90:
      return "on_p90";
    case ForcingValue::kOffMean:
      return "off_mean";
    case ForcingValue::kZero:
      return "zero";
  }
  return "?";
}

json::Value NumArray(absl::Span<const double> v) {
  json::Value a = json::Value::Array();
  for (double x : v) a.Push(json::Value::Number(x));
  return a;
}

json::Value IntArray(absl::Span<const int64_t> v) {
  json::Value a = json::Value::Array();
  for (int64_t x : v) a.Push(json::Value::Number(static_cast<double>(x)));
  return a;
}

json::Value StrArray(absl::Span<const std::string> v) {
  json::Value a = json::Value::Array();
  for (const auto& x : v) a.Push(json::Value::String(x));
  return a;
}

// The unit-choice options as the CLI names them (--metric, --rank-offset, --random-units,
// --layers).
void SetChoiceOptions(const UnitChoice& c, json::Value* opt) {
  opt->Set("metric", json::Value::String(UnitMetricName(c.metric)));
  opt->Set("rank_offset", json::Value::Number(static_cast<double>(c.offset)));
  opt->Set("random_units",
           c.random ? json::Value::Number(static_cast<double>(c.seed)) : json::Value::Null());
  json::Value layers = json::Value::Array();
  for (int l : c.layers) layers.Push(json::Value::Number(l));
  opt->Set("layers", std::move(layers));
}

// The generation settings every experiment that generates records.
void SetGridOptions(const GenerationGrid& o, json::Value* opt) {
  opt->Set("prompts", StrArray(o.prompts));
  opt->Set("seeds", json::Value::Number(o.seeds));
  opt->Set("first_seed", json::Value::Number(static_cast<double>(o.first_seed)));
  opt->Set("new_tokens", json::Value::Number(o.new_tokens));
  opt->Set("temperature", json::Value::Number(o.temperature));
  opt->Set("top_p", json::Value::Number(o.top_p));
  opt->Set("top_k", json::Value::Number(o.top_k));
  opt->Set("precision", json::Value::String(o.precision == Precision::kF32 ? "f32" : "int8"));
  opt->Set("bleu_ngram", json::Value::Number(o.bleu_ngram));
}

// The measurements every condition has (concept rate, fluency, diversity).
json::Value PointToJson(const FootballPoint& p) {
  json::Value v = json::Value::Object();
  v.Set("method", json::Value::String(p.method));
  v.Set("strength", json::Value::Number(p.strength));
  v.Set("layer", p.layer >= 0 ? json::Value::Number(p.layer) : json::Value::Null());
  if (!p.units.empty()) v.Set("units", json::Value::String(p.units));
  v.Set("samples", json::Value::Number(p.samples));
  v.Set("mentions", json::Value::Number(p.mentions));
  v.Set("mention_rate", json::Value::Number(p.mention_rate));
  v.Set("ppl", json::Value::Number(p.ppl));
  v.Set("mean_ppl", json::Value::Number(p.mean_ppl));
  v.Set("median_ppl", json::Value::Number(p.median_ppl));
  v.Set("scorer_ppl", json::Value::Number(p.scorer_ppl));
  v.Set("scorer_mean_ppl", json::Value::Number(p.scorer_mean_ppl));
  v.Set("self_bleu", json::Value::Number(p.self_bleu));
  return v;
}

}  // namespace

// ---- word matching --------------------------------------------------------------------------

const std::vector<std::string>& FootballWords() {
  static const std::vector<std::string> w = {"football", "soccer", "game",  "team",
                                             "player",   "goal",   "ball",  "league",
                                             "match",    "sport",  "coach", "score"};
  return w;
}

std::vector<std::string> FindWordMentions(std::string_view text,
                                          absl::Span<const std::string> words) {
  std::set<std::string> seen;  // lower-cased words of the text
  size_t i = 0;
  while (i < text.size()) {
    if (WordCharLength(text, i) == 0) {
      // Skip the whole boundary character (a multi-byte punctuation mark is one boundary).
      const unsigned char c = static_cast<unsigned char>(text[i]);
      i += c < 0x80 ? 1 : (c >= 0xF0 ? 4 : (c >= 0xE0 ? 3 : 2));
      continue;
    }
    size_t j = i;
    while (j < text.size() && WordCharLength(text, j) > 0) ++j;
    seen.insert(absl::AsciiStrToLower(absl::string_view(text.data() + i, j - i)));
    i = j;
  }
  std::vector<std::string> out;
  for (const std::string& w : words) {
    const std::string base = absl::AsciiStrToLower(absl::string_view(w.data(), w.size()));
    if (seen.count(base) || seen.count(base + "s") || seen.count(base + "es")) out.push_back(w);
  }
  return out;
}

// ---- conditioned generation -----------------------------------------------------------------

double FootballSample::ppl() const {
  return scored_tokens > 0 ? std::exp(nll_sum / scored_tokens) : 0.0;
}

double FootballSample::scorer_ppl() const {
  return scorer_tokens > 0 ? std::exp(scorer_nll_sum / scorer_tokens) : 0.0;
}

namespace {

// Sum of -log softmax(row)[target] for rows first..n-2 of logits(n, V) predicting tokens[i + 1].
double SumNll(const float* logits, int V, absl::Span<const int32_t> tokens, size_t first,
              int* count) {
  double nll = 0;
  for (size_t i = first; i + 1 < tokens.size(); ++i) {
    const float* row = logits + i * V;
    double mx = row[0];
    for (int j = 1; j < V; ++j) mx = std::max<double>(mx, row[j]);
    double sum = 0;
    for (int j = 0; j < V; ++j) sum += std::exp(row[j] - mx);
    nll += (std::log(sum) + mx) - row[tokens[i + 1]];
    ++*count;
  }
  return nll;
}

// ml-selfcond's perplexity(): the text decode([0]) + (prompt + continuation, EOS as " ",
// stripped), every token after the first predicted.
std::vector<int32_t> ScorerTokens(const Tokenizer& tok, const std::string& prompt,
                                  const std::string& continuation) {
  std::string text = prompt + continuation;
  const std::string eot = "<|endoftext|>";
  for (size_t at = text.find(eot); at != std::string::npos; at = text.find(eot, at + 1)) {
    text.replace(at, eot.size(), " ");
  }
  const absl::string_view stripped = absl::StripAsciiWhitespace(text);
  return tok.Encode(tok.Decode(std::vector<int32_t>{0}) +
                    std::string(stripped.data(), stripped.size()));
}

}  // namespace

absl::StatusOr<ConditionRun> RunConditions(const Model& model,
                                           absl::Span<const Condition> conditions,
                                           const GenerationGrid& grid, ThreadPool* pool,
                                           const ExperimentProgress& progress) {
  if (grid.prompts.empty() || grid.seeds <= 0 || grid.new_tokens <= 0 || conditions.empty()) {
    return absl::InvalidArgumentError("need at least one prompt, seed, condition and new token");
  }
  if (grid.bleu_ngram < 1) return absl::InvalidArgumentError("Self-BLEU n-gram must be >= 1");
  SamplingOptions sampling;
  sampling.temperature = grid.temperature;
  sampling.top_p = grid.top_p;
  sampling.top_k = grid.top_k;
  if (auto st = ValidateSampling(sampling); !st.ok()) return st;
  const Model& scorer = grid.scorer ? *grid.scorer : model;
  if (scorer.config().vocab_size == 0) return absl::InvalidArgumentError("scorer has no vocab");

  const Tokenizer& tok = model.tokenizer();
  std::vector<std::vector<int32_t>> prompt_ids;
  for (const auto& p : grid.prompts) {
    prompt_ids.push_back(tok.Encode(p));
    if (prompt_ids.back().empty()) return absl::InvalidArgumentError("empty prompt");
    if (prompt_ids.back().size() + grid.new_tokens > model.config().n_ctx) {
      return absl::OutOfRangeError(absl::StrCat("prompt '", p, "' plus ", grid.new_tokens,
                                                " new tokens exceeds the context"));
    }
  }
  ConditionRun res;
  const size_t P = grid.prompts.size(), S = static_cast<size_t>(grid.seeds);
  const size_t total = conditions.size() * P * S;
  res.samples.resize(total);
  ProgressCounter counter(progress, static_cast<int>(total));
  const int workers = NumWorkers(pool);
  const int V = static_cast<int>(model.config().vocab_size);
  const int SV = static_cast<int>(scorer.config().vocab_size);
  const int32_t eos = tok.eos_id();
  // The scorer's sessions, one per worker (a separate model needs its own; the same model is
  // scored by the generating session with its interventions cleared).
  std::vector<std::unique_ptr<Session>> scorer_sessions(workers);
  if (grid.scorer != nullptr) {
    for (auto& ss : scorer_sessions) {
      SessionOptions so;
      so.precision = grid.precision;
      auto created = Session::Create(scorer, so);
      if (!created.ok()) return created.status();
      ss = std::move(*created);
    }
  }

  auto st = ForEachWorker(model, grid.precision, pool, [&](int w, Session& session) {
    Session& score_session = grid.scorer ? *scorer_sessions[w] : session;
    for (size_t idx = w; idx < total; idx += workers) {
      const size_t ci = idx / (P * S), pi = (idx / S) % P, si = idx % S;
      const Condition& cond = conditions[ci];
      FootballSample& out = res.samples[idx];
      out.condition = static_cast<int>(ci);
      out.k = cond.method == "experts" ? static_cast<int64_t>(cond.strength) : 0;
      out.prompt = grid.prompts[pi];
      out.seed = grid.first_seed + si;
      // 1. Generate under the condition.
      if (auto s = session.SetConditioning({cond.forcing, cond.steering, cond.logit_bias});
          !s.ok()) {
        return s;
      }
      GenerateOptions g;
      g.max_new_tokens = grid.new_tokens;
      g.sampling = sampling;
      g.sampling.seed = out.seed;
      g.stop_at_eos = false;  // fixed length, as ml-selfcond
      auto gen = Generate(session, prompt_ids[pi], g, nullptr);
      if (!gen.ok()) return gen.status();
      (void)session.SetConditioning({});
      out.new_tokens = static_cast<int>(gen->tokens.size());
      std::vector<int32_t> visible;
      for (int32_t t : gen->tokens) {
        if (t != eos) visible.push_back(t);
      }
      out.text = SanitizeUtf8(tok.Decode(visible));
      out.words = FindWordMentions(out.text, grid.words);
      // 2. Score prompt + continuation with the unconditioned model; only the continuation's
      // tokens count.
      session.Reset();
      std::vector<int32_t> all = prompt_ids[pi];
      all.insert(all.end(), gen->tokens.begin(), gen->tokens.end());
      auto logits = session.Forward(all, Session::Logits::kAll);
      if (!logits.ok()) return logits.status();
      out.nll_sum = SumNll(logits->data(), V, all, prompt_ids[pi].size() - 1, &out.scored_tokens);
      // 3. The scorer's perplexity of the whole text (ml-selfcond's compute_perplexity.py).
      std::vector<int32_t> scored =
          ScorerTokens(scorer.tokenizer(), out.prompt, tok.Decode(gen->tokens));
      if (scored.size() > scorer.config().n_ctx) scored.resize(scorer.config().n_ctx);
      score_session.Reset();
      auto slogits = score_session.Forward(scored, Session::Logits::kAll);
      if (!slogits.ok()) return slogits.status();
      out.scorer_nll_sum = SumNll(slogits->data(), SV, scored, 0, &out.scorer_tokens);
      counter.Tick();
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;

  for (size_t ci = 0; ci < conditions.size(); ++ci) {
    const Condition& cond = conditions[ci];
    FootballPoint pt;
    pt.method = cond.method;
    pt.strength = cond.strength;
    pt.layer = cond.layer;
    pt.units = cond.method == "experts" ? cond.units : "";
    pt.k = cond.method == "experts" ? static_cast<int64_t>(cond.strength) : 0;
    pt.mean_ap = cond.mean_ap;
    pt.mentions_per_prompt.assign(P, 0);
    std::map<std::string, int> counts;
    double nll = 0, ppl_sum = 0, snll = 0, sppl_sum = 0;
    int64_t tokens = 0, stokens = 0;
    std::vector<double> ppls;
    std::vector<std::string> texts;
    for (size_t j = 0; j < P * S; ++j) {
      const FootballSample& s = res.samples[ci * P * S + j];
      ++pt.samples;
      if (!s.words.empty()) {
        ++pt.mentions;
        ++pt.mentions_per_prompt[j / S];
      }
      for (const auto& w : s.words) ++counts[w];
      nll += s.nll_sum;
      tokens += s.scored_tokens;
      ppls.push_back(s.ppl());
      ppl_sum += s.ppl();
      snll += s.scorer_nll_sum;
      stokens += s.scorer_tokens;
      sppl_sum += s.scorer_ppl();
      texts.push_back(s.text);
    }
    pt.mention_rate = static_cast<double>(pt.mentions) / pt.samples;
    pt.ppl = tokens > 0 ? std::exp(nll / tokens) : 0;
    pt.mean_ppl = ppl_sum / pt.samples;
    pt.scorer_ppl = stokens > 0 ? std::exp(snll / stokens) : 0;
    pt.scorer_mean_ppl = sppl_sum / pt.samples;
    pt.self_bleu = SelfBleu(texts, grid.bleu_ngram);
    std::sort(ppls.begin(), ppls.end());
    const size_t n = ppls.size();
    pt.median_ppl = n % 2 ? ppls[n / 2] : 0.5 * (ppls[n / 2 - 1] + ppls[n / 2]);
    for (const auto& w : grid.words) {
      auto it = counts.find(w);
      pt.word_counts.push_back({w, it == counts.end() ? 0 : it->second});
    }
    res.points.push_back(std::move(pt));
  }
  return res;
}

std::vector<std::string> BleuTokens(std::string_view text) {
  std::vector<std::string> out;
  size_t i = 0;
  auto word_byte = [&](size_t at) {
    const unsigned char c = static_cast<unsigned char>(text[at]);
    return c >= 0x80 || absl::ascii_isalnum(c) || c == '_';
  };
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (absl::ascii_isspace(c)) {
      ++i;
    } else if (word_byte(i)) {
      size_t j = i;
      // An apostrophe between word characters stays inside ("don't" is one token here; NLTK
      // splits it as "do" "n't": the n-gram statistics differ only on such words).
      while (j < text.size() && (word_byte(j) || (text[j] == '\'' && j + 1 < text.size() && j > i &&
                                                  word_byte(j + 1)))) {
        ++j;
      }
      out.emplace_back(text.substr(i, j - i));
      i = j;
    } else {
      out.emplace_back(text.substr(i, 1));
      ++i;
    }
  }
  return out;
}

double SelfBleu(absl::Span<const std::string> texts, int ngram) {
  if (texts.size() < 2 || ngram < 1) return 0;
  std::vector<std::vector<std::string>> toks;
  for (const auto& t : texts) toks.push_back(BleuTokens(t));
  using Counts = std::map<std::vector<std::string>, int>;
  // counts[i][n-1]: n-gram counts of text i.
  std::vector<std::vector<Counts>> counts(toks.size(), std::vector<Counts>(ngram));
  for (size_t i = 0; i < toks.size(); ++i) {
    for (int n = 1; n <= ngram; ++n) {
      for (size_t a = 0; a + n <= toks[i].size(); ++a) {
        ++counts[i][n - 1][std::vector<std::string>(toks[i].begin() + a, toks[i].begin() + a + n)];
      }
    }
  }
  double total = 0;
  for (size_t h = 0; h < toks.size(); ++h) {
    const double c = static_cast<double>(toks[h].size());
    // NLTK's corpus_bleu on one hypothesis: modified precision with counts clipped by the
    // maximum count in any reference.
    double log_sum = 0;
    bool zero = c == 0;
    for (int n = 1; n <= ngram && !zero; ++n) {
      int64_t num = 0, den = 0;
      for (const auto& [gram, cnt] : counts[h][n - 1]) {
        int max_ref = 0;
        for (size_t r = 0; r < toks.size(); ++r) {
          if (r == h) continue;
          auto it = counts[r][n - 1].find(gram);
          if (it != counts[r][n - 1].end()) max_ref = std::max(max_ref, it->second);
        }
        num += std::min(cnt, max_ref);
        den += cnt;
      }
      // NLTK: no unigram in common gives BLEU 0; otherwise a zero count of order n becomes
      // epsilon / denominator (method1), the denominator being at least 1 (a hypothesis shorter
      // than n).
      if (n == 1 && num == 0) {
        zero = true;
        break;
      }
      const double d = static_cast<double>(std::max<int64_t>(den, 1));
      const double p = num > 0 ? static_cast<double>(num) / d : 0.1 / d;
      log_sum += std::log(p) / ngram;
    }
    if (zero) continue;  // adds 0
    // Brevity penalty: the reference length closest to c (the shorter on ties).
    double r = -1;
    for (size_t i = 0; i < toks.size(); ++i) {
      if (i == h) continue;
      const double len = static_cast<double>(toks[i].size());
      if (r < 0 || std::abs(len - c) < std::abs(r - c) ||
          (std::abs(len - c) == std::abs(r - c) && len < r)) {
        r = len;
      }
    }
    const double bp = c > r ? 1.0 : std::exp(1.0 - r / c);
    total += bp * std::exp(log_sum);
  }
  return total / static_cast<double>(toks.size());
}

// ---- football -------------------------------------------------------------------------------

absl::StatusOr<FootballExperimentResult> RunFootballExperiment(
    const Model& model, const ExpertTable& football, const FootballExperimentOptions& opts,
    ThreadPool* pool, const ExperimentProgress& progress) {
  if (auto st = CheckCompatible(football, model); !st.ok()) return st;
  if (auto st = CheckTableHoldsK(football, opts.ks); !st.ok()) return st;
  if (opts.ks.empty()) return absl::InvalidArgumentError("need at least one k");
  const UnitSpace space(model.config());
  std::vector<int> layers = {-1};
  if (opts.per_layer) {
    layers.clear();
    for (int l = 0; l < static_cast<int>(model.config().n_layer); ++l) layers.push_back(l);
  }
  std::vector<Condition> conditions;
  for (int layer : layers) {
    UnitChoice choice = opts.choice;
    if (layer >= 0) choice.layers = {layer};
    for (int64_t k : opts.ks) {
      Condition c;
      c.method = "experts";
      c.strength = static_cast<double>(k);
      c.layer = layer;
      c.units = DescribeUnitChoice(choice, k);
      if (k > 0) {
        auto picked = SelectUnits(football, k, choice);
        if (!picked.ok()) return picked.status();
        for (int64_t j : *picked) c.mean_ap += football.units[j].ap;
        c.mean_ap /= static_cast<double>(k);
        ForcingSource src{&football, k, choice};
        auto f = BuildForcing({&src, 1}, opts.forcing, opts.only_last_token, space);
        if (!f.ok()) return f.status();
        c.forcing = std::move(*f);
      }
      conditions.push_back(std::move(c));
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

// ---- steering methods side by side -----------------------------------------------------------

absl::StatusOr<CompareResult> RunCompareExperiment(const Model& model, const ExpertTable& table,
                                                   const Dataset& dataset,
                                                   const CompareOptions& opts, ThreadPool* pool,
                                                   const ExperimentProgress& progress) {
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

  const UnitSpace space(model.config());
  std::vector<Condition> conditions(1);  // "none"
  if (has("experts")) {
    for (int64_t k : opts.ks) {
      if (k == 0) continue;
      Condition c;
      c.method = "experts";
      c.strength = static_cast<double>(k);
      c.units = DescribeUnitChoice(UnitChoice(), k);
      for (int64_t j = 0; j < k; ++j) c.mean_ap += table.units[j].ap;
      c.mean_ap /= static_cast<double>(k);
      ForcingSource src{&table, k, UnitChoice()};
      auto f = BuildForcing({&src, 1}, opts.forcing, false, space);
      if (!f.ok()) return f.status();
      c.forcing = std::move(*f);
      conditions.push_back(std::move(c));
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
      const FootballSample& s = r.run.samples[ci * P * S + pi * S];
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

// ---- choosing k --------------------------------------------------------------------------------

absl::StatusOr<AutoKResult> ChooseK(const Model& model, const ExpertTable& table,
                                    const AutoKOptions& opts, ThreadPool* pool,
                                    const ExperimentProgress& progress) {
  if (auto st = CheckCompatible(table, model, true); !st.ok()) return st;
  if (opts.words.empty()) return absl::InvalidArgumentError("auto k needs concept words");
  if (!(opts.target_rate > 0 && opts.target_rate <= 1) || !(opts.ppl_budget >= 1)) {
    return absl::InvalidArgumentError("auto k: target rate must be in (0, 1], budget >= 1");
  }
  const UnitSpace space(model.config());
  const int per_k = static_cast<int>(opts.prompts.size()) * opts.seeds;
  std::vector<int64_t> ks = {0};
  for (int64_t k : opts.candidates) {
    if (k > 0 && k <= static_cast<int64_t>(table.units.size())) ks.push_back(k);
  }
  const int total = per_k * static_cast<int>(ks.size());
  AutoKResult res;
  double base_ppl = 0;
  int64_t best_within = 0;  // the largest k tried within the budget
  for (size_t i = 0; i < ks.size(); ++i) {
    Condition c;
    c.method = "experts";
    c.strength = static_cast<double>(ks[i]);
    if (ks[i] > 0) {
      ForcingSource src{&table, ks[i], opts.choice};
      auto f = BuildForcing({&src, 1}, opts.forcing, false, space);
      if (!f.ok()) return f.status();
      c.forcing = std::move(*f);
    }
    const int done_before = per_k * static_cast<int>(i);
    auto run = RunConditions(model, {&c, 1}, opts, pool, [&](int done, int) {
      if (progress) progress(done_before + done, total);
    });
    if (!run.ok()) return run.status();
    const FootballPoint& p = res.tried.emplace_back(std::move(run->points[0]));
    if (i == 0) {
      base_ppl = p.ppl;
      continue;
    }
    const double limit = opts.ppl_budget * base_ppl;
    if (p.ppl > limit) {
      res.k = best_within;
      res.reason = absl::StrCat(
          "k=", ks[i], " mentions the concept in ", static_cast<int>(100 * p.mention_rate + 0.5),
          "% of calibration continuations but its perplexity ", absl::SixDigits(p.ppl), " exceeds ",
          opts.ppl_budget, "x the unconditioned ", absl::SixDigits(base_ppl),
          "; using k=", best_within, ", the largest k within the budget (target ",
          static_cast<int>(100 * opts.target_rate + 0.5), "% not reached)");
      return res;
    }
    best_within = ks[i];
    if (p.mention_rate >= opts.target_rate) {
      res.k = ks[i];
      res.met = true;
      res.reason = absl::StrCat(
          "k=", ks[i], " is the smallest tried k whose continuations mention the concept in ",
          static_cast<int>(100 * p.mention_rate + 0.5), "% (target ",
          static_cast<int>(100 * opts.target_rate + 0.5), "%) with perplexity ",
          absl::SixDigits(p.ppl), " (", absl::SixDigits(p.ppl / base_ppl), "x the unconditioned ",
          absl::SixDigits(base_ppl), "; budget ", opts.ppl_budget, "x)");
      return res;
    }
  }
  res.k = best_within;
  res.reason = absl::StrCat("no tried k reaches ", static_cast<int>(100 * opts.target_rate + 0.5),
                            "% concept mentions; using the largest tried within the perplexity "
                            "budget, k=",
                            best_within);
  return res;
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
  const UnitSpace space(model.config());
  auto single_tokens =
      [&](const std::vector<std::string>& words) -> absl::StatusOr<std::vector<int32_t>> {
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
  };
  auto she = single_tokens(SheWords());
  if (!she.ok()) return she.status();
  auto he = single_tokens(HeWords());
  if (!he.ok()) return he.status();

  GenderExperimentResult res;
  res.options = opts;
  res.prompts = std::move(prompts);
  // Conditions: index 0 = no forcing; then (concept, k) for every k > 0.
  std::vector<Forcing> forcings(1);
  std::vector<std::vector<int>> cond_of(tables.size(), std::vector<int>(opts.ks.size(), 0));
  for (size_t c = 0; c < tables.size(); ++c) {
    const ExpertTable& t = *tables[c];
    if (auto st = CheckCompatible(t, model); !st.ok()) return st;
    if (auto st = CheckTableHoldsK(t, opts.ks); !st.ok()) return st;
    res.concepts.push_back(ShortConcept(t.concept));
    for (size_t ki = 0; ki < opts.ks.size(); ++ki) {
      if (opts.ks[ki] == 0) continue;
      ForcingSource src{&t, opts.ks[ki], opts.choice};
      auto f = BuildForcing({&src, 1}, opts.forcing, opts.only_last_token, space);
      if (!f.ok()) return f.status();
      cond_of[c][ki] = static_cast<int>(forcings.size());
      forcings.push_back(std::move(*f));
    }
  }
  const size_t C = forcings.size(), P = res.prompts.size();
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
  const int V = static_cast<int>(model.config().vocab_size);
  const int top_k = opts.sampler_top_k > 0 ? std::min(opts.sampler_top_k, V) : V;

  auto st = ForEachWorker(model, opts.precision, pool, [&](int w, Session& session) {
    std::vector<int32_t> order(V);
    // Condition-major so a worker changes its forcing rarely.
    for (size_t idx = w; idx < total; idx += workers) {
      const size_t c = idx / P, p = idx % P;
      Session::Conditioning cond;
      if (c != 0) cond.forcing = forcings[c];
      if (auto s = session.SetConditioning(std::move(cond)); !s.ok()) return s;
      session.Reset();
      auto logits = session.Forward(ids[p], Session::Logits::kLast);
      if (!logits.ok()) return logits.status();
      const float* z = logits->data();
      const double inv_t = 1.0 / opts.temperature;
      double mx = z[0];
      for (int j = 1; j < V; ++j) mx = std::max<double>(mx, z[j]);
      double sum_all = 0;
      for (int j = 0; j < V; ++j) sum_all += std::exp((z[j] - mx) * inv_t);
      // The sampler's top-k set: the k largest logits, ties broken by lower id (as Sampler).
      for (int j = 0; j < V; ++j) order[j] = j;
      auto better = [z](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); };
      std::nth_element(order.begin(), order.begin() + (top_k - 1), order.end(), better);
      double sum_top = 0;
      for (int j = 0; j < top_k; ++j) sum_top += std::exp((z[order[j]] - mx) * inv_t);
      auto in_topk = [&](int32_t id) {
        for (int j = 0; j < top_k; ++j) {
          if (order[j] == id) return true;
        }
        return false;
      };
      GenderCell& cell = by_cond[idx];
      for (int32_t id : *she) {
        const double e = std::exp((z[id] - mx) * inv_t);
        cell.p_she_full += e / sum_all;
        if (in_topk(id)) cell.p_she += e / sum_top;
      }
      for (int32_t id : *he) {
        const double e = std::exp((z[id] - mx) * inv_t);
        cell.p_he_full += e / sum_all;
        if (in_topk(id)) cell.p_he += e / sum_top;
      }
      if (opts.samples > 0) {
        static const std::vector<std::string> kShe = {"she", "her"}, kHe = {"he", "his"};
        GenerateOptions g;
        g.max_new_tokens = opts.sample_tokens;
        g.sampling.temperature = opts.temperature;
        g.sampling.top_k = opts.sampler_top_k;
        g.stop_at_eos = false;
        int she_n = 0, he_n = 0;
        for (int i = 0; i < opts.samples; ++i) {
          g.sampling.seed = static_cast<uint64_t>(i);
          auto gen = Generate(session, ids[p], g, nullptr);
          if (!gen.ok()) return gen.status();
          std::vector<int32_t> visible;
          for (int32_t t : gen->tokens) {
            if (t != tok.eos_id()) visible.push_back(t);
          }
          const std::string text = tok.Decode(visible);
          she_n += CountsAsFirstWord(text, kShe);
          he_n += CountsAsFirstWord(text, kHe);
        }
        cell.sampled_she = static_cast<double>(she_n) / opts.samples;
        cell.sampled_he = static_cast<double>(he_n) / opts.samples;
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
    for (const char* group : {"all", "female", "male"}) {
      GenderCurve curve;
      curve.concept = res.concepts[c];
      curve.group = group;
      curve.ks = opts.ks;
      for (size_t ki = 0; ki < opts.ks.size(); ++ki) {
        double s = 0, h = 0, sf = 0, hf = 0, ss = 0, sh = 0;
        int n = 0;
        for (size_t p = 0; p < P; ++p) {
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
      res.curves.push_back(std::move(curve));
    }
    // Parity points: the forced concept's pronouns catch up with the other's.
    const bool man = res.concepts[c] == "man";
    res.parity.emplace_back(P);
    for (size_t p = 0; p < P; ++p) {
      std::vector<double> delta;
      for (size_t ki = 0; ki < opts.ks.size(); ++ki) {
        const GenderCell& cell = res.cells[c][ki][p];
        delta.push_back(man ? cell.p_he - cell.p_she : cell.p_she - cell.p_he);
      }
      res.parity[c][p] = ParityPoint(opts.ks, delta);
    }
  }
  return res;
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

json::Value GenderResultToJson(const GenderExperimentResult& r) {
  const auto& o = r.options;
  json::Value root = json::Value::Object();
  root.Set("experiment", json::Value::String("gender"));
  json::Value opt = json::Value::Object();
  opt.Set("ks", IntArray(o.ks));
  opt.Set("temperature", json::Value::Number(o.temperature));
  opt.Set("sampler_top_k", json::Value::Number(o.sampler_top_k));
  opt.Set("forcing", json::Value::String(ForcingValueName(o.forcing)));
  opt.Set("only_last_token", json::Value::Bool(o.only_last_token));
  opt.Set("precision", json::Value::String(o.precision == Precision::kF32 ? "f32" : "int8"));
  opt.Set("samples", json::Value::Number(o.samples));
  opt.Set("sample_tokens", json::Value::Number(o.sample_tokens));
  SetChoiceOptions(o.choice, &opt);
  opt.Set("she_words", StrArray(SheWords()));
  opt.Set("he_words", StrArray(HeWords()));
  root.Set("options", std::move(opt));
  root.Set("concepts", StrArray(r.concepts));
  int n_female = 0, n_male = 0;
  std::vector<std::string> occupations;  // in first-seen order
  std::map<std::string, std::string> group_of;
  for (const auto& p : r.prompts) {
    (p.group == "female" ? n_female : n_male)++;
    if (!group_of.count(p.occupation)) {
      group_of[p.occupation] = p.group;
      occupations.push_back(p.occupation);
    }
  }
  root.Set("num_prompts", json::Value::Number(static_cast<double>(r.prompts.size())));
  root.Set("num_prompts_female", json::Value::Number(n_female));
  root.Set("num_prompts_male", json::Value::Number(n_male));
  json::Value examples = json::Value::Array();
  for (size_t p = 0; p < r.prompts.size() && p < 4; ++p) {
    examples.Push(json::Value::String(r.prompts[p].text));
  }
  root.Set("example_prompts", std::move(examples));
  json::Value curves = json::Value::Array();
  for (const auto& c : r.curves) {
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
    curves.Push(std::move(v));
  }
  root.Set("curves", std::move(curves));
  // Per occupation (mean over templates), per concept and k: [p_she, p_he] (top-k restricted).
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
  root.Set("per_occupation", std::move(per_occ));
  // Per prompt: the prompts, then per concept p(she), p(he) and delta = p(she) - p(he) as
  // (prompts) rows of (ks) values, and each prompt's parity point (null: not reached).
  json::Value prompts = json::Value::Array();
  json::Value groups = json::Value::Array();
  for (const auto& p : r.prompts) {
    prompts.Push(json::Value::String(p.text));
    groups.Push(json::Value::String(p.group));
  }
  json::Value per_prompt = json::Value::Object();
  per_prompt.Set("prompts", std::move(prompts));
  per_prompt.Set("groups", std::move(groups));
  json::Value parity = json::Value::Object();
  for (size_t c = 0; c < r.cells.size(); ++c) {
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
    per_prompt.Set(r.concepts[c], std::move(cv));
    if (c < r.parity.size()) {
      json::Value points = json::Value::Array();
      std::vector<double> reached;
      for (double x : r.parity[c]) {
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
      pv.Set("contexts", json::Value::Number(static_cast<double>(r.parity[c].size())));
      pv.Set("p25", quantile(0.25));
      pv.Set("median", quantile(0.5));
      pv.Set("p75", quantile(0.75));
      parity.Set(r.concepts[c], std::move(pv));
    }
  }
  root.Set("per_prompt", std::move(per_prompt));
  root.Set("parity", std::move(parity));
  return root;
}

}  // namespace selfcond
