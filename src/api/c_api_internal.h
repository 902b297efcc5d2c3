// What the C API's source files share: the handles (the Engine's objects plus what the C side
// must keep alive) and the conversions between C arguments and library types. No logic: each
// C function converts its arguments, calls one Engine operation and converts the result.
#ifndef SELFCOND_API_C_API_INTERNAL_H_
#define SELFCOND_API_C_API_INTERNAL_H_

#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "selfcond/selfcond.h"

// A model handle is the Engine (model + thread pool). Every object made from it holds a
// shared_ptr, so the handle may be freed first.
struct selfcond_model {
  std::shared_ptr<selfcond::Engine> engine;
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
  std::shared_ptr<selfcond::Engine> engine;
  std::unique_ptr<selfcond::Session> session;
};
struct selfcond_generation {
  std::shared_ptr<selfcond::Engine> engine;
  std::unique_ptr<selfcond::Generation> generation;
  std::string piece;  // the last step's text (selfcond_generation_step.piece points here)
};
struct selfcond_ranking {
  std::shared_ptr<selfcond::Engine> engine;
  std::unique_ptr<selfcond::Ranking> ranking;
};

namespace selfcond::capi {

// Sets the calling thread's message (selfcond_last_error), logs it (SELFCOND_LOG_ERROR) and
// returns the C code.
selfcond_status ToC(const absl::Status& st);
// A line to the log callback (selfcond_set_log_callback), if one is set.
void Log(selfcond_log_level level, const std::string& message);
inline selfcond_status Ok() { return ToC(absl::OkStatus()); }
inline selfcond_status Invalid(const std::string& msg) {
  return ToC(absl::InvalidArgumentError(msg));
}

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

// A new malloc'd copy for the caller (selfcond_string_free).
selfcond_status ReturnString(const std::string& s, char** out);

absl::StatusOr<Precision> PrecisionFrom(selfcond_precision p);
absl::StatusOr<ForcingValue> ForcingValueFrom(selfcond_forcing_value v);
// An array of n UTF-8 strings (an error names `what` and the NULL entry).
absl::StatusOr<std::vector<std::string>> Strings(const char* const* v, size_t n, const char* what);
// A C array of n values (NULL with n = 0 is empty).
template <typename T>
absl::StatusOr<std::vector<T>> Array(const T* v, size_t n, const char* what) {
  if (n > 0 && v == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": NULL array of ", n));
  }
  return std::vector<T>(v, v + n);
}
// Ranking options from C params; threaded: 1 thread means the calling thread.
absl::StatusOr<RankOptions> RankOptionsFrom(const selfcond_rank_params* params, bool* threaded);
RankOptions::Progress ProgressFrom(selfcond_progress_callback cb, void* user);
selfcond_status NewExperts(const Engine& engine, ExpertTable table, bool allow_unhashed,
                           selfcond_experts** out);

}  // namespace selfcond::capi

#endif  // SELFCOND_API_C_API_INTERNAL_H_
