#include "test_util.h"

#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>

#include "gtest/gtest.h"
#include "tools/convert.h"

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

namespace {
std::string Converted(const std::string& name, bool keep_float, WeightBits bits) {
  // Cached on disk across test processes (ctest runs each test in its own process): converted
  // into a unique file, then renamed into place atomically, so parallel tests never see a
  // half-written model.
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  const std::filesystem::path dir = std::filesystem::path(SELFCOND_BINARY_DIR) / "test-models";
  std::filesystem::create_directories(dir);
  const std::string out = (dir / name).string();
  const auto src = std::filesystem::path(MiniModelDir()) / "model.safetensors";
  // Fresh when newer than both the checkpoint and this test binary (which links the
  // converter: a converter change rebuilds it and so invalidates the cache).
  if (std::filesystem::exists(out) &&
      std::filesystem::last_write_time(out) > std::filesystem::last_write_time(src) &&
      std::filesystem::last_write_time(out) >
          std::filesystem::last_write_time(std::filesystem::read_symlink("/proc/self/exe"))) {
    return out;
  }
  std::random_device rd;
  const std::string tmp = out + "." + std::to_string(rd()) + ".part";
  ConvertOptions opts;
  opts.keep_float = keep_float;
  opts.weights = bits;
  opts.model_name = "selfcond-mini-30m";
  auto st = ConvertCheckpoint(MiniModelDir(), tmp, opts, nullptr);
  EXPECT_TRUE(st.ok()) << st;
  std::filesystem::rename(tmp, out);
  return out;
}
}  // namespace

std::string ConvertedMiniModel(bool keep_float) {
  return Converted(keep_float ? "mini-f32.scm" : "mini-int8.scm", keep_float, WeightBits::kInt8);
}

std::string ConvertedMiniModelInt4() {
  return Converted("mini-int4.scm", false, WeightBits::kInt4);
}

}  // namespace selfcond::testing
