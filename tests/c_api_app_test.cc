// The C API's features for apps (issue 19): loading from a descriptor or a borrowed buffer,
// memory budgets, load progress, the log callback, abort from another thread, continuing a
// generation, stop strings, the repetition penalty and the count of forced units. Each is
// checked against an independent path (the library's own loads and sessions, or a loop of
// selfcond_session_eval written here), not against the feature's earlier output.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "selfcond/selfcond.h"
#include "test_util.h"
#include "util/file_util.h"

namespace selfcond {
namespace {

class CApiAppTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    path_ = new std::string(testing::ConvertedMiniModel(/*keep_float=*/false));
    ASSERT_EQ(selfcond_model_load_file(path_->c_str(), nullptr, &model_), SELFCOND_OK)
        << selfcond_last_error();
  }
  static void TearDownTestSuite() {
    selfcond_model_free(model_);
    model_ = nullptr;
    delete path_;
  }
  // Greedy text of `prompt` on a fresh session of model m.
  static std::string Greedy(selfcond_model* m, const char* prompt, int n) {
    selfcond_session* s = nullptr;
    EXPECT_EQ(selfcond_session_create(m, nullptr, &s), SELFCOND_OK) << selfcond_last_error();
    selfcond_generate_params gp = selfcond_generate_default_params();
    gp.temperature = 0;
    gp.max_new_tokens = n;
    gp.stop_at_eos = 0;
    std::string text;
    EXPECT_EQ(selfcond_generate(s, prompt, &gp, Append, &text, nullptr), SELFCOND_OK)
        << selfcond_last_error();
    selfcond_session_free(s);
    return text;
  }
  static int Append(int32_t, const char* piece, size_t len, void* user) {
    static_cast<std::string*>(user)->append(piece, len);
    return 1;
  }
  static std::string* path_;
  static selfcond_model* model_;
};
std::string* CApiAppTest::path_ = nullptr;
selfcond_model* CApiAppTest::model_ = nullptr;

// A model stored inside a larger file at an unaligned offset (an APK asset) loads from the
// descriptor, the same model as from its own file; the caller's descriptor may be closed first.
TEST_F(CApiAppTest, LoadFromFileDescriptor) {
  auto bytes = ReadFile(*path_);
  ASSERT_TRUE(bytes.ok());
  const std::string dir = testing::MakeTempDir("capi_fd");
  const std::string outer = dir + "/bundle.bin";
  const std::string head(4096 + 123, 'H'), tail(777, 'T');
  ASSERT_TRUE(WriteFile(outer, head + *bytes + tail).ok());
  const int fd = ::open(outer.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  selfcond_model* m = nullptr;
  ASSERT_EQ(selfcond_model_load_fd(fd, static_cast<int64_t>(head.size()),
                                   static_cast<int64_t>(bytes->size()), nullptr, &m),
            SELFCOND_OK)
      << selfcond_last_error();
  ::close(fd);
  selfcond_model_info a, b;
  selfcond_model_get_info(m, &a);
  selfcond_model_get_info(model_, &b);
  EXPECT_STREQ(a.hash, b.hash);
  EXPECT_EQ(a.file_bytes, b.file_bytes);
  EXPECT_EQ(Greedy(m, "The game", 12), Greedy(model_, "The game", 12));
  selfcond_model_free(m);
  // At a 64-byte aligned offset the range is mapped rather than read: the same model.
  const std::string aligned_head(4096 + 192, 'A');
  const std::string outer2 = dir + "/bundle2.bin";
  ASSERT_TRUE(WriteFile(outer2, aligned_head + *bytes + tail).ok());
  const int fd3 = ::open(outer2.c_str(), O_RDONLY);
  ASSERT_GE(fd3, 0);
  ASSERT_EQ(selfcond_model_load_fd(fd3, static_cast<int64_t>(aligned_head.size()),
                                   static_cast<int64_t>(bytes->size()), nullptr, &m),
            SELFCOND_OK)
      << selfcond_last_error();
  ::close(fd3);
  EXPECT_EQ(Greedy(m, "The game", 12), Greedy(model_, "The game", 12));
  selfcond_model_free(m);

  const int fd2 = ::open(outer.c_str(), O_RDONLY);
  ASSERT_GE(fd2, 0);
  const int64_t total = static_cast<int64_t>(head.size() + bytes->size() + tail.size());
  EXPECT_EQ(selfcond_model_load_fd(fd2, total + 1, 0, nullptr, &m), SELFCOND_OUT_OF_RANGE);
  EXPECT_NE(std::string(selfcond_last_error()).find("offset"), std::string::npos);
  EXPECT_EQ(selfcond_model_load_fd(fd2, 10, total, nullptr, &m), SELFCOND_OUT_OF_RANGE);
  EXPECT_EQ(selfcond_model_load_fd(fd2, -1, 0, nullptr, &m), SELFCOND_INVALID_ARGUMENT);
  // The wrong range (the junk before the model) is a bad file, not a crash.
  EXPECT_NE(selfcond_model_load_fd(fd2, 0, static_cast<int64_t>(bytes->size()), nullptr, &m),
            SELFCOND_OK);
  EXPECT_EQ(m, nullptr);
  ::close(fd2);
  EXPECT_EQ(selfcond_model_load_fd(-1, 0, 0, nullptr, &m), SELFCOND_INVALID_ARGUMENT);
  const int dfd = ::open(dir.c_str(), O_RDONLY);
  EXPECT_EQ(selfcond_model_load_fd(dfd, 0, 0, nullptr, &m), SELFCOND_INVALID_ARGUMENT);
  ::close(dfd);
}

// A borrowed buffer is used in place: the same model, and the caller's bytes are not changed
// (no pages dropped, no compaction).
TEST_F(CApiAppTest, LoadViewUsesCallersBytes) {
  auto bytes = ReadFile(*path_);
  ASSERT_TRUE(bytes.ok());
  const std::string copy = *bytes;
  selfcond_model* m = nullptr;
  ASSERT_EQ(selfcond_model_load_view(bytes->data(), bytes->size(), nullptr, &m), SELFCOND_OK)
      << selfcond_last_error();
  EXPECT_EQ(Greedy(m, "Once upon a time", 12), Greedy(model_, "Once upon a time", 12));
  selfcond_model_free(m);
  EXPECT_TRUE(*bytes == copy) << "the borrowed bytes changed";
  const std::string junk = "definitely not a model";
  EXPECT_NE(selfcond_model_load_view(junk.data(), junk.size(), nullptr, &m), SELFCOND_OK);
  EXPECT_EQ(selfcond_model_load_view(nullptr, 5, nullptr, &m), SELFCOND_INVALID_ARGUMENT);
}

TEST_F(CApiAppTest, MemoryBudgets) {
  selfcond_model_info info;
  selfcond_model_get_info(model_, &info);
  selfcond_model_params p = selfcond_model_default_params();
  p.max_memory_bytes = info.packed_bytes / 2;  // below what the packed weights need
  selfcond_model* m = nullptr;
  EXPECT_EQ(selfcond_model_load_file(path_->c_str(), &p, &m), SELFCOND_RESOURCE_EXHAUSTED);
  EXPECT_NE(std::string(selfcond_last_error()).find("max_memory_bytes"), std::string::npos)
      << selfcond_last_error();
  EXPECT_EQ(m, nullptr);
  p.max_memory_bytes = info.packed_bytes * 2 + (64 << 20);
  ASSERT_EQ(selfcond_model_load_file(path_->c_str(), &p, &m), SELFCOND_OK) << selfcond_last_error();
  selfcond_model_free(m);
  p.max_memory_bytes = -1;
  EXPECT_EQ(selfcond_model_load_file(path_->c_str(), &p, &m), SELFCOND_INVALID_ARGUMENT);

  selfcond_session_params sp = selfcond_session_default_params();
  sp.max_memory_bytes = 64 << 10;  // 64 KiB: less than any KV cache
  selfcond_session* s = nullptr;
  EXPECT_EQ(selfcond_session_create(model_, &sp, &s), SELFCOND_RESOURCE_EXHAUSTED);
  EXPECT_EQ(s, nullptr);
  sp.max_memory_bytes = int64_t{1} << 30;
  ASSERT_EQ(selfcond_session_create(model_, &sp, &s), SELFCOND_OK) << selfcond_last_error();
  selfcond_session_free(s);
  sp.max_memory_bytes = -5;
  EXPECT_EQ(selfcond_session_create(model_, &sp, &s), SELFCOND_INVALID_ARGUMENT);
}

struct LoadProgress {
  std::vector<int> done;
  int cancel_at = -1;  // return 0 once done reaches it
};
int OnLoad(int done, int total, void* user) {
  auto* lp = static_cast<LoadProgress*>(user);
  EXPECT_EQ(total, 1000);
  lp->done.push_back(done);
  return lp->cancel_at < 0 || done < lp->cancel_at;
}

TEST_F(CApiAppTest, LoadProgressAndCancel) {
  LoadProgress lp;
  selfcond_model_params p = selfcond_model_default_params();  // hashing + packing
  p.progress = OnLoad;
  p.progress_user_data = &lp;
  selfcond_model* m = nullptr;
  ASSERT_EQ(selfcond_model_load_file(path_->c_str(), &p, &m), SELFCOND_OK) << selfcond_last_error();
  selfcond_model_free(m);
  ASSERT_GE(lp.done.size(), 10u);
  EXPECT_EQ(lp.done.front(), 0);
  EXPECT_EQ(lp.done.back(), 1000);
  EXPECT_TRUE(std::is_sorted(lp.done.begin(), lp.done.end()));
  // Values pass through the middle, from both stages (half is the end of hashing).
  EXPECT_TRUE(std::any_of(lp.done.begin(), lp.done.end(), [](int d) { return d > 0 && d < 500; }));
  EXPECT_TRUE(
      std::any_of(lp.done.begin(), lp.done.end(), [](int d) { return d > 500 && d < 1000; }));

  LoadProgress stop;
  stop.cancel_at = 600;
  p.progress_user_data = &stop;
  EXPECT_EQ(selfcond_model_load_file(path_->c_str(), &p, &m), SELFCOND_CANCELLED);
  EXPECT_EQ(m, nullptr);
  EXPECT_LT(stop.done.back(), 1000);
}

struct LogLines {
  std::vector<std::pair<int, std::string>> lines;
};
void OnLog(selfcond_log_level level, const char* message, void* user) {
  static_cast<LogLines*>(user)->lines.push_back({level, message});
}
bool Has(const LogLines& l, int level, const std::string& part) {
  for (const auto& [lv, m] : l.lines) {
    if (lv == level && m.find(part) != std::string::npos) return true;
  }
  return false;
}

// Log lines for loads, errors and a clamped forcing; the count of forced units.
TEST_F(CApiAppTest, LogCallbackAndForcedUnits) {
  LogLines log;
  selfcond_set_log_callback(OnLog, &log);
  selfcond_model* m = nullptr;
  EXPECT_EQ(selfcond_model_load_file("/nonexistent/x.scm", nullptr, &m), SELFCOND_NOT_FOUND);
  EXPECT_TRUE(Has(log, SELFCOND_LOG_ERROR, "/nonexistent/x.scm"));
  ASSERT_EQ(selfcond_model_load_file(path_->c_str(), nullptr, &m), SELFCOND_OK);
  EXPECT_TRUE(Has(log, SELFCOND_LOG_INFO, "loaded model"));

  // A 30-unit table from statistics (the units with the highest made-up AP).
  selfcond_model_info info;
  selfcond_model_get_info(m, &info);
  const size_t n = static_cast<size_t>(info.num_units);
  std::vector<float> ap(n), p50(n, 1.5f), p90(n, 2.f), off(n, 0.f);
  for (size_t i = 0; i < n; ++i) ap[i] = 0.5f + 0.4f * static_cast<float>((i * 7919) % n) / n;
  selfcond_table_info ti{};
  ti.concept = "made_up";
  ti.num_positive = ti.num_negative = 3;
  ti.precision = SELFCOND_INT8;
  ti.top_n = 30;
  selfcond_experts* e = nullptr;
  ASSERT_EQ(selfcond_experts_from_stats(m, &ti, ap.data(), p50.data(), p90.data(), off.data(), &e),
            SELFCOND_OK)
      << selfcond_last_error();
  selfcond_session* s = nullptr;
  ASSERT_EQ(selfcond_session_create(m, nullptr, &s), SELFCOND_OK);
  EXPECT_TRUE(Has(log, SELFCOND_LOG_INFO, "session"));
  selfcond_session_info si;
  selfcond_session_get_info(s, &si);
  EXPECT_EQ(si.forced_units, 0);
  selfcond_forcing_source src = {e, 10};
  ASSERT_EQ(selfcond_session_set_forcing(s, &src, 1, SELFCOND_FORCE_ON_P50, 0), SELFCOND_OK);
  selfcond_session_get_info(s, &si);
  EXPECT_EQ(si.forced_units, 10);
  EXPECT_FALSE(Has(log, SELFCOND_LOG_WARN, "top_k"));
  src.top_k = 500;  // beyond the 30-unit table
  ASSERT_EQ(selfcond_session_set_forcing(s, &src, 1, SELFCOND_FORCE_ON_P50, 0), SELFCOND_OK);
  selfcond_session_get_info(s, &si);
  EXPECT_EQ(si.forced_units, 30);
  EXPECT_TRUE(Has(log, SELFCOND_LOG_WARN, "top_k 500"));
  // Two sources with the same units count each unit once.
  selfcond_forcing_source two[2] = {{e, 20}, {e, 25}};
  ASSERT_EQ(selfcond_session_set_forcing(s, two, 2, SELFCOND_FORCE_ON_P50, 0), SELFCOND_OK);
  selfcond_session_get_info(s, &si);
  EXPECT_EQ(si.forced_units, 25);
  ASSERT_EQ(selfcond_session_set_forcing(s, nullptr, 0, SELFCOND_FORCE_ON_P50, 0), SELFCOND_OK);
  selfcond_session_get_info(s, &si);
  EXPECT_EQ(si.forced_units, 0);

  selfcond_set_log_callback(nullptr, nullptr);
  const size_t before = log.lines.size();
  selfcond_model* missing = nullptr;  // (a failed load sets its output to NULL: not &m)
  EXPECT_EQ(selfcond_model_load_file("/nonexistent/y.scm", nullptr, &missing), SELFCOND_NOT_FOUND);
  EXPECT_EQ(log.lines.size(), before) << "no callback after it was cleared";
  selfcond_session_free(s);
  selfcond_experts_free(e);
  selfcond_model_free(m);
}

// An abort from another thread stops a long prefill and leaves the cache as it was; one
// requested before a call stops that call; one between tokens ends the generation.
TEST_F(CApiAppTest, AbortFromAnotherThread) {
  selfcond_session* s = nullptr;
  ASSERT_EQ(selfcond_session_create(model_, nullptr, &s), SELFCOND_OK);
  selfcond_session_info si;
  selfcond_session_get_info(s, &si);
  const std::vector<int32_t> first = {464, 983, 373};
  ASSERT_EQ(selfcond_session_eval(s, first.data(), first.size(), nullptr, 0), SELFCOND_OK);
  // A prefill of the whole context, chunk after chunk, with an abort requested meanwhile.
  std::vector<int32_t> longp(static_cast<size_t>(si.n_ctx) - first.size(), 262);
  std::atomic<bool> stop{false}, started{false};
  std::thread aborter([&] {
    while (!stop.load()) {
      selfcond_session_abort(s);
      started = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  while (!started.load()) std::this_thread::yield();  // (a request is kept until a call sees it)
  const selfcond_status st = selfcond_session_eval(s, longp.data(), longp.size(), nullptr, 0);
  stop = true;
  aborter.join();
  EXPECT_EQ(st, SELFCOND_CANCELLED);
  selfcond_session_get_info(s, &si);
  EXPECT_EQ(si.n_past, static_cast<int>(first.size())) << "the aborted call left no positions";

  // Requested while nothing runs: the next call is stopped, the one after runs.
  selfcond_session_reset(s);
  selfcond_session_abort(s);
  selfcond_generate_params gp = selfcond_generate_default_params();
  gp.temperature = 0;
  gp.max_new_tokens = 5;
  EXPECT_EQ(selfcond_generate(s, "The game", &gp, nullptr, nullptr, nullptr), SELFCOND_CANCELLED);
  selfcond_generate_result r;
  ASSERT_EQ(selfcond_generate(s, "The game", &gp, nullptr, nullptr, &r), SELFCOND_OK);
  EXPECT_EQ(r.new_tokens, 5);
  // reset drops a pending request.
  selfcond_session_abort(s);
  selfcond_session_reset(s);
  ASSERT_EQ(selfcond_generate(s, "The game", &gp, nullptr, nullptr, &r), SELFCOND_OK);
  // Between tokens (the callback stands in for another thread): the generation ends there.
  struct Ctx {
    selfcond_session* s;
    int tokens = 0;
  } ctx{s};
  auto cb = [](int32_t token, const char*, size_t, void* user) -> int {
    auto* c = static_cast<Ctx*>(user);
    if (token >= 0 && ++c->tokens == 2) selfcond_session_abort(c->s);
    return 1;
  };
  gp.max_new_tokens = 10;
  ASSERT_EQ(selfcond_generate(s, "The game", &gp, cb, &ctx, &r), SELFCOND_OK);
  EXPECT_EQ(r.stop, SELFCOND_STOP_CANCELLED);
  EXPECT_EQ(r.new_tokens, 2);
  selfcond_session_free(s);
}

// keep_context: two generations of 8 tokens, the second continuing the first with "", give the
// greedy text of one generation of 16; text appended in between is prefilled after the cache.
TEST_F(CApiAppTest, ContinueGeneration) {
  const std::string whole = Greedy(model_, "The game", 16);
  selfcond_session* s = nullptr;
  ASSERT_EQ(selfcond_session_create(model_, nullptr, &s), SELFCOND_OK);
  selfcond_generate_params gp = selfcond_generate_default_params();
  gp.temperature = 0;
  gp.max_new_tokens = 8;
  gp.stop_at_eos = 0;
  gp.keep_context = 1;
  std::string a, b;
  selfcond_generate_result r1, r2;
  ASSERT_EQ(selfcond_generate(s, "The game", &gp, Append, &a, &r1), SELFCOND_OK)
      << selfcond_last_error();
  selfcond_session_info si;
  selfcond_session_get_info(s, &si);
  EXPECT_EQ(si.n_past, r1.prompt_tokens + 8) << "every new token is in the cache";
  ASSERT_EQ(selfcond_generate(s, "", &gp, Append, &b, &r2), SELFCOND_OK) << selfcond_last_error();
  EXPECT_EQ(r2.prompt_tokens, 0);
  EXPECT_EQ(a + b, whole);

  // Appending text: the same as evaluating the tokens of everything on a fresh session.
  std::string c;
  ASSERT_EQ(selfcond_generate(s, " But then", &gp, Append, &c, nullptr), SELFCOND_OK);
  selfcond_session_get_info(s, &si);
  size_t n_then = 0;
  ASSERT_EQ(selfcond_tokenize(model_, " But then", nullptr, 0, &n_then), SELFCOND_OK);
  EXPECT_EQ(si.n_past, r1.prompt_tokens + 16 + static_cast<int>(n_then) + 8);

  // Without keep_context the session starts over; an empty prompt is then an error.
  gp.keep_context = 0;
  EXPECT_EQ(selfcond_generate(s, "", &gp, nullptr, nullptr, nullptr), SELFCOND_INVALID_ARGUMENT);
  // Continuing from a fresh session with "" has nothing to continue from.
  selfcond_session_reset(s);
  gp.keep_context = 1;
  EXPECT_EQ(selfcond_generate(s, "", &gp, nullptr, nullptr, nullptr), SELFCOND_INVALID_ARGUMENT);
  // A context that fills up is reported, not wrapped.
  selfcond_session_params sp = selfcond_session_default_params();
  sp.n_ctx = 12;
  selfcond_session* small = nullptr;
  ASSERT_EQ(selfcond_session_create(model_, &sp, &small), SELFCOND_OK);
  gp.max_new_tokens = 20;
  ASSERT_EQ(selfcond_generate(small, "The game", &gp, nullptr, nullptr, &r1), SELFCOND_OK);
  EXPECT_EQ(r1.stop, SELFCOND_STOP_CONTEXT_FULL);
  EXPECT_EQ(selfcond_generate(small, " more", &gp, nullptr, nullptr, nullptr),
            SELFCOND_OUT_OF_RANGE);
  selfcond_session_free(small);
  selfcond_session_free(s);
}

TEST_F(CApiAppTest, StopStrings) {
  const std::string whole = Greedy(model_, "The game", 24);
  // A stop string from the middle of the greedy text (its first occurrence).
  size_t at = 12;
  while (at < whole.size() && whole.find(whole.substr(at, 3)) != at) ++at;
  ASSERT_LT(at + 3, whole.size()) << whole;
  const std::string stop = whole.substr(at, 3);
  selfcond_session* s = nullptr;
  ASSERT_EQ(selfcond_session_create(model_, nullptr, &s), SELFCOND_OK);
  selfcond_generate_params gp = selfcond_generate_default_params();
  gp.temperature = 0;
  gp.max_new_tokens = 24;
  gp.stop_at_eos = 0;
  const char* stops[] = {"never appears \xe2\x9c\x93", stop.c_str()};
  gp.stop_strings = stops;
  gp.n_stop_strings = 2;
  std::string text;
  selfcond_generate_result r;
  ASSERT_EQ(selfcond_generate(s, "The game", &gp, Append, &text, &r), SELFCOND_OK)
      << selfcond_last_error();
  EXPECT_EQ(r.stop, SELFCOND_STOP_STOP_STRING);
  EXPECT_EQ(text, whole.substr(0, at)) << "stop '" << stop << "' in '" << whole << "'";
  EXPECT_LT(r.new_tokens, 24);

  // The stepwise API stops the same way.
  selfcond_generation* g = nullptr;
  ASSERT_EQ(selfcond_generation_start(s, "The game", &gp, &g), SELFCOND_OK);
  std::string stepped;
  selfcond_generation_step step{};
  do {
    ASSERT_EQ(selfcond_generation_next(g, &step), SELFCOND_OK);
    stepped.append(step.piece, step.piece_len);
  } while (!step.done);
  EXPECT_EQ(step.stop, SELFCOND_STOP_STOP_STRING);
  EXPECT_EQ(stepped, text);
  selfcond_generation_free(g);

  // Bad stop strings are named.
  const char* empty[] = {""};
  gp.stop_strings = empty;
  gp.n_stop_strings = 1;
  EXPECT_EQ(selfcond_generate(s, "The game", &gp, nullptr, nullptr, nullptr),
            SELFCOND_INVALID_ARGUMENT);
  EXPECT_NE(std::string(selfcond_last_error()).find("stop string 0"), std::string::npos);
  const char* bad[] = {"\xff\xfe"};
  gp.stop_strings = bad;
  EXPECT_EQ(selfcond_generate(s, "The game", &gp, nullptr, nullptr, nullptr),
            SELFCOND_INVALID_ARGUMENT);
  gp.stop_strings = nullptr;
  EXPECT_EQ(selfcond_generate(s, "The game", &gp, nullptr, nullptr, nullptr),
            SELFCOND_INVALID_ARGUMENT);  // NULL array with a count
  selfcond_session_free(s);
}

// The repetition penalty against a loop of selfcond_session_eval with the penalty applied here
// (llama.cpp's rule) and argmax.
TEST_F(CApiAppTest, RepetitionPenaltyMatchesIndependentLoop) {
  selfcond_model_info info;
  selfcond_model_get_info(model_, &info);
  const float penalty = 5.0f;
  const int last_n = 64, steps = 12;
  size_t n = 0;
  ASSERT_EQ(selfcond_tokenize(model_, "The game the game the game", nullptr, 0, &n), SELFCOND_OK);
  std::vector<int32_t> history(n);
  ASSERT_EQ(selfcond_tokenize(model_, "The game the game the game", history.data(), n, &n),
            SELFCOND_OK);

  selfcond_session* ref = nullptr;
  ASSERT_EQ(selfcond_session_create(model_, nullptr, &ref), SELFCOND_OK);
  std::vector<float> logits(static_cast<size_t>(info.vocab_size));
  ASSERT_EQ(
      selfcond_session_eval(ref, history.data(), history.size(), logits.data(), logits.size()),
      SELFCOND_OK);
  std::vector<int32_t> expected;
  for (int i = 0; i < steps; ++i) {
    std::vector<int32_t> window(history.end() - std::min<size_t>(last_n, history.size()),
                                history.end());
    std::sort(window.begin(), window.end());
    window.erase(std::unique(window.begin(), window.end()), window.end());
    for (int32_t t : window) logits[t] = logits[t] > 0 ? logits[t] / penalty : logits[t] * penalty;
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    expected.push_back(next);
    history.push_back(next);
    ASSERT_EQ(selfcond_session_eval(ref, &next, 1, logits.data(), logits.size()), SELFCOND_OK);
  }
  selfcond_session_free(ref);

  selfcond_session* s = nullptr;
  ASSERT_EQ(selfcond_session_create(model_, nullptr, &s), SELFCOND_OK);
  selfcond_generate_params gp = selfcond_generate_default_params();
  gp.temperature = 0;
  gp.max_new_tokens = steps;
  gp.stop_at_eos = 0;
  gp.repeat_penalty = penalty;
  gp.repeat_last_n = last_n;
  std::vector<int32_t> got;
  auto collect = [](int32_t token, const char*, size_t, void* user) -> int {
    if (token >= 0) static_cast<std::vector<int32_t>*>(user)->push_back(token);
    return 1;
  };
  ASSERT_EQ(selfcond_generate(s, "The game the game the game", &gp, collect, &got, nullptr),
            SELFCOND_OK)
      << selfcond_last_error();
  EXPECT_EQ(got, expected);
  // Without the penalty the greedy text differs here (it repeats itself).
  gp.repeat_penalty = 1.0f;
  std::vector<int32_t> plain;
  ASSERT_EQ(selfcond_generate(s, "The game the game the game", &gp, collect, &plain, nullptr),
            SELFCOND_OK);
  EXPECT_NE(plain, expected);

  gp.repeat_penalty = 0.0f;
  EXPECT_EQ(selfcond_generate(s, "x", &gp, nullptr, nullptr, nullptr), SELFCOND_INVALID_ARGUMENT);
  EXPECT_NE(std::string(selfcond_last_error()).find("repeat penalty"), std::string::npos);
  gp.repeat_penalty = 1.1f;
  gp.repeat_last_n = -2;
  EXPECT_EQ(selfcond_generate(s, "x", &gp, nullptr, nullptr, nullptr), SELFCOND_INVALID_ARGUMENT);
  selfcond_session_free(s);
}

}  // namespace
}  // namespace selfcond
