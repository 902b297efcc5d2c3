#include "experts/rank.h"

#include <algorithm>
#include <atomic>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "experts/expertise.h"
#include "model/observers.h"
#include "util/parallel.h"

namespace selfcond {

absl::StatusOr<std::vector<float>> TraceUnit(Session& session, absl::Span<const int32_t> tokens,
                                             int64_t unit_id) {
  if (tokens.empty()) return absl::InvalidArgumentError("no tokens to trace");
  const UnitSpace space(session.model().config());
  if (unit_id < 0 || unit_id >= space.num_units()) {
    return absl::OutOfRangeError(
        absl::StrCat("unit ", unit_id, " out of range [0, ", space.num_units(), ")"));
  }
  std::vector<float> trace(static_cast<size_t>(session.n_ctx()), 0.0f);
  const auto [site, unit] = space.SiteAndUnit(unit_id);
  UnitTraceObserver observer(site, unit, trace.data());
  session.Reset();
  session.SetObserver(&observer);
  auto fwd = session.Forward(tokens, Session::Logits::kNone);
  session.SetObserver(nullptr);
  if (!fwd.ok()) return fwd.status();
  trace.resize(tokens.size());
  return trace;
}

absl::Status PoolSentence(Session& session, absl::Span<const int32_t> tokens, float* row,
                          int skip) {
  if (skip < 0 || static_cast<size_t>(skip) >= tokens.size()) {
    return absl::InvalidArgumentError("sentence has no tokens");
  }
  const UnitSpace space(session.model().config());
  std::fill(row, row + space.num_units(), -std::numeric_limits<float>::infinity());
  session.Reset();
  if (skip > 0) {
    if (auto st = session.Forward(tokens.subspan(0, skip), Session::Logits::kNone); !st.ok()) {
      return st.status();
    }
  }
  MaxPoolObserver pool(space, row);
  session.SetObserver(&pool);
  auto logits = session.Forward(tokens.subspan(skip), Session::Logits::kNone);
  session.SetObserver(nullptr);
  return logits.status();
}

absl::Status PoolPaddedSentence(Session& session, absl::Span<const int32_t> tokens, int seq_len,
                                int32_t pad_token, float* row) {
  if (tokens.empty()) return absl::InvalidArgumentError("sentence has no tokens");
  if (static_cast<int>(tokens.size()) > seq_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("sentence has ", tokens.size(), " tokens, more than ", seq_len));
  }
  const UnitSpace space(session.model().config());
  std::fill(row, row + space.num_units(), -std::numeric_limits<float>::infinity());
  session.Reset();
  MaxPoolObserver pool(space, row);
  session.SetObserver(&pool);
  absl::Status st = session.Forward(tokens, Session::Logits::kNone).status();
  if (st.ok() && static_cast<int>(tokens.size()) < seq_len) {
    const std::vector<int32_t> pads(seq_len - tokens.size(), pad_token);
    st = session.ForwardPadding(pads);
  }
  session.SetObserver(nullptr);
  return st;
}

namespace {

// "positive sentence 3" / "negative sentence 0" / "sentence 7" for sentence i of a ranking.
std::string SentenceName(int i, int n_pos, bool labeled) {
  if (!labeled) return absl::StrCat("sentence ", i);
  return absl::StrCat(i < n_pos ? "positive" : "negative", " sentence ", i < n_pos ? i : i - n_pos);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Ranking>> Ranking::Start(const Model& model, Dataset dataset,
                                                        const RankOptions& opts) {
  return StartImpl(model, std::move(dataset), opts, /*labeled=*/true);
}

absl::StatusOr<std::unique_ptr<Ranking>> Ranking::StartUnlabeled(const Model& model,
                                                                 std::vector<std::string> sentences,
                                                                 const RankOptions& opts) {
  Dataset ds;
  ds.positive = std::move(sentences);
  return StartImpl(model, std::move(ds), opts, /*labeled=*/false);
}

namespace {

// The sentences a ranking runs: ml-selfcond's seeded subset (compat) or the first
// max_sentences of each class, checked (labeled: both classes, see ValidateDataset).
absl::Status PrepareSentences(const Model& model, const RankOptions& opts, bool labeled,
                              Dataset& dataset) {
  const RankOptions::MlSelfcond& compat = opts.compat;
  if (compat.enabled) {
    if (!labeled) return absl::InvalidArgumentError("ml-selfcond mode ranks labeled datasets only");
    if (compat.seq_len < 1 || static_cast<uint32_t>(compat.seq_len) > model.config().n_ctx) {
      return absl::InvalidArgumentError(absl::StrCat("ml-selfcond mode pads to ", compat.seq_len,
                                                     " tokens; the model's context holds ",
                                                     model.config().n_ctx));
    }
    if (compat.per_class < 0 || compat.seed < 0) {
      return absl::InvalidArgumentError("ml-selfcond mode: per_class and seed must be >= 0");
    }
    SampleLikeMlSelfcond(&dataset, compat.per_class, static_cast<uint32_t>(compat.seed));
  } else {
    KeepFirst(&dataset, opts.max_sentences);
  }
  if (labeled) {
    if (absl::Status valid = ValidateDataset(dataset); !valid.ok()) return valid;
  } else {
    if (dataset.positive.empty()) return absl::InvalidArgumentError("no sentences");
    for (size_t i = 0; i < dataset.positive.size(); ++i) {
      if (FindInvalidUtf8(dataset.positive[i]) >= 0 || dataset.positive[i].empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("sentence ", i, " is empty or not valid UTF-8"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Ranking>> Ranking::StartImpl(const Model& model, Dataset dataset,
                                                            const RankOptions& opts, bool labeled) {
  const RankOptions::MlSelfcond& compat = opts.compat;
  if (auto st = PrepareSentences(model, opts, labeled, dataset); !st.ok()) return st;
  std::unique_ptr<Ranking> r(new Ranking(model, opts));
  r->labeled_ = labeled;
  const ModelConfig& config = model.config();
  PooledResponses& out = r->pooled_;
  out.num_units = UnitSpace(config).num_units();

  // Tokenize everything first (cheap next to the forward passes) so that errors and the
  // truncation count do not depend on scheduling. Compat mode drops the sentences longer than
  // seq_len here, as ml-selfcond's _remove_too_long_data does after tokenizing.
  const size_t n_ctx = config.n_ctx;
  const int n_pos_in = static_cast<int>(dataset.positive.size());
  std::vector<uint8_t> truncated;
  for (int cls = 0; cls < 2; ++cls) {
    std::vector<std::string>& v = cls == 0 ? dataset.positive : dataset.negative;
    size_t kept = 0;
    for (size_t j = 0; j < v.size(); ++j) {
      const std::vector<int32_t> body = model.tokenizer().Encode(v[j]);
      const int i = static_cast<int>(j) + (cls == 0 ? 0 : n_pos_in);
      if (body.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(SentenceName(i, n_pos_in, labeled), " has no tokens"));
      }
      std::vector<int32_t> t = model.tokenizer().prefix();  // BOS where the template adds one
      t.insert(t.end(), body.begin(), body.end());
      if (compat.enabled && t.size() > static_cast<size_t>(compat.seq_len)) {
        ++out.num_dropped;
        continue;
      }
      uint8_t cut = 0;
      if (t.size() > n_ctx) {
        t.resize(n_ctx);
        cut = 1;
        ++out.num_truncated;
      }
      r->tokens_.push_back(std::move(t));
      truncated.push_back(cut);
      if (kept != j) v[kept] = std::move(v[j]);
      ++kept;
    }
    v.resize(kept);
    if (compat.enabled && kept == 0) {
      return absl::InvalidArgumentError(absl::StrCat("every ", cls == 0 ? "positive" : "negative",
                                                     " sentence is longer than ", compat.seq_len,
                                                     " tokens (ml-selfcond mode drops them)"));
    }
  }
  r->dataset_ = std::move(dataset);
  const Dataset& ds = r->dataset_;
  const int n_pos = static_cast<int>(ds.positive.size());
  const int n_total = n_pos + static_cast<int>(ds.negative.size());
  out.num_sentences = n_total;
  out.labels.assign(n_total, 0);
  out.truncated = std::move(truncated);
  if (labeled) std::fill(out.labels.begin(), out.labels.begin() + n_pos, 1);
  const double need = 4.0 * n_total * static_cast<double>(out.num_units);
  const size_t budget = opts.max_memory > 0 ? opts.max_memory : DefaultMemoryBudget();
  if (need > static_cast<double>(budget)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "ranking ", n_total, " sentences keeps their pooled responses (", n_total, " x ",
        out.num_units, " units x 4 bytes = ", static_cast<int64_t>(need / 1048576),
        " MiB) in memory, over the memory budget of ", budget >> 20,
        " MiB: use fewer sentences (max_sentences in the C API and Python, --max-sentences in the "
        "CLI), a larger budget (the CLI's --max-memory), or store responses in parts (selfcond "
        "responses)"));
  }
  out.responses.resize(static_cast<size_t>(n_total) * static_cast<size_t>(out.num_units));

  r->pool_ = opts.pool;
  if (r->pool_ == nullptr && opts.threads != 1) {
    r->own_pool_ = std::make_unique<ThreadPool>(opts.threads);
    r->pool_ = r->own_pool_.get();
  }
  // One single-threaded session per worker, each sized to the longest sentence.
  size_t longest = compat.enabled ? static_cast<size_t>(compat.seq_len) : 1;
  for (const auto& t : r->tokens_) longest = std::max(longest, t.size());
  const int workers = std::max(1, std::min(r->pool_ ? r->pool_->size() : 1, n_total));
  for (int w = 0; w < workers; ++w) {
    SessionOptions so;
    so.precision = opts.precision;
    so.n_ctx = static_cast<int>(longest);
    auto session = Session::Create(model, so);
    if (!session.ok()) return session.status();
    r->sessions_.push_back(std::move(*session));
  }
  return r;
}

Ranking::~Ranking() = default;

absl::StatusOr<int> Ranking::Step(int n) {
  if (!error_.ok()) return error_;
  const int total = this->total();
  const int end = std::min(total, next_ + std::max(n, 1));
  const int n_pos = static_cast<int>(dataset_.positive.size());
  std::atomic<int> next{next_};
  std::vector<absl::Status> errors(sessions_.size());
  auto work = [&](int w) {
    for (int i; (i = next.fetch_add(1)) < end;) {
      float* row = pooled_.responses.data() + static_cast<size_t>(i) * pooled_.num_units;
      absl::Status st =
          opts_.compat.enabled
              ? PoolPaddedSentence(*sessions_[w], tokens_[i], opts_.compat.seq_len,
                                   static_cast<int32_t>(model_.config().eos_token_id), row)
              : PoolSentence(*sessions_[w], tokens_[i], row,
                             static_cast<int>(model_.tokenizer().prefix().size()));
      if (!st.ok()) {
        errors[w] = absl::Status(
            st.code(), absl::StrCat(SentenceName(i, n_pos, labeled_), ": ", st.message()));
        return;
      }
    }
  };
  const int workers = std::min(static_cast<int>(sessions_.size()), end - next_);
  if (pool_ != nullptr && workers > 1) {
    pool_->ParallelFor(workers, work);
  } else {
    work(0);
  }
  for (const absl::Status& st : errors) {
    if (!st.ok()) return error_ = st;
  }
  next_ = end;
  return next_;
}

absl::StatusOr<ExpertTable> Ranking::Finish() {
  if (!error_.ok()) return error_;
  if (!labeled_) {
    return absl::FailedPreconditionError("these sentences have no labels: nothing to rank");
  }
  if (next_ < total()) {
    return absl::FailedPreconditionError(
        absl::StrCat("ranking not finished: ", next_, " of ", total(), " sentences done"));
  }
  auto t = ExpertTableFromResponses(model_, dataset_, pooled_.responses, pooled_.num_truncated,
                                    opts_, pool_);
  if (t.ok()) t->num_dropped = pooled_.num_dropped;
  return t;
}

absl::StatusOr<ExpertTable> ExpertTableFromResponses(const Model& model, const Dataset& dataset,
                                                     absl::Span<const float> responses,
                                                     int num_truncated, const RankOptions& opts,
                                                     ThreadPool* pool) {
  const int64_t n_pos = static_cast<int64_t>(dataset.positive.size());
  const int64_t n = n_pos + static_cast<int64_t>(dataset.negative.size());
  const int64_t num_units = UnitSpace(model.config()).num_units();
  if (static_cast<int64_t>(responses.size()) != n * num_units) {
    return absl::InvalidArgumentError(absl::StrCat("responses hold ", responses.size(),
                                                   " values, expected ", n, " x ", num_units));
  }
  std::vector<uint8_t> labels(static_cast<size_t>(n), 0);
  std::fill(labels.begin(), labels.begin() + n_pos, 1);
  auto ex = ComputeExpertise(responses, n, num_units, labels, pool);
  if (!ex.ok()) return ex.status();
  TableInfo info;
  info.concept = dataset.concept;
  info.group = dataset.group;
  info.num_positive = static_cast<int>(n_pos);
  info.num_negative = static_cast<int>(dataset.negative.size());
  info.num_truncated = num_truncated;
  info.precision = opts.precision;
  info.top_n = opts.top_n;
  info.compat = opts.compat;
  return ExpertTableFromStats(model, *ex, info);
}

ExpertTable ExpertTableFromStats(const Model& model, const ExpertiseResult& stats,
                                 const TableInfo& info) {
  ExpertTable t = MakeExpertTable(model.config(), stats.ap, stats.on_p50, stats.on_p90,
                                  stats.off_mean, info.top_n);
  t.concept = info.concept;
  t.group = info.group;
  t.model_hash = model.hash_hex();
  t.model_name = model.name();
  t.precision = info.precision == Precision::kF32 ? "f32" : "int8";
  t.num_positive = info.num_positive;
  t.num_negative = info.num_negative;
  t.num_truncated = info.num_truncated;
  if (info.compat.enabled) {
    t.compat = "ml-selfcond";
    t.compat_seq_len = info.compat.seq_len;
    t.compat_per_class = info.compat.per_class;
    t.compat_seed = info.compat.seed;
    t.num_dropped = info.num_dropped;
  }
  return t;
}

namespace {

// Runs every sentence of r in batches, reporting progress between batches.
absl::Status RunAll(Ranking& r, const RankOptions& opts) {
  // Batches of a few sentences per session: small enough for timely progress and cancelling,
  // large enough that threads rarely wait for each other at a batch's end.
  const int batch = 4 * r.workers();
  if (opts.progress && !opts.progress(0, r.total())) {
    return absl::CancelledError("ranking cancelled");
  }
  while (r.done() < r.total()) {
    auto done = r.Step(batch);
    if (!done.ok()) return done.status();
    if (opts.progress && !opts.progress(*done, r.total())) {
      return absl::CancelledError("ranking cancelled");
    }
  }
  return absl::OkStatus();
}

// A started ranking run to the end: its pooled responses.
absl::StatusOr<PooledResponses> RunToResponses(absl::StatusOr<std::unique_ptr<Ranking>> r,
                                               const RankOptions& opts) {
  if (!r.ok()) return r.status();
  if (absl::Status st = RunAll(**r, opts); !st.ok()) return st;
  return (*r)->TakePooled();
}

}  // namespace

absl::StatusOr<PooledResponses> ComputePooledResponses(const Model& model, const Dataset& dataset,
                                                       const RankOptions& opts) {
  return RunToResponses(Ranking::Start(model, dataset, opts), opts);
}

absl::StatusOr<PooledResponses> ComputeUnlabeledResponses(const Model& model,
                                                          std::vector<std::string> sentences,
                                                          const RankOptions& opts) {
  return RunToResponses(Ranking::StartUnlabeled(model, std::move(sentences), opts), opts);
}

absl::StatusOr<ExpertTable> RankConcept(const Model& model, const Dataset& dataset,
                                        const RankOptions& opts) {
  auto r = Ranking::Start(model, dataset, opts);
  if (!r.ok()) return r.status();
  if (absl::Status st = RunAll(**r, opts); !st.ok()) return st;
  return (*r)->Finish();
}

}  // namespace selfcond
