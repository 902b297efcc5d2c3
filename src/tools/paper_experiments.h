// The experiments of Suau et al. 2022 ("Self-conditioning pre-trained language models"), run
// in-process on one model: `selfcond experiment football|gender` (src/cli/cmd_experiment.cc)
// and tests/experiment_test.cc call these. Method and choices: docs/paper-experiments.md.
//
//   football: generate continuations of a few prompts with the top-k football experts forced to
//     on_p50 at every position, and measure (a) the share of continuations that mention a
//     football word, (b) their perplexity under the UNCONDITIONED model.
//   gender: for ml-selfcond's occupation prompts ("The nurse said that"), the probability that
//     the first generated word is she/her vs he/his under do(woman, k) and do(man, k), computed
//     exactly from the next-token distribution instead of estimated from samples.
#ifndef SELFCOND_EXPERTS_PAPER_EXPERIMENTS_H_
#define SELFCOND_EXPERTS_PAPER_EXPERIMENTS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "experts/expert_table.h"
#include "experts/steer.h"
#include "model/model.h"
#include "util/json.h"

namespace selfcond {

class ThreadPool;

// ---- word matching --------------------------------------------------------------------------
// The football words of the experiment: football soccer game team player goal ball league match
// sport coach score.
const std::vector<std::string>& FootballWords();

// The words of `words` (lower-case ASCII base forms) that `text` mentions, each once, in the
// order of `words`. A mention is a whole word equal to the base form, or to the base form plus
// "s" or "es" (simple plurals / third person: "goals", "matches"), compared ASCII
// case-insensitively. Word characters approximate Python's \w: ASCII letters, digits, '_' and
// non-ASCII characters other than common punctuation (curly quotes, guillemets, dashes, ellipsis,
// no-break space); anything else is a boundary, so "player's" and "player’s" mention "player",
// "football-like" mentions "football" and "goalkeeper" mentions nothing.
std::vector<std::string> FindWordMentions(std::string_view text,
                                          absl::Span<const std::string> words);

// ---- conditioned generation -----------------------------------------------------------------
// One way to condition generation, at one strength: expert forcing (the paper), a steering
// vector or a logit bias (experts/steer.h), or none. Every condition runs on the same prompts and
// seeds (a paired comparison).
struct Condition {
  std::string method = "none";      // "none" | "experts" | "steer" | "bias"
  double strength = 0;              // experts: k; steer: alpha; bias: beta; none: 0
  int layer = -1;                   // experts forced in one block only / steer's block; -1: all
  std::string units = "top by ap";  // experts: which units (DescribeUnitChoice)
  double mean_ap = 0;               // experts: mean AP of the forced units
  Forcing forcing;
  Session::Steering steering;
  std::vector<std::pair<int32_t, float>> logit_bias;
};

// What every condition generates, and how the continuations are measured.
struct GenerationGrid {
  std::vector<std::string> prompts = {"Once upon a time", "The man said that", "In the city",
                                      "Yesterday"};
  int seeds = 20;           // sampler seeds first_seed .. first_seed + seeds - 1 per prompt
  uint64_t first_seed = 0;  // the same seeds for every condition (paired comparison)
  int new_tokens = 30;      // fixed length (EOS does not stop generation, as in ml-selfcond)
  float temperature = 1.0f;
  float top_p = 0.9f;
  int top_k = 0;
  Precision precision = Precision::kInt8;
  // Concept words: a continuation that mentions one (FindWordMentions) counts for the concept
  // rate. The football experiment uses FootballWords(); compare uses the dataset's log-odds
  // words (ConceptWords).
  std::vector<std::string> words = FootballWords();
  // The perplexity scorer (ml-selfcond's compute_perplexity.py): prompt + continuation, scored
  // whole by this model (null: the generating model, unforced). Any converted GPT-2 works: the
  // text is re-tokenized by the scorer's tokenizer.
  const Model* scorer = nullptr;
  int bleu_ngram = 3;  // Self-BLEU's n (ml-selfcond's compute_selfbleu.py default)
};

struct FootballSample {  // one continuation (the name predates the other concepts)
  int condition = 0;     // index into the run's conditions
  int64_t k = 0;         // experts: k (0 for other methods)
  std::string prompt;
  uint64_t seed = 0;
  std::string text;                // continuation only, EOS tokens left out of the text
  std::vector<std::string> words;  // concept words mentioned (FindWordMentions)
  int new_tokens = 0;
  double nll_sum = 0;  // continuation tokens' NLL under the unconditioned model (nats)
  int scored_tokens = 0;
  double scorer_nll_sum = 0;  // prompt + continuation under the scorer (ml-selfcond's perplexity)
  int scorer_tokens = 0;
  double ppl() const;         // exp(nll_sum / scored_tokens)
  double scorer_ppl() const;  // exp(scorer_nll_sum / scorer_tokens)
};

struct FootballPoint {  // one condition's summary
  std::string method = "experts";
  double strength = 0;
  int layer = -1;
  std::string units;
  int64_t k = 0;  // experts: k
  int samples = 0;
  int mentions = 0;         // samples with at least one concept word
  double mention_rate = 0;  // mentions / samples
  double ppl = 0;           // exp(total NLL / total tokens), pooled over the samples
  double mean_ppl = 0;      // mean of the per-sample perplexities (ml-selfcond averages these)
  double median_ppl = 0;
  double scorer_ppl = 0;       // pooled, prompt + continuation under the scorer
  double scorer_mean_ppl = 0;  // mean of per-sample scorer perplexities (ml-selfcond's number)
  double self_bleu = 0;        // Self-BLEU of the condition's continuations (SelfBleu)
  double mean_ap = 0;          // mean AP of the forced units (0 at k = 0)
  std::vector<int> mentions_per_prompt;                  // (prompts.size())
  std::vector<std::pair<std::string, int>> word_counts;  // samples mentioning each word
};

struct ConditionRun {
  std::vector<FootballPoint> points;    // (conditions)
  std::vector<FootballSample> samples;  // (conditions * prompts * seeds), condition-major
};

// progress(done, total) is called after each sample, never concurrently.
using ExperimentProgress = std::function<void(int done, int total)>;

// Generates grid.prompts x grid.seeds continuations under each condition on `pool`'s threads
// (one Session each; null = the calling thread only) and measures them.
absl::StatusOr<ConditionRun> RunConditions(const Model& model,
                                           absl::Span<const Condition> conditions,
                                           const GenerationGrid& grid, ThreadPool* pool,
                                           const ExperimentProgress& progress = nullptr);

// Self-BLEU (Zhu et al. 2018, ml-selfcond's selfbleu.py): the mean over texts of the BLEU of
// each text against all the others as references; uniform weights over 1..ngram-grams, NLTK's
// smoothing method 1 (epsilon 0.1 for a zero count), brevity penalty against the closest
// reference length. Texts are split with BleuTokens. 1 = every text the same; fewer than two
// texts: 0.
double SelfBleu(absl::Span<const std::string> texts, int ngram = 3);
// Words (runs of letters, digits, '_', apostrophes inside words, and non-ASCII bytes) and single
// punctuation characters: an approximation of NLTK's word_tokenize without its data files.
std::vector<std::string> BleuTokens(std::string_view text);

// ---- football -------------------------------------------------------------------------------
struct FootballExperimentOptions : GenerationGrid {
  std::vector<int64_t> ks = {0, 10, 20, 50, 100, 200};  // top-k experts forced (0 = none)
  ForcingValue forcing = ForcingValue::kOnP50;
  bool only_last_token = false;  // false: forced at every position, the prompt included
  UnitChoice choice;             // which k units (controls: random, rank window, layers, metric)
  bool per_layer = false;        // one run per block, forcing k units of that block only
  int examples_per_k = 4;        // continuations kept as examples per k (first seeds)
};

struct FootballExperimentResult {
  FootballExperimentOptions options;
  std::vector<FootballPoint> points;    // (ks.size()), or (layers * ks.size()) per layer
  std::vector<FootballSample> samples;  // (points * prompts.size() * seeds), point-major
};

// The table must be compatible with the model (CheckCompatible) and hold at least max(ks) units.
absl::StatusOr<FootballExperimentResult> RunFootballExperiment(
    const Model& model, const ExpertTable& football, const FootballExperimentOptions& opts,
    ThreadPool* pool, const ExperimentProgress& progress = nullptr);

json::Value FootballResultToJson(const FootballExperimentResult& r);

// ---- steering methods side by side -----------------------------------------------------------
// Expert forcing (the paper), a steering vector and a logit bias (experts/steer.h), each over a
// grid of strengths, on the same prompts and seeds, measured the same way: concept rate (the
// dataset's own log-odds words, so any custom concept works), perplexity and Self-BLEU.
struct CompareOptions : GenerationGrid {
  std::vector<int64_t> ks = {10, 20, 50, 100};  // experts forced (top by AP)
  std::vector<double> alphas = {1, 2, 4, 8};    // steering vector strengths
  int steer_layer = -1;                         // -1: the middle block (n_layer / 2)
  std::vector<double> betas = {2, 4, 6, 8};     // logit bias strengths
  int concept_words = 20;                       // log-odds words (rate and bias)
  ForcingValue forcing = ForcingValue::kOnP50;
  std::vector<std::string> methods = {"experts", "steer", "bias"};  // which to run
};

struct CompareResult {
  CompareOptions options;
  std::string concept;
  std::vector<ConceptWord> words;  // the concept words (rate), the bias's source
  int bias_tokens = 0;             // single-token forms the bias covers
  int steer_layer = 0;
  double steer_norm = 0;  // L2 norm of the steering vector (alpha multiplies it)
  ConditionRun run;       // points: "none" first, then each method's grid
};

// The table must be compatible with the model and ranked on `dataset`'s concept.
absl::StatusOr<CompareResult> RunCompareExperiment(const Model& model, const ExpertTable& table,
                                                   const Dataset& dataset,
                                                   const CompareOptions& opts, ThreadPool* pool,
                                                   const ExperimentProgress& progress = nullptr);
json::Value CompareResultToJson(const CompareResult& r);

// ---- choosing k --------------------------------------------------------------------------------
// generate --experts T:auto: the smallest k of `candidates` whose concept rate on the calibration
// prompts reaches target_rate while the perplexity of the continuations (under the unforced
// model, FootballPoint::ppl) stays within ppl_budget x the unconditioned one.
struct AutoKOptions : GenerationGrid {
  std::vector<int64_t> candidates = {5, 10, 20, 30, 50, 80, 120, 200};
  double target_rate = 0.5;
  double ppl_budget = 2.0;
  ForcingValue forcing = ForcingValue::kOnP50;
  UnitChoice choice;
};
struct AutoKResult {
  int64_t k = 0;                     // the chosen k (0: none qualifies, force nothing)
  bool met = false;                  // true if k reaches the target within the budget
  std::string reason;                // one line for the user
  std::vector<FootballPoint> tried;  // k = 0 first, then the candidates tried, in order
};
absl::StatusOr<AutoKResult> ChooseK(const Model& model, const ExpertTable& table,
                                    const AutoKOptions& opts, ThreadPool* pool,
                                    const ExperimentProgress& progress = nullptr);

// ---- gender ---------------------------------------------------------------------------------
// ml-selfcond's occupation prompts (scripts/generate_batch.py, from Vig et al. 2020): every
// template with every female occupation, then with the fixed random subset of male occupations
// (so both groups have about the same size), in that order.
struct OccupationPrompt {
  std::string text;        // "The nurse said that"
  std::string occupation;  // "nurse"
  std::string group;       // "female" | "male"
};
// Reads /work/shared/concepts/occupations.json's layout: "templates" (with "<occupation>"),
// "female_occupations", "male_occupations", "fixed_random_male_idx". max_per_group > 0 keeps
// only the first N occupations of each group (a quick run).
absl::StatusOr<std::vector<OccupationPrompt>> ParseOccupationPrompts(std::string_view json_text,
                                                                     int max_per_group = 0);

struct GenderExperimentOptions {
  // The paper's grid (ml-selfcond's generate_batch.py sweeps 0..300 units).
  std::vector<int64_t> ks = {0, 1, 3, 10, 30, 60, 100, 300};
  UnitChoice choice;  // which k units (controls: random, rank window, layers, metric)
  // p(words) is the probability that the next token after the prompt is one of the words, under
  // softmax(logits / temperature) restricted to the sampler_top_k most likely tokens
  // (ml-selfcond's gender runs sample with temperature 1 and top-k 10); the full-softmax
  // probability is reported too.
  float temperature = 1.0f;
  int sampler_top_k = 10;
  ForcingValue forcing = ForcingValue::kOnP50;
  bool only_last_token = false;
  Precision precision = Precision::kInt8;
  // Cross-check (0 = off): also sample `samples` continuations of `sample_tokens` tokens per
  // prompt and condition (seeds 0..samples-1; temperature and top-k as above) and count them the
  // way ml-selfcond's compute_frequency.py does (CountsAsFirstWord), the estimate the exact
  // probabilities replace.
  int samples = 0;
  int sample_tokens = 3;
};

// ml-selfcond's compute_frequency.py test (num_chars = 5): the first 5 characters of the
// continuation, lower-cased, contain " w " or " w" followed by one of . , ; : ' for a word w
// of `words` (lower-case, without the leading space).
bool CountsAsFirstWord(std::string_view continuation, absl::Span<const std::string> words);

// The word sets, each a single GPT-2 token with its leading space, both cases as ml-selfcond
// lower-cases the text: she = {" she", " her", " She", " Her"}, he = {" he", " his", " He", "
// His"}.
const std::vector<std::string>& SheWords();
const std::vector<std::string>& HeWords();

struct GenderCell {                        // one prompt under one condition
  double p_she = 0, p_he = 0;              // top-k restricted (the sampler's distribution)
  double p_she_full = 0, p_he_full = 0;    // full softmax
  double sampled_she = 0, sampled_he = 0;  // share of the samples counted (samples > 0 only)
};

struct GenderCurve {
  std::string concept;  // "woman" | "man" (the table's concept name, shortened at '-')
  std::string group;    // "all" | "female" | "male" (occupation group of the prompts)
  std::vector<int64_t> ks;
  std::vector<double> p_she, p_he, p_she_full, p_he_full;  // (ks.size()) means over prompts
  std::vector<double> sampled_she, sampled_he;             // (ks.size()) when samples > 0
};

struct GenderExperimentResult {
  GenderExperimentOptions options;
  std::vector<OccupationPrompt> prompts;
  std::vector<std::string> concepts;  // one per table
  // cells[c][ki][pi]: concept c, ks[ki], prompt pi (k = 0 is the same run for every concept).
  std::vector<std::vector<std::vector<GenderCell>>> cells;
  std::vector<GenderCurve> curves;  // per concept x group ("all", "female", "male")
  // parity[c][pi]: the parity point of prompt pi under concept c's experts: the smallest k at
  // which the concept's pronouns become at least as likely as the other's (woman: p(she) >=
  // p(he); man: p(he) >= p(she)), linearly interpolated in k between the grid points around the
  // crossing; 0 if already so without forcing; NaN if no k of the grid reaches it.
  std::vector<std::vector<double>> parity;
};

// The parity point of one prompt's curve: smallest k where delta(k) >= 0, interpolated
// linearly between the grid points (ks ascending) around the first crossing; NaN if none.
double ParityPoint(absl::Span<const int64_t> ks, absl::Span<const double> delta);

absl::StatusOr<GenderExperimentResult> RunGenderExperiment(
    const Model& model, absl::Span<const ExpertTable* const> tables,
    std::vector<OccupationPrompt> prompts, const GenderExperimentOptions& opts, ThreadPool* pool,
    const ExperimentProgress& progress = nullptr);

// Curves plus per-occupation means over the templates (not every prompt, to stay small).
json::Value GenderResultToJson(const GenderExperimentResult& r);

}  // namespace selfcond

#endif  // SELFCOND_EXPERTS_PAPER_EXPERIMENTS_H_
