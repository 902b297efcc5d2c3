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
#include "engine/conditions.h"
#include "experts/expert_table.h"
#include "experts/steer.h"
#include "model/model.h"
#include "util/json.h"

namespace selfcond {

class ThreadPool;

// ---- football -------------------------------------------------------------------------------
struct FootballExperimentOptions : GenerationGrid {
  FootballExperimentOptions() { words = FootballWords(); }
  std::vector<int64_t> ks = {0, 10, 20, 50, 100, 200};  // top-k experts forced (0 = none)
  ForcingValue forcing = ForcingValue::kOnP50;
  bool only_last_token = false;  // false: forced at every position, the prompt included
  UnitChoice choice;             // which k units (controls: random, rank window, layers, metric)
  bool per_layer = false;        // one run per block, forcing k units of that block only
  // One run per linear layer (ml-selfcond's generate_seq.py --per-layer), in its order (layer
  // names sorted as strings), forcing the top k units of that layer only.
  bool per_linear_layer = false;
  int examples_per_k = 4;  // continuations kept as examples per k (first seeds)
};

struct FootballExperimentResult {
  FootballExperimentOptions options;
  std::vector<ConditionPoint> points;    // (ks.size()), or (layers * ks.size()) per layer
  std::vector<ConditionSample> samples;  // (points * prompts.size() * seeds), point-major
};

// The table must be compatible with the model (CheckCompatible) and hold at least max(ks) units.
absl::StatusOr<FootballExperimentResult> RunFootballExperiment(
    const Model& model, const ExpertTable& football, const FootballExperimentOptions& opts,
    ThreadPool* pool, const ExperimentProgress& progress = nullptr);

json::Value FootballResultToJson(const FootballExperimentResult& r);

// ml-selfcond's generated-sentence files, so that its analysis scripts (compute_frequency.py,
// compute_perplexity.py, compute_selfbleu.py, all_plots.py) run on selfcond's continuations:
// one CSV per prompt named as scripts/generate_batch.py names them,
// "gen_sentences_<concept>_<prompt with ' ' (and '/') as '_'>.csv", with the columns
// scripts/generate_seq.py writes through pandas (an unnamed index column first, then
// forcing_value, num_units, top_n, seed, sentence, mean_metric, forced_layer, perplexity,
// context, concept). `sentence` is the prompt followed by the continuation (ml-selfcond decodes
// the whole sequence; its scripts strip `context` from the front). Differences, by design:
// `perplexity` is the unconditioned model's (the scorer's) perplexity of the sentence, the
// number compute_perplexity.py recomputes, where generate_seq.py records the forced model's;
// `forced_layer` is empty when every layer is forced, the linear layer's name with
// --per-linear-layer (as ml-selfcond's --per-layer writes it) and the block number with
// --per-layer; top_n is 1 for the top units,
// 1 + rank offset / k for a rank window and 0 for random units, as generate_seq.py's --top-n.
struct NamedText {
  std::string name;  // file name, no directory
  std::string text;
};
std::vector<NamedText> GenSentencesCsvs(const FootballExperimentResult& r,
                                        const ExpertTable& table);
// A float64 as Python's repr ("0.0", "12.5", "1e-05"), as pandas writes it (CSV fields:
// CsvField, experts/expert_table.h).
std::string PythonFloat(double v);

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
  // Generated continuations (0 = none): `generate` per prompt and condition (seeds 0..N-1) of
  // `new_tokens` tokens, sampled as ml-selfcond's generate_batch.py does (temperature and top-k
  // as above, no nucleus), scored as in the football experiment: perplexity under the
  // unconditioned model and Self-BLEU per concept and k, from which the perplexity and Self-BLEU
  // at each context's parity point are interpolated (ml-selfcond's all_plots.py).
  int generate = 0;
  int new_tokens = 15;
  int bleu_ngram = 3;
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
  // ml-selfcond's parity (all_plots.py compute_diff): only the contexts biased toward the other
  // gender without forcing (woman: p(she) < p(he) at k = 0; man: p(he) < p(she)); the root of
  // the first sign change of p(she) - p(he) over the grid, linear between the two grid points
  // around it (MlSelfcondRoot). biased[c][pi]; parity_ml[c][pi] NaN when not biased or no root.
  std::vector<std::vector<char>> biased;
  std::vector<std::vector<double>> parity_ml;
  // With options.generate > 0: the generated conditions (index 0: no forcing, then every
  // concept's k > 0) and their continuations; gen_cond[c][ki] indexes gen_points.
  std::vector<ConditionPoint> gen_points;
  std::vector<ConditionSample> gen_samples;
  std::vector<std::vector<int>> gen_cond;
};

// The parity point of one prompt's curve: smallest k where delta(k) >= 0, interpolated
// linearly between the grid points (ks ascending) around the first crossing; NaN if none.
double ParityPoint(absl::Span<const int64_t> ks, absl::Span<const double> delta);
// ml-selfcond's find_crossing (scripts/all_plots.py): NaN unless y has both a positive and a
// negative value; else the zero of the line through the two grid points around the first
// change of sign(y) (a change to or from an exact 0 counts, as np.diff(np.sign(y)) does).
double MlSelfcondRoot(absl::Span<const int64_t> ks, absl::Span<const double> y);
// np.interp: linear in xp (ascending), clamped to fp's ends outside.
double Interp(double x, absl::Span<const double> xp, absl::Span<const double> fp);

absl::StatusOr<GenderExperimentResult> RunGenderExperiment(
    const Model& model, absl::Span<const ExpertTable* const> tables,
    std::vector<OccupationPrompt> prompts, const GenderExperimentOptions& opts, ThreadPool* pool,
    const ExperimentProgress& progress = nullptr);

// Curves plus per-occupation means over the templates (not every prompt, to stay small).
json::Value GenderResultToJson(const GenderExperimentResult& r);

// The gender run's continuations (options.generate > 0): one file per concept and prompt, the
// unforced continuations (num_units 0) in every concept's files, as generate_seq.py writes them.
std::vector<NamedText> GenSentencesCsvs(const GenderExperimentResult& r,
                                        absl::Span<const ExpertTable* const> tables);

}  // namespace selfcond

#endif  // SELFCOND_EXPERTS_PAPER_EXPERIMENTS_H_
