#include "util/json.h"

#include <cmath>
#include <cstdio>
#include <string>

#include "gtest/gtest.h"

namespace selfcond::json {
namespace {

TEST(JsonTest, ParsesNestedDocument) {
  auto v =
      Parse(R"({"a": [1, 2.5, -3e2, true, false, null], "b": {"c": "x\ny\u00e9\ud83d\ude00"}})");
  ASSERT_TRUE(v.ok()) << v.status();
  const Value* a = v->Find("a");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->items().size(), 6u);
  EXPECT_EQ(a->items()[0].as_number(), 1);
  EXPECT_EQ(a->items()[1].as_number(), 2.5);
  EXPECT_EQ(a->items()[2].as_number(), -300);
  EXPECT_TRUE(a->items()[3].as_bool());
  EXPECT_TRUE(a->items()[5].is_null());
  EXPECT_EQ(v->Find("b")->Find("c")->as_string(), "x\ny\xc3\xa9\xf0\x9f\x98\x80");
}

TEST(JsonTest, RejectsMalformed) {
  for (const char* bad : {"", "{", "[1,]", "{\"a\":}", "\"abc", "01", "1.", "-", "{\"a\" 1}",
                          "[1] x", "\"\\ud800\"", "\"\\x\"", "\"\x01\"", "\"\xff\"", "tru"}) {
    EXPECT_FALSE(Parse(bad).ok()) << bad;
  }
}

TEST(JsonTest, DepthLimit) {
  std::string deep(kMaxDepth + 10, '[');
  deep += std::string(kMaxDepth + 10, ']');
  auto v = Parse(deep);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("nesting"), std::string::npos);
}

TEST(JsonTest, LargeObjectLookupAndRoundTrip) {
  Value o = Value::Object();
  for (int i = 0; i < 1000; ++i) o.AppendMember("k" + std::to_string(i), Value::Number(i * 0.5));
  EXPECT_EQ(o.Find("k999")->as_number(), 499.5);
  EXPECT_EQ(o.Find("nope"), nullptr);
  auto back = Parse(o.Dump());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->Find("k123")->as_number(), 61.5);
  EXPECT_EQ(back->members().size(), 1000u);
}

TEST(JsonTest, DuplicateKeysLastWinsSmallAndIndexed) {
  EXPECT_EQ(Parse(R"({"a": 1, "b": 2, "a": 3})")->Find("a")->as_number(), 3);
  std::string big = "{";
  for (int i = 0; i < 40; ++i)
    big += "\"k" + std::to_string(i % 20) + "\": " + std::to_string(i) + ",";
  big += "\"end\": 0}";
  auto v = Parse(big);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->Find("k7")->as_number(), 27);  // indexed lookup (41 members): the last "k7"
  EXPECT_EQ(v->Find("k19")->as_number(), 39);
  EXPECT_EQ(v->Find("k20"), nullptr);
  EXPECT_EQ(v->members().size(), 41u);
}

TEST(JsonTest, StringsInlineAndOnTheHeapCopyAndMove) {
  // 14 bytes fit in the 16-byte value; 15 go to the heap. Embedded NULs are kept.
  const std::string s14 = "abcdefghijklmn", s15 = "abcdefghijklmno", nul("a\0b", 3);
  Value a = Value::Array({Value::String(s14), Value::String(s15), Value::String(nul)});
  Value copy = a;
  Value moved = std::move(a);
  EXPECT_TRUE(a.is_null());  // NOLINT(bugprone-use-after-move): moved-from is null
  for (const Value* v : {&copy, &moved}) {
    ASSERT_EQ(v->items().size(), 3u);
    EXPECT_EQ(v->items()[0].as_string(), s14);
    EXPECT_EQ(v->items()[1].as_string(), s15);
    EXPECT_EQ(v->items()[2].as_string(), nul);
  }
  auto back = Parse(copy.Dump());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->items()[1].as_string(), s15);
  EXPECT_EQ(back->items()[2].as_string(), nul);
  Value o = Value::Object();
  o.Set("x", Value::Number(1));
  o.Set("x", Value::String(s15));  // replaces
  EXPECT_EQ(o.members().size(), 1u);
  EXPECT_EQ(o.Find("x")->as_string(), s15);
  Value o2 = o;
  o2.Set("y", Value::Bool(true));
  EXPECT_EQ(o.Find("y"), nullptr);
  EXPECT_TRUE(o2.Find("y")->as_bool());
  EXPECT_EQ(sizeof(Value), 16u);
}

// The tree of a parsed document is bounded by the input: a document of tiny values that would
// take many times its size to hold is refused with an error instead of allocated.
TEST(JsonTest, DenseDocumentIsRefusedNotAllocated) {
  std::string dense = "[";
  for (int i = 0; i < (2 << 20); ++i) dense += "0,";
  dense += "0]";  // 4 MiB of text, 2M+1 values of 16 bytes = 8x its size
  auto v = Parse(dense);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(v.status().message().find("memory"), std::string::npos) << v.status();
  std::string empties = "[";
  for (int i = 0; i < (1 << 20); ++i) empties += "[],";
  empties += "[]]";
  EXPECT_EQ(Parse(empties).status().code(), absl::StatusCode::kResourceExhausted);
  // The same values written as an expert table writes them (9 significant digits) fit easily:
  // 16 bytes per ~12-byte number, under 2x the text.
  std::string floats = "[";
  char buf[32];
  for (int i = 0; i < 350000; ++i) {
    std::snprintf(buf, sizeof(buf), "%.9g,", 0.123456789 + i * 1e-7);
    floats += buf;
  }
  floats += "0]";
  ParseOptions tight;
  tight.max_memory = 2 * floats.size();
  auto f = Parse(floats, tight);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->items().size(), 350001u);
  // ... and the limit is a limit: half the tree's size is refused.
  tight.max_memory = 16 * 350001 / 2;
  EXPECT_EQ(Parse(floats, tight).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(JsonTest, TypedGettersNameTheKey) {
  auto v = Parse(R"({"n": 3, "f": 2.5, "s": "x"})");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v->GetInt("n"), 3);
  EXPECT_FALSE(v->GetInt("f").ok());
  auto missing = v->GetInt("zzz");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("zzz"), std::string::npos);
  EXPECT_FALSE(v->GetString("n").ok());
}

TEST(JsonTest, FloatsRoundTrip) {
  for (float f : {0.1f, 1e-30f, 3.4e38f, -2.14566f, 0.982178f}) {
    auto back = Parse(Value::Number(f).Dump());
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(static_cast<float>(back->as_number()), f);
  }
  EXPECT_EQ(Quote("a\"b\\\n\x01"), "\"a\\\"b\\\\\\n\\u0001\"");
}

}  // namespace
}  // namespace selfcond::json
