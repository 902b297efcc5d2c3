// The C API (include/selfcond/selfcond.h): a thin layer over the library. Every function turns
// C arguments into library types, calls one library function or driver (Generation, Ranking)
// and turns an absl::Status into a selfcond_status plus a thread-local message. No logic of its
// own: no generation or ranking loop lives here.
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "experts/rank.h"
#include "experts/steer.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/units.h"
#include "selfcond/selfcond.h"
#include "util/file_util.h"
#include "util/parallel.h"

// The opaque handles are the library's objects plus what the C side needs to keep alive.
struct selfcond_model {
  std::unique_ptr<selfcond::Model> model;
};
struct selfcond_experts {
  selfcond::ExpertTable table;
  selfcond::ModelConfig model_config;  // of the model it was checked against (unit ids)
  bool allow_unhashed = false;         // loaded with selfcond_experts_params.allow_unhashed
};
struct selfcond_dataset {
  selfcond::Dataset dataset;
};
struct selfcond_session {
  const selfcond_model* model;
  std::unique_ptr<selfcond::ThreadPool> pool;  // null: single-threaded
  std::unique_ptr<selfcond::Session> session;
};
struct selfcond_ranking {
  const selfcond_model* model;
  std::unique_ptr<selfcond::ThreadPool> pool;
  std::unique_ptr<selfcond::Ranking> ranking;
};

namespace {

using selfcond::Precision;

thread_local std::string g_last_error;

selfcond_status ToC(const absl::Status& st) {
  if (st.ok()) {
    g_last_error.clear();
    return SELFCOND_OK;
  }
  g_last_error = std::string(st.message());
  switch (st.code()) {
    case absl::StatusCode::kInvalidArgument:
      return SELFCOND_INVALID_ARGUMENT;
    case absl::StatusCode::kNotFound:
      return SELFCOND_NOT_FOUND;
    case absl::StatusCode::kOutOfRange:
      return SELFCOND_OUT_OF_RANGE;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kPermissionDenied:
      return SELFCOND_FAILED_PRECONDITION;
    case absl::StatusCode::kDataLoss:
      return SELFCOND_DATA_LOSS;
    case absl::StatusCode::kResourceExhausted:
      return SELFCOND_RESOURCE_EXHAUSTED;
    case absl::StatusCode::kCancelled:
      return SELFCOND_CANCELLED;
    case absl::StatusCode::kUnimplemented:
      return SELFCOND_UNIMPLEMENTED;
    default:
      return SELFCOND_INTERNAL;
  }
}

selfcond_status Invalid(const std::string& msg) { return ToC(absl::InvalidArgumentError(msg)); }

// Runs f, turning C++ exceptions (std::bad_alloc above all) into error codes: no exception may
// cross the C boundary.
template <typename F>
selfcond_status Guard(F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return ToC(absl::ResourceExhaustedError("out of memory"));
  } catch (const std::exception& e) {
    return ToC(absl::InternalError(e.what()));
  } catch (...) {
    return ToC(absl::InternalError("unknown exception"));
  }
}

char* NewCString(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) std::memcpy(out, s.data(), s.size() + 1);
  return out;
}

selfcond_status ReturnString(const std::string& s, char** out) {
  if (out == nullptr) return Invalid("output pointer is NULL");
  *out = NewCString(s);
  if (*out == nullptr) return ToC(absl::ResourceExhaustedError("out of memory"));
  return ToC(absl::OkStatus());
}

selfcond::Model::LoadOptions LoadOptionsFrom(const selfcond_model_params* params) {
  const selfcond_model_params p = params ? *params : selfcond_model_default_params();
  selfcond::Model::LoadOptions lo;
  lo.verify_hash = p.verify_hash != 0;
  lo.need_float = p.need_f32 != 0;
  return lo;
}

absl::StatusOr<Precision> PrecisionFrom(selfcond_precision p) {
  if (p == SELFCOND_INT8) return Precision::kInt8;
  if (p == SELFCOND_F32) return Precision::kF32;
  return absl::InvalidArgumentError(absl::StrCat("unknown precision ", static_cast<int>(p)));
}

std::vector<std::string> Strings(const char* const* v, size_t n, const char* what,
                                 absl::Status* st) {
  std::vector<std::string> out;
  if (n > 0 && v == nullptr) {
    *st = absl::InvalidArgumentError(absl::StrCat(what, " sentences: NULL array"));
    return out;
  }
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (v[i] == nullptr) {
      *st = absl::InvalidArgumentError(absl::StrCat(what, " sentence ", i, " is NULL"));
      return out;
    }
    out.emplace_back(v[i]);
  }
  return out;
}

// A labeled dataset from the C arrays.
absl::StatusOr<selfcond::Dataset> MakeDataset(const char* concept, const char* const* positive,
                                              size_t n_positive, const char* const* negative,
                                              size_t n_negative) {
  absl::Status st;
  selfcond::Dataset ds;
  ds.concept = concept != nullptr ? concept : "";
  ds.positive = Strings(positive, n_positive, "positive", &st);
  if (st.ok()) ds.negative = Strings(negative, n_negative, "negative", &st);
  if (!st.ok()) return st;
  return ds;
}

// RankOptions from C params; the pool (if any) goes to *pool.
absl::StatusOr<selfcond::RankOptions> RankOptionsFrom(const selfcond_rank_params* params,
                                                      std::unique_ptr<selfcond::ThreadPool>* pool) {
  const selfcond_rank_params p = params ? *params : selfcond_rank_default_params();
  auto prec = PrecisionFrom(p.precision);
  if (!prec.ok()) return prec.status();
  if (p.max_sentences < 0) return absl::InvalidArgumentError("max_sentences must be >= 0");
  if (p.top_n < 0) return absl::InvalidArgumentError("top_n must be >= 0");
  selfcond::RankOptions ro;
  ro.precision = *prec;
  ro.max_sentences = p.max_sentences;
  ro.top_n = p.top_n;
  if (p.threads != 1) {
    *pool = std::make_unique<selfcond::ThreadPool>(p.threads);
    ro.pool = pool->get();
  }
  return ro;
}

selfcond::RankOptions::Progress ProgressFrom(selfcond_progress_callback cb, void* user) {
  if (cb == nullptr) return nullptr;
  return [cb, user](int done, int total) { return cb(done, total, user) != 0; };
}

absl::StatusOr<selfcond::ExpertTable> ParseTable(const selfcond_model* model, std::string_view text,
                                                 bool allow_unhashed) {
  auto table = selfcond::ParseAnyExpertTable(text);
  if (!table.ok()) return table.status();
  if (auto st = selfcond::CheckCompatible(*table, *model->model, allow_unhashed); !st.ok())
    return st;
  return table;
}

selfcond_status NewExperts(const selfcond_model* model, selfcond::ExpertTable table,
                           bool allow_unhashed, selfcond_experts** out) {
  *out = new selfcond_experts{std::move(table), model->model->config(), allow_unhashed};
  return ToC(absl::OkStatus());
}

}  // namespace

extern "C" {

const char* selfcond_version(void) { return "0.9.0"; }

const char* selfcond_last_error(void) { return g_last_error.c_str(); }

const char* selfcond_status_name(selfcond_status status) {
  switch (status) {
    case SELFCOND_OK:
      return "OK";
    case SELFCOND_INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case SELFCOND_NOT_FOUND:
      return "NOT_FOUND";
    case SELFCOND_OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case SELFCOND_FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case SELFCOND_DATA_LOSS:
      return "DATA_LOSS";
    case SELFCOND_RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case SELFCOND_CANCELLED:
      return "CANCELLED";
    case SELFCOND_INTERNAL:
      return "INTERNAL";
    case SELFCOND_UNIMPLEMENTED:
      return "UNIMPLEMENTED";
  }
  return "UNKNOWN";
}

void selfcond_string_free(char* s) { std::free(s); }

// ---- models ----------------------------------------------------------------------------------

selfcond_model_params selfcond_model_default_params(void) {
  selfcond_model_params p;
  p.verify_hash = 1;
  p.need_f32 = 0;
  return p;
}

selfcond_status selfcond_model_load_file(const char* path, const selfcond_model_params* params,
                                         selfcond_model** out) {
  return Guard([&] {
    if (path == nullptr || out == nullptr) return Invalid("path or output pointer is NULL");
    *out = nullptr;
    auto model = selfcond::Model::Load(path, LoadOptionsFrom(params));
    if (!model.ok()) return ToC(model.status());
    *out = new selfcond_model{std::move(*model)};
    return ToC(absl::OkStatus());
  });
}

selfcond_status selfcond_model_load_memory(const void* data, size_t size,
                                           const selfcond_model_params* params,
                                           selfcond_model** out) {
  return Guard([&] {
    if ((data == nullptr && size > 0) || out == nullptr) return Invalid("data or output is NULL");
    *out = nullptr;
    auto bytes = selfcond::HeapBuffer::CopyOf(data, size);  // the only copy
    if (!bytes.ok()) return ToC(bytes.status());
    auto model = selfcond::Model::FromBuffer(std::move(*bytes), LoadOptionsFrom(params));
    if (!model.ok()) return ToC(model.status());
    *out = new selfcond_model{std::move(*model)};
    return ToC(absl::OkStatus());
  });
}

void selfcond_model_free(selfcond_model* model) { delete model; }

void selfcond_model_get_info(const selfcond_model* model, selfcond_model_info* out) {
  if (model == nullptr || out == nullptr) return;
  const selfcond::Model& m = *model->model;
  const selfcond::ModelConfig& c = m.config();
  out->name = m.name().c_str();
  out->hash = m.hash_hex().c_str();
  out->n_layer = static_cast<int>(c.n_layer);
  out->n_embd = static_cast<int>(c.n_embd);
  out->n_head = static_cast<int>(c.n_head);
  out->n_ctx = static_cast<int>(c.n_ctx);
  out->n_inner = static_cast<int>(c.n_inner);
  out->vocab_size = static_cast<int>(c.vocab_size);
  out->eos_id = m.tokenizer().eos_id();
  out->num_units = selfcond::UnitSpace(c).num_units();
}

selfcond_status selfcond_tokenize(const selfcond_model* model, const char* text, int32_t* out,
                                  size_t capacity, size_t* n_tokens) {
  return Guard([&] {
    if (model == nullptr || text == nullptr || n_tokens == nullptr)
      return Invalid("model, text or n_tokens is NULL");
    if (capacity > 0 && out == nullptr) return Invalid("out is NULL with capacity > 0");
    const std::vector<int32_t> ids = model->model->tokenizer().Encode(text);
    *n_tokens = ids.size();
    if (capacity > 0) {
      std::memcpy(out, ids.data(), std::min(capacity, ids.size()) * sizeof(int32_t));
    }
    return ToC(absl::OkStatus());
  });
}

selfcond_status selfcond_detokenize_to_string(const selfcond_model* model, const int32_t* ids,
                                              size_t n, char** out) {
  return Guard([&] {
    if (model == nullptr || (ids == nullptr && n > 0)) return Invalid("model or ids is NULL");
    const int32_t vocab = static_cast<int32_t>(model->model->config().vocab_size);
    for (size_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= vocab) {
        return Invalid(absl::StrCat("token id ", ids[i], " out of range [0, ", vocab, ")"));
      }
    }
    return ReturnString(model->model->tokenizer().Decode({ids, n}), out);
  });
}

selfcond_status selfcond_unit_to_string(const selfcond_model* model, int64_t unit_id,
                                        char** layer_name, int* unit_in_layer) {
  return Guard([&] {
    if (model == nullptr || layer_name == nullptr) return Invalid("model or output is NULL");
    const selfcond::UnitSpace space(model->model->config());
    if (unit_id < 0 || unit_id >= space.num_units()) {
      return ToC(absl::OutOfRangeError(
          absl::StrCat("unit ", unit_id, " out of range [0, ", space.num_units(), ")")));
    }
    const auto [site, unit] = space.SiteAndUnit(unit_id);
    if (unit_in_layer != nullptr) *unit_in_layer = unit;
    return ReturnString(space.SiteName(site), layer_name);
  });
}

// ---- expert tables -----------------------------------------------------------------------------

selfcond_experts_params selfcond_experts_default_params(void) {
  selfcond_experts_params p;
  p.allow_unhashed = 0;
  return p;
}

selfcond_status selfcond_experts_load_file_ex(const selfcond_model* model, const char* path,
                                              const selfcond_experts_params* params,
                                              selfcond_experts** out) {
  return Guard([&] {
    if (model == nullptr || path == nullptr || out == nullptr) return Invalid("NULL argument");
    *out = nullptr;
    const bool allow = params != nullptr && params->allow_unhashed != 0;
    auto text = selfcond::ReadFile(path);
    if (!text.ok()) return ToC(text.status());
    auto table = ParseTable(model, *text, allow);
    if (!table.ok()) return ToC(table.status());
    return NewExperts(model, std::move(*table), allow, out);
  });
}

selfcond_status selfcond_experts_load_memory_ex(const selfcond_model* model, const char* text,
                                                size_t size, const selfcond_experts_params* params,
                                                selfcond_experts** out) {
  return Guard([&] {
    if (model == nullptr || (text == nullptr && size > 0) || out == nullptr)
      return Invalid("NULL argument");
    *out = nullptr;
    const bool allow = params != nullptr && params->allow_unhashed != 0;
    auto table = ParseTable(model, std::string_view(text, size), allow);
    if (!table.ok()) return ToC(table.status());
    return NewExperts(model, std::move(*table), allow, out);
  });
}

selfcond_status selfcond_experts_load_file(const selfcond_model* model, const char* path,
                                           selfcond_experts** out) {
  return selfcond_experts_load_file_ex(model, path, nullptr, out);
}

selfcond_status selfcond_experts_load_memory(const selfcond_model* model, const char* text,
                                             size_t size, selfcond_experts** out) {
  return selfcond_experts_load_memory_ex(model, text, size, nullptr, out);
}

void selfcond_experts_free(selfcond_experts* experts) { delete experts; }

selfcond_status selfcond_experts_to_string(const selfcond_experts* experts,
                                           selfcond_table_format format, char** out) {
  return Guard([&] {
    if (experts == nullptr) return Invalid("experts is NULL");
    if (format == SELFCOND_TABLE_JSON)
      return ReturnString(selfcond::SerializeExpertTable(experts->table), out);
    if (format == SELFCOND_TABLE_CSV)
      return ReturnString(selfcond::ExportExpertiseCsv(experts->table), out);
    return Invalid(absl::StrCat("unknown table format ", static_cast<int>(format)));
  });
}

selfcond_status selfcond_experts_save(const selfcond_experts* experts, const char* path,
                                      selfcond_table_format format) {
  return Guard([&] {
    if (experts == nullptr || path == nullptr) return Invalid("experts or path is NULL");
    if (format != SELFCOND_TABLE_JSON && format != SELFCOND_TABLE_CSV)
      return Invalid(absl::StrCat("unknown table format ", static_cast<int>(format)));
    const std::string text = format == SELFCOND_TABLE_JSON
                                 ? selfcond::SerializeExpertTable(experts->table)
                                 : selfcond::ExportExpertiseCsv(experts->table);
    return ToC(selfcond::WriteFile(path, text));
  });
}

void selfcond_experts_get_info(const selfcond_experts* experts, selfcond_experts_info* out) {
  if (experts == nullptr || out == nullptr) return;
  const selfcond::ExpertTable& t = experts->table;
  out->concept = t.concept.c_str();
  out->num_units = static_cast<int64_t>(t.units.size());
  out->total_units = t.total_units;
  out->num_positive = t.num_positive;
  out->num_negative = t.num_negative;
}

selfcond_status selfcond_experts_get_unit(const selfcond_experts* experts, int64_t rank,
                                          selfcond_expert_unit* out) {
  return Guard([&] {
    if (experts == nullptr || out == nullptr) return Invalid("experts or output is NULL");
    const auto& units = experts->table.units;
    if (rank < 0 || rank >= static_cast<int64_t>(units.size())) {
      return ToC(absl::OutOfRangeError(
          absl::StrCat("rank ", rank, " out of range [0, ", units.size(), ")")));
    }
    const selfcond::ExpertUnit& u = units[rank];
    out->unit_id = selfcond::UnitSpace(experts->model_config).UnitId(u.site, u.unit);
    out->site = u.site;
    out->unit = u.unit;
    out->ap = u.ap;
    out->on_p50 = u.on_p50;
    out->on_p90 = u.on_p90;
    out->off_mean = u.off_mean;
    return ToC(absl::OkStatus());
  });
}

// ---- sessions and generation -------------------------------------------------------------------

selfcond_session_params selfcond_session_default_params(void) {
  selfcond_session_params p;
  p.precision = SELFCOND_INT8;
  p.threads = 1;
  p.n_ctx = 0;
  p.kv_type = SELFCOND_KV_F32;
  return p;
}

selfcond_status selfcond_session_create(const selfcond_model* model,
                                        const selfcond_session_params* params,
                                        selfcond_session** out) {
  return Guard([&] {
    if (model == nullptr || out == nullptr) return Invalid("model or output is NULL");
    *out = nullptr;
    const selfcond_session_params p = params ? *params : selfcond_session_default_params();
    auto prec = PrecisionFrom(p.precision);
    if (!prec.ok()) return ToC(prec.status());
    if (p.kv_type != SELFCOND_KV_F32 && p.kv_type != SELFCOND_KV_F16)
      return Invalid(absl::StrCat("unknown KV cache type ", static_cast<int>(p.kv_type)));
    auto s = std::make_unique<selfcond_session>();
    s->model = model;
    if (p.threads != 1) s->pool = std::make_unique<selfcond::ThreadPool>(p.threads);
    selfcond::SessionOptions so;
    so.precision = *prec;
    so.pool = s->pool.get();
    so.n_ctx = p.n_ctx;
    so.kv_type = p.kv_type == SELFCOND_KV_F16 ? selfcond::SessionOptions::KvType::kF16
                                              : selfcond::SessionOptions::KvType::kF32;
    auto session = selfcond::Session::Create(*model->model, so);
    if (!session.ok()) return ToC(session.status());
    s->session = std::move(*session);
    *out = s.release();
    return ToC(absl::OkStatus());
  });
}

void selfcond_session_free(selfcond_session* session) { delete session; }

selfcond_status selfcond_session_set_forcing(selfcond_session* session,
                                             const selfcond_forcing_source* sources,
                                             size_t n_sources, selfcond_forcing_value value,
                                             int only_last_token) {
  return Guard([&] {
    if (session == nullptr || (sources == nullptr && n_sources > 0))
      return Invalid("session or sources is NULL");
    selfcond::Session::Conditioning cond = session->session->conditioning();
    if (n_sources == 0) {
      cond.forcing = selfcond::Forcing();
      return ToC(session->session->SetConditioning(std::move(cond)));
    }
    selfcond::ForcingValue fv;
    switch (value) {
      case SELFCOND_FORCE_ON_P50:
        fv = selfcond::ForcingValue::kOnP50;
        break;
      case SELFCOND_FORCE_ON_P90:
        fv = selfcond::ForcingValue::kOnP90;
        break;
      case SELFCOND_FORCE_OFF_MEAN:
        fv = selfcond::ForcingValue::kOffMean;
        break;
      case SELFCOND_FORCE_ZERO:
        fv = selfcond::ForcingValue::kZero;
        break;
      default:
        return Invalid(absl::StrCat("unknown forcing value ", static_cast<int>(value)));
    }
    std::vector<selfcond::ForcingSource> src;
    for (size_t i = 0; i < n_sources; ++i) {
      if (sources[i].experts == nullptr) return Invalid(absl::StrCat("source ", i, ": NULL"));
      if (sources[i].top_k < 0) return Invalid(absl::StrCat("source ", i, ": top_k < 0"));
      // Tables are checked against their model when loaded; a table of another model loaded
      // through another handle must not reach this session.
      if (auto st = selfcond::CheckCompatible(sources[i].experts->table, *session->model->model,
                                              sources[i].experts->allow_unhashed);
          !st.ok()) {
        return ToC(st);
      }
      src.push_back({&sources[i].experts->table, sources[i].top_k});
    }
    auto forcing = selfcond::BuildForcing(src, fv, only_last_token != 0,
                                          selfcond::UnitSpace(session->model->model->config()));
    if (!forcing.ok()) return ToC(forcing.status());
    cond.forcing = std::move(*forcing);
    return ToC(session->session->SetConditioning(std::move(cond)));
  });
}

selfcond_status selfcond_session_set_steering(selfcond_session* session, int layer,
                                              const float* vector, size_t n, float alpha) {
  return Guard([&] {
    if (session == nullptr) return Invalid("session is NULL");
    selfcond::Session::Conditioning cond = session->session->conditioning();
    cond.steering = selfcond::ScaledSteering(
        layer, absl::Span<const float>(vector, vector != nullptr ? n : 0), alpha);
    return ToC(session->session->SetConditioning(std::move(cond)));
  });
}

selfcond_status selfcond_session_set_logit_bias(selfcond_session* session, const int32_t* tokens,
                                                const float* bias, size_t n) {
  return Guard([&] {
    if (session == nullptr || (n > 0 && (tokens == nullptr || bias == nullptr)))
      return Invalid("session, tokens or bias is NULL");
    std::vector<std::pair<int32_t, float>> pairs;
    for (size_t i = 0; i < n; ++i) pairs.push_back({tokens[i], bias[i]});
    selfcond::Session::Conditioning cond = session->session->conditioning();
    cond.logit_bias = std::move(pairs);
    return ToC(session->session->SetConditioning(std::move(cond)));
  });
}

selfcond_status selfcond_steering_vector(const selfcond_model* model,
                                         const selfcond_dataset* dataset, int layer, int threads,
                                         float* out, size_t n) {
  return Guard([&] {
    if (model == nullptr || dataset == nullptr || out == nullptr)
      return Invalid("model, dataset or out is NULL");
    const size_t d = model->model->config().n_embd;
    if (n != d) return Invalid(absl::StrCat("out holds ", n, " floats; the model's n_embd is ", d));
    selfcond::ThreadPool pool(threads);
    auto v = selfcond::ComputeSteeringVector(*model->model, dataset->dataset, layer,
                                             selfcond::Precision::kInt8, &pool);
    if (!v.ok()) return ToC(v.status());
    std::memcpy(out, v->data(), d * sizeof(float));
    return ToC(absl::OkStatus());
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
    auto pairs_or =
        selfcond::ConceptLogitBias(model->model->tokenizer(), dataset->dataset, max_words, beta);
    if (!pairs_or.ok()) return ToC(pairs_or.status());
    const auto& pairs = *pairs_or;
    *n_out = pairs.size();
    for (size_t i = 0; i < pairs.size() && i < capacity; ++i) {
      tokens[i] = pairs[i].first;
      bias[i] = pairs[i].second;
    }
    return ToC(absl::OkStatus());
  });
}

selfcond_generate_params selfcond_generate_default_params(void) {
  selfcond_generate_params p;
  const selfcond::GenerateOptions d;
  p.max_new_tokens = d.max_new_tokens;
  p.temperature = d.sampling.temperature;
  p.top_k = d.sampling.top_k;
  p.top_p = d.sampling.top_p;
  p.seed = d.sampling.seed;
  p.stop_at_eos = d.stop_at_eos ? 1 : 0;
  return p;
}

selfcond_status selfcond_generate(selfcond_session* session, const char* prompt,
                                  const selfcond_generate_params* params,
                                  selfcond_token_callback callback, void* user_data,
                                  selfcond_generate_result* result) {
  return Guard([&] {
    if (session == nullptr || prompt == nullptr) return Invalid("session or prompt is NULL");
    const selfcond_generate_params p = params ? *params : selfcond_generate_default_params();
    selfcond::GenerateOptions go;
    go.max_new_tokens = p.max_new_tokens;
    go.sampling.temperature = p.temperature;
    go.sampling.top_k = p.top_k;
    go.sampling.top_p = p.top_p;
    go.sampling.seed = p.seed;
    go.stop_at_eos = p.stop_at_eos != 0;
    selfcond::Session& s = *session->session;
    const std::vector<int32_t> ids = selfcond::PromptTokens(s.model().tokenizer(), prompt);
    auto gen = selfcond::Generation::Start(s, ids, go);
    if (!gen.ok()) return ToC(gen.status());
    selfcond::Generation& g = **gen;
    while (!g.done()) {
      auto step = g.Next();
      if (!step.ok()) return ToC(step.status());
      if (callback != nullptr && (step->token >= 0 || !step->text.empty()) &&
          callback(step->token, step->text.data(), step->text.size(), user_data) == 0) {
        g.Cancel();
      }
    }
    if (result != nullptr) {
      const selfcond::GenerateResult& r = g.result();
      result->prompt_tokens = r.prompt_tokens;
      result->new_tokens = static_cast<int>(r.tokens.size());
      using Stop = selfcond::GenerateResult::Stop;
      result->stop = r.stop == Stop::kEos           ? SELFCOND_STOP_EOS
                     : r.stop == Stop::kContextFull ? SELFCOND_STOP_CONTEXT_FULL
                     : r.stop == Stop::kCancelled   ? SELFCOND_STOP_CANCELLED
                                                    : SELFCOND_STOP_MAX_TOKENS;
    }
    return ToC(absl::OkStatus());
  });
}

// ---- ranking
// -------------------------------------------------------------------------------------

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
    auto ds = MakeDataset(concept, positive, n_positive, negative, n_negative);
    if (!ds.ok()) return ToC(ds.status());
    auto r = std::make_unique<selfcond_ranking>();
    r->model = model;
    auto ro = RankOptionsFrom(params, &r->pool);
    if (!ro.ok()) return ToC(ro.status());
    auto ranking = selfcond::Ranking::Start(*model->model, std::move(*ds), *ro);
    if (!ranking.ok()) return ToC(ranking.status());
    r->ranking = std::move(*ranking);
    *out = r.release();
    return ToC(absl::OkStatus());
  });
}

selfcond_status selfcond_ranking_step(selfcond_ranking* ranking, int n, int* done, int* total) {
  return Guard([&] {
    if (ranking == nullptr) return Invalid("ranking is NULL");
    auto d = ranking->ranking->Step(n);
    if (!d.ok()) return ToC(d.status());
    if (done != nullptr) *done = *d;
    if (total != nullptr) *total = ranking->ranking->total();
    return ToC(absl::OkStatus());
  });
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
    return ToC(absl::OkStatus());
  });
}

selfcond_status selfcond_ranking_finish(selfcond_ranking* ranking, selfcond_experts** out) {
  return Guard([&] {
    if (ranking == nullptr || out == nullptr) return Invalid("ranking or output is NULL");
    *out = nullptr;
    auto table = ranking->ranking->Finish();
    if (!table.ok()) return ToC(table.status());
    return NewExperts(ranking->model, std::move(*table), false, out);
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
    auto ds = MakeDataset(concept, positive, n_positive, negative, n_negative);
    if (!ds.ok()) return ToC(ds.status());
    std::unique_ptr<selfcond::ThreadPool> pool;
    auto ro = RankOptionsFrom(params, &pool);
    if (!ro.ok()) return ToC(ro.status());
    ro->progress = ProgressFrom(progress, user_data);
    auto table = selfcond::RankConcept(*model->model, *ds, *ro);
    if (!table.ok()) return ToC(table.status());
    return NewExperts(model, std::move(*table), false, out);
  });
}

selfcond_status selfcond_pooled_responses(const selfcond_model* model, const char* const* sentences,
                                          size_t n_sentences, const selfcond_rank_params* params,
                                          selfcond_progress_callback progress, void* user_data,
                                          float* out) {
  return Guard([&] {
    if (model == nullptr || out == nullptr) return Invalid("model or out is NULL");
    absl::Status st;
    std::vector<std::string> v = Strings(sentences, n_sentences, "", &st);
    if (!st.ok()) return ToC(st);
    std::unique_ptr<selfcond::ThreadPool> pool;
    auto ro = RankOptionsFrom(params, &pool);
    if (!ro.ok()) return ToC(ro.status());
    ro->progress = ProgressFrom(progress, user_data);
    auto pooled = selfcond::ComputeUnlabeledResponses(*model->model, std::move(v), *ro);
    if (!pooled.ok()) return ToC(pooled.status());
    std::memcpy(out, pooled->responses.data(), pooled->responses.size() * sizeof(float));
    return ToC(absl::OkStatus());
  });
}

selfcond_status selfcond_dataset_load(const char* path, int max_sentences, selfcond_dataset** out) {
  return Guard([&] {
    if (path == nullptr || out == nullptr) return Invalid("NULL argument");
    *out = nullptr;
    if (max_sentences < 0) return Invalid("max_sentences < 0");
    selfcond::DatasetOptions o;
    o.max_sentences = max_sentences;
    auto ds = selfcond::LoadDataset(path, o);
    if (!ds.ok()) return ToC(ds.status());
    *out = new selfcond_dataset{std::move(*ds)};
    return ToC(absl::OkStatus());
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
    return ToC(absl::OkStatus());
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
    const size_t n = static_cast<size_t>(selfcond::UnitSpace(model->model->config()).num_units());
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
    return NewExperts(model, selfcond::ExpertTableFromStats(*model->model, stats, ti), false, out);
  });
}

}  // extern "C"
