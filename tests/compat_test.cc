// ml-selfcond compatibility mode (`rank --compat ml-selfcond`): numpy's seeded subset, EOS
// padding with the pads under attention_mask 0, dropping of long sentences, the table's record
// of the mode and ml-selfcond's expertise_info.json.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "experts/rank.h"
#include "experts/responses.h"
#include "gtest/gtest.h"
#include "model/model.h"
#include "test_util.h"
#include "util/file_util.h"
#include "util/json.h"
#include "util/numpy_random.h"

namespace selfcond {
namespace {

json::Value LoadFixture() {
  auto text = ReadFile(selfcond::testing::SourceDir() + "/tests/data/numpy_choice.json");
  EXPECT_TRUE(text.ok()) << text.status();
  auto doc = json::Parse(text.ok() ? *text : "{}");
  EXPECT_TRUE(doc.ok()) << doc.status();
  return doc.ok() ? *std::move(doc) : json::Value();
}

std::vector<int64_t> Ints(const json::Value& arr) {
  std::vector<int64_t> out;
  for (const auto& v : arr.items()) out.push_back(static_cast<int64_t>(v.as_number()));
  return out;
}

// Every case of the fixture drawn by numpy (scripts/gen_numpy_choice_fixture.py).
TEST(NumpyRandomTest, ChoiceMatchesNumpy) {
  json::Value doc = LoadFixture();
  const json::Value* cases = doc.Find("cases");
  ASSERT_NE(cases, nullptr);
  ASSERT_GE(cases->items().size(), 7u);
  for (const auto& c : cases->items()) {
    NumpyRandomState rng(static_cast<uint32_t>(c.Find("seed")->as_number()));
    const auto& calls = c.Find("calls")->items();
    const auto& want = c.Find("indices")->items();
    ASSERT_EQ(calls.size(), want.size());
    for (size_t i = 0; i < calls.size(); ++i) {
      const int64_t n = static_cast<int64_t>(calls[i].Find("n")->as_number());
      const int64_t k = static_cast<int64_t>(calls[i].Find("k")->as_number());
      EXPECT_EQ(rng.ChoiceWithoutReplacement(n, k), Ints(want[i]))
          << "seed " << c.Find("seed")->as_number() << " call " << i << " (n " << n << ", k " << k
          << ")";
    }
  }
  // The first draw known by heart: numpy.random.RandomState(1234).choice(10, 5, replace=False).
  EXPECT_EQ(NumpyRandomState(1234).ChoiceWithoutReplacement(10, 5),
            (std::vector<int64_t>{7, 2, 9, 1, 0}));
}

Dataset Numbered(int n_pos, int n_neg) {
  Dataset ds;
  ds.concept = "numbered";
  for (int i = 0; i < n_pos; ++i) ds.positive.push_back(absl::StrCat("p", i));
  for (int i = 0; i < n_neg; ++i) ds.negative.push_back(absl::StrCat("n", i));
  return ds;
}

std::vector<std::string> Named(const char* prefix, const std::vector<int64_t>& idx) {
  std::vector<std::string> out;
  for (int64_t i : idx) out.push_back(absl::StrCat(prefix, i));
  return out;
}

// ml-selfcond's ConceptDataset: negatives drawn first, then positives, from one RandomState.
TEST(NumpyRandomTest, SampleLikeMlSelfcondMatchesNumpy) {
  json::Value doc = LoadFixture();
  const json::Value* cases = doc.Find("cases");
  ASSERT_NE(cases, nullptr);
  const json::Value& both = cases->items()[4];  // (1500, 1000) then (1200, 1000), seed 1234
  ASSERT_EQ(both.Find("calls")->items()[0].Find("n")->as_number(), 1500);
  Dataset ds = Numbered(1200, 1500);
  SampleLikeMlSelfcond(&ds, 1000, 1234);
  EXPECT_EQ(ds.negative, Named("n", Ints(both.Find("indices")->items()[0])));
  EXPECT_EQ(ds.positive, Named("p", Ints(both.Find("indices")->items()[1])));

  // A class at most per_class long is kept whole and draws nothing.
  const json::Value& one = cases->items()[5];  // (12, 6), seed 1234
  Dataset small = Numbered(12, 5);
  SampleLikeMlSelfcond(&small, 6, 1234);
  EXPECT_EQ(small.negative, Named("n", {0, 1, 2, 3, 4}));
  EXPECT_EQ(small.positive, Named("p", Ints(one.Find("indices")->items()[0])));

  Dataset all = Numbered(12, 5);
  SampleLikeMlSelfcond(&all, 0, 1234);
  EXPECT_EQ(all.positive.size(), 12u);
}

// HF GPT-2 (transformers 4.6.1, what ml-selfcond pins) written out naively in double from the
// float weights: causal mask by replacement with -1e4, attention_mask (1 - m) * -1e4 added,
// softmax over all positions; every site's output max-pooled over all positions.
std::vector<float> ReferencePooled(const Model& model, const std::vector<int32_t>& tokens,
                                   const std::vector<int>& mask) {
  const ModelConfig& c = model.config();
  const int T = static_cast<int>(tokens.size()), d = c.n_embd, H = c.n_head;
  const int hd = d / H;
  const UnitSpace space(c);
  std::vector<float> pooled(space.num_units(), -INFINITY);
  std::vector<double> x(static_cast<size_t>(T) * d);
  for (int t = 0; t < T; ++t) {
    for (int j = 0; j < d; ++j) {
      x[t * d + j] = static_cast<double>(model.wte_f32()[static_cast<size_t>(tokens[t]) * d + j]) +
                     model.wpe()[static_cast<size_t>(t) * d + j];
    }
  }
  auto layer_norm = [&](const std::vector<double>& in, const float* w, const float* b) {
    std::vector<double> out(in.size());
    for (int t = 0; t < T; ++t) {
      double mean = 0, var = 0;
      for (int j = 0; j < d; ++j) mean += in[t * d + j];
      mean /= d;
      for (int j = 0; j < d; ++j) var += (in[t * d + j] - mean) * (in[t * d + j] - mean);
      var /= d;
      for (int j = 0; j < d; ++j) {
        out[t * d + j] = (in[t * d + j] - mean) / std::sqrt(var + c.layer_norm_eps) * w[j] + b[j];
      }
    }
    return out;
  };
  auto linear = [&](const std::vector<double>& in, const LinearWeights& w, int site) {
    const int n = w.f.n, k = w.f.k;
    std::vector<double> out(static_cast<size_t>(T) * n);
    float* mx = pooled.data() + space.site_offset(site);
    for (int t = 0; t < T; ++t) {
      for (int o = 0; o < n; ++o) {
        double acc = w.bias[o];
        const float* row = w.f.w + static_cast<size_t>(o) * k;
        for (int i = 0; i < k; ++i) acc += in[static_cast<size_t>(t) * k + i] * row[i];
        out[static_cast<size_t>(t) * n + o] = acc;
        mx[o] = std::max(mx[o], static_cast<float>(acc));
      }
    }
    return out;
  };
  for (int l = 0; l < static_cast<int>(c.n_layer); ++l) {
    const BlockWeights& b = model.block(l);
    auto qkv = linear(layer_norm(x, b.norm1_w, b.norm1_b), b.attn_in,
                      space.site_index(l, SiteKind::kCAttn));
    std::vector<double> att(static_cast<size_t>(T) * d, 0.0);
    for (int h = 0; h < H; ++h) {
      for (int i = 0; i < T; ++i) {
        std::vector<double> w(T);
        double mxw = -INFINITY;
        for (int t = 0; t < T; ++t) {
          double s = 0;
          for (int e = 0; e < hd; ++e) {
            s += qkv[static_cast<size_t>(i) * 3 * d + h * hd + e] *
                 qkv[static_cast<size_t>(t) * 3 * d + d + h * hd + e];
          }
          s /= std::sqrt(static_cast<double>(hd));
          if (t > i) s = -1e4;
          s += (1 - mask[t]) * -1e4;
          w[t] = s;
          mxw = std::max(mxw, s);
        }
        double sum = 0;
        for (int t = 0; t < T; ++t) sum += (w[t] = std::exp(w[t] - mxw));
        for (int t = 0; t < T; ++t) {
          for (int e = 0; e < hd; ++e) {
            att[static_cast<size_t>(i) * d + h * hd + e] +=
                w[t] / sum * qkv[static_cast<size_t>(t) * 3 * d + 2 * d + h * hd + e];
          }
        }
      }
    }
    auto proj = linear(att, b.attn_out, space.site_index(l, SiteKind::kAttnCProj));
    for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];
    auto fc =
        linear(layer_norm(x, b.norm2_w, b.norm2_b), b.mlp_in, space.site_index(l, SiteKind::kCFc));
    for (double& v : fc) {
      v = 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    }
    auto out = linear(fc, b.mlp_out, space.site_index(l, SiteKind::kMlpCProj));
    for (size_t i = 0; i < x.size(); ++i) x[i] += out[i];
  }
  return pooled;
}

class CompatModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Model::LoadOptions lo;
    lo.need_float = true;
    auto m = Model::Load(selfcond::testing::ConvertedMiniModel(/*keep_float=*/true), lo);
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
  static std::string Words(int n) {  // " goal" n times: n tokens
    std::string s;
    for (int i = 0; i < n; ++i) s += " goal";
    return s;
  }
  static Model* model_;
};
Model* CompatModelTest::model_ = nullptr;

// The padded pooling equals an independent HF-style computation of the 128 padded positions
// with attention_mask 0 on the pads; with the mask all ones the same reference equals running
// the padded tokens as an ordinary sentence (which checks the reference), and the two differ.
TEST_F(CompatModelTest, PaddedPoolingMatchesMaskedReference) {
  const int seq_len = 128;
  const int32_t eos = static_cast<int32_t>(model_->config().eos_token_id);
  std::vector<int32_t> tokens = model_->tokenizer().Encode(" The striker scored a late goal.");
  const int n = static_cast<int>(tokens.size());
  ASSERT_GT(n, 3);
  std::vector<int32_t> padded = tokens;
  padded.resize(seq_len, eos);
  std::vector<int> mask(seq_len, 0), ones(seq_len, 1);
  std::fill(mask.begin(), mask.begin() + n, 1);

  SessionOptions so;
  so.precision = Precision::kF32;
  so.n_ctx = seq_len;
  auto session = Session::Create(*model_, so);
  ASSERT_TRUE(session.ok()) << session.status();
  const int64_t units = UnitSpace(model_->config()).num_units();
  std::vector<float> compat(units), unmasked(units);
  ASSERT_TRUE(PoolPaddedSentence(**session, tokens, seq_len, eos, compat.data()).ok());
  ASSERT_TRUE(PoolSentence(**session, padded, unmasked.data()).ok());
  const std::vector<float> ref = ReferencePooled(*model_, padded, mask);
  const std::vector<float> ref_ones = ReferencePooled(*model_, padded, ones);
  int differ = 0;
  for (int64_t u = 0; u < units; ++u) {
    ASSERT_NEAR(compat[u], ref[u], 2e-3 * std::max(1.0f, std::abs(ref[u]))) << "unit " << u;
    ASSERT_NEAR(unmasked[u], ref_ones[u], 2e-3 * std::max(1.0f, std::abs(ref_ones[u])))
        << "unit " << u;
    differ += std::abs(compat[u] - unmasked[u]) > 1e-2f * std::max(1.0f, std::abs(compat[u]));
  }
  std::printf("%d tokens + %d pads: %d of %lld units pool differently without the mask\n", n,
              seq_len - n, differ, static_cast<long long>(units));
  EXPECT_GT(differ, units / 100) << "the attention mask on the pads should matter";

  // A sentence of exactly seq_len tokens has no pads: the default pooling.
  std::vector<int32_t> full = model_->tokenizer().Encode(Words(seq_len));
  ASSERT_EQ(static_cast<int>(full.size()), seq_len);
  std::vector<float> a(units), b(units);
  ASSERT_TRUE(PoolPaddedSentence(**session, full, seq_len, eos, a.data()).ok());
  ASSERT_TRUE(PoolSentence(**session, full, b.data()).ok());
  EXPECT_EQ(a, b);
  // More than seq_len tokens is an error (the ranking drops those before).
  full.push_back(full[0]);
  EXPECT_FALSE(PoolPaddedSentence(**session, full, seq_len, eos, a.data()).ok());
}

// Padding leaves the cache as it was: tokens run after it see no pads.
TEST_F(CompatModelTest, ForwardPaddingLeavesNoTrace) {
  SessionOptions so;
  so.precision = Precision::kF32;
  auto s = Session::Create(*model_, so);
  ASSERT_TRUE(s.ok());
  const std::vector<int32_t> a = model_->tokenizer().Encode(" The match");
  const std::vector<int32_t> b = model_->tokenizer().Encode(" ended in a draw");
  const std::vector<int32_t> pads(20, static_cast<int32_t>(model_->config().eos_token_id));
  EXPECT_FALSE((*s)->ForwardPadding(pads).ok());  // nothing in the cache yet
  std::vector<int32_t> ab = a;
  ab.insert(ab.end(), b.begin(), b.end());
  auto whole = (*s)->Forward(ab, Session::Logits::kLast);
  ASSERT_TRUE(whole.ok());
  const std::vector<float> want(whole->begin(), whole->end());
  (*s)->Reset();
  ASSERT_TRUE((*s)->Forward(a, Session::Logits::kNone).ok());
  ASSERT_TRUE((*s)->ForwardPadding(pads).ok());
  EXPECT_EQ((*s)->pos(), static_cast<int>(a.size()));
  auto after = (*s)->Forward(b, Session::Logits::kLast);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(std::vector<float>(after->begin(), after->end()), want);
}

// Sentences over seq_len tokens are dropped (counted, recorded in the table); exactly seq_len
// is kept; a class left empty is an error.
TEST_F(CompatModelTest, LongSentencesAreDropped) {
  auto ds = DatasetFromVectors("drop", {Words(128), Words(129), " A match."},
                               {" Rain today.", Words(200)});
  ASSERT_TRUE(ds.ok());
  RankOptions ro;
  ro.precision = Precision::kF32;
  ro.compat.enabled = true;
  auto r = Ranking::Start(*model_, *ds, ro);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->num_dropped(), 2);
  EXPECT_EQ((*r)->total(), 3);
  EXPECT_EQ((*r)->dataset().positive, (std::vector<std::string>{Words(128), " A match."}));
  EXPECT_EQ((*r)->dataset().negative, (std::vector<std::string>{" Rain today."}));
  EXPECT_EQ((*r)->pooled().labels, (std::vector<uint8_t>{1, 1, 0}));
  ASSERT_TRUE((*r)->Step(10).ok());
  auto t = (*r)->Finish();
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->num_positive, 2);
  EXPECT_EQ(t->num_negative, 1);
  EXPECT_EQ(t->num_dropped, 2);
  EXPECT_EQ(t->num_truncated, 0);
  EXPECT_EQ(t->compat, "ml-selfcond");
  EXPECT_EQ(t->compat_seq_len, 128);
  EXPECT_EQ(t->compat_per_class, 1000);
  EXPECT_EQ(t->compat_seed, 1234);
  // Row 0 is the padded pooling of the 128-token sentence, row 1 of " A match.".
  SessionOptions so;
  so.precision = Precision::kF32;
  auto s = Session::Create(*model_, so);
  ASSERT_TRUE(s.ok());
  const int64_t units = (*r)->pooled().num_units;
  std::vector<float> row(units);
  ASSERT_TRUE(PoolPaddedSentence(**s, model_->tokenizer().Encode(" A match."), 128,
                                 static_cast<int32_t>(model_->config().eos_token_id), row.data())
                  .ok());
  EXPECT_TRUE(std::equal(row.begin(), row.end(), (*r)->pooled().responses.begin() + units));

  auto none = DatasetFromVectors("drop", {" A match."}, {Words(129)});
  ASSERT_TRUE(none.ok());
  auto bad = Ranking::Start(*model_, *none, ro);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("every negative sentence is longer than 128"),
            std::string::npos)
      << bad.status();
  // A model whose context cannot hold seq_len tokens is refused.
  RankOptions wide = ro;
  wide.compat.seq_len = static_cast<int>(model_->config().n_ctx) + 1;
  EXPECT_FALSE(Ranking::Start(*model_, *ds, wide).ok());
  // Stored responses are unpadded: not usable in this mode.
  auto store = ResponseStore::Compute(*model_, {" A match.", " Rain today."}, RankOptions{});
  ASSERT_TRUE(store.ok());
  EXPECT_FALSE(store->Rank(*model_, *ds, ro).ok());
}

// The subset is numpy's, drawn before dropping, and the ranking is deterministic.
TEST_F(CompatModelTest, SubsetIsSeededAndDeterministic) {
  auto ds = LoadConceptJson(selfcond::testing::SharedDir() + "/concepts/football_small.json");
  ASSERT_TRUE(ds.ok()) << ds.status();
  RankOptions ro;
  ro.precision = Precision::kInt8;
  ro.threads = 2;
  ro.compat.enabled = true;
  ro.compat.per_class = 10;  // 13 positive, 18 negative
  Dataset want = *ds;
  SampleLikeMlSelfcond(&want, 10, 1234);
  NumpyRandomState rng(1234);
  const auto neg = rng.ChoiceWithoutReplacement(18, 10);
  const auto pos = rng.ChoiceWithoutReplacement(13, 10);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(want.negative[i], ds->negative[neg[i]]);
    EXPECT_EQ(want.positive[i], ds->positive[pos[i]]);
  }
  auto r = Ranking::Start(*model_, *ds, ro);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->dataset().positive, want.positive);
  EXPECT_EQ((*r)->dataset().negative, want.negative);
  auto a = RankConcept(*model_, *ds, ro);
  ro.threads = 1;
  auto b = RankConcept(*model_, *ds, ro);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->num_positive, 10);
  EXPECT_EQ(a->num_negative, 10);
  EXPECT_EQ(SerializeExpertTable(*a), SerializeExpertTable(*b));
  // Several concepts in compat mode: each ranked on its own, the same tables.
  auto both = RankConcepts(*model_, {*ds, *ds}, ro);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(SerializeExpertTable((*both)[1]), SerializeExpertTable(*a));
}

ExpertTable SmallTable() {
  ExpertTable t;
  t.concept = "football-1_04_00__";
  t.group = "sense";
  t.n_layer = 1;
  t.n_embd = 4;
  t.n_inner = 16;
  t.total_units = 12 + 4 + 16 + 4;
  for (int s = 0; s < 4; ++s) {
    const int size = s == 0 ? 12 : (s == 2 ? 16 : 4);
    for (int u = 0; u < size; ++u) {
      t.units.push_back({s, u, 0.4f + 0.02f * u + 0.1f * s, 1, 2, 0});
    }
  }
  SortUnits(&t.units);
  return t;
}

TEST(CompatTableTest, CompatFieldsRoundTripAndDefaultTablesAreUnchanged) {
  ExpertTable t = SmallTable();
  const std::string plain = SerializeExpertTable(t);
  EXPECT_EQ(plain.find("ranking"), std::string::npos);
  EXPECT_EQ(plain.find("num_dropped"), std::string::npos);
  t.compat = "ml-selfcond";
  t.compat_seq_len = 128;
  t.compat_per_class = 1000;
  t.compat_seed = 1234;
  t.num_dropped = 7;
  const std::string text = SerializeExpertTable(t);
  EXPECT_NE(text.find("\"ranking\":{\"compat\":\"ml-selfcond\",\"seq_len\":128,"
                      "\"per_class\":1000,\"seed\":1234}"),
            std::string::npos)
      << text.substr(0, 400);
  auto back = ParseExpertTable(text);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->compat, "ml-selfcond");
  EXPECT_EQ(back->compat_seq_len, 128);
  EXPECT_EQ(back->compat_per_class, 1000);
  EXPECT_EQ(back->compat_seed, 1234);
  EXPECT_EQ(back->num_dropped, 7);
  auto old = ParseExpertTable(plain);
  ASSERT_TRUE(old.ok());
  EXPECT_TRUE(old->compat.empty());
  EXPECT_EQ(old->num_dropped, 0);
}

TEST(CompatTableTest, ExpertiseInfoJsonAsMlSelfcondWritesIt) {
  const ExpertTable t = SmallTable();
  const std::string text = ExportExpertiseInfoJson(t);
  EXPECT_EQ(text.substr(0, 43), "{\n    \"concept\": \"football-1_04_00__\",\n    ");
  auto doc = json::Parse(text);
  ASSERT_TRUE(doc.ok()) << doc.status();
  std::vector<std::string> keys;
  for (const auto& [k, v] : doc->members()) keys.emplace_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"concept", "group", "max_ap", "layer_names",
                                            "total_neurons", "neurons_at_ap"}));
  EXPECT_EQ(doc->Find("group")->as_string(), "sense");
  float max_ap = 0;
  for (const auto& u : t.units) max_ap = std::max(max_ap, u.ap);
  EXPECT_EQ(static_cast<float>(doc->Find("max_ap")->as_number()), max_ap);
  EXPECT_EQ(doc->Find("total_neurons")->as_number(), 36);
  std::vector<std::string> names;
  for (const auto& v : doc->Find("layer_names")->items()) names.emplace_back(v.as_string());
  EXPECT_EQ(names, (std::vector<std::string>{
                       "transformer.h.0.attn.c_attn:0", "transformer.h.0.attn.c_proj:0",
                       "transformer.h.0.mlp.c_fc:0", "transformer.h.0.mlp.c_proj:0"}));
  const json::Value* at = doc->Find("neurons_at_ap");
  ASSERT_NE(at, nullptr);
  std::vector<std::string> thr;
  for (const auto& [k, v] : at->members()) thr.emplace_back(k);
  ASSERT_EQ(thr.size(), 501u);
  EXPECT_EQ(thr[0], "0.50000");
  EXPECT_EQ(thr[1], "0.50100");
  EXPECT_EQ(thr[250], "0.75000");
  EXPECT_EQ(thr[500], "1.00000");
  for (const char* key : {"0.50000", "0.61300", "0.80000", "1.00000"}) {
    const double a = std::stod(key);
    int want = 0;
    for (const auto& u : t.units) want += static_cast<double>(u.ap) > a;
    EXPECT_EQ(at->Find(key)->as_number(), want) << key;
  }
}

}  // namespace
}  // namespace selfcond
