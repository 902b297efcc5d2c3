// PyTorch checkpoints (formats/torch_checkpoint.h): the fixtures are written by
// scripts/make_torch_bin.py (the way torch.save writes them) from the shared demo checkpoint or
// the script's tiny built-in tensors; hostile inputs (foreign globals, truncation, corrupt zip
// offsets, unknown opcodes, pickle bombs) are built here.
#include "formats/torch_checkpoint.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "formats/safetensors.h"
#include "gtest/gtest.h"
#include "test_util.h"
#include "tools/convert.h"
#include "util/file_util.h"

namespace selfcond {
namespace {

namespace fs = std::filesystem;
using ::selfcond::testing::MakeTempDir;
using ::selfcond::testing::MiniModelDir;
using ::selfcond::testing::SourceDir;

bool HavePython() {
  static const bool ok = std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
  return ok;
}

#define REQUIRE_PYTHON() \
  if (!HavePython()) GTEST_SKIP() << "needs /usr/bin/python3 with numpy (make_torch_bin.py)"

// The fixtures (up to 60 MB each) are removed when the tests end.
std::vector<std::string>* TempDirs() {
  static auto* dirs = new std::vector<std::string>();
  return dirs;
}
class RemoveTempDirs : public ::testing::Environment {
 public:
  void TearDown() override {
    for (const std::string& d : *TempDirs()) {
      std::error_code ec;
      fs::remove_all(d, ec);
    }
  }
};
::testing::Environment* const kRemoveTempDirs =
    ::testing::AddGlobalTestEnvironment(new RemoveTempDirs);

std::string TempDir(const std::string& tag) {
  TempDirs()->push_back(MakeTempDir(tag));
  return TempDirs()->back();
}

// Runs make_torch_bin.py from `src` ("tiny" or a checkpoint directory) into a fresh directory.
std::string MakeBin(const std::string& src, const std::string& args) {
  const std::string out = TempDir("torch_bin");
  const std::string cmd =
      absl::StrCat("/usr/bin/python3 '", SourceDir(), "/scripts/make_torch_bin.py' '", src, "' '",
                   out, "' ", args);
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return out;
}

std::vector<uint8_t> Bytes(const std::string& path) {
  auto s = ReadFile(path);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::vector<uint8_t>(s->begin(), s->end()) : std::vector<uint8_t>();
}

// The tensors of `got` are those of `want` (same names, dtypes, shapes and bytes).
void ExpectSameTensors(const std::vector<StTensor>& want,
                       const std::function<const StTensor*(const std::string&)>& find,
                       size_t got_count) {
  EXPECT_EQ(got_count, want.size());
  for (const StTensor& w : want) {
    const StTensor* g = find(w.name);
    ASSERT_NE(g, nullptr) << w.name;
    EXPECT_EQ(g->dtype, w.dtype) << w.name;
    EXPECT_EQ(g->shape, w.shape) << w.name;
    ASSERT_EQ(g->data.size(), w.data.size()) << w.name;
    EXPECT_EQ(std::memcmp(g->data.data(), w.data.data(), w.data.size()), 0) << w.name;
  }
}

std::unique_ptr<SafetensorsFile> MiniSafetensors() {
  auto st = SafetensorsFile::Open(MiniModelDir() + "/model.safetensors");
  EXPECT_TRUE(st.ok()) << st.status();
  return st.ok() ? std::move(*st) : nullptr;
}

// The first n tensors by name of the demo checkpoint (what --only n keeps).
std::vector<StTensor> FirstTensors(const SafetensorsFile& st, size_t n) {
  std::vector<StTensor> all = st.tensors();
  std::sort(all.begin(), all.end(),
            [](const StTensor& a, const StTensor& b) { return a.name < b.name; });
  all.resize(std::min(n, all.size()));
  return all;
}

// Bytes of a string literal that may hold NULs.
template <size_t N>
std::string B(const char (&s)[N]) {
  return std::string(s, N - 1);
}

uint32_t Crc32(const std::string& s) {
  uint32_t c = 0xffffffffu;
  for (unsigned char x : s) {
    c ^= x;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xffffffffu;
}

// A zip archive of STORED entries (no alignment), enough for hand-made hostile files.
std::string Zip(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, cd;
  auto u16 = [](std::string* s, uint32_t v) {
    s->push_back(static_cast<char>(v & 0xff));
    s->push_back(static_cast<char>((v >> 8) & 0xff));
  };
  auto u32 = [&](std::string* s, uint32_t v) {
    u16(s, v & 0xffff);
    u16(s, v >> 16);
  };
  for (const auto& [name, data] : entries) {
    const uint32_t offset = static_cast<uint32_t>(out.size());
    const uint32_t size = static_cast<uint32_t>(data.size());
    u32(&out, 0x04034b50);
    for (uint32_t v : {20u, 0u, 0u, 0u, 0x21u}) u16(&out, v);
    u32(&out, Crc32(data));
    u32(&out, size);
    u32(&out, size);
    u16(&out, static_cast<uint32_t>(name.size()));
    u16(&out, 0);
    out += name + data;
    u32(&cd, 0x02014b50);
    for (uint32_t v : {20u, 20u, 0u, 0u, 0u, 0x21u}) u16(&cd, v);
    u32(&cd, Crc32(data));
    u32(&cd, size);
    u32(&cd, size);
    u16(&cd, static_cast<uint32_t>(name.size()));
    for (uint32_t v : {0u, 0u, 0u, 0u}) u16(&cd, v);
    u32(&cd, 0);
    u32(&cd, offset);
    cd += name;
  }
  const uint32_t cd_offset = static_cast<uint32_t>(out.size());
  out += cd;
  u32(&out, 0x06054b50);
  const uint32_t n = static_cast<uint32_t>(entries.size());
  for (uint32_t v : {0u, 0u, n, n}) u16(&out, v);
  u32(&out, static_cast<uint32_t>(cd.size()));
  u32(&out, cd_offset);
  u16(&out, 0);
  return out;
}

absl::Status ParseBytes(const std::string& bytes, const std::string& label) {
  std::vector<uint8_t> b(bytes.begin(), bytes.end());  // exact size: ASan sees overreads
  return TorchCheckpointFile::FromBytes(b, label).status();
}

// data.pkl (and more entries) in a zip archive, parsed; the status.
absl::Status ParsePickle(const std::string& pkl,
                         std::vector<std::pair<std::string, std::string>> more = {}) {
  more.insert(more.begin(), {"archive/data.pkl", pkl});
  const std::string zip = Zip(more);
  std::vector<uint8_t> b(zip.begin(), zip.end());
  return TorchCheckpointFile::FromBytes(b, "bomb.bin").status();
}

TEST(TorchCheckpoint, MatchesSafetensorsBytes) {
  REQUIRE_PYTHON();
  auto st = MiniSafetensors();
  ASSERT_NE(st, nullptr);
  const std::string dir = MakeBin(MiniModelDir(), "");
  auto f = TorchCheckpointFile::Open(dir + "/pytorch_model.bin");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_FALSE((*f)->legacy());
  ExpectSameTensors(
      st->tensors(), [&](const std::string& n) { return (*f)->Find(n); }, (*f)->tensors().size());
  // Contiguous tensors are views of the file, not copies.
  const StTensor* t = (*f)->Find("transformer.wte.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->file, dir + "/pytorch_model.bin");
}

TEST(TorchCheckpoint, ConvertsToTheSameModelAsSafetensors) {
  REQUIRE_PYTHON();
  const std::string dir = MakeBin(MiniModelDir(), "--shards 2");
  ConvertOptions co;
  co.model_name = "mini";
  const std::string out = TempDir("torch_convert");
  ASSERT_TRUE(ConvertCheckpoint(MiniModelDir(), out + "/st.scm", co, nullptr).ok());
  absl::Status s = ConvertCheckpoint(dir, out + "/bin.scm", co, nullptr);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(Bytes(out + "/st.scm") == Bytes(out + "/bin.scm"));
}

TEST(TorchCheckpoint, ShardedIndex) {
  REQUIRE_PYTHON();
  auto st = MiniSafetensors();
  ASSERT_NE(st, nullptr);
  const std::string dir = MakeBin(MiniModelDir(), "--shards 3");
  ASSERT_TRUE(fs::exists(dir + "/pytorch_model.bin.index.json"));
  ASSERT_FALSE(fs::exists(dir + "/pytorch_model.bin"));
  auto ck = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ((*ck)->num_shards(), 3u);
  ExpectSameTensors(
      st->tensors(), [&](const std::string& n) { return (*ck)->Find(n); }, (*ck)->Names().size());
}

TEST(TorchCheckpoint, CheckpointDirWithOnlyPytorchModelBin) {
  REQUIRE_PYTHON();
  auto st = MiniSafetensors();
  ASSERT_NE(st, nullptr);
  const std::string dir = MakeBin(MiniModelDir(), "--only 6");
  auto ck = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ((*ck)->num_shards(), 1u);
  ExpectSameTensors(
      FirstTensors(*st, 6), [&](const std::string& n) { return (*ck)->Find(n); },
      (*ck)->Names().size());
  // With model.safetensors beside it, safetensors wins (as in transformers).
  fs::create_symlink(MiniModelDir() + "/model.safetensors", dir + "/model.safetensors");
  auto both = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ((*both)->Names().size(), st->tensors().size());
  // Nothing at all: the error lists every accepted name.
  const std::string empty = TempDir("torch_empty");
  auto none = SafetensorsCheckpoint::Open(empty);
  ASSERT_FALSE(none.ok());
  for (const char* n : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json"}) {
    EXPECT_NE(none.status().message().find(n), std::string::npos) << none.status();
  }
}

TEST(TorchCheckpoint, F32FromF16) {
  REQUIRE_PYTHON();
  auto st = MiniSafetensors();
  ASSERT_NE(st, nullptr);
  const std::string dir = MakeBin(MiniModelDir(), "--only 6 --dtype f32");
  auto f = TorchCheckpointFile::Open(dir + "/pytorch_model.bin");
  ASSERT_TRUE(f.ok()) << f.status();
  for (const StTensor& w : FirstTensors(*st, 6)) {
    const StTensor* g = (*f)->Find(w.name);
    ASSERT_NE(g, nullptr);
    EXPECT_EQ(g->dtype, StDType::kF32);
    auto a = ToFloat(w);
    auto b = ToFloat(*g);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(*a, *b) << w.name;
  }
}

TEST(TorchCheckpoint, NonContiguousTensorIsCopied) {
  REQUIRE_PYTHON();
  auto st = MiniSafetensors();
  ASSERT_NE(st, nullptr);
  const std::string name = "transformer.h.0.attn.c_attn.weight";
  for (const char* legacy : {"", "--legacy"}) {
    const std::string dir = MakeBin(
        MiniModelDir(),
        absl::StrCat("--only 6 --transpose-one ", name, " --alias tied=", name, " ", legacy));
    auto f = TorchCheckpointFile::Open(dir + "/pytorch_model.bin");
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ((*f)->legacy(), *legacy != 0);
    ExpectSameTensors(
        FirstTensors(*st, 6), [&](const std::string& n) { return (*f)->Find(n); },
        (*f)->tensors().size() - 1);
    const StTensor* tied = (*f)->Find("tied");  // the same strided view of the same storage
    ASSERT_NE(tied, nullptr);
    EXPECT_EQ(tied->shape, st->Find(name)->shape);
    EXPECT_EQ(std::memcmp(tied->data.data(), st->Find(name)->data.data(), tied->data.size()), 0);
  }
}

TEST(TorchCheckpoint, SharedStorageAndOtherContainers) {
  REQUIRE_PYTHON();
  auto st = MiniSafetensors();
  ASSERT_NE(st, nullptr);
  const std::string name = "transformer.h.0.attn.c_attn.bias";
  for (const char* args : {"--legacy", "--protocol 4", "--protocol 5", "--zip64", "--shards 2"}) {
    const std::string dir =
        MakeBin(MiniModelDir(), absl::StrCat("--only 4 --alias lm_head.weight=", name, " ", args));
    auto ck = SafetensorsCheckpoint::Open(dir);
    ASSERT_TRUE(ck.ok()) << args << ": " << ck.status();
    const StTensor* a = (*ck)->Find(name);
    const StTensor* b = (*ck)->Find("lm_head.weight");
    ASSERT_TRUE(a != nullptr && b != nullptr) << args;
    EXPECT_EQ(a->data.data(), b->data.data()) << args;  // one storage, no copy
    ExpectSameTensors(
        FirstTensors(*st, 4), [&](const std::string& n) { return (*ck)->Find(n); },
        (*ck)->Names().size() - 1);
  }
}

TEST(TorchCheckpoint, TinyDtypes) {
  REQUIRE_PYTHON();
  const std::string dir = MakeBin("tiny", "");
  auto f = TorchCheckpointFile::Open(dir + "/pytorch_model.bin");
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 5u);
  const StTensor* ids = (*f)->Find("b.ids");
  ASSERT_NE(ids, nullptr);
  EXPECT_EQ(ids->dtype, StDType::kI64);
  int64_t v[2];
  std::memcpy(v, ids->data.data(), 16);
  EXPECT_EQ(v[0], 7);
  EXPECT_EQ(v[1], -3);
  const StTensor* bf = (*f)->Find("c.scale");
  ASSERT_NE(bf, nullptr);
  auto fl = ToFloat(*bf);
  ASSERT_TRUE(fl.ok());
  EXPECT_EQ(*fl, (std::vector<float>{1, -2, 0, 0.5f, 3, 0.25f}));
  const StTensor* e = (*f)->Find("d.empty");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->shape, (std::vector<uint64_t>{0, 4}));
  EXPECT_TRUE(e->data.empty());
}

TEST(TorchCheckpoint, MaliciousGlobalIsRefusedAndNothingRuns) {
  REQUIRE_PYTHON();
  const bool existed = fs::exists("/tmp/pwned");
  for (const auto& [global, shown] :
       std::vector<std::pair<std::string, std::string>>{{"", "posix.system"},
                                                        {"builtins.eval", "builtins.eval"},
                                                        {"os.system", "os.system"},
                                                        {"__builtin__.exec", "__builtin__.exec"}}) {
    const std::string dir =
        MakeBin("tiny", global.empty() ? "--malicious" : "--malicious " + global);
    auto f = TorchCheckpointFile::Open(dir + "/pytorch_model.bin");
    ASSERT_FALSE(f.ok());
    const std::string msg(f.status().message());
    EXPECT_NE(msg.find("pytorch_model.bin: refuses to load global '" + shown + "'"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("the file may be malicious"), std::string::npos) << msg;
    auto ck = SafetensorsCheckpoint::Open(dir);
    ASSERT_FALSE(ck.ok());
    EXPECT_NE(ck.status().message().find(shown), std::string::npos) << ck.status();
  }
  if (!existed) {
    EXPECT_FALSE(fs::exists("/tmp/pwned"));
  }
}

TEST(TorchCheckpoint, TruncatedFilesAreErrors) {
  REQUIRE_PYTHON();
  for (const char* args : {"", "--legacy", "--zip64"}) {
    const std::string dir = MakeBin("tiny", args);
    const std::vector<uint8_t> whole = Bytes(dir + "/pytorch_model.bin");
    ASSERT_TRUE(TorchCheckpointFile::FromBytes(whole, "whole").ok()) << args;
    for (size_t cut = 0; cut < whole.size(); ++cut) {
      std::vector<uint8_t> part(whole.begin(), whole.begin() + cut);  // exact size for ASan
      auto f = TorchCheckpointFile::FromBytes(part, "cut.bin");
      EXPECT_FALSE(f.ok()) << args << " cut at " << cut;
      if (!f.ok()) {
        EXPECT_NE(f.status().message().find("cut.bin"), std::string::npos);
      }
    }
  }
}

TEST(TorchCheckpoint, CorruptZipIsAnError) {
  REQUIRE_PYTHON();
  const std::string dir = MakeBin("tiny", "");
  const std::vector<uint8_t> whole = Bytes(dir + "/pytorch_model.bin");
  const size_t eocd = whole.size() - 22;
  ASSERT_EQ(whole[eocd], 'P');
  uint32_t cd_offset;
  std::memcpy(&cd_offset, &whole[eocd + 16], 4);
  auto expect_error = [&](size_t at, std::vector<uint8_t> bytes, const std::string& want) {
    std::vector<uint8_t> b = whole;
    for (size_t k = 0; k < bytes.size(); ++k) b[at + k] = bytes[k];
    auto f = TorchCheckpointFile::FromBytes(b, "bad.bin");
    ASSERT_FALSE(f.ok()) << want;
    EXPECT_NE(f.status().message().find(want), std::string::npos) << f.status();
  };
  expect_error(eocd + 16, {0xff, 0xff, 0xff, 0x7f}, "central directory");         // CD offset
  expect_error(eocd + 12, {0xff, 0xff, 0, 0}, "central directory");               // CD size
  expect_error(eocd + 8, {0xff, 0x7f, 0xff, 0x7f}, "entries");                    // count
  expect_error(eocd + 4, {1, 0}, "multi-disk");                                   // disk
  expect_error(cd_offset + 42, {0xff, 0xff, 0xff, 0x0f}, "local header");         // offset
  expect_error(cd_offset + 42, {1, 0, 0, 0}, "local header");                     // misaligned
  expect_error(cd_offset + 20, {0xff, 0xff, 0xff, 0x0f}, "sizes differ");         // csize
  expect_error(cd_offset + 20, {0xff, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0x0f},  // both sizes
               "runs past");
  expect_error(cd_offset + 10, {8, 0}, "compressed");  // data.pkl deflated
  expect_error(cd_offset + 8, {1, 0}, "encrypted");
  expect_error(cd_offset + 16, {0, 0, 0, 0}, "CRC");  // data.pkl's CRC
  expect_error(0, {'P', 'K', 3, 5}, "local header");
  // Two entries at the same offset; two entries of the same name.
  std::vector<uint8_t> b = whole;  // the second entry pointing at the first's local header
  const size_t second = cd_offset + 46 + std::string("pytorch_model/data.pkl").size();
  std::memcpy(&b[second + 42], &b[cd_offset + 42], 4);
  auto f = TorchCheckpointFile::FromBytes(b, "bad.bin");
  ASSERT_FALSE(f.ok());
  absl::Status d =
      ParseBytes(Zip({{"archive/data.pkl", "\x80\x02}."}, {"archive/data.pkl", "x"}}), "dup.bin");
  EXPECT_NE(d.message().find("duplicate"), std::string::npos) << d;
  // Not a zip, not a pickle.
  const std::string junk = "hello world, not a checkpoint";
  absl::Status j = ParseBytes(junk, "junk.bin");
  EXPECT_NE(j.message().find("not a PyTorch checkpoint"), std::string::npos) << j;
}

TEST(TorchCheckpoint, HandMadePickles) {
  // A minimal valid state dict: {} (no tensors) parses; the top object must be a dict.
  EXPECT_TRUE(ParsePickle(B("\x80\x02}.")).ok());
  absl::Status s =
      ParsePickle(B("\x80\x02]q\x00h\x00"
                    "a."));  // a list holding itself
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("not a state dict"), std::string::npos) << s;
  s = ParsePickle(B("\x80\x02\xff."));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("unsupported pickle opcode 0xff"), std::string::npos) << s;
  EXPECT_NE(s.message().find("bomb.bin"), std::string::npos) << s;
  s = ParsePickle(B("\x80\x09}."));
  EXPECT_NE(s.message().find("protocol 9"), std::string::npos) << s;
  // STACK_GLOBAL is checked like GLOBAL.
  s = ParsePickle(B("\x80\x04\x8c\x02os\x8c\x06system\x93."));
  EXPECT_NE(s.message().find("refuses to load global 'os.system'"), std::string::npos) << s;
  // A dict without tensors at the top level: an error naming its keys.
  s = ParsePickle(B("\x80\x02}X\x05\x00\x00\x00modelK\x01s."));
  EXPECT_NE(s.message().find("'model'"), std::string::npos) << s;
  // A tensor {'w': _rebuild_tensor_v2(storage '0' of 2 floats, offset, (2,), (1,), False, None)}.
  auto tensor = [](char offset) {
    return B("\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00"
             "storagectorch\nFloatStorage\nX\x01\x00\x00\x00"
             "0X\x03\x00\x00\x00"
             "cpuK\x02tQK") +
           std::string(1, offset) + B("K\x02\x85K\x01\x85\x89NtRs.");
  };
  const std::pair<std::string, std::string> data0{"archive/data/0", std::string(8, '\0')};
  s = ParsePickle(tensor(0), {data0});
  EXPECT_TRUE(s.ok()) << s;
  s = ParsePickle(tensor(1), {data0});  // the view reaches past its storage
  EXPECT_NE(s.message().find("tensor 'w'"), std::string::npos) << s;
  EXPECT_NE(s.message().find("past the end of storage '0'"), std::string::npos) << s;
  s = ParsePickle(tensor(0));  // no data/0 entry
  EXPECT_NE(s.message().find("no zip entry 'archive/data/0'"), std::string::npos) << s;
  s = ParsePickle(tensor(0), {{"archive/data/0", std::string(12, '\0')}});
  EXPECT_NE(s.message().find("needs 8 bytes"), std::string::npos) << s;
  s = ParsePickle(tensor(0), {data0, {"archive/byteorder", "big"}});
  EXPECT_NE(s.message().find("byte order 'big'"), std::string::npos) << s;
}

TEST(TorchCheckpoint, PickleBombsAreBounded) {
  // MARKs nested without end.
  absl::Status s = ParsePickle("\x80\x02" + std::string(100000, '(') + ".");
  EXPECT_NE(s.message().find("MARKs nested deeper"), std::string::npos) << s;
  // A memo index far out of range.
  s = ParsePickle(B("\x80\x02j\xff\xff\xff\xff."));
  EXPECT_NE(s.message().find("memo entry 4294967295 is not defined"), std::string::npos) << s;
  // A million nested 1-tuples: built iteratively, then refused as not a dict.
  s = ParsePickle("\x80\x02N" + std::string(1000000, '\x85') + ".");
  EXPECT_NE(s.message().find("not a state dict"), std::string::npos) << s;
  // Millions of distinct memo entries.
  std::string memo = "\x80\x02N";
  for (uint32_t i = 0; i < 1200000; ++i) {
    memo += 'r';
    for (int k = 0; k < 4; ++k) memo += static_cast<char>((i >> (8 * k)) & 0xff);
  }
  s = ParsePickle(memo + ".");
  EXPECT_NE(s.message().find("memo entries"), std::string::npos) << s;
  // Millions of objects.
  s = ParsePickle("\x80\x02]" + std::string(3000000, '\x85') + ".");
  EXPECT_NE(s.message().find("objects"), std::string::npos) << s;
  // A string longer than the file.
  s = ParsePickle(B("\x80\x02X\xff\xff\xff\x7f"));
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s;
  s = ParsePickle(B("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff"));
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s;
  // Stack underflow and a MARK-less TUPLE.
  s = ParsePickle(B("\x80\x02s."));
  EXPECT_NE(s.message().find("underflow"), std::string::npos) << s;
  s = ParsePickle(B("\x80\x02t."));
  EXPECT_NE(s.message().find("MARK"), std::string::npos) << s;
}

TEST(TorchCheckpoint, LegacyFormat) {
  REQUIRE_PYTHON();
  auto st = MiniSafetensors();
  ASSERT_NE(st, nullptr);
  const std::string dir = MakeBin(MiniModelDir(), "--only 6 --legacy");
  auto f = TorchCheckpointFile::Open(dir + "/pytorch_model.bin");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->legacy());
  ExpectSameTensors(
      FirstTensors(*st, 6), [&](const std::string& n) { return (*f)->Find(n); },
      (*f)->tensors().size());
}

}  // namespace
}  // namespace selfcond
