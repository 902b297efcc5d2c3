// Steering methods side by side (`selfcond experiment compare`, the C API's
// selfcond_compare_methods, the browser's "compare methods"): expert forcing (the paper), a
// steering vector and a logit bias (experts/steer.h), each over a grid of strengths, on the same
// prompts and seeds, measured the same way: concept rate (the dataset's own log-odds words, so
// any custom concept works), perplexity and Self-BLEU.
#ifndef SELFCOND_ENGINE_COMPARE_H_
#define SELFCOND_ENGINE_COMPARE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/conditions.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "experts/steer.h"
#include "model/model.h"
#include "util/json.h"

namespace selfcond {

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
absl::StatusOr<CompareResult> CompareMethods(const Model& model, const ExpertTable& table,
                                             const Dataset& dataset, const CompareOptions& opts,
                                             ThreadPool* pool,
                                             const ExperimentProgress& progress = nullptr);
// The result file (docs/paper-experiments.md "compare"): options, concept words, one point per
// condition, two example continuations per point.
json::Value CompareResultToJson(const CompareResult& r);

}  // namespace selfcond

#endif  // SELFCOND_ENGINE_COMPARE_H_
