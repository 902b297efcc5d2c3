// The C API (include/selfcond/selfcond.h), part 1: errors, models, expert tables, sessions and
// generation. A 1:1 projection of the Engine (src/engine/engine.h): every function turns C
// arguments into library types, calls one Engine operation and turns an absl::Status into a
// selfcond_status plus a thread-local message. No logic of its own: no generation or ranking
// loop lives here. Part 2 (ranking, datasets, steering, measurements): selfcond_c_experts.cc.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "api/c_api_internal.h"
#include "engine/engine.h"
#include "selfcond/selfcond.h"
#include "util/file_util.h"

namespace selfcond::capi {
namespace {

thread_local std::string g_last_error;
// The log callback (selfcond_set_log_callback): set before other threads call the library.
selfcond_log_callback g_log = nullptr;
void* g_log_user = nullptr;

#define SELFCOND_STR2(x) #x
#define SELFCOND_STR(x) SELFCOND_STR2(x)
constexpr char kVersion[] = SELFCOND_STR(SELFCOND_VERSION_MAJOR) "." SELFCOND_STR(
    SELFCOND_VERSION_MINOR) "." SELFCOND_STR(SELFCOND_VERSION_PATCH);

absl::StatusOr<EngineOptions> EngineOptionsFrom(const selfcond_model_params* params) {
  const selfcond_model_params p = params ? *params : selfcond_model_default_params();
  EngineOptions eo;
  eo.verify_hash = p.verify_hash != 0;
  eo.need_float = p.need_f32 != 0;
  eo.threads = p.threads;
  if (p.max_memory_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_memory_bytes must be >= 0 (0: no limit), got ", p.max_memory_bytes));
  }
  eo.max_memory = static_cast<size_t>(p.max_memory_bytes);
  if (p.progress != nullptr) {
    // Bytes of the load -> per mille, each value reported once.
    eo.progress = [cb = p.progress, user = p.progress_user_data, last = -1](int64_t done,
                                                                            int64_t total) mutable {
      const int permille = total > 0 ? static_cast<int>(done * 1000 / total) : 1000;
      if (permille == last) return true;
      last = permille;
      return cb(permille, 1000, user) != 0;
    };
  }
  return eo;
}

selfcond_stop StopToC(GenerateResult::Stop s) {
  using Stop = GenerateResult::Stop;
  return s == Stop::kEos           ? SELFCOND_STOP_EOS
         : s == Stop::kContextFull ? SELFCOND_STOP_CONTEXT_FULL
         : s == Stop::kCancelled   ? SELFCOND_STOP_CANCELLED
         : s == Stop::kStopString  ? SELFCOND_STOP_STOP_STRING
                                   : SELFCOND_STOP_MAX_TOKENS;
}

absl::StatusOr<GenerateOptions> GenerateOptionsFrom(const selfcond_generate_params* params) {
  const selfcond_generate_params p = params ? *params : selfcond_generate_default_params();
  GenerateOptions go;
  go.max_new_tokens = p.max_new_tokens;
  go.sampling.temperature = p.temperature;
  go.sampling.top_k = p.top_k;
  go.sampling.top_p = p.top_p;
  go.sampling.seed = p.seed;
  go.stop_at_eos = p.stop_at_eos != 0;
  go.keep_context = p.keep_context != 0;
  auto stops = Strings(p.stop_strings, p.n_stop_strings, "stop_strings");
  if (!stops.ok()) return stops.status();
  go.stop_strings = std::move(*stops);
  go.repeat_penalty = p.repeat_penalty;
  go.repeat_last_n = p.repeat_last_n;
  if (auto st = ValidateGenerate(go); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat("selfcond_generate_params: ", st.message()));
  }
  return go;
}

selfcond_status ReturnModel(absl::StatusOr<std::shared_ptr<Engine>> engine, selfcond_model** out) {
  if (!engine.ok()) return ToC(engine.status());
  const Model& m = (*engine)->model();
  const size_t packed = m.xnn() != nullptr ? m.xnn()->packed_bytes() : 0;
  Log(SELFCOND_LOG_INFO,
      absl::StrCat("loaded model '", m.name(), "' (", m.config().n_layer, " layers, ",
                   m.file_bytes() >> 20, " MiB file, ", packed >> 20, " MiB packed weights, ",
                   (*engine)->threads(), " threads)"));
  *out = new selfcond_model{std::move(*engine)};
  return Ok();
}

// Runs load(engine options) with the C params converted: the loads differ only in their source.
template <typename F>
selfcond_status LoadModel(const selfcond_model_params* params, selfcond_model** out, F&& load) {
  auto eo = EngineOptionsFrom(params);
  if (!eo.ok()) return ToC(eo.status());
  return ReturnModel(load(*eo), out);
}

selfcond_status LoadTable(const selfcond_model* model, std::string_view text,
                          const selfcond_experts_params* params, selfcond_experts** out) {
  const bool allow = params != nullptr && params->allow_unhashed != 0;
  auto table = model->engine->ParseTable(text, allow);
  if (!table.ok()) return ToC(table.status());
  return NewExperts(*model->engine, std::move(*table), allow, out);
}

void UnitToC(const selfcond_experts& e, const ExpertUnit& u, selfcond_expert_unit* out) {
  out->unit_id = UnitSpace(e.model_config).UnitId(u.site, u.unit);
  out->site = u.site;
  out->unit = u.unit;
  out->ap = u.ap;
  out->on_p50 = u.on_p50;
  out->on_p90 = u.on_p90;
  out->off_mean = u.off_mean;
  const UnitLayout layout = UnitLayout::Of(e.model_config);
  out->layer = layout.site_layer(u.site);
  out->kind = layout.site_kind(u.site);
}

}  // namespace

selfcond_status ToC(const absl::Status& st) {
  if (st.ok()) {
    g_last_error.clear();
    return SELFCOND_OK;
  }
  g_last_error = std::string(st.message());
  Log(SELFCOND_LOG_ERROR, g_last_error);
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

void Log(selfcond_log_level level, const std::string& message) {
  if (g_log != nullptr) g_log(level, message.c_str(), g_log_user);
}

selfcond_status ReturnString(const std::string& s, char** out) {
  if (out == nullptr) return Invalid("output pointer is NULL");
  *out = static_cast<char*>(std::malloc(s.size() + 1));
  if (*out == nullptr) return ToC(absl::ResourceExhaustedError("out of memory"));
  std::memcpy(*out, s.data(), s.size() + 1);
  return Ok();
}

absl::StatusOr<Precision> PrecisionFrom(selfcond_precision p) {
  if (p == SELFCOND_INT8) return Precision::kInt8;
  if (p == SELFCOND_F32) return Precision::kF32;
  return absl::InvalidArgumentError(absl::StrCat("unknown precision ", static_cast<int>(p)));
}

absl::StatusOr<ForcingValue> ForcingValueFrom(selfcond_forcing_value v) {
  switch (v) {
    case SELFCOND_FORCE_ON_P50:
      return ForcingValue::kOnP50;
    case SELFCOND_FORCE_ON_P90:
      return ForcingValue::kOnP90;
    case SELFCOND_FORCE_OFF_MEAN:
      return ForcingValue::kOffMean;
    case SELFCOND_FORCE_ZERO:
      return ForcingValue::kZero;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown forcing value ", static_cast<int>(v)));
}

absl::StatusOr<std::vector<std::string>> Strings(const char* const* v, size_t n, const char* what) {
  if (n > 0 && v == nullptr) return absl::InvalidArgumentError(absl::StrCat(what, ": NULL array"));
  std::vector<std::string> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (v[i] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(what, " ", i, " is NULL"));
    }
    out.emplace_back(v[i]);
  }
  return out;
}

selfcond_status NewExperts(const Engine& engine, ExpertTable table, bool allow_unhashed,
                           selfcond_experts** out) {
  *out = new selfcond_experts{std::move(table), engine.model().config(), allow_unhashed};
  return Ok();
}

}  // namespace selfcond::capi

using namespace selfcond::capi;  // NOLINT: the C functions below are this file's whole content

extern "C" {

const char* selfcond_version(void) { return kVersion; }

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

void selfcond_set_log_callback(selfcond_log_callback callback, void* user_data) {
  selfcond::capi::g_log = callback;
  selfcond::capi::g_log_user = user_data;
}

selfcond_status selfcond_build_info_to_string(char** out) {
  return Guard([&] { return ReturnString(selfcond::BuildInfoJson(kVersion), out); });
}

// ---- models ----------------------------------------------------------------------------------

selfcond_model_params selfcond_model_default_params(void) {
  selfcond_model_params p;
  p.verify_hash = 1;
  p.need_f32 = 0;
  p.threads = 0;
  p.max_memory_bytes = 0;
  p.progress = nullptr;
  p.progress_user_data = nullptr;
  return p;
}

selfcond_status selfcond_model_load_file(const char* path, const selfcond_model_params* params,
                                         selfcond_model** out) {
  return Guard([&] {
    if (path == nullptr || out == nullptr) return Invalid("path or output pointer is NULL");
    *out = nullptr;
    return LoadModel(params, out, [&](const selfcond::EngineOptions& eo) {
      return selfcond::Engine::Load(path, eo);
    });
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
    return LoadModel(params, out, [&](const selfcond::EngineOptions& eo) {
      return selfcond::Engine::FromBuffer(std::move(*bytes), eo);
    });
  });
}

selfcond_status selfcond_model_load_owned(void* data, size_t size,
                                          const selfcond_model_params* params,
                                          selfcond_model** out) {
  selfcond::HeapBuffer bytes = selfcond::HeapBuffer::Adopt(data, size);  // freed on every path
  return Guard([&] {
    if (data == nullptr || out == nullptr) return Invalid("data or output is NULL");
    *out = nullptr;
    return LoadModel(params, out, [&](const selfcond::EngineOptions& eo) {
      return selfcond::Engine::FromBuffer(std::move(bytes), eo);
    });
  });
}

selfcond_status selfcond_model_load_fd(int fd, int64_t offset, int64_t length,
                                       const selfcond_model_params* params, selfcond_model** out) {
  return Guard([&] {
    if (out == nullptr) return Invalid("output pointer is NULL");
    *out = nullptr;
    if (offset < 0 || length < 0) {
      return Invalid(absl::StrCat("offset and length must be >= 0, got ", offset, " and ", length));
    }
    auto file = selfcond::MappedFile::OpenFd(fd, static_cast<uint64_t>(offset),
                                             static_cast<uint64_t>(length));
    if (!file.ok()) return ToC(file.status());
    return LoadModel(params, out, [&](const selfcond::EngineOptions& eo) {
      return selfcond::Engine::FromFile(std::move(*file), eo);
    });
  });
}

selfcond_status selfcond_model_load_view(const void* data, size_t size,
                                         const selfcond_model_params* params,
                                         selfcond_model** out) {
  return Guard([&] {
    if ((data == nullptr && size > 0) || out == nullptr) return Invalid("data or output is NULL");
    *out = nullptr;
    return LoadModel(params, out, [&](const selfcond::EngineOptions& eo) {
      return selfcond::Engine::FromFile(selfcond::MappedFile::Borrow(data, size), eo);
    });
  });
}

void selfcond_model_free(selfcond_model* model) { delete model; }

void selfcond_model_get_info(const selfcond_model* model, selfcond_model_info* out) {
  if (model == nullptr || out == nullptr) return;
  const selfcond::Model& m = model->engine->model();
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
  out->arch = selfcond::ArchName(c.arch);
  out->n_head_kv = static_cast<int>(c.n_head_kv);
  out->head_dim = static_cast<int>(c.head_dim);
  const auto& prefix = m.tokenizer().prefix();
  out->bos_id = prefix.empty() ? -1 : prefix[0];
  out->threads = model->engine->threads();
  out->file_bytes = static_cast<int64_t>(m.file_bytes());
  out->packed_bytes = static_cast<int64_t>(m.xnn() ? m.xnn()->packed_bytes() : 0);
  out->sites_per_layer = selfcond::UnitLayout::Of(c).kinds();
}

const char* selfcond_site_kind_name(const selfcond_model* model, int kind) {
  if (model == nullptr) return "";
  const selfcond::ModelConfig& c = model->engine->model().config();
  if (kind < 0 || kind >= selfcond::UnitLayout::Of(c).kinds()) return "";
  return selfcond::SiteKindName(c.arch, kind);
}

selfcond_status selfcond_tokenize_ex(const selfcond_model* model, const char* text, int add_special,
                                     int32_t* out, size_t capacity, size_t* n_tokens) {
  return Guard([&] {
    if (model == nullptr || text == nullptr || n_tokens == nullptr)
      return Invalid("model, text or n_tokens is NULL");
    if (capacity > 0 && out == nullptr) return Invalid("out is NULL with capacity > 0");
    const selfcond::Tokenizer& tok = model->engine->tokenizer();
    const std::vector<int32_t> ids = add_special ? tok.EncodeForModel(text) : tok.Encode(text);
    *n_tokens = ids.size();
    if (capacity > 0) {
      std::memcpy(out, ids.data(), std::min(capacity, ids.size()) * sizeof(int32_t));
    }
    return Ok();
  });
}

selfcond_status selfcond_tokenize(const selfcond_model* model, const char* text, int32_t* out,
                                  size_t capacity, size_t* n_tokens) {
  return selfcond_tokenize_ex(model, text, 0, out, capacity, n_tokens);
}

selfcond_status selfcond_detokenize_to_string(const selfcond_model* model, const int32_t* ids,
                                              size_t n, char** out) {
  return Guard([&] {
    if (model == nullptr || (ids == nullptr && n > 0)) return Invalid("model or ids is NULL");
    const int32_t vocab = static_cast<int32_t>(model->engine->model().config().vocab_size);
    for (size_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= vocab) {
        return Invalid(absl::StrCat("token id ", ids[i], " out of range [0, ", vocab, ")"));
      }
    }
    return ReturnString(model->engine->tokenizer().Decode({ids, n}), out);
  });
}

selfcond_status selfcond_unit_to_string(const selfcond_model* model, int64_t unit_id,
                                        char** layer_name, int* unit_in_layer) {
  return Guard([&] {
    if (model == nullptr || layer_name == nullptr) return Invalid("model or output is NULL");
    const selfcond::UnitSpace space(model->engine->model().config());
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
    auto text = selfcond::ReadFile(path);
    if (!text.ok()) return ToC(text.status());
    return LoadTable(model, *text, params, out);
  });
}

selfcond_status selfcond_experts_load_memory_ex(const selfcond_model* model, const char* text,
                                                size_t size, const selfcond_experts_params* params,
                                                selfcond_experts** out) {
  return Guard([&] {
    if (model == nullptr || (text == nullptr && size > 0) || out == nullptr)
      return Invalid("NULL argument");
    *out = nullptr;
    return LoadTable(model, std::string_view(text, size), params, out);
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
  out->group = t.group.c_str();
  out->model_hash = t.model_hash.c_str();
  out->num_truncated = t.num_truncated;
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
    UnitToC(*experts, units[rank], out);
    return Ok();
  });
}

selfcond_status selfcond_experts_get_units(const selfcond_experts* experts, int64_t first,
                                           selfcond_expert_unit* out, size_t capacity,
                                           size_t* n_out) {
  return Guard([&] {
    if (experts == nullptr || n_out == nullptr || (out == nullptr && capacity > 0))
      return Invalid("experts, out or n_out is NULL");
    const auto& units = experts->table.units;
    if (first < 0 || first > static_cast<int64_t>(units.size())) {
      return ToC(absl::OutOfRangeError(
          absl::StrCat("first ", first, " out of range [0, ", units.size(), "]")));
    }
    const size_t n = std::min(capacity, units.size() - static_cast<size_t>(first));
    for (size_t i = 0; i < n; ++i) UnitToC(*experts, units[first + i], &out[i]);
    *n_out = n;
    return Ok();
  });
}

// ---- sessions and generation -------------------------------------------------------------------

selfcond_session_params selfcond_session_default_params(void) {
  selfcond_session_params p;
  p.precision = SELFCOND_INT8;
  p.threads = 1;
  p.n_ctx = 0;
  p.kv_type = SELFCOND_KV_F32;
  p.max_memory_bytes = 0;
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
    if (p.n_ctx < 0) return Invalid(absl::StrCat("n_ctx must be >= 0, got ", p.n_ctx));
    if (p.max_memory_bytes < 0) {
      return Invalid(absl::StrCat("max_memory_bytes must be >= 0 (0: half the device's memory), ",
                                  "got ", p.max_memory_bytes));
    }
    selfcond::SessionOptions so;
    so.precision = *prec;
    so.n_ctx = p.n_ctx;
    so.kv_type = p.kv_type == SELFCOND_KV_F16 ? selfcond::SessionOptions::KvType::kF16
                                              : selfcond::SessionOptions::KvType::kF32;
    so.max_memory = static_cast<size_t>(p.max_memory_bytes);
    auto session = model->engine->NewSession(so, p.threads != 1);
    if (!session.ok()) return ToC(session.status());
    Log(SELFCOND_LOG_INFO, absl::StrCat("session: ", (*session)->n_ctx(), " positions, ",
                                        (*session)->kv_cache_bytes() >> 20, " MiB KV cache, ",
                                        (*session)->engine_name()));
    *out = new selfcond_session{model->engine, std::move(*session)};
    return Ok();
  });
}

void selfcond_session_free(selfcond_session* session) { delete session; }

void selfcond_session_get_info(const selfcond_session* session, selfcond_session_info* out) {
  if (session == nullptr || out == nullptr) return;
  out->n_ctx = session->session->n_ctx();
  out->n_past = session->session->pos();
  out->kv_cache_bytes = static_cast<int64_t>(session->session->kv_cache_bytes());
  out->backend = session->session->engine_name();
  out->forced_units = session->session->conditioning().forcing.num_units();
}

selfcond_status selfcond_session_eval(selfcond_session* session, const int32_t* tokens,
                                      size_t n_tokens, float* logits, size_t capacity) {
  return Guard([&] {
    if (session == nullptr || (tokens == nullptr && n_tokens > 0))
      return Invalid("session or tokens is NULL");
    if (logits == nullptr && capacity > 0) return Invalid("logits is NULL with capacity > 0");
    return ToC(session->engine->Eval(*session->session, {tokens, n_tokens},
                                     {logits, logits != nullptr ? capacity : 0}));
  });
}

void selfcond_session_reset(selfcond_session* session) {
  if (session == nullptr) return;
  session->session->Reset();
  session->session->ClearAbort();
}

void selfcond_session_abort(selfcond_session* session) {
  if (session != nullptr) session->session->RequestAbort();
}

selfcond_status selfcond_session_set_forcing(selfcond_session* session,
                                             const selfcond_forcing_source* sources,
                                             size_t n_sources, selfcond_forcing_value value,
                                             int only_last_token) {
  return Guard([&] {
    if (session == nullptr || (sources == nullptr && n_sources > 0))
      return Invalid("session or sources is NULL");
    selfcond::Session::Conditioning cond = session->session->conditioning();
    cond.forcing = selfcond::Forcing();
    if (n_sources > 0) {
      auto fv = ForcingValueFrom(value);
      if (!fv.ok()) return ToC(fv.status());
      std::vector<selfcond::ForcingSource> src;
      for (size_t i = 0; i < n_sources; ++i) {
        if (sources[i].experts == nullptr) return Invalid(absl::StrCat("source ", i, ": NULL"));
        if (sources[i].top_k < 0) return Invalid(absl::StrCat("source ", i, ": top_k < 0"));
        const auto& table = sources[i].experts->table;
        if (sources[i].top_k > static_cast<int64_t>(table.units.size())) {
          Log(SELFCOND_LOG_WARN,
              absl::StrCat("forcing source ", i, " ('", table.concept, "'): top_k ",
                           sources[i].top_k, " but the table holds ", table.units.size(),
                           " units: all ", table.units.size(), " are forced"));
        }
        // A table of another model loaded through another handle must not reach this session:
        // MakeForcing checks each against the session's model.
        src.push_back({&sources[i].experts->table, sources[i].top_k});
      }
      auto forcing = session->engine->MakeForcing(src, *fv, only_last_token != 0);
      if (!forcing.ok()) return ToC(forcing.status());
      cond.forcing = std::move(*forcing);
    }
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
    selfcond::LogitBias pairs;
    for (size_t i = 0; i < n; ++i) pairs.push_back({tokens[i], bias[i]});
    selfcond::Session::Conditioning cond = session->session->conditioning();
    cond.logit_bias = std::move(pairs);
    return ToC(session->session->SetConditioning(std::move(cond)));
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
  p.keep_context = d.keep_context ? 1 : 0;
  p.stop_strings = nullptr;
  p.n_stop_strings = 0;
  p.repeat_penalty = d.repeat_penalty;
  p.repeat_last_n = d.repeat_last_n;
  return p;
}

selfcond_status selfcond_generation_start(selfcond_session* session, const char* prompt,
                                          const selfcond_generate_params* params,
                                          selfcond_generation** out) {
  return Guard([&] {
    if (session == nullptr || prompt == nullptr || out == nullptr)
      return Invalid("session, prompt or output is NULL");
    *out = nullptr;
    auto go = GenerateOptionsFrom(params);
    if (!go.ok()) return ToC(go.status());
    auto gen = session->engine->StartGeneration(*session->session, prompt, *go);
    if (!gen.ok()) return ToC(gen.status());
    *out = new selfcond_generation{session->engine, std::move(*gen), {}};
    return Ok();
  });
}

selfcond_status selfcond_generation_next(selfcond_generation* generation,
                                         selfcond_generation_step* out) {
  return Guard([&] {
    if (generation == nullptr || out == nullptr) return Invalid("generation or output is NULL");
    selfcond::Generation& g = *generation->generation;
    // A finished (or cancelled) generation reports done again, with no token.
    generation->piece.clear();
    int32_t token = -1;
    if (!g.done()) {
      auto step = g.Next();
      if (!step.ok()) return ToC(step.status());
      generation->piece = std::move(step->text);
      token = step->token;
    }
    const selfcond::GenerateResult& r = g.result();
    out->token = token;
    out->piece = generation->piece.c_str();
    out->piece_len = generation->piece.size();
    out->done = g.done() ? 1 : 0;
    out->stop = g.done() ? StopToC(r.stop) : SELFCOND_STOP_MAX_TOKENS;
    out->prompt_tokens = r.prompt_tokens;
    out->new_tokens = static_cast<int>(r.tokens.size());
    return Ok();
  });
}

void selfcond_generation_cancel(selfcond_generation* generation) {
  if (generation != nullptr) generation->generation->Cancel();
}

void selfcond_generation_free(selfcond_generation* generation) { delete generation; }

selfcond_status selfcond_generate(selfcond_session* session, const char* prompt,
                                  const selfcond_generate_params* params,
                                  selfcond_token_callback callback, void* user_data,
                                  selfcond_generate_result* result) {
  selfcond_generation* gen = nullptr;
  selfcond_status st = selfcond_generation_start(session, prompt, params, &gen);
  if (st != SELFCOND_OK) return st;
  std::unique_ptr<selfcond_generation> owned(gen);
  selfcond::Generation& g = *gen->generation;
  selfcond_generation_step step{};
  while (!g.done()) {
    if ((st = selfcond_generation_next(gen, &step)) != SELFCOND_OK) return st;
    if (callback != nullptr && (step.token >= 0 || step.piece_len > 0) &&
        callback(step.token, step.piece, step.piece_len, user_data) == 0) {
      g.Cancel();
    }
  }
  if (result != nullptr) {
    result->prompt_tokens = g.result().prompt_tokens;
    result->new_tokens = static_cast<int>(g.result().tokens.size());
    result->stop = StopToC(g.result().stop);
  }
  return Ok();
}

}  // extern "C"
