// The engine: everything a frontend offers, in one object over one model.
//
// Frontends (the CLI, the C API, and through the C API Python, the WASM build and the browser
// package) call the Engine and nothing below it, so a product feature is written once, here,
// and each frontend only converts arguments. The C API (include/selfcond/selfcond.h) is a 1:1
// projection of this class; docs/architecture.md has the picture.
//
// An Engine owns:
//   - the Model (immutable after loading: weights, tokenizer), shared by everything below;
//   - one thread pool (created when first needed), which threaded sessions, rankings and the
//     measured operations use; a pthreadpool runs one parallel call at a time, so sessions on
//     different threads that share it take turns in their parallel sections;
//   - the rules that tie tables to the model (ParseTable / LoadTable check the hash and shape).
// Sessions, generations, rankings and tables it makes refer to its model: they must not outlive
// it. Engines are held by shared_ptr so handles (the C API's) can keep theirs alive.
#ifndef SELFCOND_ENGINE_ENGINE_H_
#define SELFCOND_ENGINE_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/choose_k.h"
#include "engine/compare.h"
#include "engine/conditions.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "experts/rank.h"
#include "experts/responses.h"
#include "experts/steer.h"
#include "model/generate.h"
#include "model/model.h"
#include "util/file_util.h"
#include "util/parallel.h"

namespace selfcond {

struct EngineOptions {
  // Recompute the file's SHA-256 and refuse a mismatch: integrity by default (a corrupt or
  // tampered file is refused; README "Integrity" has the measured cost of the check).
  bool verify_hash = true;
  bool need_float = false;       // also prepare f32 weights, for sessions with precision f32
  bool copy_to_memory = false;   // read the file instead of mapping it (Model::LoadOptions)
  int threads = 0;               // the engine's thread pool: <= 0 every core; 1: none
  size_t max_memory = 0;         // the model's memory budget (Model::LoadOptions); 0: none
  std::string packed_cache_dir;  // XNNPACK packed-weight cache (Model::LoadOptions); "": off
  // Load progress (Model::LoadOptions::progress): bytes done, total; false cancels.
  std::function<bool(int64_t, int64_t)> progress;
};

// The (token, bias) pairs of a logit bias.
using LogitBias = std::vector<std::pair<int32_t, float>>;

// Where one unit fires: its response at every token of a text.
struct UnitTrace {
  std::vector<int32_t> tokens;  // the text's tokens (at most the model's context)
  std::vector<float> values;    // (tokens.size()) the unit's response at each
};

// Build facts for bug reports and the UI, as JSON: {"version", "backends": the GEMM engines
// available on this CPU (XNNPACK first: it runs int8), "pthreads", "cores"}.
std::string BuildInfoJson(const char* version);

class Engine {
 public:
  static absl::StatusOr<std::shared_ptr<Engine>> Load(const std::string& path,
                                                      const EngineOptions& opts);
  // From a model file's bytes (taken over: Model::FromBuffer).
  static absl::StatusOr<std::shared_ptr<Engine>> FromBuffer(HeapBuffer bytes,
                                                            const EngineOptions& opts);
  // From a file opened or borrowed by the caller (MappedFile::OpenFd, MappedFile::Borrow).
  static absl::StatusOr<std::shared_ptr<Engine>> FromFile(MappedFile file,
                                                          const EngineOptions& opts);
  // Around a model loaded by the caller (tests, tools holding one already).
  static std::shared_ptr<Engine> FromModel(std::unique_ptr<Model> model, int threads);
  ~Engine();

  const Model& model() const { return *model_; }
  const Tokenizer& tokenizer() const { return model_->tokenizer(); }
  // Threads of the pool (1: no pool, everything on the calling thread).
  int threads() const { return threads_; }
  // The pool, created on first use; null when threads() == 1.
  ThreadPool* pool() const;

  // ---- expert tables -------------------------------------------------------------------------
  // A table in any supported format (ParseAnyExpertTable), checked against the model
  // (CheckCompatible: a table of another model is refused; one without a model hash too,
  // unless allow_unhashed).
  absl::StatusOr<ExpertTable> ParseTable(std::string_view text, bool allow_unhashed) const;
  // The same from a file (with an ml-selfcond expertise_info.json beside a CSV: LoadExpertTable);
  // errors name the file.
  absl::StatusOr<ExpertTable> LoadTable(const std::string& path, bool allow_unhashed) const;
  // The forcing of the chosen units of one or more tables (BuildForcing over the model's units).
  absl::StatusOr<Forcing> MakeForcing(absl::Span<const ForcingSource> sources, ForcingValue value,
                                      bool only_last_token) const;

  // ---- sessions and generation ---------------------------------------------------------------
  // A session of the model; threaded: its forward pass runs on the engine's pool (opts.pool is
  // ignored), else on the calling thread.
  absl::StatusOr<std::unique_ptr<Session>> NewSession(SessionOptions opts, bool threaded) const;
  // Tokenizes the prompt as the model expects it (PromptTokens: the template's BOS) and prefills
  // it from position 0 (opts.keep_context: after the session's cache, the text's tokens only
  // when the cache is not empty); the Generation then gives one token per Next().
  absl::StatusOr<std::unique_ptr<Generation>> StartGeneration(Session& session,
                                                              std::string_view prompt,
                                                              const GenerateOptions& opts) const;

  // Runs tokens at the session's next positions and writes the last one's logits, with the
  // session's logit bias added (what its sampler would see), to `logits` (empty: none; else
  // exactly vocab_size floats).
  absl::Status Eval(Session& session, absl::Span<const int32_t> tokens,
                    absl::Span<float> logits) const;

  // ---- ranking -------------------------------------------------------------------------------
  // The ranking driver (Ranking::Start) with its sentences on the engine's pool (threaded) or
  // the calling thread; opts.pool and opts.threads are ignored.
  absl::StatusOr<std::unique_ptr<Ranking>> StartRanking(Dataset dataset, RankOptions opts,
                                                        bool threaded) const;
  // Responses only, for unlabeled sentences (Ranking::StartUnlabeled).
  absl::StatusOr<std::unique_ptr<Ranking>> StartResponses(std::vector<std::string> sentences,
                                                          RankOptions opts, bool threaded) const;
  // Whole rankings on the engine's pool, with opts.progress (RankConcept; several concepts
  // share each distinct sentence's forward pass: RankConcepts).
  absl::StatusOr<ExpertTable> Rank(const Dataset& dataset, RankOptions opts) const;
  absl::StatusOr<std::vector<ExpertTable>> RankAll(const std::vector<Dataset>& datasets,
                                                   RankOptions opts) const;
  // opts with the engine's pool (for the experts layer's other drivers: ResponseStore).
  RankOptions OnPool(RankOptions opts) const;

  // ---- the other steering methods and the expert explorer (experts/steer.h) -------------------
  // layer -1: the middle block (n_layer / 2), as compare methods' default.
  absl::StatusOr<std::vector<float>> SteeringVector(const Dataset& dataset, int layer,
                                                    Precision precision) const;
  // Each word's single-token forms " word" / " Word", biased by beta.
  LogitBias WordLogitBias(absl::Span<const std::string> words, float beta) const;
  // The dataset's log-odds words, then WordLogitBias (an error when nothing is biased).
  absl::StatusOr<LogitBias> ConceptLogitBias(const Dataset& dataset, int max_words, float beta,
                                             std::vector<ConceptWord>* words = nullptr) const;
  // The unit's response at every token of `text` (tokenized as a ranking sentence, cut to the
  // model's context), computed on a session of its own.
  absl::StatusOr<UnitTrace> TraceUnit(std::string_view text, int64_t unit_id,
                                      Precision precision) const;

  // ---- measured operations (engine/choose_k.h, engine/compare.h) -------------------------------
  // dataset may be null (the table's concept name then marks a mention).
  absl::StatusOr<AutoKResult> ChooseK(const ExpertTable& table, const Dataset* dataset,
                                      const AutoKOptions& opts,
                                      const ExperimentProgress& progress = nullptr) const;
  absl::StatusOr<CompareResult> CompareMethods(const ExpertTable& table, const Dataset& dataset,
                                               const CompareOptions& opts,
                                               const ExperimentProgress& progress = nullptr) const;

 private:
  Engine(std::unique_ptr<Model> model, int threads);
  std::unique_ptr<Model> model_;
  int threads_ = 1;
  mutable std::once_flag pool_once_;
  mutable std::unique_ptr<ThreadPool> pool_;
};

}  // namespace selfcond

#endif  // SELFCOND_ENGINE_ENGINE_H_
