// The C API (include/selfcond/selfcond.h), part 2: ranking, datasets, the other steering
// methods, the expert explorer, the measured operations (choose k, compare methods) and the
// split expertise computation. Like part 1 (selfcond_c.cc): argument conversion around one
// Engine operation each.
#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "api/c_api_internal.h"
#include "engine/engine.h"
#include "selfcond/selfcond.h"
#include "util/json.h"

namespace selfcond::capi {

absl::StatusOr<RankOptions> RankOptionsFrom(const selfcond_rank_params* params, bool* threaded) {
  const selfcond_rank_params p = params ? *params : selfcond_rank_default_params();
  auto prec = PrecisionFrom(p.precision);
  if (!prec.ok()) return prec.status();
  if (p.max_sentences < 0) return absl::InvalidArgumentError("max_sentences must be >= 0");
  if (p.top_n < 0) return absl::InvalidArgumentError("top_n must be >= 0");
  RankOptions ro;
  ro.precision = *prec;
  ro.max_sentences = p.max_sentences;
  ro.top_n = p.top_n;
  *threaded = p.threads != 1;
  return ro;
}

RankOptions::Progress ProgressFrom(selfcond_progress_callback cb, void* user) {
  if (cb == nullptr) return nullptr;
  return [cb, user](int done, int total) { return cb(done, total, user) != 0; };
}

namespace {

// The measured operations report progress but cannot be cancelled between samples.
ExperimentProgress ExperimentProgressFrom(selfcond_progress_callback cb, void* user) {
  if (cb == nullptr) return nullptr;
  return [cb, user](int done, int total) { (void)cb(done, total, user); };
}

absl::StatusOr<Dataset> MakeDataset(const char* concept, const char* const* positive,
                                    size_t n_positive, const char* const* negative,
                                    size_t n_negative) {
  auto pos = Strings(positive, n_positive, "positive sentence");
  if (!pos.ok()) return pos.status();
  auto neg = Strings(negative, n_negative, "negative sentence");
  if (!neg.ok()) return neg.status();
  Dataset ds;
  ds.concept = concept != nullptr ? concept : "";
  ds.positive = std::move(*pos);
  ds.negative = std::move(*neg);
  return ds;
}

// What both ranking entry points (step-wise and blocking) take from the caller.
struct RankRequest {
  Dataset data;
  RankOptions options;
  bool threaded = false;  // on the model's pool (params.threads != 1)
};

absl::StatusOr<RankRequest> MakeRankRequest(const char* concept, const char* const* positive,
                                            size_t n_positive, const char* const* negative,
                                            size_t n_negative, const selfcond_rank_params* params) {
  RankRequest r;
  auto ds = MakeDataset(concept, positive, n_positive, negative, n_negative);
  if (!ds.ok()) return ds.status();
  r.data = std::move(*ds);
  auto ro = RankOptionsFrom(params, &r.threaded);
  if (!ro.ok()) return ro.status();
  r.options = std::move(*ro);
  return r;
}

// A generation grid from C params (fields left at the grid's defaults when the C default is).
absl::Status GridFrom(const selfcond_grid_params& p, GenerationGrid* g) {
  if (p.prompts != nullptr || p.n_prompts > 0) {
    auto prompts = Strings(p.prompts, p.n_prompts, "prompt");
    if (!prompts.ok()) return prompts.status();
    g->prompts = std::move(*prompts);
  }
  auto prec = PrecisionFrom(p.precision);
  if (!prec.ok()) return prec.status();
  g->precision = *prec;
  g->seeds = p.seeds;
  g->first_seed = p.first_seed;
  g->new_tokens = p.new_tokens;
  g->temperature = p.temperature;
  g->top_p = p.top_p;
  g->top_k = p.top_k;
  return absl::OkStatus();
}

selfcond_grid_params GridToC(const GenerationGrid& g) {
  selfcond_grid_params p;
  p.prompts = nullptr;  // the grid's default prompts
  p.n_prompts = 0;
  p.seeds = g.seeds;
  p.first_seed = g.first_seed;
  p.new_tokens = g.new_tokens;
  p.temperature = g.temperature;
  p.top_p = g.top_p;
  p.top_k = g.top_k;
  p.precision = g.precision == Precision::kF32 ? SELFCOND_F32 : SELFCOND_INT8;
  return p;
}

absl::StatusOr<AutoKOptions> ChooseKOptionsFrom(const selfcond_choose_k_params* params) {
  const selfcond_choose_k_params p = params ? *params : selfcond_choose_k_default_params();
  AutoKOptions o;
  if (auto st = GridFrom(p.grid, &o); !st.ok()) return st;
  auto candidates = Array(p.candidates, p.n_candidates, "candidates");
  if (!candidates.ok()) return candidates.status();
  o.candidates = std::move(*candidates);
  o.target_rate = p.target_rate;
  o.ppl_budget = p.ppl_budget;
  auto fv = ForcingValueFrom(p.forcing);
  if (!fv.ok()) return fv.status();
  o.forcing = *fv;
  return o;
}

absl::StatusOr<CompareOptions> CompareOptionsFrom(const selfcond_compare_params* params) {
  const selfcond_compare_params p = params ? *params : selfcond_compare_default_params();
  CompareOptions o;
  if (auto st = GridFrom(p.grid, &o); !st.ok()) return st;
  if (p.methods != nullptr) {
    o.methods = absl::StrSplit(p.methods, ',', absl::SkipEmpty());
  }
  auto ks = Array(p.ks, p.n_ks, "ks");
  auto alphas = Array(p.alphas, p.n_alphas, "alphas");
  auto betas = Array(p.betas, p.n_betas, "betas");
  if (!ks.ok()) return ks.status();
  if (!alphas.ok()) return alphas.status();
  if (!betas.ok()) return betas.status();
  o.ks = std::move(*ks);
  o.alphas = std::move(*alphas);
  o.betas = std::move(*betas);
  o.steer_layer = p.steer_layer;
  if (p.concept_words < 1) return absl::InvalidArgumentError("concept_words must be >= 1");
  o.concept_words = p.concept_words;
  auto fv = ForcingValueFrom(p.forcing);
  if (!fv.ok()) return fv.status();
  o.forcing = *fv;
  return o;
}

selfcond_status NewDataset(absl::StatusOr<Dataset> ds, selfcond_dataset** out) {
  if (!ds.ok()) return ToC(ds.status());
  *out = new selfcond_dataset{std::move(*ds)};
  return Ok();
}

// Copies n (token, bias) pairs into the caller's arrays (up to capacity).
void CopyBias(const LogitBias& pairs, int32_t* tokens, float* bias, size_t capacity,
              size_t* n_out) {
  *n_out = pairs.size();
  for (size_t i = 0; i < pairs.size() && i < capacity; ++i) {
    tokens[i] = pairs[i].first;
    bias[i] = pairs[i].second;
  }
}

}  // namespace
}  // namespace selfcond::capi

using namespace selfcond::capi;  // NOLINT: the C functions below are this file's whole content

extern "C" {

// ---- ranking -----------------------------------------------------------------------------------

selfcond_rank_params selfcond_rank_default_params(void) {
  selfcond_rank_params p;
  p.precision = SELFCOND_INT8;
  p.threads = 1;
  p.max_sentences = 0;
  p.top_n = 0;
  return p;
}

selfcond_status selfcond_ranking_start(const selfcond_model* model, const char* concept,
                                       const char* const* positive, size_t n_positive,
                                       const char* const* negative, size_t n_negative,
                                       const selfcond_rank_params* params, selfcond_ranking** out) {
  return Guard([&] {
    if (model == nullptr || out == nullptr) return Invalid("model or output is NULL");
    *out = nullptr;
    auto req = MakeRankRequest(concept, positive, n_positive, negative, n_negative, params);
    if (!req.ok()) return ToC(req.status());
    auto ranking = model->engine->StartRanking(std::move(req->data), req->options, req->threaded);
    if (!ranking.ok()) return ToC(ranking.status());
    *out = new selfcond_ranking{model->engine, std::move(*ranking)};
    return Ok();
  });
}

selfcond_status selfcond_ranking_step(selfcond_ranking* ranking, int n, int* done, int* total) {
  return Guard([&] {
    if (ranking == nullptr) return Invalid("ranking is NULL");
    auto d = ranking->ranking->Step(n);
    if (!d.ok()) return ToC(d.status());
    if (done != nullptr) *done = *d;
    if (total != nullptr) *total = ranking->ranking->total();
    return Ok();
  });
}

void selfcond_ranking_get_info(const selfcond_ranking* ranking, selfcond_ranking_info* out) {
  if (ranking == nullptr || out == nullptr) return;
  out->done = ranking->ranking->done();
  out->total = ranking->ranking->total();
  out->num_truncated = ranking->ranking->num_truncated();
}

selfcond_status selfcond_ranking_responses(const selfcond_ranking* ranking, float* out) {
  return Guard([&] {
    if (ranking == nullptr || out == nullptr) return Invalid("ranking or out is NULL");
    const selfcond::Ranking& r = *ranking->ranking;
    if (r.done() < r.total()) {
      return ToC(absl::FailedPreconditionError(
          absl::StrCat("ranking not finished: ", r.done(), " of ", r.total(), " sentences done")));
    }
    const auto& v = r.pooled().responses;
    std::memcpy(out, v.data(), v.size() * sizeof(float));
    return Ok();
  });
}

selfcond_status selfcond_ranking_finish(selfcond_ranking* ranking, selfcond_experts** out) {
  return Guard([&] {
    if (ranking == nullptr || out == nullptr) return Invalid("ranking or output is NULL");
    *out = nullptr;
    const selfcond::Ranking& r = *ranking->ranking;
    if (r.done() < r.total()) {
      return ToC(absl::FailedPreconditionError(
          absl::StrCat("ranking not finished: ", r.done(), " of ", r.total(), " sentences done")));
    }
    auto table = ranking->ranking->Finish();
    if (!table.ok()) return ToC(table.status());
    return NewExperts(*ranking->engine, std::move(*table), false, out);
  });
}

void selfcond_ranking_free(selfcond_ranking* ranking) { delete ranking; }

selfcond_status selfcond_rank(const selfcond_model* model, const char* concept,
                              const char* const* positive, size_t n_positive,
                              const char* const* negative, size_t n_negative,
                              const selfcond_rank_params* params,
                              selfcond_progress_callback progress, void* user_data,
                              selfcond_experts** out) {
  return Guard([&] {
    if (model == nullptr || out == nullptr) return Invalid("model or output is NULL");
    *out = nullptr;
    auto req = MakeRankRequest(concept, positive, n_positive, negative, n_negative, params);
    if (!req.ok()) return ToC(req.status());
    selfcond::RankOptions& ro = req->options;
    ro.progress = ProgressFrom(progress, user_data);
    if (!req->threaded) ro.threads = 1;
    auto table = req->threaded ? model->engine->Rank(req->data, ro)
                               : selfcond::RankConcept(model->engine->model(), req->data, ro);
    if (!table.ok()) return ToC(table.status());
    return NewExperts(*model->engine, std::move(*table), false, out);
  });
}

selfcond_status selfcond_pooled_responses(const selfcond_model* model, const char* const* sentences,
                                          size_t n_sentences, const selfcond_rank_params* params,
                                          selfcond_progress_callback progress, void* user_data,
                                          float* out) {
  return Guard([&] {
    if (model == nullptr || out == nullptr) return Invalid("model or out is NULL");
    auto v = Strings(sentences, n_sentences, "sentence");
    if (!v.ok()) return ToC(v.status());
    bool threaded = false;
    auto ro = RankOptionsFrom(params, &threaded);
    if (!ro.ok()) return ToC(ro.status());
    ro->progress = ProgressFrom(progress, user_data);
    if (threaded) *ro = model->engine->OnPool(*ro);
    auto pooled = selfcond::ComputeUnlabeledResponses(model->engine->model(), std::move(*v), *ro);
    if (!pooled.ok()) return ToC(pooled.status());
    std::memcpy(out, pooled->responses.data(), pooled->responses.size() * sizeof(float));
    return Ok();
  });
}

// ---- concept datasets --------------------------------------------------------------------------

selfcond_status selfcond_dataset_load(const char* path, int max_sentences, selfcond_dataset** out) {
  return Guard([&] {
    if (path == nullptr || out == nullptr) return Invalid("NULL argument");
    *out = nullptr;
    if (max_sentences < 0) return Invalid("max_sentences < 0");
    selfcond::DatasetOptions o;
    o.max_sentences = max_sentences;
    return NewDataset(selfcond::LoadDataset(path, o), out);
  });
}

selfcond_status selfcond_dataset_create(const char* concept, const char* const* positive,
                                        size_t n_positive, const char* const* negative,
                                        size_t n_negative, selfcond_dataset** out) {
  return Guard([&] {
    if (out == nullptr) return Invalid("output is NULL");
    *out = nullptr;
    auto ds = MakeDataset(concept, positive, n_positive, negative, n_negative);
    if (!ds.ok()) return ToC(ds.status());
    if (auto st = selfcond::ValidateDataset(*ds); !st.ok()) return ToC(st);
    return NewDataset(std::move(*ds), out);
  });
}

void selfcond_dataset_free(selfcond_dataset* dataset) { delete dataset; }

void selfcond_dataset_get_info(const selfcond_dataset* dataset, selfcond_dataset_info* out) {
  if (dataset == nullptr || out == nullptr) return;
  out->concept = dataset->dataset.concept.c_str();
  out->group = dataset->dataset.group.c_str();
  out->num_positive = dataset->dataset.positive.size();
  out->num_negative = dataset->dataset.negative.size();
}

const char* selfcond_dataset_sentence(const selfcond_dataset* dataset, int positive, size_t i,
                                      size_t* size) {
  if (dataset == nullptr) return nullptr;
  const auto& v = positive ? dataset->dataset.positive : dataset->dataset.negative;
  if (i >= v.size()) return nullptr;
  if (size != nullptr) *size = v[i].size();
  return v[i].c_str();
}

// ---- other steering methods ------------------------------------------------------------------

selfcond_status selfcond_steering_vector(const selfcond_model* model,
                                         const selfcond_dataset* dataset, int layer,
                                         selfcond_precision precision, float* out, size_t n) {
  return Guard([&] {
    if (model == nullptr || dataset == nullptr || out == nullptr)
      return Invalid("model, dataset or out is NULL");
    const size_t d = model->engine->model().config().n_embd;
    if (n != d) return Invalid(absl::StrCat("out holds ", n, " floats; the model's n_embd is ", d));
    auto prec = PrecisionFrom(precision);
    if (!prec.ok()) return ToC(prec.status());
    auto v = model->engine->SteeringVector(dataset->dataset, layer, *prec);
    if (!v.ok()) return ToC(v.status());
    std::memcpy(out, v->data(), d * sizeof(float));
    return Ok();
  });
}

selfcond_status selfcond_concept_logit_bias(const selfcond_model* model,
                                            const selfcond_dataset* dataset, int max_words,
                                            float beta, int32_t* tokens, float* bias,
                                            size_t capacity, size_t* n_out) {
  return Guard([&] {
    if (model == nullptr || dataset == nullptr || n_out == nullptr)
      return Invalid("model, dataset or n_out is NULL");
    if (capacity > 0 && (tokens == nullptr || bias == nullptr))
      return Invalid("tokens or bias is NULL");
    if (max_words < 1) return Invalid("max_words must be >= 1");
    auto pairs = model->engine->ConceptLogitBias(dataset->dataset, max_words, beta);
    if (!pairs.ok()) return ToC(pairs.status());
    CopyBias(*pairs, tokens, bias, capacity, n_out);
    return Ok();
  });
}

selfcond_status selfcond_word_logit_bias(const selfcond_model* model, const char* const* words,
                                         size_t n_words, float beta, int32_t* tokens, float* bias,
                                         size_t capacity, size_t* n_out) {
  return Guard([&] {
    if (model == nullptr || n_out == nullptr) return Invalid("model or n_out is NULL");
    if (capacity > 0 && (tokens == nullptr || bias == nullptr))
      return Invalid("tokens or bias is NULL");
    auto list = Strings(words, n_words, "word");
    if (!list.ok()) return ToC(list.status());
    CopyBias(model->engine->WordLogitBias(*list, beta), tokens, bias, capacity, n_out);
    return Ok();
  });
}

selfcond_status selfcond_concept_words_to_string(const selfcond_dataset* dataset, int max_words,
                                                 char** out) {
  return Guard([&] {
    if (dataset == nullptr) return Invalid("dataset is NULL");
    if (max_words < 1) return Invalid("max_words must be >= 1");
    selfcond::json::Value words = selfcond::json::Value::Array();
    for (const auto& w : selfcond::ConceptWords(dataset->dataset, max_words)) {
      selfcond::json::Value v = selfcond::json::Value::Object();
      v.Set("word", selfcond::json::Value::String(w.word));
      v.Set("log_odds", selfcond::json::Value::Number(w.log_odds));
      v.Set("positive", selfcond::json::Value::Number(w.positive));
      v.Set("negative", selfcond::json::Value::Number(w.negative));
      words.Push(std::move(v));
    }
    return ReturnString(words.Dump(), out);
  });
}

// ---- the expert explorer -----------------------------------------------------------------------

selfcond_status selfcond_trace_unit(const selfcond_model* model, const char* text, int64_t unit_id,
                                    selfcond_precision precision, int32_t* tokens, float* values,
                                    size_t capacity, size_t* n_tokens) {
  return Guard([&] {
    if (model == nullptr || text == nullptr || n_tokens == nullptr)
      return Invalid("model, text or n_tokens is NULL");
    if (capacity > 0 && (tokens == nullptr || values == nullptr))
      return Invalid("tokens or values is NULL");
    auto prec = PrecisionFrom(precision);
    if (!prec.ok()) return ToC(prec.status());
    auto t = model->engine->TraceUnit(text, unit_id, *prec);
    if (!t.ok()) return ToC(t.status());
    *n_tokens = t->tokens.size();
    const size_t n = std::min(capacity, t->tokens.size());
    std::copy(t->tokens.begin(), t->tokens.begin() + n, tokens);
    std::copy(t->values.begin(), t->values.begin() + n, values);
    return Ok();
  });
}

// ---- measured conditioning -------------------------------------------------------------------

selfcond_choose_k_params selfcond_choose_k_default_params(void) {
  static const selfcond::AutoKOptions d;
  selfcond_choose_k_params p;
  p.grid = GridToC(d);
  p.candidates = d.candidates.data();
  p.n_candidates = d.candidates.size();
  p.target_rate = d.target_rate;
  p.ppl_budget = d.ppl_budget;
  p.forcing = SELFCOND_FORCE_ON_P50;
  return p;
}

selfcond_status selfcond_choose_k(const selfcond_model* model, const selfcond_experts* experts,
                                  const selfcond_dataset* dataset,
                                  const selfcond_choose_k_params* params,
                                  selfcond_progress_callback progress, void* user_data,
                                  selfcond_choose_k_result* result, char** report) {
  return Guard([&] {
    if (model == nullptr || experts == nullptr || result == nullptr)
      return Invalid("model, experts or result is NULL");
    auto o = ChooseKOptionsFrom(params);
    if (!o.ok()) return ToC(o.status());
    auto r = model->engine->ChooseK(experts->table, dataset ? &dataset->dataset : nullptr, *o,
                                    ExperimentProgressFrom(progress, user_data));
    if (!r.ok()) return ToC(r.status());
    result->k = r->k;
    result->met = r->met ? 1 : 0;
    if (report != nullptr) return ReturnString(selfcond::AutoKResultToJson(*r, *o).Dump(), report);
    return Ok();
  });
}

selfcond_compare_params selfcond_compare_default_params(void) {
  static const selfcond::CompareOptions d;
  selfcond_compare_params p;
  p.grid = GridToC(d);
  p.methods = "experts,steer,bias";
  p.ks = d.ks.data();
  p.n_ks = d.ks.size();
  p.alphas = d.alphas.data();
  p.n_alphas = d.alphas.size();
  p.betas = d.betas.data();
  p.n_betas = d.betas.size();
  p.steer_layer = d.steer_layer;
  p.concept_words = d.concept_words;
  p.forcing = SELFCOND_FORCE_ON_P50;
  return p;
}

selfcond_status selfcond_compare_methods(const selfcond_model* model,
                                         const selfcond_experts* experts,
                                         const selfcond_dataset* dataset,
                                         const selfcond_compare_params* params,
                                         selfcond_progress_callback progress, void* user_data,
                                         char** out) {
  return Guard([&] {
    if (model == nullptr || experts == nullptr || dataset == nullptr || out == nullptr)
      return Invalid("model, experts, dataset or output is NULL");
    auto o = CompareOptionsFrom(params);
    if (!o.ok()) return ToC(o.status());
    auto r = model->engine->CompareMethods(experts->table, dataset->dataset, *o,
                                           ExperimentProgressFrom(progress, user_data));
    if (!r.ok()) return ToC(r.status());
    return ReturnString(selfcond::CompareResultToJson(*r).Dump(), out);
  });
}

// ---- expertise from pooled responses ---------------------------------------------------------

selfcond_status selfcond_expertise(const float* responses, int64_t n_sentences, int64_t n_units,
                                   int64_t row_stride, const uint8_t* labels, int threads,
                                   float* ap, float* on_p50, float* on_p90, float* off_mean) {
  return Guard([&] {
    if (responses == nullptr || labels == nullptr || ap == nullptr || on_p50 == nullptr ||
        on_p90 == nullptr || off_mean == nullptr) {
      return Invalid("NULL argument");
    }
    if (n_sentences <= 0 || n_units <= 0 || row_stride < n_units) {
      return Invalid(absl::StrCat("bad shape: ", n_sentences, " sentences x ", n_units,
                                  " units, row stride ", row_stride));
    }
    // ComputeExpertise reads a contiguous matrix: gather the rows (a copy of the unit range).
    std::vector<float> m(static_cast<size_t>(n_sentences) * static_cast<size_t>(n_units));
    for (int64_t i = 0; i < n_sentences; ++i) {
      std::memcpy(m.data() + i * n_units, responses + i * row_stride, sizeof(float) * n_units);
    }
    // No model here, so no model pool: this computation brings its own (threads <= 0: cores).
    std::unique_ptr<selfcond::ThreadPool> pool;
    if (threads != 1) pool = std::make_unique<selfcond::ThreadPool>(threads);
    auto ex = selfcond::ComputeExpertise(
        m, n_sentences, n_units, absl::MakeConstSpan(labels, static_cast<size_t>(n_sentences)),
        pool.get());
    if (!ex.ok()) return ToC(ex.status());
    std::memcpy(ap, ex->ap.data(), sizeof(float) * n_units);
    std::memcpy(on_p50, ex->on_p50.data(), sizeof(float) * n_units);
    std::memcpy(on_p90, ex->on_p90.data(), sizeof(float) * n_units);
    std::memcpy(off_mean, ex->off_mean.data(), sizeof(float) * n_units);
    return Ok();
  });
}

selfcond_status selfcond_experts_from_stats(const selfcond_model* model,
                                            const selfcond_table_info* info, const float* ap,
                                            const float* on_p50, const float* on_p90,
                                            const float* off_mean, selfcond_experts** out) {
  return Guard([&] {
    if (model == nullptr || info == nullptr || info->concept == nullptr || ap == nullptr ||
        on_p50 == nullptr || on_p90 == nullptr || off_mean == nullptr || out == nullptr) {
      return Invalid("NULL argument");
    }
    *out = nullptr;
    auto prec = PrecisionFrom(info->precision);
    if (!prec.ok()) return ToC(prec.status());
    if (info->num_positive < 1 || info->num_negative < 1 || info->num_truncated < 0 ||
        info->top_n < 0) {
      return Invalid("table info: num_positive and num_negative must be >= 1, the rest >= 0");
    }
    const selfcond::Model& m = model->engine->model();
    const size_t n = static_cast<size_t>(selfcond::UnitSpace(m.config()).num_units());
    selfcond::ExpertiseResult stats;
    stats.ap.assign(ap, ap + n);
    stats.on_p50.assign(on_p50, on_p50 + n);
    stats.on_p90.assign(on_p90, on_p90 + n);
    stats.off_mean.assign(off_mean, off_mean + n);
    for (size_t i = 0; i < n; ++i) {
      if (!(stats.ap[i] >= 0 && stats.ap[i] <= 1)) {
        return Invalid(absl::StrCat("ap[", i, "] = ", stats.ap[i], " is not in [0, 1]"));
      }
    }
    selfcond::TableInfo ti;
    ti.concept = info->concept;
    ti.group = info->group != nullptr ? info->group : "";
    ti.num_positive = info->num_positive;
    ti.num_negative = info->num_negative;
    ti.num_truncated = info->num_truncated;
    ti.precision = *prec;
    ti.top_n = info->top_n;
    return NewExperts(*model->engine, selfcond::ExpertTableFromStats(m, stats, ti), false, out);
  });
}

}  // extern "C"
