// The C API (include/selfcond/selfcond.h) against the library it wraps: the same tokens, the
// same experts, and clean error codes for bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "experts/dataset.h"
#include "experts/rank.h"
#include "experts/steer.h"
#include "model/generate.h"
#include "model/model.h"
#include "selfcond/selfcond.h"
#include "test_util.h"
#include "util/file_util.h"

namespace selfcond {
namespace {

class CApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    path_ = new std::string(testing::ConvertedMiniModel(/*keep_float=*/false));
    ASSERT_EQ(selfcond_model_load_file(path_->c_str(), nullptr, &model_), SELFCOND_OK)
        << selfcond_last_error();
    auto ds = LoadConceptJson(testing::SharedDir() + "/concepts/football_small.json");
    ASSERT_TRUE(ds.ok()) << ds.status();
    football_ = new Dataset(std::move(*ds));
  }
  static void TearDownTestSuite() {
    selfcond_model_free(model_);
    model_ = nullptr;
    delete football_;
    delete path_;
  }
  static std::vector<const char*> Ptrs(const std::vector<std::string>& v) {
    std::vector<const char*> out;
    for (const auto& s : v) out.push_back(s.c_str());
    return out;
  }
  static std::string* path_;
  static selfcond_model* model_;
  static Dataset* football_;
};
std::string* CApiTest::path_ = nullptr;
selfcond_model* CApiTest::model_ = nullptr;
Dataset* CApiTest::football_ = nullptr;

TEST_F(CApiTest, ErrorsHaveCodesAndMessages) {
  selfcond_model* m = nullptr;
  EXPECT_EQ(selfcond_model_load_file("/nonexistent/model.scm", nullptr, &m), SELFCOND_NOT_FOUND);
  EXPECT_EQ(m, nullptr);
  EXPECT_NE(std::string(selfcond_last_error()).find("/nonexistent/model.scm"), std::string::npos);
  const char junk[] = "not a model file at all";
  EXPECT_NE(selfcond_model_load_memory(junk, sizeof(junk), nullptr, &m), SELFCOND_OK);
  EXPECT_GT(std::string(selfcond_last_error()).size(), 0u);
  EXPECT_STREQ(selfcond_status_name(SELFCOND_CANCELLED), "CANCELLED");
  EXPECT_EQ(selfcond_model_load_file(nullptr, nullptr, &m), SELFCOND_INVALID_ARGUMENT);

  selfcond_session_params sp = selfcond_session_default_params();
  sp.n_ctx = 100000;
  selfcond_session* s = nullptr;
  EXPECT_EQ(selfcond_session_create(model_, &sp, &s), SELFCOND_INVALID_ARGUMENT);
  sp = selfcond_session_default_params();
  sp.precision = SELFCOND_F32;  // the model was loaded without need_f32
  EXPECT_EQ(selfcond_session_create(model_, &sp, &s), SELFCOND_FAILED_PRECONDITION);
  EXPECT_EQ(s, nullptr);
}

TEST_F(CApiTest, LoadFromMemoryWithHashCheck) {
  auto bytes = ReadFile(*path_);
  ASSERT_TRUE(bytes.ok());
  selfcond_model_params p = selfcond_model_default_params();
  EXPECT_EQ(p.verify_hash, 1) << "integrity by default";
  selfcond_model* m = nullptr;
  ASSERT_EQ(selfcond_model_load_memory(bytes->data(), bytes->size(), &p, &m), SELFCOND_OK)
      << selfcond_last_error();
  selfcond_model_info a, b;
  selfcond_model_get_info(m, &a);
  selfcond_model_get_info(model_, &b);
  EXPECT_STREQ(a.hash, b.hash);
  EXPECT_EQ(a.num_units, b.num_units);
  selfcond_model_free(m);
  // One flipped byte in the last tensor's data: found by default (and with NULL params) ...
  (*bytes)[bytes->size() - 9] ^= 0x40;
  EXPECT_EQ(selfcond_model_load_memory(bytes->data(), bytes->size(), &p, &m), SELFCOND_DATA_LOSS)
      << selfcond_last_error();
  EXPECT_EQ(selfcond_model_load_memory(bytes->data(), bytes->size(), nullptr, &m),
            SELFCOND_DATA_LOSS);
  // ... and not looked for when the caller opts out.
  p.verify_hash = 0;
  ASSERT_EQ(selfcond_model_load_memory(bytes->data(), bytes->size(), &p, &m), SELFCOND_OK);
  selfcond_model_free(m);
}

TEST_F(CApiTest, TokenizeRoundTrip) {
  const char* text = "Once upon a time, the football match began.";
  size_t n = 0;
  ASSERT_EQ(selfcond_tokenize(model_, text, nullptr, 0, &n), SELFCOND_OK);
  std::vector<int32_t> ids(n);
  ASSERT_EQ(selfcond_tokenize(model_, text, ids.data(), ids.size(), &n), SELFCOND_OK);
  char* back = nullptr;
  ASSERT_EQ(selfcond_detokenize_to_string(model_, ids.data(), ids.size(), &back), SELFCOND_OK);
  EXPECT_STREQ(back, text);
  selfcond_string_free(back);
  const int32_t bad = -3;
  EXPECT_EQ(selfcond_detokenize_to_string(model_, &bad, 1, &back), SELFCOND_INVALID_ARGUMENT);
}

struct Collected {
  std::string text;
  int tokens = 0;
  int stop_after = -1;  // return 0 after this many tokens (-1: never)
};

int Collect(int32_t token, const char* piece, size_t len, void* user) {
  auto* c = static_cast<Collected*>(user);
  c->text.append(piece, len);
  if (token >= 0) ++c->tokens;
  return c->stop_after < 0 || c->tokens < c->stop_after;
}

// Greedy text through the C API equals Generate() on a library session.
TEST_F(CApiTest, GenerateMatchesLibraryAndCancels) {
  selfcond_session* s = nullptr;
  ASSERT_EQ(selfcond_session_create(model_, nullptr, &s), SELFCOND_OK) << selfcond_last_error();
  selfcond_generate_params gp = selfcond_generate_default_params();
  gp.temperature = 0;
  gp.max_new_tokens = 20;
  gp.stop_at_eos = 0;
  Collected c;
  selfcond_generate_result r;
  ASSERT_EQ(selfcond_generate(s, "The game", &gp, Collect, &c, &r), SELFCOND_OK)
      << selfcond_last_error();
  EXPECT_EQ(r.new_tokens, 20);
  EXPECT_EQ(c.tokens, 20);
  EXPECT_EQ(r.stop, SELFCOND_STOP_MAX_TOKENS);

  auto model = Model::Load(*path_, {});
  ASSERT_TRUE(model.ok());
  auto session = Session::Create(**model, {});
  ASSERT_TRUE(session.ok());
  GenerateOptions go;
  go.sampling.temperature = 0;
  go.max_new_tokens = 20;
  go.stop_at_eos = false;
  auto ref = Generate(**session, (*model)->tokenizer().Encode("The game"), go, nullptr);
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(c.text, ref->text);

  Collected stop;
  stop.stop_after = 3;
  ASSERT_EQ(selfcond_generate(s, "The game", &gp, Collect, &stop, &r), SELFCOND_OK);
  EXPECT_EQ(r.stop, SELFCOND_STOP_CANCELLED);
  EXPECT_EQ(r.new_tokens, 3);

  // A prompt longer than the session's context is refused, not truncated.
  selfcond_session* small = nullptr;
  selfcond_session_params sp = selfcond_session_default_params();
  sp.n_ctx = 4;
  ASSERT_EQ(selfcond_session_create(model_, &sp, &small), SELFCOND_OK);
  EXPECT_EQ(selfcond_generate(small, "one two three four five six", &gp, nullptr, nullptr, &r),
            SELFCOND_OUT_OF_RANGE);
  selfcond_session_free(small);
  selfcond_session_free(s);
}

int CountProgress(int done, int total, void* user) {
  auto* v = static_cast<std::vector<int>*>(user);
  v->push_back(done);
  (void)total;
  return 1;
}
int CancelAtOnce(int, int, void*) { return 0; }

// Ranking through the C API gives the library's table; forcing its top experts changes greedy
// text, and the session keeps its forcing after the table is freed.
TEST_F(CApiTest, RankForceAndSave) {
  const auto pos = Ptrs(football_->positive), neg = Ptrs(football_->negative);
  selfcond_rank_params rp = selfcond_rank_default_params();
  rp.threads = 2;
  std::vector<int> progress;
  selfcond_experts* e = nullptr;
  ASSERT_EQ(selfcond_rank(model_, "football", pos.data(), pos.size(), neg.data(), neg.size(), &rp,
                          CountProgress, &progress, &e),
            SELFCOND_OK)
      << selfcond_last_error();
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), static_cast<int>(pos.size() + neg.size()));

  auto model = Model::Load(*path_, {});
  ASSERT_TRUE(model.ok());
  auto ref = RankConcept(**model, *football_, {});
  ASSERT_TRUE(ref.ok());
  selfcond_experts_info info;
  selfcond_experts_get_info(e, &info);
  EXPECT_EQ(info.num_units, static_cast<int64_t>(ref->units.size()));
  EXPECT_STREQ(info.concept, "football");
  for (int64_t i = 0; i < 50; ++i) {
    selfcond_expert_unit u;
    ASSERT_EQ(selfcond_experts_get_unit(e, i, &u), SELFCOND_OK);
    EXPECT_EQ(u.site, ref->units[i].site) << i;
    EXPECT_EQ(u.unit, ref->units[i].unit) << i;
    EXPECT_FLOAT_EQ(u.ap, ref->units[i].ap) << i;
  }
  selfcond_expert_unit u;
  EXPECT_EQ(selfcond_experts_get_unit(e, info.num_units, &u), SELFCOND_OUT_OF_RANGE);

  // Save, reload from memory (JSON and CSV) and compare the best unit.
  char* json = nullptr;
  ASSERT_EQ(selfcond_experts_to_string(e, SELFCOND_TABLE_JSON, &json), SELFCOND_OK);
  selfcond_experts* again = nullptr;
  ASSERT_EQ(selfcond_experts_load_memory(model_, json, std::strlen(json), &again), SELFCOND_OK)
      << selfcond_last_error();
  selfcond_string_free(json);
  selfcond_expert_unit a, b;
  ASSERT_EQ(selfcond_experts_get_unit(e, 0, &a), SELFCOND_OK);
  ASSERT_EQ(selfcond_experts_get_unit(again, 0, &b), SELFCOND_OK);
  EXPECT_EQ(a.unit_id, b.unit_id);
  selfcond_experts_free(again);
  const std::string csv_path = testing::MakeTempDir("c_api") + "/football_expertise.csv";
  ASSERT_EQ(selfcond_experts_save(e, csv_path.c_str(), SELFCOND_TABLE_CSV), SELFCOND_OK);
  // An expertise.csv has no model hash: refused by default, accepted when allowed.
  ASSERT_EQ(selfcond_experts_load_file(model_, csv_path.c_str(), &again),
            SELFCOND_FAILED_PRECONDITION);
  EXPECT_NE(std::string(selfcond_last_error()).find("no model_hash"), std::string::npos);
  EXPECT_EQ(again, nullptr);
  selfcond_experts_params ep = selfcond_experts_default_params();
  EXPECT_EQ(ep.allow_unhashed, 0);
  ep.allow_unhashed = 1;
  ASSERT_EQ(selfcond_experts_load_file_ex(model_, csv_path.c_str(), &ep, &again), SELFCOND_OK)
      << selfcond_last_error();
  selfcond_experts_free(again);

  // Forcing the top 50 changes greedy text; the session copied the units it needs.
  selfcond_session* s = nullptr;
  ASSERT_EQ(selfcond_session_create(model_, nullptr, &s), SELFCOND_OK);
  selfcond_generate_params gp = selfcond_generate_default_params();
  gp.temperature = 0;
  gp.max_new_tokens = 15;
  Collected plain, forced;
  ASSERT_EQ(selfcond_generate(s, "Once upon a time", &gp, Collect, &plain, nullptr), SELFCOND_OK);
  selfcond_forcing_source src = {e, 50};
  ASSERT_EQ(selfcond_session_set_forcing(s, &src, 1, SELFCOND_FORCE_ON_P50, 0), SELFCOND_OK)
      << selfcond_last_error();
  selfcond_experts_free(e);
  ASSERT_EQ(selfcond_generate(s, "Once upon a time", &gp, Collect, &forced, nullptr), SELFCOND_OK);
  EXPECT_NE(plain.text, forced.text);
  ASSERT_EQ(selfcond_session_set_forcing(s, nullptr, 0, SELFCOND_FORCE_ON_P50, 0), SELFCOND_OK);
  Collected cleared;
  ASSERT_EQ(selfcond_generate(s, "Once upon a time", &gp, Collect, &cleared, nullptr), SELFCOND_OK);
  EXPECT_EQ(plain.text, cleared.text);
  selfcond_session_free(s);

  // A progress callback that returns 0 cancels.
  EXPECT_EQ(selfcond_rank(model_, "football", pos.data(), pos.size(), neg.data(), neg.size(),
                          nullptr, CancelAtOnce, nullptr, &e),
            SELFCOND_CANCELLED);
  EXPECT_EQ(e, nullptr);
  // No negatives: a clear error.
  EXPECT_EQ(selfcond_rank(model_, "football", pos.data(), pos.size(), nullptr, 0, nullptr, nullptr,
                          nullptr, &e),
            SELFCOND_INVALID_ARGUMENT);
  EXPECT_NE(std::string(selfcond_last_error()).find("negative"), std::string::npos);
}

// The stepwise ranking and the unlabeled responses give the same pooled rows.
TEST_F(CApiTest, RankingStepsAndPooledResponses) {
  const std::vector<std::string> pos_s(football_->positive.begin(),
                                       football_->positive.begin() + 4);
  const std::vector<std::string> neg_s(football_->negative.begin(),
                                       football_->negative.begin() + 3);
  const auto pos = Ptrs(pos_s), neg = Ptrs(neg_s);
  selfcond_ranking* r = nullptr;
  ASSERT_EQ(selfcond_ranking_start(model_, "f", pos.data(), pos.size(), neg.data(), neg.size(),
                                   nullptr, &r),
            SELFCOND_OK);
  selfcond_model_info info;
  selfcond_model_get_info(model_, &info);
  std::vector<float> rows(7 * info.num_units);
  EXPECT_EQ(selfcond_ranking_responses(r, rows.data()), SELFCOND_FAILED_PRECONDITION);
  selfcond_experts* e = nullptr;
  EXPECT_EQ(selfcond_ranking_finish(r, &e), SELFCOND_FAILED_PRECONDITION);
  int done = 0, total = 0, steps = 0;
  while (done < 7) {
    ASSERT_EQ(selfcond_ranking_step(r, 2, &done, &total), SELFCOND_OK);
    EXPECT_EQ(total, 7);
    ++steps;
  }
  EXPECT_EQ(steps, 4);
  ASSERT_EQ(selfcond_ranking_responses(r, rows.data()), SELFCOND_OK);
  ASSERT_EQ(selfcond_ranking_finish(r, &e), SELFCOND_OK);
  selfcond_ranking_free(r);

  // The same table from statistics computed in two unit ranges (as workers would, in place in
  // the rows with a row stride) and put together.
  const int64_t U = info.num_units, half = U / 2;
  const std::vector<uint8_t> labels = {1, 1, 1, 1, 0, 0, 0};
  std::vector<float> ap(U), p50(U), p90(U), off(U);
  for (int64_t begin : {int64_t{0}, half}) {
    const int64_t n = begin == 0 ? half : U - half;
    ASSERT_EQ(selfcond_expertise(rows.data() + begin, 7, n, U, labels.data(), 2, ap.data() + begin,
                                 p50.data() + begin, p90.data() + begin, off.data() + begin),
              SELFCOND_OK)
        << selfcond_last_error();
  }
  selfcond_table_info ti = {"f", nullptr, 4, 3, 0, SELFCOND_INT8, 0};
  selfcond_experts* from_stats = nullptr;
  ASSERT_EQ(selfcond_experts_from_stats(model_, &ti, ap.data(), p50.data(), p90.data(), off.data(),
                                        &from_stats),
            SELFCOND_OK)
      << selfcond_last_error();
  char *a_json = nullptr, *b_json = nullptr;
  ASSERT_EQ(selfcond_experts_to_string(e, SELFCOND_TABLE_JSON, &a_json), SELFCOND_OK);
  ASSERT_EQ(selfcond_experts_to_string(from_stats, SELFCOND_TABLE_JSON, &b_json), SELFCOND_OK);
  EXPECT_STREQ(a_json, b_json);  // identical tables, every unit and statistic
  selfcond_string_free(a_json);
  selfcond_string_free(b_json);
  selfcond_experts_free(from_stats);
  selfcond_experts_free(e);
  const uint8_t all_positive[7] = {1, 1, 1, 1, 1, 1, 1};
  EXPECT_EQ(selfcond_expertise(rows.data(), 7, U, U, all_positive, 1, ap.data(), p50.data(),
                               p90.data(), off.data()),
            SELFCOND_INVALID_ARGUMENT)
      << "needs both classes";
  EXPECT_EQ(selfcond_expertise(rows.data(), 7, U, U - 1, labels.data(), 1, ap.data(), p50.data(),
                               p90.data(), off.data()),
            SELFCOND_INVALID_ARGUMENT);

  std::vector<const char*> all = pos;
  all.insert(all.end(), neg.begin(), neg.end());
  std::vector<float> unlabeled(7 * info.num_units);
  selfcond_rank_params rp = selfcond_rank_default_params();
  rp.threads = 2;
  ASSERT_EQ(selfcond_pooled_responses(model_, all.data(), all.size(), &rp, nullptr, nullptr,
                                      unlabeled.data()),
            SELFCOND_OK)
      << selfcond_last_error();
  EXPECT_EQ(rows, unlabeled);
  for (float v : unlabeled) ASSERT_TRUE(std::isfinite(v));
  const char* empty_sentence[] = {""};
  EXPECT_EQ(selfcond_pooled_responses(model_, empty_sentence, 1, nullptr, nullptr, nullptr,
                                      unlabeled.data()),
            SELFCOND_INVALID_ARGUMENT);
}

// An expert table ranked on another model is refused, by hash or by shape.
TEST_F(CApiTest, RefusesOtherModelsTable) {
  const std::vector<std::string> pos_s(football_->positive.begin(),
                                       football_->positive.begin() + 3);
  const std::vector<std::string> neg_s(football_->negative.begin(),
                                       football_->negative.begin() + 3);
  const auto pos = Ptrs(pos_s), neg = Ptrs(neg_s);
  selfcond_experts* e = nullptr;
  ASSERT_EQ(selfcond_rank(model_, "f", pos.data(), pos.size(), neg.data(), neg.size(), nullptr,
                          nullptr, nullptr, &e),
            SELFCOND_OK);
  char* json = nullptr;
  ASSERT_EQ(selfcond_experts_to_string(e, SELFCOND_TABLE_JSON, &json), SELFCOND_OK);
  selfcond_experts_free(e);
  const std::string text = json;
  selfcond_string_free(json);
  selfcond_model_info info;
  selfcond_model_get_info(model_, &info);

  std::string other_hash = text;
  const size_t at = other_hash.find(info.hash);
  ASSERT_NE(at, std::string::npos);
  other_hash.replace(at, 8, "00000000");
  e = nullptr;
  EXPECT_EQ(selfcond_experts_load_memory(model_, other_hash.data(), other_hash.size(), &e),
            SELFCOND_FAILED_PRECONDITION);
  EXPECT_EQ(e, nullptr);
  EXPECT_NE(std::string(selfcond_last_error()).find("another model"), std::string::npos);

  // The same table without its hash but for a model with one more layer.
  std::string other_shape = text;
  other_shape.replace(other_shape.find(info.hash), 64, "");
  const std::string layers = "\"n_layer\":" + std::to_string(info.n_layer);
  const size_t l = other_shape.find(layers);
  ASSERT_NE(l, std::string::npos);
  other_shape.replace(l, layers.size(), "\"n_layer\":" + std::to_string(info.n_layer + 1));
  // (Refused while parsing: its unit count no longer matches its own n_layer.)
  EXPECT_NE(selfcond_experts_load_memory(model_, other_shape.data(), other_shape.size(), &e),
            SELFCOND_OK);
  EXPECT_EQ(e, nullptr);
  EXPECT_EQ(selfcond_experts_load_memory(model_, "{not json", 9, &e), SELFCOND_INVALID_ARGUMENT);
}

TEST_F(CApiTest, SteeringVectorAndLogitBias) {
  selfcond_dataset* ds = nullptr;
  ASSERT_EQ(selfcond_dataset_load((testing::SharedDir() + "/concepts/football_small.json").c_str(),
                                  0, &ds),
            SELFCOND_OK)
      << selfcond_last_error();
  selfcond_model_info info;
  selfcond_model_get_info(model_, &info);
  std::vector<float> v(info.n_embd);
  ASSERT_EQ(selfcond_steering_vector(model_, ds, 1, SELFCOND_INT8, v.data(), v.size()), SELFCOND_OK)
      << selfcond_last_error();
  // The library's vector, computed here directly, is what the C API returns.
  auto lib_model = Model::Load(*path_, {});
  ASSERT_TRUE(lib_model.ok());
  auto direct = ComputeSteeringVector(**lib_model, *football_, 1, Precision::kInt8, nullptr);
  ASSERT_TRUE(direct.ok());
  for (size_t j = 0; j < v.size(); ++j) ASSERT_NEAR(v[j], (*direct)[j], 1e-5) << j;
  EXPECT_EQ(selfcond_steering_vector(model_, ds, 1, SELFCOND_INT8, v.data(), v.size() - 1),
            SELFCOND_INVALID_ARGUMENT);
  EXPECT_EQ(selfcond_steering_vector(model_, ds, 99, SELFCOND_INT8, v.data(), v.size()),
            SELFCOND_OUT_OF_RANGE);
  size_t n = 0;
  ASSERT_EQ(selfcond_concept_logit_bias(model_, ds, 20, 3.0f, nullptr, nullptr, 0, &n),
            SELFCOND_OK);
  ASSERT_GT(n, 0u);
  std::vector<int32_t> tokens(n);
  std::vector<float> bias(n);
  ASSERT_EQ(selfcond_concept_logit_bias(model_, ds, 20, 3.0f, tokens.data(), bias.data(), n, &n),
            SELFCOND_OK);
  for (float b : bias) EXPECT_EQ(b, 3.0f);
  selfcond_session* s = nullptr;
  ASSERT_EQ(selfcond_session_create(model_, nullptr, &s), SELFCOND_OK);
  EXPECT_EQ(selfcond_session_set_logit_bias(s, tokens.data(), bias.data(), n), SELFCOND_OK);
  EXPECT_EQ(selfcond_session_set_steering(s, 1, v.data(), v.size(), 4.0f), SELFCOND_OK);
  EXPECT_EQ(selfcond_session_set_steering(s, 1, v.data(), v.size() - 1, 4.0f),
            SELFCOND_INVALID_ARGUMENT);
  EXPECT_EQ(selfcond_session_set_steering(s, 0, nullptr, 0, 0.0f), SELFCOND_OK);  // clears
  const int32_t bad = -1;
  const float one = 1.0f;
  EXPECT_EQ(selfcond_session_set_logit_bias(s, &bad, &one, 1), SELFCOND_OUT_OF_RANGE);
  selfcond_session_free(s);
  selfcond_dataset_free(ds);
}

}  // namespace
}  // namespace selfcond
