// The paper's controls and the other steering methods (issue 10): unit choice (random units, rank
// windows, layer filters, other metrics), the steering-vector and logit-bias hooks of Session,
// the dataset's log-odds concept words, Self-BLEU against NLTK, and parity points.
#include "experts/steer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "experts/rank.h"
#include "gtest/gtest.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/observers.h"
#include "test_util.h"
#include "tools/paper_experiments.h"
#include "util/parallel.h"

namespace selfcond {
namespace {

// A table of 12 units over 3 blocks, sorted by AP; on_p50 rises as AP falls.
ExpertTable SmallTable() {
  ExpertTable t;
  t.concept = "toy";
  t.n_layer = 3;
  for (int i = 0; i < 12; ++i) {
    ExpertUnit u;
    u.site = (i % 3) * kSiteKinds + static_cast<int>(SiteKind::kCFc);  // blocks 0, 1, 2, 0, ...
    u.unit = i;
    u.ap = 1.0f - 0.05f * i;
    u.on_p50 = static_cast<float>(i);
    u.on_p90 = 2.0f * i;
    u.off_mean = i % 2 ? 10.0f : 0.0f;
    t.units.push_back(u);
  }
  return t;
}

std::vector<int64_t> Select(const ExpertTable& t, int64_t k, const UnitChoice& c) {
  auto r = SelectUnits(t, k, c);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : std::vector<int64_t>{};
}

TEST(UnitChoiceTest, DefaultIsTheTopKByAp) {
  const ExpertTable t = SmallTable();
  EXPECT_EQ(Select(t, 3, {}), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(Select(t, 50, {}).size(), 12u);  // the default clamps to the table, as before
}

TEST(UnitChoiceTest, RankWindowLayersAndMetric) {
  const ExpertTable t = SmallTable();
  UnitChoice window;
  window.offset = 4;
  EXPECT_EQ(Select(t, 3, window), (std::vector<int64_t>{4, 5, 6}));
  UnitChoice layer1;
  layer1.layers = {1};  // units 1, 4, 7, 10
  EXPECT_EQ(Select(t, 2, layer1), (std::vector<int64_t>{1, 4}));
  layer1.offset = 2;
  EXPECT_EQ(Select(t, 2, layer1), (std::vector<int64_t>{7, 10}));
  UnitChoice by_p50;
  by_p50.metric = UnitChoice::Metric::kOnP50;
  EXPECT_EQ(Select(t, 3, by_p50), (std::vector<int64_t>{11, 10, 9}));
  UnitChoice by_gap;  // on_p50 - off_mean: even units have gap i, odd ones i - 10
  by_gap.metric = UnitChoice::Metric::kGap;
  EXPECT_EQ(Select(t, 3, by_gap), (std::vector<int64_t>{10, 8, 6}));
  // Not enough eligible units, a block that does not exist: clear errors.
  layer1.offset = 3;
  EXPECT_EQ(SelectUnits(t, 2, layer1).status().code(), absl::StatusCode::kOutOfRange);
  UnitChoice bad;
  bad.layers = {3};
  auto st = SelectUnits(t, 1, bad).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(st.message().find("layer 3 does not exist"), std::string::npos) << st;
  EXPECT_FALSE(ParseUnitMetric("median").ok());
  EXPECT_EQ(*ParseUnitMetric("gap"), UnitChoice::Metric::kGap);
}

TEST(UnitChoiceTest, RandomUnitsAreSeededDistinctAndSpread) {
  const ExpertTable t = SmallTable();
  UnitChoice r1;
  r1.random = true;
  r1.seed = 1;
  const auto a = Select(t, 6, r1), b = Select(t, 6, r1);
  EXPECT_EQ(a, b);  // same seed, same units
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), 6u);
  // Over seeds, every unit is drawn sometimes (uniform, not the top k).
  std::set<int64_t> seen;
  bool differs = false;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    r1.seed = seed;
    const auto s = Select(t, 3, r1);
    seen.insert(s.begin(), s.end());
    differs |= s != Select(t, 3, UnitChoice());
  }
  EXPECT_EQ(seen.size(), 12u);
  EXPECT_TRUE(differs);
}

TEST(UnitChoiceTest, BuildForcingUsesTheChoice) {
  const ExpertTable t = SmallTable();
  ModelConfig c{};
  c.n_layer = 3;
  c.n_embd = 8;
  c.n_inner = 32;
  c.n_head = 2;
  c.vocab_size = 10;
  c.n_ctx = 8;
  const UnitSpace space(c);
  UnitChoice layer2;
  layer2.layers = {2};
  ForcingSource src{&t, 2, layer2};
  auto f = BuildForcing({&src, 1}, ForcingValue::kOnP50, false, space);
  ASSERT_TRUE(f.ok()) << f.status();
  int forced = 0;
  for (int s = 0; s < space.num_sites(); ++s) {
    for (const auto& u : f->per_site[s]) {
      EXPECT_EQ(space.site_layer(s), 2);
      EXPECT_TRUE(u.unit == 2 || u.unit == 5) << u.unit;
      EXPECT_EQ(u.value, static_cast<float>(u.unit));  // on_p50 = i
      ++forced;
    }
  }
  EXPECT_EQ(forced, 2);
}

TEST(ConceptWordsTest, LogOddsFavourWordsOfThePositives) {
  Dataset ds;
  ds.concept = "cooking";
  ds.positive = {"Stir the soup and taste the soup.", "Bake the bread in the oven.",
                 "The soup needs salt.", "Knead the bread dough.", "The soup is hot; bake it."};
  ds.negative = {"The train left the station.", "The bread price rose.", "Vote in the election.",
                 "The station was closed.", "The train is late."};
  const auto words = ConceptWords(ds, 5, 2);
  ASSERT_GE(words.size(), 3u);
  // soup (3 of 5 positives, 0 negatives) beats bake (2, 0) beats bread (2, 1); "the" is in
  // every sentence (log-odds 0) and is not a concept word.
  EXPECT_EQ(words[0].word, "soup");
  EXPECT_EQ(words[0].positive, 3);
  EXPECT_EQ(words[0].negative, 0);
  EXPECT_NEAR(words[0].log_odds, std::log(4.0 / 3.0) - std::log(1.0 / 6.0), 1e-12);
  for (const auto& w : words) EXPECT_NE(w.word, "the");
  // Function words are never concept words, however lopsided their counts.
  Dataset lopsided = ds;
  for (auto& p : lopsided.positive) p += " and with";
  for (const auto& w : ConceptWords(lopsided, 20, 2)) {
    EXPECT_NE(w.word, "and");
    EXPECT_NE(w.word, "with");
  }
  EXPECT_TRUE(ConceptWords(ds, 5, 10).empty());  // nothing in 10 positives
}

class SteerModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = Model::Load(selfcond::testing::ConvertedMiniModel(/*keep_float=*/false), {});
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP();
  }
  std::vector<float> Logits(Session& s, const std::vector<int32_t>& ids) {
    s.Reset();
    auto l = s.Forward(ids, Session::Logits::kAll);
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? std::vector<float>(l->begin(), l->end()) : std::vector<float>{};
  }
  static Model* model_;
};
Model* SteerModelTest::model_ = nullptr;

// The logit bias lives in the sampler: what generation samples from, not the forward pass's
// logits (scoring text under a biased session sees the model's own logits).
TEST_F(SteerModelTest, LogitBiasAppliesToSamplingOnly) {
  auto s = Session::Create(*model_, {});
  ASSERT_TRUE(s.ok());
  const auto ids = model_->tokenizer().Encode("The game was played");
  const auto base = Logits(**s, ids);
  const size_t V = model_->config().vocab_size;
  const int32_t unlikely =
      static_cast<int32_t>(std::min_element(base.end() - V, base.end()) - (base.end() - V));
  Session::Conditioning cond;
  cond.logit_bias = {{unlikely, 1000.0f}, {300, -1.0f}};
  ASSERT_TRUE((*s)->SetConditioning(cond).ok());
  EXPECT_EQ(Logits(**s, ids), base);  // the forward pass is untouched, bit for bit
  GenerateOptions g;
  g.max_new_tokens = 3;
  g.sampling.temperature = 0;
  g.stop_at_eos = false;
  auto r = Generate(**s, ids, g, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  for (int32_t t : r->tokens) EXPECT_EQ(t, unlikely);  // +1000 wins every greedy choice
  cond.logit_bias = {{static_cast<int32_t>(V), 1.0f}};
  EXPECT_FALSE((*s)->SetConditioning(cond).ok());
  cond.logit_bias = {{1, std::numeric_limits<float>::infinity()}};
  EXPECT_FALSE((*s)->SetConditioning(cond).ok());
  cond.logit_bias = {{1, 2e4f}};  // over kMaxLogitBias
  EXPECT_FALSE((*s)->SetConditioning(cond).ok());
  EXPECT_EQ((*s)->conditioning().logit_bias.size(), 2u);  // the refused ones changed nothing
}

TEST_F(SteerModelTest, SteeringHookValidatesAndMovesTheOutput) {
  auto s = Session::Create(*model_, {});
  ASSERT_TRUE(s.ok());
  const auto ids = model_->tokenizer().Encode("Once upon a time");
  const auto base = Logits(**s, ids);
  const size_t d = model_->config().n_embd;
  Session::Conditioning cond;
  cond.steering = {1, std::vector<float>(d, 0.0f)};
  ASSERT_TRUE((*s)->SetConditioning(cond).ok());
  EXPECT_EQ(Logits(**s, ids), base);  // adding zero changes nothing, bit for bit
  Session::Steering push{1, std::vector<float>(d, 0.5f)};
  cond.steering = push;
  ASSERT_TRUE((*s)->SetConditioning(cond).ok());
  EXPECT_NE(Logits(**s, ids), base);
  ASSERT_TRUE((*s)->SetConditioning({}).ok());
  EXPECT_EQ(Logits(**s, ids), base);
  cond.steering = {static_cast<int>(model_->config().n_layer), push.add};
  EXPECT_FALSE((*s)->SetConditioning(cond).ok());
  cond.steering = {0, std::vector<float>(d + 1, 0.0f)};
  EXPECT_FALSE((*s)->SetConditioning(cond).ok());
}

TEST_F(SteerModelTest, SteeringVectorIsTheMeanResidualDifference) {
  Dataset ds;
  ds.concept = "toy";
  ds.positive = {"The team scored a goal.", "He kicked the ball."};
  ds.negative = {"The cake was baked.", "She read the book."};
  auto v = ComputeSteeringVector(*model_, ds, 1, Precision::kInt8, nullptr);
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->size(), model_->config().n_embd);
  // Swapping the classes negates it; the same sentences on both sides give zero; threads do not
  // change it.
  Dataset swapped = ds;
  std::swap(swapped.positive, swapped.negative);
  auto w = ComputeSteeringVector(*model_, swapped, 1, Precision::kInt8, nullptr);
  ASSERT_TRUE(w.ok());
  ThreadPool pool(2);
  auto threaded = ComputeSteeringVector(*model_, ds, 1, Precision::kInt8, &pool);
  ASSERT_TRUE(threaded.ok());
  double norm = 0;
  for (size_t j = 0; j < v->size(); ++j) {
    EXPECT_NEAR((*w)[j], -(*v)[j], 1e-5);
    EXPECT_NEAR((*threaded)[j], (*v)[j], 1e-5);
    norm += (*v)[j] * (*v)[j];
  }
  EXPECT_GT(norm, 0);
  // The same sentences on both sides tell nothing apart: refused (issue 22), not a zero vector.
  Dataset same = ds;
  same.negative = ds.positive;
  auto z = ComputeSteeringVector(*model_, same, 1, Precision::kInt8, nullptr);
  ASSERT_FALSE(z.ok());
  EXPECT_NE(z.status().message().find("the same"), std::string::npos) << z.status();
  // Independent of the hook's sum: the residual after block 1 of a one-token sentence is its
  // embedding plus blocks 0 and 1, which the f32 and int8 paths agree on within rounding; here
  // we check the capture against a session run token by token (KV cache path).
  auto s = Session::Create(*model_, {});
  ASSERT_TRUE(s.ok());
  const auto ids = model_->tokenizer().Encode(ds.positive[0]);
  std::vector<double> batch(model_->config().n_embd, 0.0), steps(model_->config().n_embd, 0.0);
  ResidualSumObserver whole(1, static_cast<int>(batch.size()), batch.data());
  (*s)->SetObserver(&whole);
  ASSERT_TRUE((*s)->Forward(ids, Session::Logits::kNone).ok());
  (*s)->Reset();
  ResidualSumObserver stepwise(1, static_cast<int>(steps.size()), steps.data());
  (*s)->SetObserver(&stepwise);
  for (int32_t id : ids) ASSERT_TRUE((*s)->Forward({&id, 1}, Session::Logits::kNone).ok());
  (*s)->SetObserver(nullptr);
  for (size_t j = 0; j < batch.size(); ++j) EXPECT_NEAR(batch[j], steps[j], 1e-3 * ids.size());
  EXPECT_FALSE(ComputeSteeringVector(*model_, ds, 99, Precision::kInt8, nullptr).ok());
}

TEST_F(SteerModelTest, TraceUnitIsWhatRankingMaxPools) {
  auto s = Session::Create(*model_, {});
  ASSERT_TRUE(s.ok());
  const auto ids = model_->tokenizer().Encode("The striker scored a late goal for the club.");
  const UnitSpace space(model_->config());
  std::vector<float> row(space.num_units());
  ASSERT_TRUE(PoolSentence(**s, ids, row.data()).ok());
  // A few units across sites: the trace's max over tokens is the pooled response.
  for (int64_t unit : {int64_t{0}, space.num_units() / 3, space.num_units() - 1}) {
    auto trace = TraceUnit(**s, ids, unit);
    ASSERT_TRUE(trace.ok()) << trace.status();
    ASSERT_EQ(trace->size(), ids.size());
    EXPECT_EQ(*std::max_element(trace->begin(), trace->end()), row[unit]) << unit;
  }
  // The trace at the first token does not depend on what follows (causal).
  auto whole = TraceUnit(**s, ids, 5);
  auto first = TraceUnit(**s, {ids.data(), 1}, 5);
  ASSERT_TRUE(whole.ok() && first.ok());
  EXPECT_EQ((*whole)[0], (*first)[0]);
  EXPECT_EQ(TraceUnit(**s, ids, space.num_units()).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_FALSE(TraceUnit(**s, {}, 0).ok());
}

TEST_F(SteerModelTest, WordLogitBiasCoversSingleTokenForms) {
  std::vector<ConceptWord> words = {{"football", 3, 1, 0}, {"xqzvwk", 2, 1, 0}};
  const auto bias = WordLogitBias(model_->tokenizer(), words, 4.0f);
  ASSERT_FALSE(bias.empty());
  for (const auto& [id, b] : bias) {
    EXPECT_EQ(b, 4.0f);
    const std::string piece = model_->tokenizer().Decode(std::vector<int32_t>{id});
    EXPECT_TRUE(piece == " football" || piece == " Football") << piece;
  }
}

// Expected values from NLTK 3.8 (Debian's python3-nltk), on the same tokens:
//   from nltk.translate.bleu_score import sentence_bleu, SmoothingFunction
//   mean(sentence_bleu(T[:i] + T[i+1:], T[i], (1/n,)*n,
//                      smoothing_function=SmoothingFunction().method1) for i in range(len(T)))
TEST(SelfBleuTest, MatchesNltk) {
  const std::vector<std::string> texts = {"the cat sat on the mat .", "the dog sat on the log !",
                                          "a cat and a dog played in the park",
                                          "the cat sat on the mat ."};
  EXPECT_NEAR(SelfBleu(texts, 2), 0.6381249397277642, 1e-12);
  EXPECT_NEAR(SelfBleu(texts, 3), 0.6003762394038129, 1e-12);
  const std::vector<std::string> punct = {"He said hello, world.", "She said goodbye; don't go.",
                                          "hello world again and again"};
  EXPECT_NEAR(SelfBleu(punct, 3), 0.057256953768371116, 1e-12);
  EXPECT_NEAR(SelfBleu({"a b c d", "a b c d", "a b c d"}, 3), 1.0, 1e-12);
  EXPECT_EQ(SelfBleu({"only one"}, 3), 0.0);
  EXPECT_EQ(BleuTokens("don't stop, ok?"),
            (std::vector<std::string>{"don't", "stop", ",", "ok", "?"}));
}

TEST(ParityPointTest, InterpolatesTheFirstCrossing) {
  const std::vector<int64_t> ks = {0, 10, 30, 100};
  EXPECT_DOUBLE_EQ(ParityPoint(ks, {-0.4, -0.2, 0.2, 0.5}), 20.0);  // halfway from 10 to 30
  EXPECT_DOUBLE_EQ(ParityPoint(ks, {0.1, -0.2, 0.2, 0.5}), 0.0);    // already at k = 0
  EXPECT_DOUBLE_EQ(ParityPoint(ks, {-0.3, 0.0, -0.1, 0.5}), 10.0);  // equality counts
  EXPECT_TRUE(std::isnan(ParityPoint(ks, {-0.4, -0.3, -0.2, -0.1})));
}

}  // namespace
}  // namespace selfcond
