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
#include "parallel.h"

namespace selfcond {

absl::Status PoolSentence(Session& session, absl::Span<const int32_t> tokens, float* row) {
  if (tokens.empty()) return absl::InvalidArgumentError("sentence has no tokens");
  const int64_t num_units = UnitSpace(session.model().config()).num_units();
  std::fill(row, row + num_units, -std::numeric_limits<float>::infinity());
  session.Reset();
  session.SetCapture(row);
  auto logits = session.Forward(tokens, Session::Logits::kNone);
  session.SetCapture(nullptr);
  return logits.status();
}

absl::StatusOr<PooledResponses> ComputePooledResponses(const Model& model, const Dataset& dataset,
                                                       const RankOptions& opts) {
  Dataset ds_copy;
  const Dataset* ds = &dataset;
  if (opts.max_sentences > 0 &&
      (dataset.positive.size() > static_cast<size_t>(opts.max_sentences) ||
       dataset.negative.size() > static_cast<size_t>(opts.max_sentences))) {
    ds_copy.concept = dataset.concept;
    size_t m = static_cast<size_t>(opts.max_sentences);
    ds_copy.positive.assign(dataset.positive.begin(),
                            dataset.positive.begin() + std::min(m, dataset.positive.size()));
    ds_copy.negative.assign(dataset.negative.begin(),
                            dataset.negative.begin() + std::min(m, dataset.negative.size()));
    ds = &ds_copy;
  }
  absl::Status valid = ValidateDataset(*ds);
  if (!valid.ok()) return valid;

  const GPT2Config& config = model.config();
  const UnitSpace space(config);
  PooledResponses out;
  const int n_pos = static_cast<int>(ds->positive.size());
  const int n_total = n_pos + static_cast<int>(ds->negative.size());
  out.num_sentences = n_total;
  out.num_units = space.num_units();
  out.labels.assign(n_total, 0);
  std::fill(out.labels.begin(), out.labels.begin() + n_pos, 1);

  // Tokenize everything first (cheap next to the forward passes) so that errors and the
  // truncation count do not depend on scheduling.
  std::vector<std::vector<int32_t>> tokens(n_total);
  const size_t n_ctx = config.n_ctx;
  for (int i = 0; i < n_total; ++i) {
    const std::string& s = i < n_pos ? ds->positive[i] : ds->negative[i - n_pos];
    tokens[i] = model.tokenizer().Encode(s);
    if (tokens[i].size() > n_ctx) {
      tokens[i].resize(n_ctx);
      ++out.num_truncated;
    }
    if (tokens[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(i < n_pos ? "positive" : "negative",
                                                     " sentence ", i < n_pos ? i : i - n_pos,
                                                     " has no tokens"));
    }
  }

  out.responses.resize(static_cast<size_t>(n_total) * static_cast<size_t>(out.num_units));

  std::unique_ptr<ThreadPool> own_pool;
  ThreadPool* pool = opts.pool;
  if (pool == nullptr && opts.threads != 1) {
    own_pool = std::make_unique<ThreadPool>(opts.threads);
    pool = own_pool.get();
  }
  const int workers = std::max(1, std::min(pool ? pool->size() : 1, n_total));

  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;  // guards first_error, done and the progress callback
  absl::Status first_error;
  int done = 0;
  auto worker = [&](int) {
    SessionOptions so;
    so.precision = opts.precision;
    auto session = Session::Create(model, so);
    if (!session.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (first_error.ok()) first_error = session.status();
      failed = true;
      return;
    }
    for (int i; !failed && (i = next.fetch_add(1)) < n_total;) {
      float* row = out.responses.data() + static_cast<size_t>(i) * out.num_units;
      absl::Status st = PoolSentence(**session, tokens[i], row);
      std::lock_guard<std::mutex> lock(mu);
      if (!st.ok()) {
        if (first_error.ok()) {
          first_error = absl::Status(st.code(),
                                     absl::StrCat(i < n_pos ? "positive" : "negative", " sentence ",
                                                  i < n_pos ? i : i - n_pos, ": ", st.message()));
        }
        failed = true;
        return;
      }
      ++done;
      if (opts.progress) opts.progress(done, n_total);
    }
  };
  if (pool != nullptr && workers > 1) {
    pool->ParallelFor(workers, worker);
  } else {
    worker(0);
  }
  if (!first_error.ok()) return first_error;
  return out;
}

absl::StatusOr<ExpertTable> RankConcept(const Model& model, const Dataset& dataset,
                                        const RankOptions& opts) {
  std::unique_ptr<ThreadPool> own_pool;
  RankOptions o = opts;
  if (o.pool == nullptr && o.threads != 1) {
    own_pool = std::make_unique<ThreadPool>(o.threads);
    o.pool = own_pool.get();
  }
  auto pooled = ComputePooledResponses(model, dataset, o);
  if (!pooled.ok()) return pooled.status();
  auto ex = ComputeExpertise(pooled->responses, pooled->num_sentences, pooled->num_units,
                             pooled->labels, o.pool);
  if (!ex.ok()) return ex.status();
  ExpertTable t =
      MakeExpertTable(model.config(), ex->ap, ex->on_p50, ex->on_p90, ex->off_mean, o.top_n);
  t.concept = dataset.concept;
  t.group = dataset.group;
  t.model_hash = model.hash_hex();
  t.model_name = model.name();
  t.precision = o.precision == Precision::kF32 ? "f32" : "int8";
  int64_t n_pos = 0;
  for (uint8_t l : pooled->labels) n_pos += l;
  t.num_positive = static_cast<int>(n_pos);
  t.num_negative = static_cast<int>(pooled->num_sentences - n_pos);
  t.num_truncated = pooled->num_truncated;
  return t;
}

}  // namespace selfcond
