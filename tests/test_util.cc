#include "test_util.h"

#include <cstdlib>
#include <filesystem>
#include <random>

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

}  // namespace selfcond::testing
