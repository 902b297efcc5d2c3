// Choosing how many experts to force (`generate --experts T:auto`, the C API's
// selfcond_choose_k): the smallest k of a candidate list whose concept rate on calibration
// prompts reaches a target while the perplexity of the continuations (under the unforced model)
// stays within a budget of the unconditioned one.
#ifndef SELFCOND_ENGINE_CHOOSE_K_H_
#define SELFCOND_ENGINE_CHOOSE_K_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/conditions.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "model/model.h"
#include "util/json.h"

namespace selfcond {

struct AutoKOptions : GenerationGrid {
  AutoKOptions() {
    seeds = 3;
    new_tokens = 20;
  }
  std::vector<int64_t> candidates = {5, 10, 20, 30, 50, 80, 120, 200};
  double target_rate = 0.5;  // in (0, 1]
  double ppl_budget = 2.0;   // >= 1
  ForcingValue forcing = ForcingValue::kOnP50;
  UnitChoice choice;
};
struct AutoKResult {
  int64_t k = 0;                      // the chosen k (0: none qualifies, force nothing)
  bool met = false;                   // true if k reaches the target within the budget
  std::string reason;                 // one line for the user
  std::vector<ConditionPoint> tried;  // k = 0 first, then the candidates tried, in order
  std::vector<std::string> words;     // the concept words that counted as mentions
};

// The words that mark the concept in a continuation: the dataset's log-odds words
// (ConceptWords) when a dataset is given, else the table's concept name (lower-cased, without
// ml-selfcond's "-..." suffix). An error when that yields no word.
absl::StatusOr<std::vector<std::string>> ChooseKWords(const ExpertTable& table,
                                                      const Dataset* dataset);

// opts.words empty: ChooseKWords(table, dataset).
absl::StatusOr<AutoKResult> ChooseK(const Model& model, const ExpertTable& table,
                                    const Dataset* dataset, AutoKOptions opts, ThreadPool* pool,
                                    const ExperimentProgress& progress = nullptr);
json::Value AutoKResultToJson(const AutoKResult& r, const AutoKOptions& opts);

}  // namespace selfcond

#endif  // SELFCOND_ENGINE_CHOOSE_K_H_
