// Conditioned generation measured: one grid of prompts x seeds generated under several
// conditions (expert forcing, a steering vector, a logit bias, or none) and each continuation
// scored for the concept (word mentions), fluency (perplexity under the unconditioned model) and
// diversity (Self-BLEU). Compare methods and choose-k (engine/compare.h, engine/choose_k.h) and
// the paper's football experiment (tools/paper_experiments.h) all run through RunConditions.
#ifndef SELFCOND_ENGINE_CONDITIONS_H_
#define SELFCOND_ENGINE_CONDITIONS_H_

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "experts/expert_table.h"
#include "model/model.h"
#include "util/json.h"

namespace selfcond {

class ThreadPool;

// ---- word matching --------------------------------------------------------------------------
// The football words of the paper's experiment: football soccer game team player goal ball league
// match sport coach score.
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
  std::string site;                 // experts forced in this one linear layer only ("" = any)
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
  // rate. The football experiment uses FootballWords(); compare and choose-k use the dataset's
  // log-odds words (ConceptWords).
  std::vector<std::string> words;
  // The perplexity scorer (ml-selfcond's compute_perplexity.py): prompt + continuation, scored
  // whole by this model (null: the generating model, unforced). Any converted model works: the
  // text is re-tokenized by the scorer's tokenizer.
  const Model* scorer = nullptr;
  int bleu_ngram = 3;  // Self-BLEU's n (ml-selfcond's compute_selfbleu.py default)
};

struct ConditionSample {  // one continuation
  int condition = 0;      // index into the run's conditions
  int64_t k = 0;          // experts: k (0 for other methods)
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

struct ConditionPoint {  // one condition's summary
  std::string method = "experts";
  double strength = 0;
  int layer = -1;
  std::string site;  // the linear layer's name when one only is forced ("" = any)
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
  std::vector<ConditionPoint> points;    // (conditions)
  std::vector<ConditionSample> samples;  // (conditions * prompts * seeds), condition-major
};

// progress(done, total) is called after each sample, never concurrently.
using ExperimentProgress = std::function<void(int done, int total)>;

// Calls an ExperimentProgress from worker threads one at a time, counting the samples done.
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

// ---- helpers of the operations and experiments built on RunConditions --------------------------
// An error unless 0 <= k <= the table's size for every k.
absl::Status CheckTableHoldsK(const ExpertTable& t, absl::Span<const int64_t> ks);
// "woman-1_18_00__" -> "woman" (ml-selfcond's concept_from_df).
std::string ShortConcept(const std::string& concept);
// A condition forcing the table's first k units of `choice` (k = 0: a "none"-like experts point).
absl::StatusOr<Condition> ExpertsCondition(const Model& model, const ExpertTable& table, int64_t k,
                                           const UnitChoice& choice, ForcingValue value,
                                           bool only_last_token = false);

// JSON pieces every experiment's result file shares (docs/paper-experiments.md).
json::Value NumArray(absl::Span<const double> v);
json::Value IntArray(absl::Span<const int64_t> v);
json::Value StrArray(absl::Span<const std::string> v);
// The unit-choice options as the CLI names them (--metric, --rank-offset, --random-units,
// --layers), set on `opt`.
void SetChoiceOptions(const UnitChoice& c, json::Value* opt);
// The generation settings every experiment that generates records, set on `opt`.
void SetGridOptions(const GenerationGrid& o, json::Value* opt);
// The measurements every condition has (concept rate, fluency, diversity).
json::Value PointToJson(const ConditionPoint& p);

}  // namespace selfcond

#endif  // SELFCOND_ENGINE_CONDITIONS_H_
