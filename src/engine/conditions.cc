#include "engine/conditions.h"

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

}  // namespace

absl::StatusOr<Condition> ExpertsCondition(const Model& model, const ExpertTable& table, int64_t k,
                                           const UnitChoice& choice, ForcingValue value,
                                           bool only_last_token) {
  Condition c;
  c.method = "experts";
  c.strength = static_cast<double>(k);
  c.units = DescribeUnitChoice(choice, k);
  if (k == 0) return c;
  ForcingSource src{&table, k, choice};
  auto f = BuildForcing({&src, 1}, value, only_last_token, UnitSpace(model.config()));
  if (!f.ok()) return f.status();
  c.forcing = std::move(*f);
  return c;
}

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
json::Value PointToJson(const ConditionPoint& p) {
  json::Value v = json::Value::Object();
  v.Set("method", json::Value::String(p.method));
  v.Set("strength", json::Value::Number(p.strength));
  v.Set("layer", p.layer >= 0 ? json::Value::Number(p.layer) : json::Value::Null());
  if (!p.site.empty()) v.Set("site", json::Value::String(p.site));
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

double ConditionSample::ppl() const {
  return scored_tokens > 0 ? std::exp(nll_sum / scored_tokens) : 0.0;
}

double ConditionSample::scorer_ppl() const {
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

// What RunConditions shares between its workers: the prompts' tokens and the sampler.
struct GridRun {
  const Model& model;
  const Model& scorer;
  const GenerationGrid& grid;
  absl::Span<const Condition> conditions;
  SamplingOptions sampling;
  std::vector<std::vector<int32_t>> prompt_ids;
};

absl::StatusOr<GridRun> PrepareGrid(const Model& model, absl::Span<const Condition> conditions,
                                    const GenerationGrid& grid) {
  if (grid.prompts.empty() || grid.seeds <= 0 || grid.new_tokens <= 0 || conditions.empty()) {
    return absl::InvalidArgumentError("need at least one prompt, seed, condition and new token");
  }
  if (grid.bleu_ngram < 1) return absl::InvalidArgumentError("Self-BLEU n-gram must be >= 1");
  GridRun run{model, grid.scorer ? *grid.scorer : model, grid, conditions, {}, {}};
  run.sampling.temperature = grid.temperature;
  run.sampling.top_p = grid.top_p;
  run.sampling.top_k = grid.top_k;
  if (auto st = ValidateSampling(run.sampling); !st.ok()) return st;
  if (run.scorer.config().vocab_size == 0) {
    return absl::InvalidArgumentError("scorer has no vocab");
  }
  for (const auto& p : grid.prompts) {
    run.prompt_ids.push_back(PromptTokens(model.tokenizer(), p));
    if (run.prompt_ids.back().empty()) return absl::InvalidArgumentError("empty prompt");
    if (run.prompt_ids.back().size() + grid.new_tokens > model.config().n_ctx) {
      return absl::OutOfRangeError(absl::StrCat("prompt '", p, "' plus ", grid.new_tokens,
                                                " new tokens exceeds the context"));
    }
  }
  return run;
}

// One sample: generate under its condition on `session`, then score the continuation with the
// unconditioned model (the same session, interventions cleared) and the scorer.
absl::Status RunSample(const GridRun& run, size_t idx, Session& session, Session& score_session,
                       ConditionSample& out) {
  const GenerationGrid& grid = run.grid;
  const Tokenizer& tok = run.model.tokenizer();
  const size_t P = grid.prompts.size(), S = static_cast<size_t>(grid.seeds);
  const size_t ci = idx / (P * S), pi = (idx / S) % P, si = idx % S;
  const Condition& cond = run.conditions[ci];
  const std::vector<int32_t>& prompt = run.prompt_ids[pi];
  out.condition = static_cast<int>(ci);
  out.k = cond.method == "experts" ? static_cast<int64_t>(cond.strength) : 0;
  out.prompt = grid.prompts[pi];
  out.seed = grid.first_seed + si;
  // 1. Generate under the condition.
  if (auto s = session.SetConditioning({cond.forcing, cond.steering, cond.logit_bias}); !s.ok()) {
    return s;
  }
  GenerateOptions g;
  g.max_new_tokens = grid.new_tokens;
  g.sampling = run.sampling;
  g.sampling.seed = out.seed;
  g.stop_at_eos = false;  // fixed length, as ml-selfcond
  auto gen = Generate(session, prompt, g, nullptr);
  if (!gen.ok()) return gen.status();
  (void)session.SetConditioning({});
  out.new_tokens = static_cast<int>(gen->tokens.size());
  std::vector<int32_t> visible;
  for (int32_t t : gen->tokens) {
    if (!tok.is_eos(t)) visible.push_back(t);
  }
  out.text = SanitizeUtf8(tok.Decode(visible));
  out.words = FindWordMentions(out.text, grid.words);
  // 2. Score prompt + continuation with the unconditioned model; only the continuation's tokens
  // count.
  session.Reset();
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), gen->tokens.begin(), gen->tokens.end());
  auto logits = session.Forward(all, Session::Logits::kAll);
  if (!logits.ok()) return logits.status();
  out.nll_sum = SumNll(logits->data(), static_cast<int>(run.model.config().vocab_size), all,
                       prompt.size() - 1, &out.scored_tokens);
  // 3. The scorer's perplexity of the whole text (ml-selfcond's compute_perplexity.py).
  std::vector<int32_t> scored =
      ScorerTokens(run.scorer.tokenizer(), out.prompt, tok.Decode(gen->tokens));
  if (scored.size() > run.scorer.config().n_ctx) scored.resize(run.scorer.config().n_ctx);
  score_session.Reset();
  auto slogits = score_session.Forward(scored, Session::Logits::kAll);
  if (!slogits.ok()) return slogits.status();
  out.scorer_nll_sum = SumNll(slogits->data(), static_cast<int>(run.scorer.config().vocab_size),
                              scored, 0, &out.scorer_tokens);
  return absl::OkStatus();
}

// A condition's point from its samples (prompt-major, seeds inner).
ConditionPoint SummarizeCondition(const Condition& cond, absl::Span<const ConditionSample> samples,
                                  const GenerationGrid& grid) {
  const size_t S = static_cast<size_t>(grid.seeds);
  ConditionPoint pt;
  pt.method = cond.method;
  pt.strength = cond.strength;
  pt.layer = cond.layer;
  pt.site = cond.site;
  pt.units = cond.method == "experts" ? cond.units : "";
  pt.k = cond.method == "experts" ? static_cast<int64_t>(cond.strength) : 0;
  pt.mean_ap = cond.mean_ap;
  pt.mentions_per_prompt.assign(grid.prompts.size(), 0);
  std::map<std::string, int> counts;
  double nll = 0, ppl_sum = 0, snll = 0, sppl_sum = 0;
  int64_t tokens = 0, stokens = 0;
  std::vector<double> ppls;
  std::vector<std::string> texts;
  for (size_t j = 0; j < samples.size(); ++j) {
    const ConditionSample& s = samples[j];
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
  return pt;
}

}  // namespace

absl::StatusOr<ConditionRun> RunConditions(const Model& model,
                                           absl::Span<const Condition> conditions,
                                           const GenerationGrid& grid, ThreadPool* pool,
                                           const ExperimentProgress& progress) {
  auto run = PrepareGrid(model, conditions, grid);
  if (!run.ok()) return run.status();
  const size_t per_condition = grid.prompts.size() * static_cast<size_t>(grid.seeds);
  const size_t total = conditions.size() * per_condition;
  ConditionRun res;
  res.samples.resize(total);
  ProgressCounter counter(progress, static_cast<int>(total));
  const int workers = NumWorkers(pool);
  // The scorer's sessions, one per worker (a separate model needs its own; the same model is
  // scored by the generating session with its interventions cleared).
  std::vector<std::unique_ptr<Session>> scorer_sessions(workers);
  if (grid.scorer != nullptr) {
    for (auto& ss : scorer_sessions) {
      SessionOptions so;
      so.precision = grid.precision;
      auto created = Session::Create(*grid.scorer, so);
      if (!created.ok()) return created.status();
      ss = std::move(*created);
    }
  }
  auto st = ForEachWorker(model, grid.precision, pool, [&](int w, Session& session) {
    Session& score_session = grid.scorer ? *scorer_sessions[w] : session;
    for (size_t idx = w; idx < total; idx += workers) {
      if (auto s = RunSample(*run, idx, session, score_session, res.samples[idx]); !s.ok()) {
        return s;
      }
      counter.Tick();
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  for (size_t ci = 0; ci < conditions.size(); ++ci) {
    res.points.push_back(SummarizeCondition(
        conditions[ci], absl::MakeConstSpan(res.samples).subspan(ci * per_condition, per_condition),
        grid));
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

}  // namespace selfcond
