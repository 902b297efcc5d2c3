// Hostile but well-formed model files (issue 9): the generator below writes them through the
// real converter, so every check of the loader applies. Their costs must be bounded by the file
// (load) and by the memory budget (sessions); `selfcond bench` reports the load time of the
// 4,000-layer file, and scripts/check_hostile.py runs the CLI on them under `ulimit -v`.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "model/model.h"
#include "test_util.h"
#include "tools/synthetic_checkpoint.h"

namespace selfcond {
namespace {

TEST(HostileModelTest, FourThousandTinyLayersLoadAndRun) {
  const std::string dir = testing::MakeTempDir("hostile-layers");
  auto path = WriteHostileModel(dir, HostileModel::kManyLayers);
  ASSERT_TRUE(path.ok()) << path.status();
  Model::LoadOptions lo;
  lo.verify_hash = true;
  auto model = Model::Load(*path, lo);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->config().n_layer, 4000u);
  EXPECT_GT((*model)->file().tensors.size(), 4000u * 12);
  SessionOptions so;
  so.n_ctx = 4;
  auto session = Session::Create(**model, so);
  ASSERT_TRUE(session.ok()) << session.status();
  const std::vector<int32_t> ids = {1, 2};
  auto logits = (*session)->Forward(ids, Session::Logits::kLast);
  ASSERT_TRUE(logits.ok()) << logits.status();
}

TEST(HostileModelTest, HugeContextIsRefusedBeforeAllocating) {
  const std::string dir = testing::MakeTempDir("hostile-ctx");
  auto path = WriteHostileModel(dir, HostileModel::kHugeContext);
  ASSERT_TRUE(path.ok()) << path.status();
  auto model = Model::Load(*path, {});
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = (*model)->config();
  EXPECT_EQ(c.n_ctx, 1u << 20);
  // The model's whole context: a KV cache of 200 layers x 2^20 positions is refused by the
  // default budget (half the machine's memory) with an error naming what it needs ...
  SessionOptions so;
  so.n_ctx = static_cast<int>(c.n_ctx);
  const size_t need = Session::MemoryNeeded(c, so);
  EXPECT_GT(need, size_t{8} << 30);
  so.max_memory = size_t{1} << 30;
  auto huge = Session::Create(**model, so);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted) << huge.status();
  EXPECT_NE(huge.status().message().find("MiB"), std::string::npos) << huge.status();
  // ... while a session sized to the work runs.
  so.n_ctx = 16;
  auto small = Session::Create(**model, so);
  ASSERT_TRUE(small.ok()) << small.status();
  const std::vector<int32_t> ids = {3};
  EXPECT_TRUE((*small)->Forward(ids, Session::Logits::kLast).ok());
}

// A mapped model whose file is truncated under the running process dies of SIGBUS (documented in
// the README); copy_to_memory (--copy-model) reads the file once and no longer depends on it.
TEST(HostileModelTest, CopiedModelSurvivesItsFileBeingTruncated) {
  const std::string path = testing::MakeTempDir("copy-model") + "/m.scm";
  std::filesystem::copy_file(testing::ConvertedMiniModel(false), path);
  Model::LoadOptions lo;
  lo.copy_to_memory = true;
  auto model = Model::Load(path, lo);
  ASSERT_TRUE(model.ok()) << model.status();
  std::filesystem::resize_file(path, 0);
  SessionOptions so;
  so.n_ctx = 8;
  auto session = Session::Create(**model, so);
  ASSERT_TRUE(session.ok()) << session.status();
  const std::vector<int32_t> ids = {464, 1049};
  EXPECT_TRUE((*session)->Forward(ids, Session::Logits::kLast).ok());
  // The truncated file itself is refused with an error, not a crash.
  EXPECT_FALSE(Model::Load(path, lo).ok());
  EXPECT_FALSE(Model::Load(path, {}).ok());
}

}  // namespace
}  // namespace selfcond
