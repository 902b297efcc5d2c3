// Stored responses and multi-concept ranking (issue 13): tables ranked from stored or shared
// responses are identical to RankConcept's, each distinct sentence runs once, and the file
// format refuses what is not its own.
#include "experts/responses.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "test_util.h"
#include "util/file_util.h"

namespace selfcond {
namespace {

void ExpectSameTable(const ExpertTable& a, const ExpertTable& b) {
  ASSERT_EQ(a.units.size(), b.units.size());
  for (size_t i = 0; i < a.units.size(); ++i) {
    const ExpertUnit &x = a.units[i], &y = b.units[i];
    ASSERT_EQ(x.site, y.site) << "unit " << i;
    ASSERT_EQ(x.unit, y.unit) << "unit " << i;
    // Bit-identical: the same rows reach the same statistics code.
    ASSERT_EQ(std::memcmp(&x.ap, &y.ap, sizeof(float)), 0) << i;
    ASSERT_EQ(std::memcmp(&x.on_p50, &y.on_p50, sizeof(float)), 0) << i;
    ASSERT_EQ(std::memcmp(&x.on_p90, &y.on_p90, sizeof(float)), 0) << i;
    ASSERT_EQ(std::memcmp(&x.off_mean, &y.off_mean, sizeof(float)), 0) << i;
  }
  EXPECT_EQ(a.concept, b.concept);
  EXPECT_EQ(a.model_hash, b.model_hash);
  EXPECT_EQ(a.num_positive, b.num_positive);
  EXPECT_EQ(a.num_negative, b.num_negative);
  EXPECT_EQ(a.num_truncated, b.num_truncated);
}

class ResponsesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = Model::Load(testing::ConvertedMiniModel(false), {});
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
    auto ds = LoadConceptJson(testing::SharedDir() + "/concepts/football_small.json");
    ASSERT_TRUE(ds.ok()) << ds.status();
    football_ = new Dataset(*std::move(ds));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete football_;
  }
  static RankOptions Opts() {
    RankOptions o;
    o.threads = 2;
    return o;
  }
  static Model* model_;
  static Dataset* football_;
};
Model* ResponsesTest::model_ = nullptr;
Dataset* ResponsesTest::football_ = nullptr;

TEST_F(ResponsesTest, StoredResponsesRankLikeRankConcept) {
  auto direct = RankConcept(*model_, *football_, Opts());
  ASSERT_TRUE(direct.ok()) << direct.status();
  std::vector<std::string> all = football_->positive;
  all.insert(all.end(), football_->negative.begin(), football_->negative.end());
  auto store = ResponseStore::Compute(*model_, all, Opts());
  ASSERT_TRUE(store.ok()) << store.status();
  const std::string path = testing::MakeTempDir("responses") + "/football_small.scr";
  ASSERT_TRUE(store->Save(path).ok());
  auto loaded = ResponseStore::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->num_sentences(), store->num_sentences());
  EXPECT_EQ(loaded->model_hash(), model_->hash_hex());
  auto from_memory = store->Rank(*model_, *football_, Opts());
  auto from_file = loaded->Rank(*model_, *football_, Opts());
  ASSERT_TRUE(from_memory.ok()) << from_memory.status();
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  ExpectSameTable(*direct, *from_memory);
  ExpectSameTable(*direct, *from_file);
  // max_sentences selects the same first N per class as RankConcept does.
  RankOptions few = Opts();
  few.max_sentences = 3;
  auto direct3 = RankConcept(*model_, *football_, few);
  auto stored3 = loaded->Rank(*model_, *football_, few);
  ASSERT_TRUE(direct3.ok() && stored3.ok());
  ExpectSameTable(*direct3, *stored3);
}

TEST_F(ResponsesTest, SeveralConceptsRunEachDistinctSentenceOnce) {
  // A second concept over the same pool with the labels swapped, and a third that shares half.
  Dataset swapped = *football_;
  swapped.concept = "not-football";
  std::swap(swapped.positive, swapped.negative);
  Dataset half = *football_;
  half.concept = "half";
  half.positive.resize(half.positive.size() / 2);
  half.negative.push_back("A sentence that only this concept has.");
  RankOptions o = Opts();
  int total = 0;
  o.progress = [&](int, int t) {
    total = t;
    return true;
  };
  auto tables = RankConcepts(*model_, {*football_, swapped, half}, o);
  ASSERT_TRUE(tables.ok()) << tables.status();
  const int distinct =
      static_cast<int>(football_->positive.size() + football_->negative.size()) + 1;
  EXPECT_EQ(total, distinct) << "each distinct sentence runs once";
  ASSERT_EQ(tables->size(), 3u);
  const Dataset* sets[] = {football_, &swapped, &half};
  for (int i = 0; i < 3; ++i) {
    auto alone = RankConcept(*model_, *sets[i], Opts());
    ASSERT_TRUE(alone.ok()) << alone.status();
    ExpectSameTable(*alone, (*tables)[i]);
  }
}

TEST_F(ResponsesTest, RefusesOtherModelsMissingSentencesAndDamagedFiles) {
  std::vector<std::string> some(football_->positive.begin(), football_->positive.end());
  auto store = ResponseStore::Compute(*model_, some, Opts());
  ASSERT_TRUE(store.ok()) << store.status();
  // The negatives were never computed.
  auto missing = store->Rank(*model_, *football_, Opts());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("not in the stored responses"), std::string::npos);
  // Another precision than the one stored.
  RankOptions f32 = Opts();
  f32.precision = Precision::kF32;
  EXPECT_EQ(store->Rank(*model_, *football_, f32).status().code(),
            absl::StatusCode::kFailedPrecondition);

  const std::string dir = testing::MakeTempDir("responses-bad");
  const std::string path = dir + "/r.scr";
  ASSERT_TRUE(store->Save(path).ok());
  auto bytes = ReadFileToHeap(path);
  ASSERT_TRUE(bytes.ok());
  auto write = [&](const std::string& name, size_t size, size_t flip) {
    std::string b(reinterpret_cast<const char*>(bytes->data()), size);
    if (flip < size) b[flip] ^= 0x21;
    const std::string p = dir + "/" + name;
    EXPECT_TRUE(WriteFile(p, b).ok());
    return p;
  };
  // Another model's hash (first hex digit changed, still hex): loads, refused at ranking.
  {
    std::string b(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    b[48] = b[48] == 'a' ? 'b' : 'a';
    ASSERT_TRUE(WriteFile(dir + "/other.scr", b).ok());
    auto other = ResponseStore::Load(dir + "/other.scr");
    ASSERT_TRUE(other.ok()) << other.status();
    auto r = other->Rank(*model_, *football_, Opts());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(r.status().message().find("another model"), std::string::npos) << r.status();
  }
  // Truncated anywhere, or a header field changed: a clear error, never a crash.
  for (size_t cut : {size_t{0}, size_t{7}, size_t{127}, size_t{200}, bytes->size() - 1}) {
    auto r = ResponseStore::Load(write("cut.scr", cut, SIZE_MAX));
    EXPECT_FALSE(r.ok()) << "cut at " << cut;
  }
  for (size_t flip : {size_t{0}, size_t{8}, size_t{16}, size_t{24}, size_t{32}, size_t{40}}) {
    auto r = ResponseStore::Load(write("flip.scr", bytes->size(), flip));
    EXPECT_FALSE(r.ok()) << "flip at " << flip;
    if (!r.ok()) {
      EXPECT_NE(r.status().message().find("responses file"), std::string::npos);
    }
  }
}

// The format as documented (docs/responses-format.md), written by an independent writer: the fuzz
// seed tests/fuzz_seeds/responses_fuzz/three-sentences.scr was made by a few lines of Python.
TEST(ResponsesFormatTest, ReadsAFileWrittenFromTheSpec) {
  auto st = ResponseStore::Load(testing::SourceDir() +
                                "/tests/fuzz_seeds/responses_fuzz/three-sentences.scr");
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(st->num_sentences(), 3);
  ASSERT_EQ(st->num_units(), 3);
  EXPECT_EQ(st->sentence(0), "The match ended in a draw.");
  EXPECT_EQ(st->sentence(1), "Caf\xc3\xa9 au lait.");
  EXPECT_TRUE(st->truncated(1));
  EXPECT_FALSE(st->truncated(2));
  EXPECT_EQ(st->Find("x"), 2);
  EXPECT_EQ(st->row(2)[0], 3.0f);
  EXPECT_EQ(st->row(2)[1], -2.0f);
  EXPECT_EQ(st->row(1)[2], 0.25f);
  EXPECT_EQ(st->model_hash(), "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  EXPECT_EQ(st->precision(), Precision::kInt8);
}

}  // namespace
}  // namespace selfcond
