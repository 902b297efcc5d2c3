#include "engine/engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/kernels.h"
#include "kernels/xnnpack.h"
#include "util/json.h"

namespace selfcond {
namespace {

Model::LoadOptions ToLoadOptions(const EngineOptions& o) {
  Model::LoadOptions lo;
  lo.verify_hash = o.verify_hash;
  lo.need_float = o.need_float;
  lo.copy_to_memory = o.copy_to_memory;
  lo.max_memory = o.max_memory;
  lo.packed_cache_dir = o.packed_cache_dir;
  lo.progress = o.progress;
  return lo;
}

int PoolThreads(int threads) {
  int n = threads <= 0 ? ThreadPool::NumCores() : threads;
  const int cap = ThreadPool::MaxThreads();
  if (cap > 0) n = std::min(n, cap);
  return std::max(1, n);
}

}  // namespace

Engine::Engine(std::unique_ptr<Model> model, int threads)
    : model_(std::move(model)), threads_(PoolThreads(threads)) {}

Engine::~Engine() = default;

absl::StatusOr<std::shared_ptr<Engine>> Engine::Load(const std::string& path,
                                                     const EngineOptions& opts) {
  auto model = Model::Load(path, ToLoadOptions(opts));
  if (!model.ok()) return model.status();
  return FromModel(std::move(*model), opts.threads);
}

absl::StatusOr<std::shared_ptr<Engine>> Engine::FromBuffer(HeapBuffer bytes,
                                                           const EngineOptions& opts) {
  auto model = Model::FromBuffer(std::move(bytes), ToLoadOptions(opts));
  if (!model.ok()) return model.status();
  return FromModel(std::move(*model), opts.threads);
}

absl::StatusOr<std::shared_ptr<Engine>> Engine::FromFile(MappedFile file,
                                                         const EngineOptions& opts) {
  auto model = Model::FromFile(std::move(file), ToLoadOptions(opts));
  if (!model.ok()) return model.status();
  return FromModel(std::move(*model), opts.threads);
}

std::shared_ptr<Engine> Engine::FromModel(std::unique_ptr<Model> model, int threads) {
  return std::shared_ptr<Engine>(new Engine(std::move(model), threads));
}

ThreadPool* Engine::pool() const {
  if (threads_ <= 1) return nullptr;
  std::call_once(pool_once_, [this] { pool_ = std::make_unique<ThreadPool>(threads_); });
  return pool_.get();
}

// ---- expert tables ----------------------------------------------------------------------------

absl::StatusOr<ExpertTable> Engine::ParseTable(std::string_view text, bool allow_unhashed) const {
  auto table = ParseAnyExpertTable(text);
  if (!table.ok()) return table.status();
  if (auto st = CheckCompatible(*table, *model_, allow_unhashed); !st.ok()) return st;
  return table;
}

absl::StatusOr<ExpertTable> Engine::LoadTable(const std::string& path, bool allow_unhashed) const {
  auto table = LoadExpertTable(path);
  if (!table.ok()) return table.status();
  if (auto st = CheckCompatible(*table, *model_, allow_unhashed); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat("expert table ", path, ": ", st.message()));
  }
  return table;
}

absl::StatusOr<Forcing> Engine::MakeForcing(absl::Span<const ForcingSource> sources,
                                            ForcingValue value, bool only_last_token) const {
  for (const ForcingSource& s : sources) {
    if (s.table == nullptr) return absl::InvalidArgumentError("forcing source without a table");
    if (auto st = CheckCompatible(*s.table, *model_, true); !st.ok()) return st;
  }
  return BuildForcing(sources, value, only_last_token, UnitSpace(model_->config()));
}

// ---- sessions and generation ------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Session>> Engine::NewSession(SessionOptions opts,
                                                            bool threaded) const {
  opts.pool = threaded ? pool() : nullptr;
  return Session::Create(*model_, opts);
}

absl::StatusOr<std::unique_ptr<Generation>> Engine::StartGeneration(
    Session& session, std::string_view prompt, const GenerateOptions& opts) const {
  if (&session.model() != model_.get()) {
    return absl::InvalidArgumentError("the session belongs to another model");
  }
  // Continuing a context: the text's own tokens (the template prefix belongs at position 0).
  const bool append = opts.keep_context && session.pos() > 0;
  return Generation::Start(
      session, append ? tokenizer().Encode(prompt) : PromptTokens(tokenizer(), prompt), opts);
}

absl::Status Engine::Eval(Session& session, absl::Span<const int32_t> tokens,
                          absl::Span<float> logits) const {
  if (&session.model() != model_.get()) {
    return absl::InvalidArgumentError("the session belongs to another model");
  }
  if (tokens.empty()) return absl::InvalidArgumentError("no tokens to evaluate");
  const size_t vocab = model_->config().vocab_size;
  if (!logits.empty() && logits.size() != vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits holds ", logits.size(), " floats; the vocabulary has ", vocab));
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= static_cast<int32_t>(vocab)) {
      return absl::OutOfRangeError(absl::StrCat("token id ", t, " out of range [0, ", vocab, ")"));
    }
  }
  if (session.pos() + tokens.size() > static_cast<size_t>(session.n_ctx())) {
    return absl::OutOfRangeError(absl::StrCat(session.pos(), " positions used + ", tokens.size(),
                                              " tokens exceed the session's context of ",
                                              session.n_ctx()));
  }
  auto out =
      session.Forward(tokens, logits.empty() ? Session::Logits::kNone : Session::Logits::kLast);
  if (!out.ok()) return out.status();
  if (logits.empty()) return absl::OkStatus();
  std::copy(out->begin(), out->begin() + static_cast<std::ptrdiff_t>(vocab), logits.begin());
  for (const auto& [token, bias] : session.conditioning().logit_bias) logits[token] += bias;
  return absl::OkStatus();
}

// ---- ranking ----------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Ranking>> Engine::StartRanking(Dataset dataset, RankOptions opts,
                                                              bool threaded) const {
  opts.pool = threaded ? pool() : nullptr;
  opts.threads = 1;
  return Ranking::Start(*model_, std::move(dataset), opts);
}

absl::StatusOr<std::unique_ptr<Ranking>> Engine::StartResponses(std::vector<std::string> sentences,
                                                                RankOptions opts,
                                                                bool threaded) const {
  opts.pool = threaded ? pool() : nullptr;
  opts.threads = 1;
  return Ranking::StartUnlabeled(*model_, std::move(sentences), opts);
}

RankOptions Engine::OnPool(RankOptions opts) const {
  opts.pool = pool();
  opts.threads = 1;
  return opts;
}

absl::StatusOr<ExpertTable> Engine::Rank(const Dataset& dataset, RankOptions opts) const {
  return RankConcept(*model_, dataset, OnPool(std::move(opts)));
}

absl::StatusOr<std::vector<ExpertTable>> Engine::RankAll(const std::vector<Dataset>& datasets,
                                                         RankOptions opts) const {
  return RankConcepts(*model_, datasets, OnPool(std::move(opts)));
}

// ---- the other steering methods and the expert explorer ---------------------------------------

absl::StatusOr<std::vector<float>> Engine::SteeringVector(const Dataset& dataset, int layer,
                                                          Precision precision) const {
  if (layer == -1) layer = static_cast<int>(model_->config().n_layer) / 2;
  return ComputeSteeringVector(*model_, dataset, layer, precision, pool());
}

LogitBias Engine::WordLogitBias(absl::Span<const std::string> words, float beta) const {
  std::vector<ConceptWord> list;
  list.reserve(words.size());
  for (const std::string& w : words) list.push_back({w, 0, 0, 0});
  return selfcond::WordLogitBias(tokenizer(), list, beta);
}

absl::StatusOr<LogitBias> Engine::ConceptLogitBias(const Dataset& dataset, int max_words,
                                                   float beta,
                                                   std::vector<ConceptWord>* words) const {
  return selfcond::ConceptLogitBias(tokenizer(), dataset, max_words, beta, words);
}

absl::StatusOr<UnitTrace> Engine::TraceUnit(std::string_view text, int64_t unit_id,
                                            Precision precision) const {
  // Tokenized as a ranking sentence: the template's prefix (BOS) runs first but is not shown,
  // as ranking does not pool it.
  const std::vector<int32_t>& prefix = tokenizer().prefix();
  std::vector<int32_t> ids = prefix;
  const std::vector<int32_t> body = tokenizer().Encode(text);
  if (body.empty()) return absl::InvalidArgumentError("no tokens to trace: the text is empty");
  ids.insert(ids.end(), body.begin(), body.end());
  SessionOptions so;
  so.precision = precision;
  so.n_ctx = static_cast<int>(
      std::min<size_t>(ids.size(), static_cast<size_t>(Session::DefaultContext(model_->config()))));
  ids.resize(static_cast<size_t>(so.n_ctx));
  if (ids.size() <= prefix.size()) return absl::OutOfRangeError("the context holds no text token");
  auto session = Session::Create(*model_, so);
  if (!session.ok()) return session.status();
  auto values = selfcond::TraceUnit(**session, ids, unit_id);
  if (!values.ok()) return values.status();
  UnitTrace t;
  t.tokens.assign(ids.begin() + static_cast<std::ptrdiff_t>(prefix.size()), ids.end());
  t.values.assign(values->begin() + static_cast<std::ptrdiff_t>(prefix.size()), values->end());
  return t;
}

// ---- measured operations ----------------------------------------------------------------------

absl::StatusOr<AutoKResult> Engine::ChooseK(const ExpertTable& table, const Dataset* dataset,
                                            const AutoKOptions& opts,
                                            const ExperimentProgress& progress) const {
  return selfcond::ChooseK(*model_, table, dataset, opts, pool(), progress);
}

absl::StatusOr<CompareResult> Engine::CompareMethods(const ExpertTable& table,
                                                     const Dataset& dataset,
                                                     const CompareOptions& opts,
                                                     const ExperimentProgress& progress) const {
  return selfcond::CompareMethods(*model_, table, dataset, opts, pool(), progress);
}

}  // namespace selfcond

namespace selfcond {

std::string BuildInfoJson(const char* version) {
  json::Value o = json::Value::Object();
  o.Set("version", json::Value::String(version));
  json::Value backends = json::Value::Array();
  if (kernels::xnn::Available()) backends.Push(json::Value::String("xnnpack"));
  for (const kernels::Backend* b : kernels::AvailableBackends()) {
    backends.Push(json::Value::String(b->name));
  }
  o.Set("backends", std::move(backends));
#if defined(__EMSCRIPTEN__) && !defined(__EMSCRIPTEN_PTHREADS__)
  o.Set("pthreads", json::Value::Bool(false));
#else
  o.Set("pthreads", json::Value::Bool(true));
#endif
  o.Set("cores", json::Value::Number(ThreadPool::NumCores()));
  return o.Dump();
}

}  // namespace selfcond
