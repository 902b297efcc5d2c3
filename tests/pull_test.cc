// `selfcond pull`'s checks of names (tools/pull.h): repo ids, revisions and file names from the
// server become paths in the cache, so nothing may lead out of it. The protocol itself is tested
// end to end against a local hub by scripts/check_pull.py (ctest `pull`).
#include "tools/pull.h"

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace selfcond {
namespace {

TEST(PullTest, RepoIds) {
  for (const char* ok : {"gpt2", "openai-community/gpt2", "Qwen/Qwen2.5-0.5B", "a_b/c.d-e", "x"}) {
    EXPECT_TRUE(ValidateRepoId(ok).ok()) << ok;
  }
  for (const char* bad : {"", "/gpt2", "gpt2/", "a/b/c", "../x", "a/..", "a--b", "a..b", "-a", "a-",
                          ".a", "a/.b", "a b", "a\\b", "a/b\n", "a@b"}) {
    EXPECT_FALSE(ValidateRepoId(bad).ok()) << bad;
  }
  EXPECT_FALSE(ValidateRepoId(std::string(97, 'a')).ok());
}

TEST(PullTest, FileNames) {
  for (const char* ok : {"config.json", "sub/dir/model.safetensors", "model-00001-of-00002.bin"}) {
    EXPECT_TRUE(ValidateRepoFileName(ok).ok()) << ok;
  }
  for (const char* bad :
       {"", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a/", "..", "a\\..\\b", "a\nb"}) {
    EXPECT_FALSE(ValidateRepoFileName(bad).ok()) << bad;
  }
}

TEST(PullTest, RepoSpec) {
  auto s = ParseRepoSpec("openai-community/gpt2");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->first, "openai-community/gpt2");
  EXPECT_EQ(s->second, "main");
  s = ParseRepoSpec("gpt2@refs/pr/1");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->first, "gpt2");
  EXPECT_EQ(s->second, "refs/pr/1");
  EXPECT_FALSE(ParseRepoSpec("gpt2@").ok());
  EXPECT_FALSE(ParseRepoSpec("gpt2@../../x").ok());
  EXPECT_FALSE(ParseRepoSpec("gpt2@a b").ok());
  EXPECT_FALSE(ParseRepoSpec("../gpt2@main").ok());
}

TEST(PullTest, CacheDirFromEnvironment) {
  const char* saved_cache = std::getenv("SELFCOND_CACHE");
  const char* saved_xdg = std::getenv("XDG_CACHE_HOME");
  const std::string cache = saved_cache ? saved_cache : "";
  const std::string xdg = saved_xdg ? saved_xdg : "";
  setenv("SELFCOND_CACHE", "/tmp/sc-cache", 1);
  EXPECT_EQ(DefaultPullCacheDir(), "/tmp/sc-cache");
  unsetenv("SELFCOND_CACHE");
  setenv("XDG_CACHE_HOME", "/tmp/xdg", 1);
  EXPECT_EQ(DefaultPullCacheDir(), "/tmp/xdg/selfcond");
  if (saved_cache) setenv("SELFCOND_CACHE", cache.c_str(), 1);
  if (saved_xdg) {
    setenv("XDG_CACHE_HOME", xdg.c_str(), 1);
  } else {
    unsetenv("XDG_CACHE_HOME");
  }
}

TEST(PullTest, OfflineWithoutCacheIsNotFound) {
  PullOptions o;
  o.repo = "selfcond/not-cached";
  o.cache_dir = ::testing::TempDir() + "/pull-empty-cache";
  o.offline = true;
  auto snap = PullSnapshot(o, nullptr);
  ASSERT_FALSE(snap.ok());
  EXPECT_NE(std::string(snap.status().message()).find("not in the cache"), std::string::npos)
      << snap.status();
}

}  // namespace
}  // namespace selfcond
