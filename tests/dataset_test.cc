#include "experts/dataset.h"

#include <string>

#include "gtest/gtest.h"
#include "test_util.h"
#include "util/file_util.h"

namespace selfcond {
namespace {

// Without gmock (not linked): substring check with the message in the failure.
#define EXPECT_CONTAINS(str, sub)                          \
  EXPECT_NE(std::string(str).find(sub), std::string::npos) \
      << "'" << (str) << "' does not contain '" << (sub) << "'"

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

TEST(DatasetTest, FootballSmallJson) {
  auto ds = LoadConceptJson(selfcond::testing::SharedDir() + "/concepts/football_small.json");
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->concept, "football-1_04_00__");
  EXPECT_EQ(ds->group, "sense");
  EXPECT_EQ(ds->source, "onesec");
  EXPECT_EQ(ds->positive.size(), 13u);
  EXPECT_EQ(ds->negative.size(), 18u);
  // Leading spaces are data (they change GPT-2 tokens).
  EXPECT_EQ(ds->positive[0].substr(0, 9), " Football");

  auto small = LoadConceptJson(selfcond::testing::SharedDir() + "/concepts/football_small.json",
                               {.max_sentences = 5});
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->positive.size(), 5u);
  EXPECT_EQ(small->negative.size(), 5u);
  EXPECT_EQ(small->positive[4], ds->positive[4]);  // the first N, in order
  // LoadDataset detects JSON.
  auto any = LoadDataset(selfcond::testing::SharedDir() + "/concepts/football_small.json");
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->negative, ds->negative);
}

TEST(DatasetTest, JsonErrors) {
  auto bad = [](const std::string& text) {
    auto ds = ParseConceptJson(text);
    EXPECT_FALSE(ds.ok()) << text;
    return ds.ok() ? std::string() : Msg(ds.status());
  };
  EXPECT_CONTAINS(bad("{\"concept\": \"c\", \"sentences\": {\"positive\": [\"a\"]"),
                  "not valid JSON");
  EXPECT_CONTAINS(bad("[1]"), "not a JSON object");
  EXPECT_CONTAINS(bad("{\"sentences\": {\"positive\": [\"a\"], \"negative\": [\"b\"]}}"),
                  "\"concept\"");
  EXPECT_CONTAINS(bad("{\"concept\": \"c\"}"), "missing key \"sentences\"");
  EXPECT_CONTAINS(bad("{\"concept\": \"c\", \"sentences\": {\"positive\": [\"a\"]}}"),
                  "missing key \"sentences.negative\"");
  EXPECT_CONTAINS(
      bad("{\"concept\": \"c\", \"sentences\": {\"positive\": [\"a\"], \"negative\": []}}"),
      "no negative sentences");
  EXPECT_CONTAINS(
      bad("{\"concept\": \"c\", \"sentences\": {\"positive\": [], \"negative\": [\"b\"]}}"),
      "no positive sentences");
  EXPECT_CONTAINS(
      bad("{\"concept\": \"c\", \"sentences\": {\"positive\": [\"a\", 3], \"negative\": [\"b\"]}}"),
      "sentences.positive[1] is not a string");
  EXPECT_CONTAINS(bad("{\"concept\": \"c\", \"sentences\": {\"positive\": [\"a\"], \"negative\": "
                      "[\"b\"], \"postive\": []}}"),
                  "unknown key \"sentences.postive\"");
  EXPECT_CONTAINS(
      bad("{\"concept\": \"c\", \"sentences\": {\"positive\": \"a\", \"negative\": [\"b\"]}}"),
      "not an array");
  EXPECT_CONTAINS(bad("{\"concept\": \"c\", \"group\": 3, \"sentences\": {\"positive\": [\"a\"], "
                      "\"negative\": [\"b\"]}}"),
                  "\"group\" is not a string");
  EXPECT_CONTAINS(bad("{\"concept\": \"c\", \"sentences\": {\"positive\": [\"a\"], \"negative\": "
                      "[\"b\", \"\"]}}"),
                  "negative sentence 1 is empty");
  // Invalid UTF-8 inside a JSON string: the JSON reader names the byte offset.
  EXPECT_CONTAINS(
      bad("{\"concept\": \"c\", \"sentences\": {\"positive\": [\"a\xff\"], \"negative\": "
          "[\"b\"]}}"),
      "UTF-8");
  // Without "group"/"source" is fine.
  auto ok = ParseConceptJson(
      "{\"concept\": \"c\", \"sentences\": {\"negative\": [\"b\"], \"positive\": [\"a\"]}}");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->group, "");
  EXPECT_EQ(ok->positive, std::vector<std::string>{"a"});
}

TEST(DatasetTest, LabeledLines) {
  std::string text =
      "# football\n"
      "+ The striker scored.\r\n"
      "\n"
      "   \t\n"
      "-  Two spaces kept.\n"
      "+ Goal!\n"
      "- It rained";  // no final newline
  auto ds = ParseLabeledLines(text, "football");
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->concept, "football");
  EXPECT_EQ(ds->positive, (std::vector<std::string>{"The striker scored.", "Goal!"}));
  EXPECT_EQ(ds->negative, (std::vector<std::string>{" Two spaces kept.", "It rained"}));

  auto one = ParseLabeledLines(text, "f", {.max_sentences = 1});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->positive.size(), 1u);
  EXPECT_EQ(one->negative.size(), 1u);
}

// The fuzzer's find: classes that differ as a whole but not in their first sentences. The kept
// prefix is what gets ranked, so it must tell the concept apart too.
TEST(DatasetTest, KeptPrefixMustDifferBetweenClasses) {
  const std::string text = "+ same\n- same\n+ kick\n- bake\n";
  ASSERT_TRUE(ParseLabeledLines(text, "c").ok());
  auto one = ParseLabeledLines(text, "c", {.max_sentences = 1});
  ASSERT_FALSE(one.ok());
  EXPECT_CONTAINS(Msg(one.status()), "are the same");
  EXPECT_CONTAINS(Msg(one.status()), "first 1 of each class");
}

TEST(DatasetTest, LabeledLinesErrors) {
  auto r = ParseLabeledLines("+ a\n+ b\n", "c");
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(Msg(r.status()), "no negative sentences");
  r = ParseLabeledLines("- a\n", "c");
  EXPECT_CONTAINS(Msg(r.status()), "no positive sentences");
  r = ParseLabeledLines("+ a\n- b\nplain\n", "c");
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(Msg(r.status()), "line 3");
  r = ParseLabeledLines("+ a\n-b\n", "c");
  EXPECT_CONTAINS(Msg(r.status()), "line 2");
  r = ParseLabeledLines("+ a\n- \n", "c");
  EXPECT_CONTAINS(Msg(r.status()), "line 2: empty sentence");
  r = ParseLabeledLines("+ a\n- b\n+ caf\xc3\n", "c");
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(Msg(r.status()), "line 3: invalid UTF-8 at byte 5");
  EXPECT_FALSE(ParseLabeledLines("", "c").ok());
}

TEST(DatasetTest, TwoFiles) {
  std::string dir = selfcond::testing::MakeTempDir("dataset");
  ASSERT_TRUE(WriteFile(dir + "/pos.txt", "A goal.\n# comment\nA match.\n").ok());
  ASSERT_TRUE(WriteFile(dir + "/neg.txt", "Rain.\r\n\r\n").ok());
  auto ds = LoadSentenceFiles(dir + "/pos.txt", dir + "/neg.txt", "football");
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->positive, (std::vector<std::string>{"A goal.", "A match."}));
  EXPECT_EQ(ds->negative, (std::vector<std::string>{"Rain."}));

  ASSERT_TRUE(WriteFile(dir + "/empty.txt", "# nothing\n\n").ok());
  auto e = LoadSentenceFiles(dir + "/pos.txt", dir + "/empty.txt", "football");
  ASSERT_FALSE(e.ok());
  EXPECT_CONTAINS(Msg(e.status()), "no negative sentences");

  ASSERT_TRUE(WriteFile(dir + "/bad.txt", "ok\n\xed\xa0\x80 surrogate\n").ok());
  auto b = LoadSentenceFiles(dir + "/bad.txt", dir + "/neg.txt", "football");
  ASSERT_FALSE(b.ok());
  EXPECT_CONTAINS(Msg(b.status()), "positives file, line 2: invalid UTF-8 at byte 0");

  EXPECT_FALSE(LoadSentenceFiles(dir + "/missing.txt", dir + "/neg.txt", "x").ok());

  // LoadDataset on a "+ "/"- " file names the concept after the file.
  ASSERT_TRUE(WriteFile(dir + "/my_concept.txt", "+ yes\n- no\n").ok());
  auto l = LoadDataset(dir + "/my_concept.txt");
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->concept, "my_concept");
}

TEST(DatasetTest, FromVectors) {
  auto ds = DatasetFromVectors("c", {"a", "b", "c"}, {"d"}, {.max_sentences = 2});
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ(ds->positive, (std::vector<std::string>{"a", "b"}));
  auto bad = DatasetFromVectors("c", {"a"}, {"d", "ok", std::string("x\x80y")});
  ASSERT_FALSE(bad.ok());
  EXPECT_CONTAINS(Msg(bad.status()), "negative sentence 2: invalid UTF-8 at byte 1");
  EXPECT_FALSE(DatasetFromVectors("c", {}, {"d"}).ok());
}

TEST(Utf8Test, Validator) {
  EXPECT_EQ(FindInvalidUtf8("plain ascii"), -1);
  EXPECT_EQ(FindInvalidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), -1);
  EXPECT_EQ(FindInvalidUtf8("a\xc0\xaf"), 1);         // overlong '/'
  EXPECT_EQ(FindInvalidUtf8("ab\xe0\x80\xaf"), 2);    // overlong 3-byte
  EXPECT_EQ(FindInvalidUtf8("\xed\xa0\x80"), 0);      // surrogate U+D800
  EXPECT_EQ(FindInvalidUtf8("\xf4\x90\x80\x80"), 0);  // > U+10FFFF
  EXPECT_EQ(FindInvalidUtf8("x\xe2\x82"), 1);         // truncated
  EXPECT_EQ(FindInvalidUtf8("\x80"), 0);              // lone continuation
  EXPECT_EQ(FindInvalidUtf8(std::string("a\0b", 3)), -1);
}

}  // namespace
}  // namespace selfcond
