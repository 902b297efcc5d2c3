// The paper experiments (src/tools/paper_experiments.h): the football-word matcher, the
// occupation prompts, and small end-to-end runs on the demo model (shape of the results, and
// that forcing football experts makes football words more frequent).
#include <cmath>
#include <memory>
#include <string>
#include <vector>

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
