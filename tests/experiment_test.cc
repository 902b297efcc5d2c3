// The paper experiments (src/tools/paper_experiments.h): the football-word matcher, the
// occupation prompts, and small end-to-end runs on the demo model (shape of the results, and
// that forcing football experts makes football words more frequent).
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/choose_k.h"
#include "engine/compare.h"
#include "experts/dataset.h"
#include "experts/rank.h"
#include "gtest/gtest.h"
#include "model/generate.h"
#include "test_util.h"
#include "tools/paper_experiments.h"
#include "util/file_util.h"
#include "util/json.h"
#include "util/parallel.h"

namespace selfcond {
namespace {

std::vector<std::string> Football(std::string_view text) {
  return FindWordMentions(text, FootballWords());
}

TEST(FootballWordsTest, WholeWordsCaseInsensitiveWithPlurals) {
  EXPECT_EQ(Football("He kicked the BALL."), std::vector<std::string>{"ball"});
  EXPECT_EQ(Football("two Goals, three matches and the scores"),
            (std::vector<std::string>{"goal", "match", "score"}));
  EXPECT_EQ(Football("the players' coaches"), (std::vector<std::string>{"player", "coach"}));
  EXPECT_EQ(Football("a football-like game"), (std::vector<std::string>{"football", "game"}));
  EXPECT_EQ(Football("player's"), std::vector<std::string>{"player"});
  // Longer words that merely contain a football word do not count.
  EXPECT_TRUE(Football("the goalkeeper entered the ballroom, gamely").empty());
  EXPECT_TRUE(Football("teammate sportsman matchbox scoreboard footballer").empty());
  // Digits, '_' and non-ASCII bytes are word characters, as in Python's \w.
  EXPECT_TRUE(Football("ball2 _team matché").empty());
  EXPECT_EQ(Football("«sport»"), std::vector<std::string>{"sport"});
  EXPECT_EQ(Football("the coach\u2019s \u201cgoal\u201d"),
            (std::vector<std::string>{"goal", "coach"}));
  EXPECT_TRUE(Football("ballé").empty());
  EXPECT_TRUE(Football("").empty());
  // Each word once, in the list's order.
  EXPECT_EQ(Football("Team team TEAMS soccer"), (std::vector<std::string>{"soccer", "team"}));
}

TEST(FirstWordTest, MatchesComputeFrequencyWindow) {
  const std::vector<std::string> she = {"she", "her"};
  EXPECT_TRUE(CountsAsFirstWord(" she was", she));
  EXPECT_TRUE(CountsAsFirstWord(" She's", she));
  EXPECT_TRUE(CountsAsFirstWord(" her.", she));
  EXPECT_TRUE(CountsAsFirstWord(" her,", she));
  EXPECT_FALSE(CountsAsFirstWord(" herself", she));
  EXPECT_FALSE(CountsAsFirstWord(" she", she));       // no following space/punctuation yet
  EXPECT_FALSE(CountsAsFirstWord(" the she ", she));  // outside the 5-character window
  EXPECT_FALSE(CountsAsFirstWord("she was", she));    // needs the leading space
  EXPECT_FALSE(CountsAsFirstWord(" he was", she));
  EXPECT_TRUE(CountsAsFirstWord(" he was", {"he", "his"}));
  EXPECT_TRUE(CountsAsFirstWord(" His ", {"he", "his"}));
}

TEST(OccupationPromptsTest, MlSelfcondOrder) {
  auto text = ReadFile(selfcond::testing::SharedDir() + "/concepts/occupations.json");
  ASSERT_TRUE(text.ok()) << text.status();
  auto prompts = ParseOccupationPrompts(*text);
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  // 17 templates x (25 female + 26 fixed random male occupations), as generate_batch.py.
  ASSERT_EQ(prompts->size(), 17u * 51u);
  EXPECT_EQ((*prompts)[0].text, "The advocate said that");
  EXPECT_EQ((*prompts)[0].group, "female");
  // male_occupations[41] is the first fixed random index.
  EXPECT_EQ((*prompts)[25].text, "The critic said that");
  EXPECT_EQ((*prompts)[25].group, "male");
  EXPECT_EQ(prompts->back().text, "The politician yelled because");  // index 90
  auto small = ParseOccupationPrompts(*text, 2);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->size(), 17u * 4u);

  EXPECT_FALSE(ParseOccupationPrompts("{}").ok());
  EXPECT_FALSE(ParseOccupationPrompts(R"({"templates": ["no slot"], "female_occupations": ["a"],
                                          "male_occupations": ["b"]})")
                   .ok());
  EXPECT_FALSE(ParseOccupationPrompts(R"({"templates": ["The <occupation> ran"],
      "female_occupations": ["a"], "male_occupations": ["b"], "fixed_random_male_idx": [3]})")
                   .ok());
}

// Experts ranked on football_small (31 sentences: fast), on the converted demo model.
class ExperimentRunTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = Model::Load(selfcond::testing::ConvertedMiniModel(/*keep_float=*/false), {});
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
    auto ds = LoadConceptJson(selfcond::testing::SharedDir() + "/concepts/football_small.json");
    ASSERT_TRUE(ds.ok()) << ds.status();
    ThreadPool pool(2);
    RankOptions ro;
    ro.pool = &pool;
    auto t = RankConcept(*model_, *ds, ro);
    ASSERT_TRUE(t.ok()) << t.status();
    table_ = new ExpertTable(*std::move(t));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete table_;
    model_ = nullptr;
    table_ = nullptr;
  }
  void SetUp() override {
    if (model_ == nullptr || table_ == nullptr) GTEST_SKIP();
  }
  static Model* model_;
  static ExpertTable* table_;
};
Model* ExperimentRunTest::model_ = nullptr;
ExpertTable* ExperimentRunTest::table_ = nullptr;

TEST_F(ExperimentRunTest, FootballExpertsRaiseMentionsAndResultsHaveTheirShape) {
  FootballExperimentOptions o;
  o.ks = {0, 50};
  o.prompts = {"Once upon a time", "In the city"};
  o.seeds = 3;
  o.new_tokens = 20;
  o.examples_per_k = 2;
  ThreadPool pool(2);
  int calls = 0, last = 0;
  auto r = RunFootballExperiment(*model_, *table_, o, &pool, [&](int done, int total) {
    ++calls;
    EXPECT_EQ(total, 12);
    EXPECT_EQ(done, last + 1);
    last = done;
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(calls, 12);
  ASSERT_EQ(r->points.size(), 2u);
  ASSERT_EQ(r->samples.size(), 12u);
  EXPECT_GT(r->points[1].mentions, r->points[0].mentions)
      << "k=0: " << r->points[0].mentions << "/6, k=50: " << r->points[1].mentions << "/6";
  for (const auto& s : r->samples) {
    EXPECT_EQ(s.scored_tokens, 20);
    EXPECT_GT(s.ppl(), 1.0);
    EXPECT_EQ(s.words, FindWordMentions(s.text, FootballWords()));
  }
  // The k = 0 samples are plain sampling: the same text as Generate with the same seed.
  {
    auto session = Session::Create(*model_, {});
    ASSERT_TRUE(session.ok());
    GenerateOptions g;
    g.max_new_tokens = 20;
    g.sampling.temperature = 1;
    g.sampling.top_p = 0.9f;
    g.sampling.seed = 1;
    g.stop_at_eos = false;
    auto gen = Generate(**session, model_->tokenizer().Encode("Once upon a time"), g, nullptr);
    ASSERT_TRUE(gen.ok());
    std::vector<int32_t> visible;
    for (int32_t t : gen->tokens) {
      if (t != model_->tokenizer().eos_id()) visible.push_back(t);
    }
    const std::string text = model_->tokenizer().Decode(visible);
    if (FindInvalidUtf8(text) < 0) {
      EXPECT_EQ(r->samples[1].text, text);
    }
    // Its perplexity, scored independently with Perplexity() over prompt + continuation, is
    // consistent: the pooled NLL over all predicted tokens includes the continuation's.
    auto prompt = model_->tokenizer().Encode("Once upon a time");
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), gen->tokens.begin(), gen->tokens.end());
    auto full = Perplexity(**session, all);
    auto head = Perplexity(**session, prompt);
    ASSERT_TRUE(full.ok() && head.ok());
    const double cont_nll =
        full->mean_nll * full->predicted_tokens - head->mean_nll * head->predicted_tokens;
    EXPECT_NEAR(r->samples[1].nll_sum, cont_nll, 1e-3 * std::abs(cont_nll));
  }
  json::Value j = FootballResultToJson(*r);
  auto back = json::Parse(j.Dump());
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_NE(back->Find("points"), nullptr);
  ASSERT_EQ(back->Find("points")->items().size(), 2u);
  const json::Value& p1 = back->Find("points")->items()[1];
  EXPECT_EQ(p1.GetInt("k").value(), 50);
  EXPECT_EQ(p1.GetInt("mentions").value(), r->points[1].mentions);
  ASSERT_NE(p1.Find("mentions_per_prompt"), nullptr);
  EXPECT_EQ(p1.Find("mentions_per_prompt")->items().size(), 2u);
  EXPECT_EQ(back->Find("samples")->items().size(), 12u);
  EXPECT_EQ(back->Find("example_indices")->items().size(), 4u);
}

TEST_F(ExperimentRunTest, GenderProbabilitiesAreConsistent) {
  auto text = ReadFile(selfcond::testing::SharedDir() + "/concepts/occupations.json");
  ASSERT_TRUE(text.ok());
  auto prompts = ParseOccupationPrompts(*text, 1);
  ASSERT_TRUE(prompts.ok());
  prompts->resize(4);  // 2 templates x (1 female + 1 male)
  const ExpertTable* tables[] = {table_, table_};
  GenderExperimentOptions o;
  o.ks = {0, 20};
  o.sampler_top_k = 10;
  auto r = RunGenderExperiment(*model_, tables, *prompts, o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->cells.size(), 2u);
  for (size_t c = 0; c < 2; ++c) {
    for (size_t ki = 0; ki < 2; ++ki) {
      for (size_t p = 0; p < 4; ++p) {
        const GenderCell& x = r->cells[c][ki][p];
        EXPECT_GE(x.p_she_full, 0);
        EXPECT_LE(x.p_she_full + x.p_he_full, 1);
        EXPECT_LE(x.p_she + x.p_he, 1 + 1e-9);
        // Renormalizing within the top-10 can only raise a token's probability, or drop it.
        EXPECT_TRUE(x.p_he == 0 || x.p_he >= x.p_he_full - 1e-12);
      }
    }
  }
  // Same table twice: identical results for both "concepts".
  EXPECT_EQ(r->cells[0][1][0].p_he, r->cells[1][1][0].p_he);
  // With the top-k off, p equals the full softmax, which we recompute here.
  o.sampler_top_k = 0;
  auto full = RunGenderExperiment(*model_, tables, *prompts, o, nullptr);
  ASSERT_TRUE(full.ok());
  auto session = Session::Create(*model_, {});
  ASSERT_TRUE(session.ok());
  auto logits =
      (*session)->Forward(model_->tokenizer().Encode((*prompts)[0].text), Session::Logits::kLast);
  ASSERT_TRUE(logits.ok());
  double mx = -1e30, sum = 0;
  for (float z : *logits) mx = std::max<double>(mx, z);
  for (float z : *logits) sum += std::exp(z - mx);
  double he = 0;
  for (const auto& w : HeWords()) he += std::exp((*logits)[model_->tokenizer().Encode(w)[0]] - mx);
  EXPECT_NEAR(full->cells[0][0][0].p_he, he / sum, 1e-9);
  EXPECT_NEAR(full->cells[0][0][0].p_he, full->cells[0][0][0].p_he_full, 1e-12);
  // Sampled cross-check: shares in [0, 1], reported only when asked for.
  o.sampler_top_k = 10;
  o.samples = 4;
  o.sample_tokens = 2;
  auto sampled = RunGenderExperiment(*model_, tables, *prompts, o, nullptr);
  ASSERT_TRUE(sampled.ok()) << sampled.status();
  for (const auto& c : sampled->curves) {
    ASSERT_EQ(c.sampled_she.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_GE(c.sampled_she[i], 0);
      EXPECT_LE(c.sampled_she[i] + c.sampled_he[i], 1);
    }
  }
  EXPECT_TRUE(r->curves[0].sampled_she.empty());
  // JSON: curves per concept x group.
  auto back = json::Parse(GenderResultToJson(*r).Dump());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->Find("curves")->items().size(), 6u);
  EXPECT_EQ(back->Find("per_occupation")->items().size(), 2u);
}

}  // namespace
}  // namespace selfcond

// ---- issue 10: controls, compare, auto k, gender parity ----------------------------------------

namespace selfcond {
namespace {

TEST_F(ExperimentRunTest, RandomUnitsDoNotConditionLikeTopExperts) {
  FootballExperimentOptions o;
  o.ks = {50};
  o.prompts = {"Once upon a time", "In the city"};
  o.seeds = 4;
  o.new_tokens = 20;
  ThreadPool pool(2);
  auto top = RunFootballExperiment(*model_, *table_, o, &pool);
  ASSERT_TRUE(top.ok()) << top.status();
  o.choice.random = true;
  o.choice.seed = 7;
  auto random = RunFootballExperiment(*model_, *table_, o, &pool);
  ASSERT_TRUE(random.ok()) << random.status();
  EXPECT_EQ(random->points[0].units, "random (seed 7)");
  // The control: 50 random units forced to their on_p50 are far from the top 50's effect.
  EXPECT_LT(random->points[0].mentions, top->points[0].mentions)
      << "random " << random->points[0].mentions << "/8, top " << top->points[0].mentions << "/8";
  EXPECT_LT(random->points[0].mean_ap, top->points[0].mean_ap);
  // Per-layer forcing: one point per block and k, each forcing that block's units only.
  o.choice = UnitChoice();
  o.per_layer = true;
  o.ks = {0, 5};
  o.seeds = 1;
  auto per_layer = RunFootballExperiment(*model_, *table_, o, &pool);
  ASSERT_TRUE(per_layer.ok()) << per_layer.status();
  ASSERT_EQ(per_layer->points.size(), 2u * model_->config().n_layer);
  EXPECT_EQ(per_layer->points[3].layer, 1);
  EXPECT_EQ(per_layer->points[3].k, 5);
  auto back = json::Parse(FootballResultToJson(*per_layer).Dump());
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->Find("options")->Find("per_layer")->as_bool());
  EXPECT_EQ(back->Find("points")->items()[3].GetInt("layer").value(), 1);
  // Scores: positive perplexities under the scorer (here the same model, whole text) and a
  // Self-BLEU in [0, 1].
  for (const auto& p : top->points) {
    EXPECT_GT(p.scorer_ppl, 1);
    EXPECT_GE(p.self_bleu, 0);
    EXPECT_LE(p.self_bleu, 1);
  }
}

TEST_F(ExperimentRunTest, ScorerModelScoresTheWholeText) {
  // A different scorer (the keep-float conversion: the same weights in f32 copies) gives close
  // but separately computed perplexities of prompt + continuation.
  auto scorer = Model::Load(selfcond::testing::ConvertedMiniModel(/*keep_float=*/true), {});
  ASSERT_TRUE(scorer.ok()) << scorer.status();
  FootballExperimentOptions o;
  o.ks = {0};
  o.prompts = {"Yesterday"};
  o.seeds = 2;
  o.new_tokens = 10;
  auto own = RunFootballExperiment(*model_, *table_, o, nullptr);
  o.scorer = scorer->get();
  auto other = RunFootballExperiment(*model_, *table_, o, nullptr);
  ASSERT_TRUE(own.ok() && other.ok());
  EXPECT_EQ(own->samples[0].text, other->samples[0].text);
  // "!" + "Yesterday" + 10 tokens: about 11 predicted tokens (re-tokenized text).
  EXPECT_GE(other->samples[0].scorer_tokens, 9);
  EXPECT_NEAR(other->points[0].scorer_ppl, own->points[0].scorer_ppl,
              0.2 * own->points[0].scorer_ppl);
}

TEST_F(ExperimentRunTest, CompareRunsThreeMethodsOnTheSameSeeds) {
  auto ds = LoadConceptJson(selfcond::testing::SharedDir() + "/concepts/football_small.json");
  ASSERT_TRUE(ds.ok());
  CompareOptions o;
  o.prompts = {"Once upon a time", "In the city"};
  o.seeds = 3;
  o.new_tokens = 16;
  o.ks = {50};
  o.alphas = {8};
  o.betas = {10};
  ThreadPool pool(2);
  auto r = CompareMethods(*model_, *table_, *ds, o, &pool);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->run.points.size(), 4u);
  EXPECT_EQ(r->run.points[0].method, "none");
  EXPECT_EQ(r->run.points[1].method, "experts");
  EXPECT_EQ(r->run.points[2].method, "steer");
  EXPECT_EQ(r->run.points[3].method, "bias");
  EXPECT_GT(r->bias_tokens, 0);
  EXPECT_GT(r->steer_norm, 0);
  EXPECT_FALSE(r->words.empty());
  // A strong bias toward the concept words makes them appear: the rate is measured with the
  // same words, so this checks the wiring of the bias and of the rate.
  EXPECT_GT(r->run.points[3].mentions, r->run.points[0].mentions);
  EXPECT_GE(r->run.points[3].mention_rate, 0.5);
  // Same seeds: the unconditioned continuations do not depend on what else runs.
  o.methods = {"bias"};
  auto only_bias = CompareMethods(*model_, *table_, *ds, o, &pool);
  ASSERT_TRUE(only_bias.ok());
  EXPECT_EQ(only_bias->run.samples[0].text, r->run.samples[0].text);
  auto j = json::Parse(CompareResultToJson(*r).Dump());
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->Find("points")->items().size(), 4u);
  o.methods = {"prompting"};
  EXPECT_FALSE(CompareMethods(*model_, *table_, *ds, o, &pool).ok());
}

TEST_F(ExperimentRunTest, AutoKPicksTheSmallestQualifyingK) {
  AutoKOptions o;
  o.prompts = {"Once upon a time", "In the city"};
  o.seeds = 2;
  o.new_tokens = 16;
  o.candidates = {5, 300};
  o.words = FootballWords();
  o.target_rate = 0.25;
  o.ppl_budget = 1000;  // no fluency limit: the smallest k reaching 25% wins
  auto r = ChooseK(*model_, *table_, nullptr, o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_GE(r->tried.size(), 2u);
  EXPECT_EQ(r->tried[0].k, 0);
  EXPECT_TRUE(r->met) << r->reason;
  EXPECT_GE(r->tried.back().mention_rate, 0.25);
  EXPECT_EQ(r->k, r->tried.back().k);
  for (size_t i = 1; i + 1 < r->tried.size(); ++i) EXPECT_LT(r->tried[i].mention_rate, 0.25);
  // A budget nothing meets (perplexity must not grow at all): k falls back, and says why.
  o.ppl_budget = 1.0;
  o.candidates = {300};
  auto strict = ChooseK(*model_, *table_, nullptr, o, nullptr);
  ASSERT_TRUE(strict.ok());
  EXPECT_FALSE(strict->met);
  EXPECT_EQ(strict->k, 0);
  EXPECT_NE(strict->reason.find("exceeds"), std::string::npos) << strict->reason;
}

TEST_F(ExperimentRunTest, GenderExpertsMovePronounsTowardParity) {
  auto woman = LoadExpertTable(std::string(SELFCOND_SOURCE_DIR) + "/demo/experts/woman.json");
  auto man = LoadExpertTable(std::string(SELFCOND_SOURCE_DIR) + "/demo/experts/man.json");
  ASSERT_TRUE(woman.ok() && man.ok());
  if (!CheckCompatible(*woman, *model_).ok()) GTEST_SKIP() << "demo tables for another model";
  auto text = ReadFile(selfcond::testing::SharedDir() + "/concepts/occupations.json");
  ASSERT_TRUE(text.ok());
  auto prompts = ParseOccupationPrompts(*text, 3);
  ASSERT_TRUE(prompts.ok());
  prompts->resize(6);  // the first template with 3 female + 3 male occupations
  const ExpertTable* tables[] = {&*woman, &*man};
  GenderExperimentOptions o;
  o.ks = {0, 30, 300};
  ThreadPool pool(2);
  auto r = RunGenderExperiment(*model_, tables, *prompts, o, &pool);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->parity.size(), 2u);
  // do(woman, 300) raises p(she) - p(he) on average; do(man, 30) lowers p(she) (the demo
  // model already prefers he/his everywhere: docs/paper-experiments.md).
  double dw0 = 0, dw = 0, she0 = 0, she_man = 0;
  for (size_t p = 0; p < 6; ++p) {
    dw0 += r->cells[0][0][p].p_she - r->cells[0][0][p].p_he;
    dw += r->cells[0][2][p].p_she - r->cells[0][2][p].p_he;
    she0 += r->cells[1][0][p].p_she;
    she_man += r->cells[1][1][p].p_she;
  }
  EXPECT_GT(dw, dw0);
  EXPECT_LT(she_man, she0);
  // Parity points agree with the cells they are computed from.
  for (size_t p = 0; p < 6; ++p) {
    const double x = r->parity[0][p];
    const double d0 = r->cells[0][0][p].p_she - r->cells[0][0][p].p_he;
    if (d0 >= 0) {
      EXPECT_EQ(x, 0);
    }
    if (!std::isnan(x)) {
      EXPECT_GE(x, 0);
      EXPECT_LE(x, 300);
    }
  }
  auto j = json::Parse(GenderResultToJson(*r).Dump());
  ASSERT_TRUE(j.ok());
  ASSERT_NE(j->Find("parity"), nullptr);
  EXPECT_EQ(j->Find("parity")->Find("woman")->GetInt("contexts").value(), 6);
  EXPECT_EQ(j->Find("per_prompt")->Find("man")->Find("delta_p")->items().size(), 6u);
  EXPECT_EQ(j->Find("per_prompt")->Find("man")->Find("delta_p")->items()[0].items().size(), 3u);
}

}  // namespace
}  // namespace selfcond

namespace selfcond {
namespace {

// ml-selfcond's CSVs are written by pandas: Python's float repr and QUOTE_MINIMAL fields.
TEST(GenSentencesCsvTest, FieldsAsPandasWritesThem) {
  EXPECT_EQ(PythonFloat(0), "0.0");
  EXPECT_EQ(PythonFloat(12.5), "12.5");
  EXPECT_EQ(PythonFloat(0.1), "0.1");
  EXPECT_EQ(PythonFloat(46.65027597247111), "46.65027597247111");
  EXPECT_EQ(PythonFloat(1e-5), "1e-05");
  EXPECT_EQ(PythonFloat(1.5e-7), "1.5e-07");
  EXPECT_EQ(PythonFloat(1e15), "1000000000000000.0");
  EXPECT_EQ(PythonFloat(1e16), "1e+16");
  EXPECT_EQ(PythonFloat(-2.0), "-2.0");
  EXPECT_EQ(CsvField("plain text"), "plain text");
  EXPECT_EQ(CsvField("a, b"), "\"a, b\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvField("two\nlines"), "\"two\nlines\"");
}

}  // namespace
}  // namespace selfcond
