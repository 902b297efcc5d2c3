#include "test_util.h"

#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>

#include "convert.h"
#include "gtest/gtest.h"

namespace selfcond::testing {

std::string SourceDir() { return SELFCOND_SOURCE_DIR; }
std::string SharedDir() { return SELFCOND_SHARED_DIR; }
std::string MiniModelDir() { return SharedDir() + "/models/selfcond-mini-30m"; }

std::string MakeTempDir(const std::string& tag) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path root = base ? base : std::filesystem::temp_directory_path();
  std::random_device rd;
  std::filesystem::path dir = root / ("selfcond_" + tag + "_" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string ConvertedMiniModel(bool keep_float) {
  static std::mutex mu;
  static std::map<bool, std::string> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(keep_float);
  if (it != cache.end()) return it->second;
  const std::string out =
      MakeTempDir("mini") + (keep_float ? "/mini-f32.scm" : "/mini-int8.scm");
  ConvertOptions opts;
  opts.keep_float = keep_float;
  opts.model_name = "selfcond-mini-30m";
  auto st = ConvertCheckpoint(MiniModelDir(), out, opts, nullptr);
  EXPECT_TRUE(st.ok()) << st;
  cache[keep_float] = out;
  return out;
}

}  // namespace selfcond::testing
