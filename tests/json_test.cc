#include "util/json.h"

#include <cmath>

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
