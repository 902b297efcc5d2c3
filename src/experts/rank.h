// Ranking a concept: run every sentence of a dataset through the model, max-pool each unit's
// response over the sentence's tokens, and compute every unit's expertise (experts/expertise.h).
//
// Differences from ml-selfcond (docs/experts.md): sentences are not padded, so the max is over
// the sentence's own tokens only (ml-selfcond pads with EOS to a fixed length and pools over the
// pad positions too); sentences longer than the model's context are truncated to n_ctx tokens
// (ml-selfcond drops them) and counted in ExpertTable::num_truncated. RankOptions::compat
// (`rank --compat ml-selfcond`) prepares the sentences as ml-selfcond does instead.
#ifndef SELFCOND_EXPERTS_RANK_H_
#define SELFCOND_EXPERTS_RANK_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "experts/expertise.h"
#include "model/model.h"
#include "util/parallel.h"

namespace selfcond {

struct RankOptions {
  Precision precision = Precision::kInt8;
  // Sentences are spread over the pool's threads, one Session per thread (each single-threaded);
  // the same pool then computes the expertise. Null: `threads` threads in a pool of our own
  // (threads <= 0: the number of cores; 1: the calling thread only).
  ThreadPool* pool = nullptr;
  int threads = 1;
  int max_sentences = 0;  // per class, the first N (0 = all); not used in compat mode
  // ml-selfcond compatibility (`rank --compat ml-selfcond`; docs/experts.md): the sentences are
  // prepared as ml-selfcond's compute_responses.py does (its defaults below). A numpy-exact
  // seeded subset of at most per_class sentences per class (SampleLikeMlSelfcond, drawn before
  // dropping), then each sentence padded with EOS to seq_len tokens and pooled over all of
  // them (PoolPaddedSentence), sentences longer than seq_len dropped (PooledResponses::
  // num_dropped, ExpertTable::num_dropped). Labeled rankings only; the model's context must
  // hold seq_len tokens.
  struct MlSelfcond {
    bool enabled = false;
    int seq_len = 128;
    int per_class = 1000;  // 0: all
    int seed = 1234;
  };
  MlSelfcond compat;
  int64_t top_n = 0;  // keep only the best N units in the table (0 = all)
  // Bytes the pooled responses (sentences x units floats) may take, checked before they are
  // allocated. 0: DefaultMemoryBudget() (half the machine's memory).
  size_t max_memory = 0;
  // RankConcept / ComputePooledResponses: called on the calling thread after each batch of
  // sentences (done = sentences finished so far, total = all sentences). Return false to cancel
  // (the call then fails with a CANCELLED status).
  using Progress = std::function<bool(int done, int total)>;
  Progress progress;
};

// Runs one tokenized sentence (at most n_ctx tokens) from position 0 with capture into row
// ((UnitSpace(config).num_units()) floats, overwritten with the max over the sentence's
// positions). Resets the session first and leaves capture off. Zero tokens is an error.
// skip: the first `skip` tokens run without being pooled: the special tokens a tokenizer.json
// template puts before a text (Llama 3's <|begin_of_text|>) belong to no sentence, and at that
// position every sentence gives the same responses.
absl::Status PoolSentence(Session& session, absl::Span<const int32_t> tokens, float* row,
                          int skip = 0);

// ml-selfcond's pooling: the sentence (1..seq_len tokens) followed by seq_len - n pad tokens
// that attend to the sentence only (attention_mask 0, Session::ForwardPadding), the max taken
// over all seq_len positions, pads included. The session must hold seq_len positions.
absl::Status PoolPaddedSentence(Session& session, absl::Span<const int32_t> tokens, int seq_len,
                                int32_t pad_token, float* row);

// The response of one unit (a global unit id, UnitSpace numbering) at every token of a
// sentence run from position 0 (at most n_ctx tokens): the values ranking max-pools, for showing
// where a unit fires. Resets the session first and leaves the trace off.
absl::StatusOr<std::vector<float>> TraceUnit(Session& session, absl::Span<const int32_t> tokens,
                                             int64_t unit_id);

// Pooled responses of all sentences: (positive..., negative...) rows of num_units floats, and
// the labels (1 for the positives).
struct PooledResponses {
  int64_t num_sentences = 0;
  int64_t num_units = 0;
  std::vector<float> responses;    // (num_sentences, num_units) row-major
  std::vector<uint8_t> labels;     // (num_sentences)
  std::vector<uint8_t> truncated;  // (num_sentences) 1: cut to the model's n_ctx tokens
  int num_truncated = 0;
  int num_dropped = 0;  // compat mode: sentences longer than seq_len, not in the rows
};

// What a table records besides its units' statistics.
struct TableInfo {
  std::string concept, group;
  int num_positive = 0, num_negative = 0, num_truncated = 0;
  Precision precision = Precision::kInt8;
  int64_t top_n = 0;               // keep the best N units (0: all)
  RankOptions::MlSelfcond compat;  // recorded in the table when enabled
  int num_dropped = 0;
};
// The table from every unit's statistics (ExpertiseResult's arrays hold the model's num_units
// values in unit-id order, e.g. computed in unit ranges on several machines and concatenated):
// model hash, name and unit space filled in, units sorted by AP descending.
ExpertTable ExpertTableFromStats(const Model& model, const ExpertiseResult& stats,
                                 const TableInfo& info);

// A labeled dataset's table from its pooled responses (rows: positives, then negatives, in the
// dataset's order): the ExpertTable for the model (hash, name, unit space filled in) with every
// unit (or opts.top_n), sorted by AP descending. Ranking::Finish and stored responses
// (experts/responses.h) both build tables here. pool: null for the calling thread only.
absl::StatusOr<ExpertTable> ExpertTableFromResponses(const Model& model, const Dataset& dataset,
                                                     absl::Span<const float> responses,
                                                     int num_truncated, const RankOptions& opts,
                                                     ThreadPool* pool);

// The ranking driver: one concept ranking, resumable. Start() validates and tokenizes the
// dataset and creates one single-threaded Session per pool thread; each Step(n) runs n more
// sentences (spread over the pool, whole sentences per thread) and Finish() computes every
// unit's expertise. Destroying a Ranking cancels it. RankConcept(), the CLI, the WASM bindings
// and the C API all rank through this class; it is the only ranking loop.
// The model (and opts.pool, if given) must outlive the Ranking.
class Ranking {
 public:
  static absl::StatusOr<std::unique_ptr<Ranking>> Start(const Model& model, Dataset dataset,
                                                        const RankOptions& opts);
  // Responses only, for sentences without labels (Finish() then fails): the rows of
  // pooled() follow `sentences`.
  static absl::StatusOr<std::unique_ptr<Ranking>> StartUnlabeled(const Model& model,
                                                                 std::vector<std::string> sentences,
                                                                 const RankOptions& opts);
  ~Ranking();
  int total() const { return static_cast<int>(pooled_.num_sentences); }
  int done() const { return next_; }
  int num_truncated() const { return pooled_.num_truncated; }
  int num_dropped() const { return pooled_.num_dropped; }
  int workers() const { return static_cast<int>(sessions_.size()); }  // sessions, threads
  // The sentences ranked (compat mode: the subset, without the dropped sentences).
  const Dataset& dataset() const { return dataset_; }
  // Runs up to max(n, 1) more sentences; returns the number done so far. An error (a sentence
  // that fails) ends the ranking: later calls return it again.
  absl::StatusOr<int> Step(int n);
  // The responses so far (rows of sentences not yet run are unspecified).
  const PooledResponses& pooled() const { return pooled_; }
  PooledResponses TakePooled() { return std::move(pooled_); }
  // After every sentence ran: an ExpertTable for the model (hash, name, unit space filled in)
  // with every unit (or the top_n), sorted by AP descending.
  absl::StatusOr<ExpertTable> Finish();

 private:
  Ranking(const Model& model, const RankOptions& opts) : model_(model), opts_(opts) {}
  static absl::StatusOr<std::unique_ptr<Ranking>> StartImpl(const Model& model, Dataset dataset,
                                                            const RankOptions& opts, bool labeled);
  const Model& model_;
  RankOptions opts_;
  std::unique_ptr<ThreadPool> own_pool_;  // when opts.pool is null and threads != 1
  ThreadPool* pool_ = nullptr;
  Dataset dataset_;
  std::vector<std::vector<int32_t>> tokens_;        // (num_sentences) positives first
  PooledResponses pooled_;                          // responses (num_sentences, num_units)
  std::vector<std::unique_ptr<Session>> sessions_;  // one per pool thread
  int next_ = 0;                                    // first sentence not yet run
  absl::Status error_;                              // a failed Step ends the ranking
  bool labeled_ = true;                             // false: StartUnlabeled
};

// Runs a whole Ranking's sentences, reporting opts.progress after each batch.
absl::StatusOr<PooledResponses> ComputePooledResponses(const Model& model, const Dataset& dataset,
                                                       const RankOptions& opts);

// The same for unlabeled sentences (Ranking::StartUnlabeled): rows follow `sentences`.
absl::StatusOr<PooledResponses> ComputeUnlabeledResponses(const Model& model,
                                                          std::vector<std::string> sentences,
                                                          const RankOptions& opts);

// The whole ranking: Start, Step until done (reporting opts.progress), Finish.
absl::StatusOr<ExpertTable> RankConcept(const Model& model, const Dataset& dataset,
                                        const RankOptions& opts);

}  // namespace selfcond

#endif  // SELFCOND_EXPERTS_RANK_H_
