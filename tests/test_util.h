// Paths and helpers shared by the tests.
#ifndef SELFCOND_TESTS_TEST_UTIL_H_
#define SELFCOND_TESTS_TEST_UTIL_H_

#include <string>

namespace selfcond::testing {

std::string SourceDir();     // the repo root
std::string SharedDir();     // ../shared beside the repo
std::string MiniModelDir();  // ../shared/models/selfcond-mini-30m
// A fresh empty directory under the test temp dir (removed by the OS / CI, not by us).
std::string MakeTempDir(const std::string& tag);

// The shared demo checkpoint converted once per test process (cached), with float copies when
// keep_float. Aborts the test (FAIL) if conversion fails.
std::string ConvertedMiniModel(bool keep_float);
// The same with 4-bit block weights (converter --weights int4), no float copies.
std::string ConvertedMiniModelInt4();

}  // namespace selfcond::testing

#endif  // SELFCOND_TESTS_TEST_UTIL_H_
