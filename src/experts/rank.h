// Ranking a concept: run every sentence of a dataset through the model, max-pool each unit's
// response over the sentence's tokens, and compute every unit's expertise (experts/expertise.h).
//
// Differences from ml-selfcond (docs/experts.md): sentences are not padded, so the max is over
// the sentence's own tokens only (ml-selfcond pads with EOS to a fixed length and pools over the
// pad positions too); sentences longer than the model's context are truncated to n_ctx tokens
// (ml-selfcond drops them) and counted in ExpertTable::num_truncated.
#ifndef SELFCOND_EXPERTS_RANK_H_
#define SELFCOND_EXPERTS_RANK_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "gpt2.h"

namespace selfcond {

class ThreadPool;

struct RankOptions {
  Precision precision = Precision::kInt8;
  // Sentences are spread over the pool's threads, one Session per thread (each single-threaded);
  // the same pool then computes the expertise. Null: `threads` threads in a pool of our own
  // (threads <= 0: the number of cores; 1: the calling thread only).
  ThreadPool* pool = nullptr;
  int threads = 1;
  int max_sentences = 0;  // per class, the first N (0 = all)
  int64_t top_n = 0;      // keep only the best N units in the table (0 = all)
  // Called after each sentence (done = sentences finished so far, total = all sentences), from
  // worker threads but never concurrently. Return value ignored.
  std::function<void(int done, int total)> progress;
};

// Runs one tokenized sentence (at most n_ctx tokens) from position 0 with capture into row
// ((UnitSpace(config).num_units()) floats, overwritten with the max over the sentence's
// positions). Resets the session first and leaves capture off. Zero tokens is an error.
absl::Status PoolSentence(Session& session, absl::Span<const int32_t> tokens, float* row);

// Pooled responses of all sentences: (positive..., negative...) rows of num_units floats, and
// the labels (1 for the positives). Exposed for tests and tools; RankConcept uses it.
struct PooledResponses {
  int64_t num_sentences = 0;
  int64_t num_units = 0;
  std::vector<float> responses;  // (num_sentences, num_units) row-major
  std::vector<uint8_t> labels;   // (num_sentences)
  int num_truncated = 0;
};
absl::StatusOr<PooledResponses> ComputePooledResponses(const Model& model, const Dataset& dataset,
                                                       const RankOptions& opts);

// The whole ranking: an ExpertTable for the model (hash, name, unit space filled in) with every
// unit (or the top_n), sorted by AP descending.
absl::StatusOr<ExpertTable> RankConcept(const Model& model, const Dataset& dataset,
                                        const RankOptions& opts);

}  // namespace selfcond

#endif  // SELFCOND_EXPERTS_RANK_H_
