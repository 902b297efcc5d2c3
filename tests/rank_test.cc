// Ranking end to end on the demo model against the independent float32 reference
// (reference.json: football_small_top50 and maxpooled_responses_first8).
#include "experts/rank.h"

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "test_util.h"
#include "util/file_util.h"
#include "util/json.h"
#include "util/parallel.h"

namespace selfcond {
namespace {

class RankTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Model::LoadOptions lo;
    lo.need_float = true;
    auto m = Model::Load(selfcond::testing::ConvertedMiniModel(/*keep_float=*/true), lo);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
    auto text = ReadFile(selfcond::testing::MiniModelDir() + "/reference/reference.json");
    ASSERT_TRUE(text.ok()) << text.status();
    auto doc = json::Parse(*text);
    ASSERT_TRUE(doc.ok()) << doc.status();
    ref_ = new json::Value(*std::move(doc));
    auto ds = LoadConceptJson(selfcond::testing::SharedDir() + "/concepts/football_small.json");
    ASSERT_TRUE(ds.ok()) << ds.status();
    football_ = new Dataset(*std::move(ds));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete ref_;
    delete football_;
    model_ = nullptr;
  }
  void SetUp() override {
    if (model_ == nullptr || ref_ == nullptr || football_ == nullptr) GTEST_SKIP();
  }

  static Model* model_;
  static json::Value* ref_;
  static Dataset* football_;
};
Model* RankTest::model_ = nullptr;
json::Value* RankTest::ref_ = nullptr;
Dataset* RankTest::football_ = nullptr;

TEST_F(RankTest, FootballSmallMatchesReferenceTop50) {
  ThreadPool pool(2);
  RankOptions ro;
  ro.precision = Precision::kF32;
  ro.pool = &pool;
  int calls = 0, last_done = 0, last_total = 0;
  ro.progress = [&](int done, int total) {
    ++calls;
    EXPECT_GE(done, last_done);  // 0 first, then after each batch
    last_done = done;
    last_total = total;
    return true;
  };
  auto table = RankConcept(*model_, *football_, ro);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_GE(calls, 2);  // before the first batch and after each
  EXPECT_EQ(last_done, 31);
  EXPECT_EQ(last_total, 31);
  EXPECT_EQ(table->concept, "football-1_04_00__");
  EXPECT_EQ(table->group, "sense");
  EXPECT_EQ(table->model_hash, model_->hash_hex());
  EXPECT_EQ(table->num_positive, 13);
  EXPECT_EQ(table->num_negative, 18);
  EXPECT_EQ(table->num_truncated, 0);
  EXPECT_EQ(table->precision, "f32");
  const UnitSpace space(model_->config());
  ASSERT_EQ(static_cast<int64_t>(table->units.size()), space.num_units());
  EXPECT_TRUE(CheckCompatible(*table, *model_).ok());

  std::map<std::pair<int, int>, const ExpertUnit*> by_id;
  for (const auto& u : table->units) by_id[{u.site, u.unit}] = &u;
  const json::Value* top = ref_->Find("football_small_top50");
  ASSERT_NE(top, nullptr);
  ASSERT_EQ(top->items().size(), 50u);
  int matched = 0;
  for (const auto& r : top->items()) {
    auto site = ParseSiteName(absl::StrCat("h.", static_cast<int>(r.Find("layer")->as_number()),
                                           ".", std::string(r.Find("name")->as_string())));
    ASSERT_TRUE(site.ok()) << site.status();
    int unit = static_cast<int>(r.Find("unit")->as_number());
    const ExpertUnit* u = by_id.at({site->site, unit});
    const double ap = r.Find("ap")->as_number(), p50 = r.Find("on_p50")->as_number();
    bool ok = std::abs(u->ap - ap) <= 1e-4 && std::abs(u->on_p50 - p50) <= 1e-3;
    matched += ok;
    if (!ok) {
      ADD_FAILURE() << "(not fatal up to 2) " << table->layer_name(*u) << " unit " << unit
                    << ": ap " << u->ap << " vs " << ap << ", on_p50 " << u->on_p50 << " vs "
                    << p50;
    }
  }
  EXPECT_GE(matched, 48);
  // The reference's best unit is our best too (AP 1 is unique there).
  int ap1 = 0;
  for (const auto& u : table->units) ap1 += u.ap >= 1.0f - 1e-6f;
  EXPECT_EQ(ap1, static_cast<int>(ref_->Find("football_small_units_with_ap_1")->as_number()));
  EXPECT_EQ(table->layer_name(table->units[0]), "transformer.h.0.mlp.c_fc:0");
  EXPECT_EQ(table->units[0].unit, 258);
}

TEST_F(RankTest, PooledResponsesMatchReference) {
  SessionOptions so;
  so.precision = Precision::kF32;
  auto session = Session::Create(*model_, so);
  ASSERT_TRUE(session.ok()) << session.status();
  const UnitSpace space(model_->config());
  std::vector<float> row(space.num_units());
  const json::Value* pooled = ref_->Find("maxpooled_responses_first8");
  ASSERT_NE(pooled, nullptr);
  ASSERT_FALSE(pooled->members().empty());
  for (const auto& [sentence, sites] : pooled->members()) {
    std::vector<int32_t> tokens = model_->tokenizer().Encode(sentence);
    ASSERT_TRUE(PoolSentence(**session, tokens, row.data()).ok());
    for (const auto& [name, values] : sites.members()) {
      auto site = ParseSiteName(name);
      ASSERT_TRUE(site.ok()) << site.status();
      ASSERT_EQ(values.items().size(), 8u);
      for (int j = 0; j < 8; ++j) {
        EXPECT_NEAR(row[space.UnitId(site->site, j)], values.items()[j].as_number(), 1e-3)
            << sentence << " " << name << " unit " << j;
      }
    }
  }
}

TEST_F(RankTest, ThreadCountDoesNotChangeTheTable) {
  RankOptions one;
  one.precision = Precision::kInt8;
  one.max_sentences = 6;
  one.top_n = 200;
  auto a = RankConcept(*model_, *football_, one);
  ASSERT_TRUE(a.ok()) << a.status();
  ThreadPool pool(2);
  RankOptions two = one;
  two.pool = &pool;
  auto b = RankConcept(*model_, *football_, two);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->num_positive, 6);
  EXPECT_EQ(a->num_negative, 6);
  EXPECT_EQ(a->precision, "int8");
  ASSERT_EQ(a->units.size(), 200u);
  ASSERT_EQ(b->units.size(), 200u);
  for (size_t i = 0; i < a->units.size(); ++i) {
    EXPECT_EQ(a->units[i].site, b->units[i].site) << i;
    EXPECT_EQ(a->units[i].unit, b->units[i].unit) << i;
    EXPECT_EQ(a->units[i].ap, b->units[i].ap) << i;
    EXPECT_EQ(a->units[i].on_p50, b->units[i].on_p50) << i;
  }
}

TEST_F(RankTest, LongSentencesAreTruncatedToTheContext) {
  const int n_ctx = static_cast<int>(model_->config().n_ctx);
  std::string long_sentence;
  for (int i = 0; i < n_ctx + 40; ++i) long_sentence += " goal";
  std::vector<int32_t> tokens = model_->tokenizer().Encode(long_sentence);
  ASSERT_GT(static_cast<int>(tokens.size()), n_ctx);
  auto ds = DatasetFromVectors("t", {long_sentence, "A match."}, {"Rain today."});
  ASSERT_TRUE(ds.ok());
  RankOptions ro;
  ro.precision = Precision::kF32;
  auto pooled = ComputePooledResponses(*model_, *ds, ro);
  ASSERT_TRUE(pooled.ok()) << pooled.status();
  EXPECT_EQ(pooled->num_truncated, 1);
  EXPECT_EQ(pooled->labels, (std::vector<uint8_t>{1, 1, 0}));
  // Row 0 is the pooled response of the first n_ctx tokens.
  SessionOptions so;
  so.precision = Precision::kF32;
  auto session = Session::Create(*model_, so);
  ASSERT_TRUE(session.ok());
  std::vector<float> row(pooled->num_units);
  tokens.resize(n_ctx);
  ASSERT_TRUE(PoolSentence(**session, tokens, row.data()).ok());
  for (int64_t u = 0; u < pooled->num_units; u += 97) {
    ASSERT_EQ(pooled->responses[u], row[u]) << u;
  }
  auto table = RankConcept(*model_, *ds, ro);
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->num_truncated, 1);
}

TEST_F(RankTest, RefusesAnotherModelsTable) {
  ExpertTable t;
  t.concept = "x";
  t.model_name = "other";
  t.model_hash = std::string(64, '0');
  absl::Status st = CheckCompatible(t, *model_);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("ranked on another model"), absl::string_view::npos) << st;
}

// The int8 acceptance check: on the full football.json (1,700 sentences) the int8 path's
// top-50 experts overlap the f32 path's top-50 by at least 80%.
TEST_F(RankTest, Int8TopExpertsOverlapFloatOnFootball) {
  auto ds = LoadConceptJson(selfcond::testing::SharedDir() + "/concepts/football.json");
  ASSERT_TRUE(ds.ok()) << ds.status();
  ThreadPool pool(0);
  std::set<std::pair<int, int>> top[2];
  for (int p = 0; p < 2; ++p) {
    RankOptions ro;
    ro.precision = p == 0 ? Precision::kInt8 : Precision::kF32;
    ro.pool = &pool;
    ro.top_n = 50;
    auto t = RankConcept(*model_, *ds, ro);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_EQ(t->units.size(), 50u);
    for (const auto& u : t->units) top[p].insert({u.site, u.unit});
  }
  int common = 0;
  for (const auto& u : top[0]) common += top[1].count(u);
  std::printf("football.json: int8 top-50 shares %d units with the f32 top-50\n", common);
  EXPECT_GE(common, 40);
  // The int4 conversion (convert --weights int4, blockwise) holds the same bar.
  auto m4 = Model::Load(selfcond::testing::ConvertedMiniModelInt4(), {});
  ASSERT_TRUE(m4.ok()) << m4.status();
  RankOptions ro;
  ro.pool = &pool;
  ro.top_n = 50;
  auto t4 = RankConcept(**m4, *ds, ro);
  ASSERT_TRUE(t4.ok()) << t4.status();
  int common4 = 0;
  for (const auto& u : t4->units) common4 += top[1].count({u.site, u.unit});
  std::printf("football.json: int4 top-50 shares %d units with the f32 top-50\n", common4);
  EXPECT_GE(common4, 40);
}

}  // namespace
}  // namespace selfcond
