// Concept datasets: positive sentences (that express the concept) and negative ones (that do
// not), the input of expert ranking.
//
// Formats read (docs/experts.md has examples):
//   - ml-selfcond / OneSec JSON: {"concept": str, "group": str, "source": str (optional),
//     "sentences": {"positive": [str...], "negative": [str...]}}
//   - plain, one file: one sentence per line prefixed "+ " (positive) or "- " (negative)
//   - plain, two files: one sentence per line, a positives file and a negatives file
//   Plain files: lines are kept byte-exact after the prefix (a leading space matters to GPT-2's
//   tokenizer) except a trailing "\r"; blank (whitespace-only) lines and lines starting with '#'
//   are ignored.
//   - two in-memory string vectors (what the browser passes).
// Every sentence must be non-empty valid UTF-8, and both classes must be non-empty.
#ifndef SELFCOND_EXPERTS_DATASET_H_
#define SELFCOND_EXPERTS_DATASET_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace selfcond {

struct Dataset {
  std::string concept;                // e.g. "football-1_04_00__"
  std::string group;                  // e.g. "sense" (ml-selfcond's concept group); may be empty
  std::string source;                 // e.g. "onesec"; may be empty
  std::vector<std::string> positive;  // (num_positive) sentences
  std::vector<std::string> negative;  // (num_negative) sentences
};

struct DatasetOptions {
  // Per class: keep only the first N sentences (0 = all). ml-selfcond samples N at random
  // instead; taking the first N keeps runs reproducible without a seed.
  int max_sentences = 0;
};

// ml-selfcond JSON from text / from a file.
absl::StatusOr<Dataset> ParseConceptJson(std::string_view text, const DatasetOptions& opts = {});
absl::StatusOr<Dataset> LoadConceptJson(const std::string& path, const DatasetOptions& opts = {});

// One plain file with "+ " / "- " prefixed lines. concept names the dataset.
absl::StatusOr<Dataset> ParseLabeledLines(std::string_view text, const std::string& concept,
                                          const DatasetOptions& opts = {});
// Two plain texts / files, one sentence per line.
absl::StatusOr<Dataset> ParseSentenceLines(std::string_view positive_text,
                                           std::string_view negative_text,
                                           const std::string& concept,
                                           const DatasetOptions& opts = {});
absl::StatusOr<Dataset> LoadSentenceFiles(const std::string& positive_path,
                                          const std::string& negative_path,
                                          const std::string& concept,
                                          const DatasetOptions& opts = {});

// A single file of either kind: JSON if its first non-space byte is '{', else "+ "/"- " lines
// (concept = the file name without directory and extension, unless the JSON names one).
absl::StatusOr<Dataset> LoadDataset(const std::string& path, const DatasetOptions& opts = {});

// ml-selfcond's concept layout (selfcond/data.py concept_list_to_df, compute_responses.py):
// DIR/concept_list.csv with a header naming the columns "group" and "concept" (any order, other
// columns ignored), one row per concept, the dataset at DIR/<group>/<concept>.json. Returns the
// dataset paths in the list's order. Errors name the file and row: a missing column, a row
// without both fields, a group or concept that is not a plain name (empty, "." / "..", a path
// separator: the list cannot point outside DIR), a dataset file that does not exist, a concept
// listed twice, an empty list. Fields may be quoted as pandas writes them ("a,b", "a""b").
absl::StatusOr<std::vector<std::string>> ConceptListFiles(const std::string& dir);
// The same from the list's text (dir only joins the paths; nothing is checked on disk).
absl::StatusOr<std::vector<std::string>> ParseConceptList(std::string_view csv_text,
                                                          const std::string& dir);

// From in-memory sentences (validated like the files).
absl::StatusOr<Dataset> DatasetFromVectors(const std::string& concept,
                                           std::vector<std::string> positive,
                                           std::vector<std::string> negative,
                                           const DatasetOptions& opts = {});

// Checks a dataset: both classes non-empty, every sentence non-empty valid UTF-8. Errors name the
// class and index ("negative sentence 12: invalid UTF-8 at byte 5").
absl::Status ValidateDataset(const Dataset& ds);
// Keeps the first max_sentences sentences of each class (max_sentences <= 0: all).
void KeepFirst(Dataset* ds, int max_sentences);
// ml-selfcond's subset (ConceptDataset._load_data): one numpy RandomState(seed) for the
// dataset; for each class in sorted label order ("negative", then "positive") with more than
// per_class sentences, the sentences at RandomState.choice(n, per_class, replace=False), in that
// order; a class with at most per_class sentences is kept whole (and draws nothing).
// per_class <= 0: all.
void SampleLikeMlSelfcond(Dataset* ds, int per_class, uint32_t seed);

// Byte offset of the first invalid UTF-8 sequence in s, or -1 if s is valid (strict: no
// overlong forms, no surrogates, nothing above U+10FFFF).
int64_t FindInvalidUtf8(std::string_view s);

}  // namespace selfcond

#endif  // SELFCOND_EXPERTS_DATASET_H_
