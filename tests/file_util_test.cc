// Output files (issue 9): atomic writes that a kill cannot truncate, temporary files removed on
// SIGTERM, and outputs that would replace an input or cannot be written refused up front.
#include "util/file_util.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "test_util.h"

namespace selfcond {
namespace {

namespace fs = std::filesystem;

int TempFilesIn(const std::string& dir) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().find(".tmp.") != std::string::npos) ++n;
  }
  return n;
}

TEST(FileUtilTest, CheckOutputPathRefusesInputsDirectoriesAndUnwritableDirs) {
  const std::string dir = testing::MakeTempDir("outpath");
  const std::string in = dir + "/in.json";
  ASSERT_TRUE(WriteFile(in, "{}").ok());
  EXPECT_FALSE(CheckOutputPath(in, {in}).ok());
  // The same file under another name (a hard link) is still the input.
  const std::string link = dir + "/link.json";
  ASSERT_EQ(::link(in.c_str(), link.c_str()), 0);
  EXPECT_TRUE(SameFile(in, link));
  auto st = CheckOutputPath(link, {in});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("also an input"), std::string::npos) << st;
  EXPECT_FALSE(CheckOutputPath(dir, {}).ok());  // a directory
  EXPECT_FALSE(CheckOutputPath(dir + "/missing/out.json", {}).ok());
  EXPECT_TRUE(CheckOutputPath(dir + "/out.json", {in}).ok());
  EXPECT_FALSE(SameFile(in, dir + "/nothing"));
}

// A process killed (SIGKILL) at a random moment while rewriting a file leaves either the old
// or the new content, whole: never a truncated file.
TEST(FileUtilTest, KillDuringWriteLeavesOldOrNewFileWhole) {
  const std::string dir = testing::MakeTempDir("atomic");
  const std::string path = dir + "/table.json";
  const std::string old_text(8 << 20, 'o');
  const std::string new_text(8 << 20, 'n');
  for (int round = 0; round < 6; ++round) {
    ASSERT_TRUE(WriteFile(path, old_text).ok());
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (;;) (void)WriteFile(path, new_text);  // until killed
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + 7 * round));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    auto text = ReadFile(path);
    ASSERT_TRUE(text.ok());
    EXPECT_TRUE(*text == old_text || *text == new_text)
        << "round " << round << ": " << text->size() << " bytes";
  }
}

// SIGTERM while a temporary file is registered removes it (and still terminates).
TEST(FileUtilTest, SigtermRemovesRegisteredTempFiles) {
  const std::string dir = testing::MakeTempDir("sigterm");
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string tmp = dir + "/out.json.tmp.1";
    FILE* f = std::fopen(tmp.c_str(), "w");
    std::fputs("partial", f);
    std::fclose(f);
    RegisterTempFile(tmp);
    ::raise(SIGTERM);
    _exit(0);  // not reached
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
  EXPECT_EQ(TempFilesIn(dir), 0);
}

TEST(FileUtilTest, ReadFileRefusesDevicesFifosAndDirectories) {
  auto zero = ReadFile("/dev/zero");
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(zero.status().message().find("not a regular file"), std::string::npos);
  const std::string dir = testing::MakeTempDir("readfile");
  ASSERT_EQ(::mkfifo((dir + "/fifo").c_str(), 0600), 0);
  EXPECT_FALSE(ReadFile(dir + "/fifo").ok());  // would block forever if opened
  EXPECT_FALSE(ReadFile(dir).ok());
  EXPECT_EQ(ReadFile(dir + "/missing").status().code(), absl::StatusCode::kNotFound);
}

TEST(FileUtilTest, FailedWriteKeepsOldFileAndLeavesNoTemp) {
  const std::string dir = testing::MakeTempDir("failwrite");
  const std::string path = dir + "/x.json";
  ASSERT_TRUE(WriteFile(path, "old").ok());
  EXPECT_FALSE(WriteFile(dir + "/no/such/dir/x.json", "new").ok());
  auto text = ReadFile(path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "old");
  EXPECT_EQ(TempFilesIn(dir), 0);
}

}  // namespace
}  // namespace selfcond
