// Stored pooled responses (issue 13): every distinct sentence's max-pooled unit responses,
// computed once and ranked against any number of concepts without running the model again.
//
// A concept's expertise only needs, per sentence, the pooled response of every unit (experts/
// rank.h) and the sentence's label in that concept. Responses do not depend on the concept, so a
// library of concepts over overlapping sentence pools computes each sentence once: in memory
// (RankConcepts, `rank --concept a --concept b`) or through a file (`selfcond responses`, then
// `rank --responses R`). Tables ranked this way are identical to RankConcept's (a test checks).
//
// File format (docs/responses-format.md), little-endian, memory-mapped when read:
//   header (128 bytes), then per sentence a u32 byte length, then per sentence a u8
//   "truncated" flag, then the sentences' UTF-8 bytes concatenated, zero padding to a multiple
//   of 64, then (num_sentences, num_units) float32 rows.
#ifndef SELFCOND_EXPERTS_RESPONSES_H_
#define SELFCOND_EXPERTS_RESPONSES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "experts/rank.h"
#include "model/model.h"
#include "util/file_util.h"

namespace selfcond {

class ResponseStore {
 public:
  // Runs every distinct sentence of `sentences` (duplicates are computed once; order of first
  // appearance kept) through the model, as a ranking does (RankOptions: precision, pool or
  // threads, progress).
  static absl::StatusOr<ResponseStore> Compute(const Model& model,
                                               const std::vector<std::string>& sentences,
                                               const RankOptions& opts);
  // A stored file, mapped and validated (sizes, UTF-8, distinct sentences).
  static absl::StatusOr<ResponseStore> Load(const std::string& path);
  // The same from a file's bytes in memory (the fuzzer's entry point); name is for errors.
  static absl::StatusOr<ResponseStore> FromBuffer(HeapBuffer bytes, const std::string& name);
  // Written atomically (temporary file, fsync, rename).
  absl::Status Save(const std::string& path) const;

  ResponseStore(ResponseStore&&) = default;
  ResponseStore& operator=(ResponseStore&&) = default;

  const std::string& model_hash() const { return model_hash_; }  // 64 hex
  Precision precision() const { return precision_; }
  int64_t num_sentences() const { return static_cast<int64_t>(sentences_.size()); }
  int64_t num_units() const { return num_units_; }
  std::string_view sentence(int64_t i) const { return sentences_[i]; }
  bool truncated(int64_t i) const { return truncated_[i] != 0; }
  const float* row(int64_t i) const { return rows_ + static_cast<size_t>(i) * num_units_; }
  int64_t Find(std::string_view sentence) const;  // row index, or -1

  // The concept's table from the stored rows of its sentences (positives then negatives, in
  // the dataset's order, as RankConcept does). The store must come from this model (same hash
  // and precision as opts.precision) and hold every sentence of the dataset; errors say which.
  absl::StatusOr<ExpertTable> Rank(const Model& model, const Dataset& dataset,
                                   const RankOptions& opts) const;

 private:
  ResponseStore() = default;
  static absl::StatusOr<ResponseStore> FromFile(MappedFile file, const std::string& name);
  void BuildIndex();

  std::string model_hash_;
  Precision precision_ = Precision::kInt8;
  int64_t num_units_ = 0;
  std::vector<std::string_view> sentences_;  // (num_sentences) into text_ or the file
  std::vector<uint8_t> truncated_;           // (num_sentences)
  const float* rows_ = nullptr;              // (num_sentences, num_units)
  // Storage: computed stores own their text and rows; loaded ones map the file.
  std::unique_ptr<std::string> text_;
  std::unique_ptr<std::vector<float>> owned_rows_;
  std::unique_ptr<MappedFile> file_;
  std::unique_ptr<std::unordered_map<std::string_view, int64_t>> index_;
};

// Ranks several concepts, running each distinct sentence of all of them once: the union of
// their sentences through ResponseStore::Compute, then ResponseStore::Rank per dataset. In
// ml-selfcond mode (opts.compat) each concept is ranked on its own (RankConcept).
absl::StatusOr<std::vector<ExpertTable>> RankConcepts(const Model& model,
                                                      const std::vector<Dataset>& datasets,
                                                      const RankOptions& opts);

}  // namespace selfcond

#endif  // SELFCOND_EXPERTS_RESPONSES_H_
