// The C API's projection of the Engine (0.10): generation in steps, evaluation with a kept
// context, the expert explorer, choose-k and compare methods, and the handles' lifetimes. Each
// result is checked against an independent path to the same number (the whole-generation call,
// a fresh session, the library's own driver) or a property it must have.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "experts/dataset.h"
#include "experts/rank.h"
#include "selfcond/selfcond.h"
#include "test_util.h"
#include "util/file_util.h"
#include "util/json.h"

namespace selfcond {
namespace {

class CApiEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    path_ = new std::string(testing::ConvertedMiniModel(/*keep_float=*/false));
    selfcond_model_params mp = selfcond_model_default_params();
    mp.threads = 2;
    ASSERT_EQ(selfcond_model_load_file(path_->c_str(), &mp, &model_), SELFCOND_OK)
        << selfcond_last_error();
    ASSERT_EQ(selfcond_dataset_load(
                  (testing::SharedDir() + "/concepts/football_small.json").c_str(), 0, &ds_),
              SELFCOND_OK)
        << selfcond_last_error();
    selfcond_dataset_info di;
    selfcond_dataset_get_info(ds_, &di);
    std::vector<const char*> pos, neg;
    for (size_t i = 0; i < di.num_positive; ++i) {
      pos.push_back(selfcond_dataset_sentence(ds_, 1, i, nullptr));
    }
    for (size_t i = 0; i < di.num_negative; ++i) {
      neg.push_back(selfcond_dataset_sentence(ds_, 0, i, nullptr));
    }
    selfcond_rank_params rp = selfcond_rank_default_params();
    rp.threads = 0;  // the model's pool
    ASSERT_EQ(selfcond_rank(model_, "football", pos.data(), pos.size(), neg.data(), neg.size(), &rp,
                            nullptr, nullptr, &experts_),
              SELFCOND_OK)
        << selfcond_last_error();
  }
  static void TearDownTestSuite() {
    selfcond_experts_free(experts_);
    selfcond_dataset_free(ds_);
    selfcond_model_free(model_);
    delete path_;
  }
  static selfcond_session* NewSession(int n_ctx = 0) {
    selfcond_session_params sp = selfcond_session_default_params();
    sp.n_ctx = n_ctx;
    selfcond_session* s = nullptr;
    EXPECT_EQ(selfcond_session_create(model_, &sp, &s), SELFCOND_OK) << selfcond_last_error();
    return s;
  }
  static int VocabSize() {
    selfcond_model_info info;
    selfcond_model_get_info(model_, &info);
    return info.vocab_size;
  }
  static std::string* path_;
  static selfcond_model* model_;
  static selfcond_dataset* ds_;
  static selfcond_experts* experts_;
};
std::string* CApiEngineTest::path_ = nullptr;
selfcond_model* CApiEngineTest::model_ = nullptr;
selfcond_dataset* CApiEngineTest::ds_ = nullptr;
selfcond_experts* CApiEngineTest::experts_ = nullptr;

int Append(int32_t, const char* piece, size_t len, void* user) {
  static_cast<std::string*>(user)->append(piece, len);
  return 1;
}

TEST_F(CApiEngineTest, StepsGiveTheSameTextAsTheWholeCall) {
  selfcond_generate_params gp = selfcond_generate_default_params();
  gp.temperature = 0;
  gp.max_new_tokens = 16;
  gp.stop_at_eos = 0;
  selfcond_session* s = NewSession();
  std::string whole;
  ASSERT_EQ(selfcond_generate(s, "The game", &gp, Append, &whole, nullptr), SELFCOND_OK);
  selfcond_generation* g = nullptr;
  ASSERT_EQ(selfcond_generation_start(s, "The game", &gp, &g), SELFCOND_OK)
      << selfcond_last_error();
  std::string stepped;
  selfcond_generation_step st{};
  int steps = 0;
  while (!st.done) {
    ASSERT_EQ(selfcond_generation_next(g, &st), SELFCOND_OK) << selfcond_last_error();
    stepped.append(st.piece, st.piece_len);
    ++steps;
  }
  EXPECT_EQ(stepped, whole);
  EXPECT_EQ(st.new_tokens, 16);
  EXPECT_EQ(st.stop, SELFCOND_STOP_MAX_TOKENS);
  EXPECT_EQ(steps, 16);
  // A finished generation reports done again, with no token.
  ASSERT_EQ(selfcond_generation_next(g, &st), SELFCOND_OK);
  EXPECT_EQ(st.done, 1);
  EXPECT_EQ(st.token, -1);
  EXPECT_EQ(st.new_tokens, 16);
  selfcond_generation_free(g);
  // Cancelled after two tokens: the next step reports it.
  ASSERT_EQ(selfcond_generation_start(s, "The game", &gp, &g), SELFCOND_OK);
  ASSERT_EQ(selfcond_generation_next(g, &st), SELFCOND_OK);
  ASSERT_EQ(selfcond_generation_next(g, &st), SELFCOND_OK);
  selfcond_generation_cancel(g);
  ASSERT_EQ(selfcond_generation_next(g, &st), SELFCOND_OK);
  EXPECT_EQ(st.done, 1);
  EXPECT_EQ(st.stop, SELFCOND_STOP_CANCELLED);
  EXPECT_EQ(st.new_tokens, 2);  // the two steps before the cancel
  selfcond_generation_free(g);
  selfcond_session_free(s);
}

TEST_F(CApiEngineTest, EvalContinuesTheKvCacheAndAddsTheBias) {
  const int V = VocabSize();
  const char* text = "Once upon a time, the team";
  size_t n = 0;
  ASSERT_EQ(selfcond_tokenize_ex(model_, text, 1, nullptr, 0, &n), SELFCOND_OK);
  std::vector<int32_t> ids(n);
  ASSERT_EQ(selfcond_tokenize_ex(model_, text, 1, ids.data(), n, &n), SELFCOND_OK);
  ASSERT_GE(n, 4u);
  selfcond_session* a = NewSession();
  selfcond_session* b = NewSession();
  // a: the whole text at once; b: all but the last token, then the last one on the kept cache.
  std::vector<float> la(V), lb(V);
  ASSERT_EQ(selfcond_session_eval(a, ids.data(), n, la.data(), la.size()), SELFCOND_OK)
      << selfcond_last_error();
  ASSERT_EQ(selfcond_session_eval(b, ids.data(), n - 1, nullptr, 0), SELFCOND_OK);
  selfcond_session_info info;
  selfcond_session_get_info(b, &info);
  EXPECT_EQ(info.n_past, static_cast<int>(n - 1));
  ASSERT_EQ(selfcond_session_eval(b, &ids[n - 1], 1, lb.data(), lb.size()), SELFCOND_OK);
  double max_diff = 0, range = 0;
  for (int i = 0; i < V; ++i) {
    max_diff = std::max(max_diff, std::abs(double(la[i]) - lb[i]));
    range = std::max(range, std::abs(double(la[i])));
  }
  EXPECT_LT(max_diff, 1e-3 * range) << "chunked prefill must match one chunk";
  // The greedy first token of a generation is the argmax of these logits.
  const int32_t argmax = static_cast<int32_t>(std::max_element(la.begin(), la.end()) - la.begin());
  selfcond_generate_params gp = selfcond_generate_default_params();
  gp.temperature = 0;
  gp.max_new_tokens = 1;
  selfcond_generation* g = nullptr;
  ASSERT_EQ(selfcond_generation_start(a, text, &gp, &g), SELFCOND_OK);
  selfcond_generation_step st{};
  ASSERT_EQ(selfcond_generation_next(g, &st), SELFCOND_OK);
  EXPECT_EQ(st.token, argmax);
  selfcond_generation_free(g);
  // The logit bias is what a sampler sees: added to the evaluated logits.
  const int32_t tok = 7;
  const float bias = 3.5f;
  ASSERT_EQ(selfcond_session_set_logit_bias(b, &tok, &bias, 1), SELFCOND_OK);
  selfcond_session_reset(b);
  selfcond_session_get_info(b, &info);
  EXPECT_EQ(info.n_past, 0);
  ASSERT_EQ(selfcond_session_eval(b, ids.data(), n, lb.data(), lb.size()), SELFCOND_OK);
  EXPECT_NEAR(lb[tok] - la[tok], bias, 1e-3);
  EXPECT_NEAR(lb[tok + 1], la[tok + 1], 1e-3 * range);
  // Bad input: a wrong buffer size, a token outside the vocabulary, more than the context.
  EXPECT_EQ(selfcond_session_eval(b, ids.data(), 1, lb.data(), lb.size() - 1),
            SELFCOND_INVALID_ARGUMENT);
  const int32_t bad = V + 5;
  EXPECT_EQ(selfcond_session_eval(b, &bad, 1, nullptr, 0), SELFCOND_OUT_OF_RANGE);
  selfcond_session* small = NewSession(4);
  EXPECT_EQ(selfcond_session_eval(small, ids.data(), 5, nullptr, 0), SELFCOND_OUT_OF_RANGE);
  EXPECT_NE(std::string(selfcond_last_error()).find("context"), std::string::npos);
  selfcond_session_free(small);
  selfcond_session_free(a);
  selfcond_session_free(b);
}

TEST_F(CApiEngineTest, ObjectsKeepTheirModelAlive) {
  selfcond_model* m = nullptr;
  ASSERT_EQ(selfcond_model_load_file(path_->c_str(), nullptr, &m), SELFCOND_OK);
  selfcond_session* s = nullptr;
  ASSERT_EQ(selfcond_session_create(m, nullptr, &s), SELFCOND_OK);
  selfcond_model_free(m);  // before the session: allowed since 0.10
  std::string text;
  selfcond_generate_params gp = selfcond_generate_default_params();
  gp.max_new_tokens = 4;
  ASSERT_EQ(selfcond_generate(s, "Hello", &gp, Append, &text, nullptr), SELFCOND_OK);
  EXPECT_FALSE(text.empty());
  selfcond_session_free(s);
}

TEST_F(CApiEngineTest, LoadOwnedTakesTheBlockOnEveryPath) {
  auto bytes = ReadFile(*path_);
  ASSERT_TRUE(bytes.ok());
  auto copy = [&] {
    void* p = std::malloc(bytes->size());
    std::memcpy(p, bytes->data(), bytes->size());
    return p;
  };
  selfcond_model* m = nullptr;
  ASSERT_EQ(selfcond_model_load_owned(copy(), bytes->size(), nullptr, &m), SELFCOND_OK)
      << selfcond_last_error();
  selfcond_model_info a, b;
  selfcond_model_get_info(m, &a);
  selfcond_model_get_info(model_, &b);
  EXPECT_STREQ(a.hash, b.hash);
  selfcond_model_free(m);
  // A corrupt file is refused, and its block freed all the same (ASan's leak check).
  void* bad = copy();
  static_cast<char*>(bad)[bytes->size() - 9] ^= 0x40;
  EXPECT_EQ(selfcond_model_load_owned(bad, bytes->size(), nullptr, &m), SELFCOND_DATA_LOSS);
  EXPECT_EQ(selfcond_model_load_owned(copy(), bytes->size(), nullptr, nullptr),
            SELFCOND_INVALID_ARGUMENT);
}

TEST_F(CApiEngineTest, InfoDescribesModelSessionAndBuild) {
  selfcond_model_info info;
  selfcond_model_get_info(model_, &info);
  EXPECT_STREQ(info.arch, "gpt2");
  EXPECT_EQ(info.n_head_kv, info.n_head);
  EXPECT_EQ(info.head_dim * info.n_head, info.n_embd);
  EXPECT_EQ(info.bos_id, -1);
  EXPECT_EQ(info.threads, 2);
  EXPECT_GT(info.file_bytes, 0);
  selfcond_session* s = NewSession(64);
  selfcond_session_info si;
  selfcond_session_get_info(s, &si);
  EXPECT_EQ(si.n_ctx, 64);
  EXPECT_GT(si.kv_cache_bytes, 0);
  EXPECT_GT(std::strlen(si.backend), 0u);
  selfcond_session_free(s);
  char* build = nullptr;
  ASSERT_EQ(selfcond_build_info_to_string(&build), SELFCOND_OK);
  auto j = json::Parse(build);
  selfcond_string_free(build);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->Find("version")->as_string(), selfcond_version());
  EXPECT_GT(j->Find("backends")->items().size(), 0u);
}

TEST_F(CApiEngineTest, BulkUnitsMatchOneByOne) {
  selfcond_experts_info ei;
  selfcond_experts_get_info(experts_, &ei);
  EXPECT_STREQ(ei.model_hash, [] {
    selfcond_model_info mi;
    selfcond_model_get_info(model_, &mi);
    return mi.hash;
  }());
  std::vector<selfcond_expert_unit> units(10);
  size_t n = 0;
  ASSERT_EQ(selfcond_experts_get_units(experts_, 5, units.data(), units.size(), &n), SELFCOND_OK);
  ASSERT_EQ(n, 10u);
  for (size_t i = 0; i < n; ++i) {
    selfcond_expert_unit one;
    ASSERT_EQ(selfcond_experts_get_unit(experts_, 5 + i, &one), SELFCOND_OK);
    EXPECT_EQ(one.unit_id, units[i].unit_id);
    EXPECT_EQ(one.ap, units[i].ap);
  }
  // At the end of the table: fewer than asked; past it: an error.
  ASSERT_EQ(selfcond_experts_get_units(experts_, ei.num_units - 3, units.data(), 10, &n),
            SELFCOND_OK);
  EXPECT_EQ(n, 3u);
  EXPECT_EQ(selfcond_experts_get_units(experts_, ei.num_units + 1, units.data(), 10, &n),
            SELFCOND_OUT_OF_RANGE);
}

TEST_F(CApiEngineTest, TraceShowsTheValuesRankingPools) {
  selfcond_expert_unit best;
  ASSERT_EQ(selfcond_experts_get_unit(experts_, 0, &best), SELFCOND_OK);
  const char* sentence = "The striker scored a goal in the football match.";
  size_t n = 0;
  ASSERT_EQ(
      selfcond_trace_unit(model_, sentence, best.unit_id, SELFCOND_INT8, nullptr, nullptr, 0, &n),
      SELFCOND_OK)
      << selfcond_last_error();
  std::vector<int32_t> tokens(n);
  std::vector<float> values(n);
  ASSERT_EQ(selfcond_trace_unit(model_, sentence, best.unit_id, SELFCOND_INT8, tokens.data(),
                                values.data(), n, &n),
            SELFCOND_OK);
  // The trace's maximum is the unit's max-pooled response, which ranking computes.
  const std::vector<const char*> one = {sentence};
  selfcond_model_info mi;
  selfcond_model_get_info(model_, &mi);
  std::vector<float> pooled(static_cast<size_t>(mi.num_units));
  ASSERT_EQ(
      selfcond_pooled_responses(model_, one.data(), 1, nullptr, nullptr, nullptr, pooled.data()),
      SELFCOND_OK);
  EXPECT_NEAR(*std::max_element(values.begin(), values.end()), pooled[best.unit_id],
              1e-4 * (1 + std::abs(pooled[best.unit_id])));
  size_t n_tok = 0;
  ASSERT_EQ(selfcond_tokenize(model_, sentence, nullptr, 0, &n_tok), SELFCOND_OK);
  EXPECT_EQ(n, n_tok);
  EXPECT_EQ(
      selfcond_trace_unit(model_, sentence, mi.num_units, SELFCOND_INT8, nullptr, nullptr, 0, &n),
      SELFCOND_OUT_OF_RANGE);
}

TEST_F(CApiEngineTest, ConceptWordsBiasAndDatasets) {
  char* words = nullptr;
  ASSERT_EQ(selfcond_concept_words_to_string(ds_, 5, &words), SELFCOND_OK);
  auto j = json::Parse(words);
  selfcond_string_free(words);
  ASSERT_TRUE(j.ok());
  ASSERT_GT(j->items().size(), 0u);
  EXPECT_GT(j->items()[0].Find("log_odds")->as_number(), 0);
  const std::string first(j->items()[0].Find("word")->as_string());
  const char* list[] = {first.c_str(), "zzzqqqxx"};
  size_t n = 0;
  ASSERT_EQ(selfcond_word_logit_bias(model_, list, 2, 2.0f, nullptr, nullptr, 0, &n), SELFCOND_OK);
  ASSERT_GT(n, 0u);
  std::vector<int32_t> toks(n);
  std::vector<float> bias(n);
  ASSERT_EQ(selfcond_word_logit_bias(model_, list, 2, 2.0f, toks.data(), bias.data(), n, &n),
            SELFCOND_OK);
  char* piece = nullptr;
  ASSERT_EQ(selfcond_detokenize_to_string(model_, toks.data(), 1, &piece), SELFCOND_OK);
  std::string lower(piece);
  selfcond_string_free(piece);
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  EXPECT_EQ(lower, " " + first);
  EXPECT_EQ(bias[0], 2.0f);
  // Datasets from memory are validated like files.
  const char* pos[] = {"a football match"};
  selfcond_dataset* d = nullptr;
  EXPECT_EQ(selfcond_dataset_create("c", pos, 1, nullptr, 0, &d), SELFCOND_INVALID_ARGUMENT);
  EXPECT_EQ(d, nullptr);
  const char* neg[] = {"a quiet library"};
  ASSERT_EQ(selfcond_dataset_create("c", pos, 1, neg, 1, &d), SELFCOND_OK);
  selfcond_dataset_info di;
  selfcond_dataset_get_info(d, &di);
  EXPECT_STREQ(di.concept, "c");
  selfcond_dataset_free(d);
}

TEST_F(CApiEngineTest, ChooseKAndCompareProjectTheEngine) {
  const char* prompts[] = {"Once upon a time", "In the city"};
  selfcond_choose_k_params kp = selfcond_choose_k_default_params();
  EXPECT_EQ(kp.n_candidates, 8u);
  EXPECT_EQ(kp.grid.seeds, 3);
  kp.grid.prompts = prompts;
  kp.grid.n_prompts = 2;
  kp.grid.seeds = 2;
  kp.grid.new_tokens = 8;
  const int64_t candidates[] = {5, 300};
  kp.candidates = candidates;
  kp.n_candidates = 2;
  kp.target_rate = 0.25;
  kp.ppl_budget = 1000;
  int calls = 0;
  auto count = [](int, int, void* user) {
    ++*static_cast<int*>(user);
    return 1;
  };
  selfcond_choose_k_result kr;
  char* report = nullptr;
  ASSERT_EQ(selfcond_choose_k(model_, experts_, ds_, &kp, count, &calls, &kr, &report), SELFCOND_OK)
      << selfcond_last_error();
  auto rj = json::Parse(report);
  selfcond_string_free(report);
  ASSERT_TRUE(rj.ok());
  EXPECT_EQ(rj->Find("k")->as_number(), static_cast<double>(kr.k));
  EXPECT_GE(rj->Find("tried")->items().size(), 2u);
  EXPECT_EQ(calls, 4 * static_cast<int>(rj->Find("tried")->items().size()));
  EXPECT_TRUE(kr.k == 0 || kr.k == 5 || kr.k == 300);

  selfcond_compare_params cp = selfcond_compare_default_params();
  cp.grid.prompts = prompts;
  cp.grid.n_prompts = 2;
  cp.grid.seeds = 2;
  cp.grid.new_tokens = 8;
  cp.methods = "bias";
  const double betas[] = {10};
  cp.betas = betas;
  cp.n_betas = 1;
  char* out = nullptr;
  ASSERT_EQ(selfcond_compare_methods(model_, experts_, ds_, &cp, nullptr, nullptr, &out),
            SELFCOND_OK)
      << selfcond_last_error();
  const std::string c_json = out;
  selfcond_string_free(out);
  // The same comparison through the library: the C API adds nothing and drops nothing.
  auto engine = Engine::Load(*path_, {});
  ASSERT_TRUE(engine.ok());
  auto ds = LoadDataset(testing::SharedDir() + "/concepts/football_small.json");
  ASSERT_TRUE(ds.ok());
  char* table_json = nullptr;
  ASSERT_EQ(selfcond_experts_to_string(experts_, SELFCOND_TABLE_JSON, &table_json), SELFCOND_OK);
  auto table = (*engine)->ParseTable(table_json, false);
  selfcond_string_free(table_json);
  ASSERT_TRUE(table.ok());
  CompareOptions o;
  o.prompts = {prompts[0], prompts[1]};
  o.seeds = 2;
  o.new_tokens = 8;
  o.methods = {"bias"};
  o.betas = {10};
  auto lib = (*engine)->CompareMethods(*table, *ds, o);
  ASSERT_TRUE(lib.ok()) << lib.status();
  EXPECT_EQ(c_json, CompareResultToJson(*lib).Dump());
  auto cj = json::Parse(c_json);
  ASSERT_TRUE(cj.ok());
  EXPECT_EQ(cj->Find("points")->items().size(), 2u);  // none + one bias strength
  // Bad options name the problem.
  cp.methods = "prompting";
  EXPECT_EQ(selfcond_compare_methods(model_, experts_, ds_, &cp, nullptr, nullptr, &out),
            SELFCOND_INVALID_ARGUMENT);
  EXPECT_NE(std::string(selfcond_last_error()).find("prompting"), std::string::npos);
  kp.target_rate = 2;
  EXPECT_EQ(selfcond_choose_k(model_, experts_, ds_, &kp, nullptr, nullptr, &kr, nullptr),
            SELFCOND_INVALID_ARGUMENT);
}

TEST_F(CApiEngineTest, RankingInfoCountsSentences) {
  const char* pos[] = {"a football match", "the striker scored"};
  const char* neg[] = {"a quiet library", "the cat slept", "rain fell"};
  selfcond_ranking* r = nullptr;
  ASSERT_EQ(selfcond_ranking_start(model_, "f", pos, 2, neg, 3, nullptr, &r), SELFCOND_OK);
  selfcond_ranking_info info;
  selfcond_ranking_get_info(r, &info);
  EXPECT_EQ(info.total, 5);
  EXPECT_EQ(info.done, 0);
  ASSERT_EQ(selfcond_ranking_step(r, 2, nullptr, nullptr), SELFCOND_OK);
  selfcond_ranking_get_info(r, &info);
  EXPECT_EQ(info.done, 2);
  selfcond_ranking_free(r);
}

}  // namespace
}  // namespace selfcond
