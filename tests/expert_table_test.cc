#include "experts/expert_table.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "test_util.h"
#include "util/file_util.h"

namespace selfcond {
namespace {

#define EXPECT_CONTAINS(str, sub)                          \
  EXPECT_NE(std::string(str).find(sub), std::string::npos) \
      << "'" << (str) << "' does not contain '" << (sub) << "'"

ModelConfig TinyConfig(int n_layer = 2) {
  ModelConfig c;
  c.n_layer = n_layer;
  c.n_embd = 4;
  c.n_head = 2;
  c.n_ctx = 16;
  c.vocab_size = 10;
  c.n_inner = 8;
  return c;
}

const char kHash[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

// A table over the whole tiny unit space with random statistics (some ties in AP).
ExpertTable RandomTable(const ModelConfig& c, uint32_t seed, int64_t top_n = 0) {
  UnitSpace space(c);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> ud(-3, 3);
  std::vector<float> ap(space.num_units()), p50(ap.size()), p90(ap.size()), off(ap.size());
  for (size_t i = 0; i < ap.size(); ++i) {
    ap[i] = static_cast<float>(rng() % 50) / 49.0f;
    p50[i] = ud(rng);
    p90[i] = p50[i] + 0.5f;
    off[i] = ud(rng) * 1e-3f;
  }
  ExpertTable t = MakeExpertTable(c, ap, p50, p90, off, top_n);
  t.concept = "foot,ball \"x\"";  // needs CSV quoting
  t.group = "sense";
  t.model_hash = kHash;
  t.model_name = "tiny";
  t.precision = "f32";
  t.num_positive = 13;
  t.num_negative = 18;
  t.num_truncated = 1;
  return t;
}

void ExpectSameUnits(const ExpertTable& a, const ExpertTable& b) {
  ASSERT_EQ(a.units.size(), b.units.size());
  for (size_t i = 0; i < a.units.size(); ++i) {
    const ExpertUnit &x = a.units[i], &y = b.units[i];
    EXPECT_EQ(x.site, y.site) << i;
    EXPECT_EQ(x.unit, y.unit) << i;
    EXPECT_EQ(x.ap, y.ap) << i;  // float32 text round trips exactly
    EXPECT_EQ(x.on_p50, y.on_p50) << i;
    EXPECT_EQ(x.on_p90, y.on_p90) << i;
    EXPECT_EQ(x.off_mean, y.off_mean) << i;
  }
}

TEST(ExpertTableTest, LayerNames) {
  UnitLayout gpt2;
  gpt2.n_layer = 12;
  EXPECT_EQ(gpt2.SiteName(0), "transformer.h.0.attn.c_attn:0");
  EXPECT_EQ(gpt2.SiteName(4 * 3 + 2), "transformer.h.3.mlp.c_fc:0");
  EXPECT_EQ(ParseSiteName("transformer.h.3.mlp.c_fc:0")->site, 14);
  EXPECT_EQ(ParseSiteName("h.11.mlp.c_proj")->site, 47);
  EXPECT_EQ(ParseSiteName("transformer.h.0.attn.c_proj:0")->site, 1);
  EXPECT_EQ(ParseSiteName("transformer.h.0.attn.c_proj:0")->arch, Arch::kGpt2);
  EXPECT_FALSE(ParseSiteName("transformer.h.x.mlp.c_fc:0").ok());
  EXPECT_FALSE(ParseSiteName("transformer.h.1.mlp.dropout:0").ok());
  EXPECT_FALSE(ParseSiteName("transformer.h.-1.mlp.c_fc:0").ok());
  EXPECT_FALSE(ParseSiteName("bert.encoder.layer.0").ok());
  // The Llama family: Hugging Face module names, 7 sites per block.
  UnitLayout llama;
  llama.arch = Arch::kLlama;
  llama.n_layer = 30;
  EXPECT_EQ(llama.SiteName(7 * 3 + 6), "model.layers.3.mlp.down_proj");
  EXPECT_EQ(llama.SiteName(0), "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(ParseSiteName("model.layers.3.mlp.down_proj")->site, 27);
  EXPECT_EQ(ParseSiteName("model.layers.3.mlp.down_proj:0")->arch, Arch::kLlama);
  EXPECT_EQ(ParseSiteName("layers.0.self_attn.v_proj")->site, 2);
  EXPECT_FALSE(ParseSiteName("model.layers.3.mlp.c_fc").ok());
  EXPECT_FALSE(ParseSiteName("model.layers.2000.mlp.up_proj").ok());
  ExpertTable t;
  t.n_layer = 12;
  ExpertUnit u{14, 5};
  EXPECT_EQ(t.layer_name(u), "transformer.h.3.mlp.c_fc:0");
  EXPECT_EQ(t.layer_of(u), 3);
}

TEST(ExpertTableTest, MakeSortsByApThenSiteUnit) {
  ExpertTable t = RandomTable(TinyConfig(), 1);
  ASSERT_EQ(t.units.size(), 56u);  // 2 * (12 + 4 + 8 + 4)
  EXPECT_EQ(t.total_units, 56);
  for (size_t i = 1; i < t.units.size(); ++i) {
    const auto &a = t.units[i - 1], &b = t.units[i];
    ASSERT_TRUE(a.ap > b.ap ||
                (a.ap == b.ap && std::make_pair(a.site, a.unit) < std::make_pair(b.site, b.unit)))
        << i;
  }
  ExpertTable top = RandomTable(TinyConfig(), 1, 10);
  ASSERT_EQ(top.units.size(), 10u);
  EXPECT_EQ(top.total_units, 56);
  EXPECT_EQ(top.units[9].site, t.units[9].site);
  EXPECT_EQ(top.units[9].unit, t.units[9].unit);
}

TEST(ExpertTableTest, NativeRoundTrip) {
  for (int64_t top_n : {0, 7}) {
    ExpertTable t = RandomTable(TinyConfig(), 2, top_n);
    t.units[3].off_mean = std::nanf("");  // non-finite values travel as null
    std::string text = SerializeExpertTable(t);
    auto back = ParseExpertTable(text);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->concept, t.concept);
    EXPECT_EQ(back->group, t.group);
    EXPECT_EQ(back->model_hash, t.model_hash);
    EXPECT_EQ(back->model_name, t.model_name);
    EXPECT_EQ(back->precision, t.precision);
    EXPECT_EQ(back->n_layer, 2);
    EXPECT_EQ(back->n_embd, 4);
    EXPECT_EQ(back->n_inner, 8);
    EXPECT_EQ(back->total_units, 56);
    EXPECT_EQ(back->num_positive, 13);
    EXPECT_EQ(back->num_negative, 18);
    EXPECT_EQ(back->num_truncated, 1);
    EXPECT_TRUE(std::isnan(back->units[3].off_mean));
    back->units[3].off_mean = t.units[3].off_mean = 0;
    ExpectSameUnits(t, *back);
  }
}

TEST(ExpertTableTest, NativeFileRoundTripAndDetection) {
  std::string dir = selfcond::testing::MakeTempDir("experts");
  ExpertTable t = RandomTable(TinyConfig(), 3);
  ASSERT_TRUE(SaveExpertTable(t, dir + "/t.experts.json").ok());
  auto back = LoadExpertTable(dir + "/t.experts.json");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameUnits(t, *back);
  ASSERT_TRUE(WriteFile(dir + "/expertise.csv", ExportExpertiseCsv(t)).ok());
  auto csv = LoadExpertTable(dir + "/expertise.csv");
  ASSERT_TRUE(csv.ok()) << csv.status();
  ExpectSameUnits(t, *csv);
}

TEST(ExpertTableTest, NativeErrors) {
  std::string good = SerializeExpertTable(RandomTable(TinyConfig(), 4, 3));
  auto parse = [](std::string s) { return std::string(ParseExpertTable(s).status().message()); };
  EXPECT_CONTAINS(parse("{"), "not valid JSON");
  EXPECT_CONTAINS(parse("{\"format\":\"x\"}"), "not a selfcond expert table");
  std::string v2 = good;
  v2.replace(v2.find("\"version\":1"), 11, "\"version\":3");
  EXPECT_CONTAINS(parse(v2), "version 3 is not supported");
  std::string arch2 = good;  // version 2 is for other architectures than GPT-2
  arch2.replace(arch2.find("\"version\":1"), 11, "\"version\":2");
  EXPECT_CONTAINS(parse(arch2), "version 2 does not go with architecture gpt2");
  std::string short_col = good;
  size_t at = short_col.find("\"ap\":[");
  short_col.erase(at + 6, short_col.find(',', at + 6) - at - 5);  // drop the first AP
  EXPECT_CONTAINS(parse(short_col), "column \"units.ap\" has 2 entries, expected 3");
  std::string bad_unit = good;
  at = bad_unit.find("\"unit\":[");
  bad_unit.insert(at + 8, "99");  // unit 99.. out of range for the tiny space
  EXPECT_FALSE(ParseExpertTable(bad_unit).ok());
  std::string bad_hash = good;
  bad_hash.replace(bad_hash.find(kHash), 4, "zzzz");
  EXPECT_CONTAINS(parse(bad_hash), "64 hex digits");
  std::string huge = good;
  at = huge.find("\"on_p50\":[");
  huge.insert(at + 10, "1e300,");
  huge.erase(huge.find(',', at + 16), huge.find(',', huge.find(',', at + 16) + 1) -
                                          huge.find(',', at + 16));  // keep 3 entries
  EXPECT_CONTAINS(parse(huge), "out of float range");
}

TEST(ExpertTableTest, CsvRoundTripAndLayout) {
  ExpertTable t = RandomTable(TinyConfig(11), 5);  // 11 layers: "h.10" sorts before "h.2"
  std::string csv = ExportExpertiseCsv(t);
  ASSERT_EQ(csv.substr(0, csv.find('\n')),
            "ap,off_mean,on_p50,on_p90,layer,unit,uuid,concept,group");
  // Row order as ml-selfcond: Python-sorted layer names, units ascending, uuid = row index.
  std::vector<std::string> lines;
  for (size_t p = 0, q; (q = csv.find('\n', p)) != std::string::npos; p = q + 1)
    lines.push_back(csv.substr(p, q - p));
  ASSERT_EQ(lines.size(), 1u + 11 * 28);
  auto field = [](const std::string& line, int k) {
    size_t p = 0;
    for (int i = 0; i < k; ++i) p = line.find(',', p) + 1;
    return line.substr(p, line.find(',', p) - p);
  };
  EXPECT_EQ(field(lines[1], 4), "transformer.h.0.attn.c_attn:0");
  EXPECT_EQ(field(lines[1], 5), "0");
  EXPECT_EQ(field(lines[1], 6), "0");
  EXPECT_EQ(field(lines[13], 4), "transformer.h.0.attn.c_proj:0");  // after 12 c_attn units
  EXPECT_EQ(field(lines[1 + 28 * 2], 4), "transformer.h.10.attn.c_attn:0");
  EXPECT_EQ(field(lines[1 + 28 * 3], 4), "transformer.h.2.attn.c_attn:0");
  EXPECT_EQ(field(lines[300], 6), "299");
  EXPECT_NE(lines[1].find(",\"foot,ball \"\"x\"\"\",sense"), std::string::npos) << lines[1];

  auto back = ImportExpertiseCsv(csv);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->concept, t.concept);
  EXPECT_EQ(back->group, "sense");
  EXPECT_EQ(back->model_hash, "");
  EXPECT_EQ(back->n_layer, 11);  // inferred: complete table
  EXPECT_EQ(back->n_embd, 4);
  EXPECT_EQ(back->n_inner, 8);
  EXPECT_EQ(back->total_units, 11 * 28);
  ExpectSameUnits(t, *back);

  // Top-N export keeps the full-table uuids.
  ExpertTable top = RandomTable(TinyConfig(11), 5, 5);
  auto top_back = ImportExpertiseCsv(ExportExpertiseCsv(top));
  ASSERT_TRUE(top_back.ok()) << top_back.status();
  EXPECT_EQ(top_back->n_layer, 0);  // incomplete: unit space unknown
  EXPECT_EQ(top_back->total_units, 5);
  ExpectSameUnits(top, *top_back);
}

TEST(ExpertTableTest, CsvAsPandasWritesIt) {
  // The head of an ml-selfcond expertise.csv (pandas to_csv of float32 columns), reordered
  // columns and CRLF are accepted; on_p90 absent -> NaN.
  std::string csv =
      "layer,unit,ap,off_mean,on_p50,uuid,concept,group\r\n"
      "transformer.h.0.attn.c_attn:0,0,0.51234567,-0.0123,1.5,0,football-1_04_00__,sense\r\n"
      "transformer.h.0.attn.c_attn:0,1,0.9,0.25,2.0,1,football-1_04_00__,sense\r\n";
  auto t = ImportExpertiseCsv(csv);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->concept, "football-1_04_00__");
  ASSERT_EQ(t->units.size(), 2u);
  EXPECT_EQ(t->units[0].unit, 1);  // sorted by AP
  EXPECT_FLOAT_EQ(t->units[0].ap, 0.9f);
  EXPECT_FLOAT_EQ(t->units[1].ap, 0.51234567f);
  EXPECT_FLOAT_EQ(t->units[1].off_mean, -0.0123f);
  EXPECT_TRUE(std::isnan(t->units[1].on_p90));
}

TEST(ExpertTableTest, CsvErrors) {
  const std::string h = "ap,off_mean,on_p50,on_p90,layer,unit,uuid,concept,group\n";
  auto st = [](const std::string& s) {
    return std::string(ImportExpertiseCsv(s).status().message());
  };
  EXPECT_CONTAINS(st(""), "empty");
  EXPECT_CONTAINS(st("a,b\n1,2\n"), "no column \"ap\"");
  EXPECT_CONTAINS(st(h + "0.5,0,1,2,transformer.h.0.mlp.c_fc:0,3,0,c\n"), "row 1 has 8 fields");
  EXPECT_CONTAINS(st(h + "x,0,1,2,transformer.h.0.mlp.c_fc:0,3,0,c,g\n"), "not a number");
  EXPECT_CONTAINS(st(h + "0.5,0,1,2,transformer.h.0.mlp.dropout:0,3,0,c,g\n"),
                  "unknown layer name");
  EXPECT_CONTAINS(st(h + "0.5,0,1,2,transformer.h.0.mlp.c_fc:0,-3,0,c,g\n"), "bad unit index");
  EXPECT_CONTAINS(st(h + "0.5,0,1,2,transformer.h.0.mlp.c_fc:0,3,0,c,g\n"
                         "0.5,0,1,2,transformer.h.0.mlp.c_fc:0,3,1,c,g\n"),
                  "listed twice");
  EXPECT_CONTAINS(st(h + "0.5,0,1,2,transformer.h.0.mlp.c_fc:0,3,0,\"c,g\n"), "unterminated");
  // Values a float cannot hold would become infinite (found by the fuzzer: an AP of 1e82
  // serialized as null and came back as NaN, sorted elsewhere).
  EXPECT_CONTAINS(st(h + "1e82,0,1,2,transformer.h.0.mlp.c_fc:0,3,0,c,g\n"), "not a finite float");
  EXPECT_CONTAINS(st(h + "0.5,inf,1,2,transformer.h.0.mlp.c_fc:0,3,0,c,g\n"), "not a finite float");
}

TEST(ExpertTableTest, CompatibilityRefusals) {
  ModelConfig c = TinyConfig();
  ExpertTable t = RandomTable(c, 6);
  EXPECT_TRUE(CheckCompatibleWith(t, c, kHash, "tiny").ok());
  std::string other(64, 'f');
  absl::Status st = CheckCompatibleWith(t, c, other, "other");
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(st.message(), "ranked on another model");
  EXPECT_CONTAINS(st.message(), other);

  // CSV import: no hash. Refused unless allowed, with an error saying how to allow it ...
  auto csv = ImportExpertiseCsv(ExportExpertiseCsv(t));
  ASSERT_TRUE(csv.ok());
  absl::Status unhashed = CheckCompatibleWith(*csv, c, other, "any");
  EXPECT_EQ(unhashed.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(unhashed.message(), "no model_hash");
  // The message names the option for every frontend, the C API's field first.
  EXPECT_CONTAINS(unhashed.message(), "selfcond_experts_params.allow_unhashed");
  EXPECT_CONTAINS(unhashed.message(), "--allow-unhashed");
  // ... and when allowed, the unit space decides.
  EXPECT_TRUE(CheckCompatibleWith(*csv, c, other, "any", true).ok());
  ModelConfig wider = c;
  wider.n_inner = 16;
  EXPECT_CONTAINS(CheckCompatibleWith(*csv, wider, other, "w", true).message(), "n_inner 8");
  ModelConfig deeper = TinyConfig(3);
  EXPECT_FALSE(CheckCompatibleWith(*csv, deeper, other, "d", true).ok());
  // A partial CSV (unit space unknown): unit count and unit ranges are checked.
  auto partial = ImportExpertiseCsv(
      "ap,layer,unit\n0.9,transformer.h.1.mlp.c_fc:0,7\n0.8,transformer.h.0.attn.c_attn:0,11\n");
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_CONTAINS(CheckCompatibleWith(*partial, c, other, "x", true).message(), "covers 2 units");
  partial->total_units = 56;  // pretend the rest is there: now only the ranges matter
  EXPECT_TRUE(CheckCompatibleWith(*partial, c, other, "x", true).ok());
  partial->units[0].unit = 8;  // c_fc has 8 units
  EXPECT_CONTAINS(CheckCompatibleWith(*partial, c, other, "x", true).message(), "has 8 units");
  partial->units[0].site = 4 * 5;
  EXPECT_CONTAINS(CheckCompatibleWith(*partial, c, other, "x", true).message(),
                  "transformer.h.5.attn.c_attn:0");
}

TEST(ExpertTableTest, BuildForcing) {
  ModelConfig c = TinyConfig();
  UnitSpace space(c);
  ExpertTable a, b;
  a.concept = "a";
  b.concept = "b";
  a.units = {{6, 3, 0.99f, 2.0f, 3.0f, 0.1f},
             {0, 11, 0.98f, -1.0f, 0.5f, 0.2f},
             {5, 0, 0.97f, 7.0f, 8.0f, 0.3f}};
  b.units = {{6, 3, 0.95f, 4.0f, 5.0f, 0.4f}, {2, 1, 0.90f, 1.5f, 2.5f, 0.5f}};
  ForcingSource srcs[] = {{&a, 2}, {&b, 10}};
  auto f = BuildForcing(srcs, ForcingValue::kOnP50, true, space);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->only_last_token);
  ASSERT_EQ(f->per_site.size(), 8u);
  ASSERT_EQ(f->per_site[6].size(), 1u);
  EXPECT_EQ(f->per_site[6][0].unit, 3);
  EXPECT_FLOAT_EQ(f->per_site[6][0].value, 3.0f);  // mean of 2.0 (a) and 4.0 (b)
  ASSERT_EQ(f->per_site[0].size(), 1u);
  EXPECT_FLOAT_EQ(f->per_site[0][0].value, -1.0f);
  EXPECT_TRUE(f->per_site[5].empty());  // a's third unit is beyond top 2
  ASSERT_EQ(f->per_site[2].size(), 1u);
  EXPECT_FLOAT_EQ(f->per_site[2][0].value, 1.5f);

  auto p90 = BuildForcing(srcs, ForcingValue::kOnP90, false, space);
  ASSERT_TRUE(p90.ok());
  EXPECT_FALSE(p90->only_last_token);
  EXPECT_FLOAT_EQ(p90->per_site[6][0].value, 4.0f);
  auto zero = BuildForcing(srcs, ForcingValue::kZero, false, space);
  EXPECT_EQ(zero->per_site[6][0].value, 0.0f);

  ForcingSource none[] = {{&a, 0}};
  auto empty = BuildForcing(none, ForcingValue::kOnP50, false, space);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());

  ExpertTable bad = a;
  bad.units[0].unit = 8;  // c_fc has 8 units
  ForcingSource bad_src[] = {{&bad, 1}};
  EXPECT_FALSE(BuildForcing(bad_src, ForcingValue::kOnP50, false, space).ok());
  ExpertTable nan = a;
  nan.units[0].on_p50 = std::nanf("");
  ForcingSource nan_src[] = {{&nan, 1}};
  EXPECT_CONTAINS(BuildForcing(nan_src, ForcingValue::kOnP50, false, space).status().message(),
                  "no finite forcing value");
  ForcingSource null_src[] = {{nullptr, 1}};
  EXPECT_FALSE(BuildForcing(null_src, ForcingValue::kOnP50, false, space).ok());

  EXPECT_EQ(*ParseForcingValue("on_p90"), ForcingValue::kOnP90);
  EXPECT_FALSE(ParseForcingValue("median").ok());
}

}  // namespace
}  // namespace selfcond
