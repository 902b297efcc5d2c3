// The model file reader/writer (src/formats/model_file.h) and SHA-256: round trip, layout rules,
// and every malformed input rejected with an error (never a crash; run under ASan/UBSan too).
#include "formats/model_file.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "test_util.h"
#include "util/file_util.h"
#include "util/sha256.h"

namespace selfcond {
namespace {

// Files a writer left behind under a temporary name (NAME.tmp.PID).
int TempFiles(const std::string& dir) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    n += e.path().filename().string().find(".tmp") != std::string::npos;
  }
  return n;
}

std::vector<uint8_t> ToBytes(const std::string& s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

std::string Sha256Hex(const std::string& s) {
  auto d =
      Sha256::Hash(absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  return HexLower(d);
}

// FIPS 180-4 / NIST example vectors.
TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, StreamingInOddChunksMatchesOneShot) {
  std::string s;
  for (int i = 0; i < 1000; ++i) s.push_back(static_cast<char>(i * 37 + 11));
  const std::string want = Sha256Hex(s);
  for (size_t chunk : {1, 3, 55, 56, 63, 64, 65, 127}) {
    Sha256 h;
    for (size_t i = 0; i < s.size(); i += chunk)
      h.Update(s.data() + i, std::min(chunk, s.size() - i));
    EXPECT_EQ(HexLower(h.Final()), want) << "chunk " << chunk;
  }
}

ModelConfig SmallConfig() {
  ModelConfig c;
  c.n_layer = 1;
  c.n_embd = 8;
  c.n_head = 2;
  c.n_ctx = 4;
  c.vocab_size = 5;
  c.n_inner = 32;
  c.eos_token_id = 4;
  c.layer_norm_eps = 1e-5f;
  c.tied_lm_head = 1;
  return c;
}

template <typename T>
std::vector<uint8_t> AsBytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<TensorToWrite> SmallTensors() {
  std::vector<TensorToWrite> t;
  std::vector<float> f(4 * 8);
  for (size_t i = 0; i < f.size(); ++i) f[i] = 0.25f * static_cast<float>(i) - 3.0f;
  t.push_back({"wpe", DType::kF32, {4, 8}, AsBytes(f)});
  std::vector<uint8_t> q(kernels::PaddedRows(5) * 8);
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<uint8_t>(i * 7);
  t.push_back({"wte.q", DType::kI8Packed, {5, 8}, q});
  t.push_back({"wte.scale", DType::kF32, {16}, AsBytes(std::vector<float>(16, 0.5f))});
  t.push_back({"wte.row_sum", DType::kI32, {16}, AsBytes(std::vector<int32_t>(16, -3))});
  t.push_back({"ln_f.bias", DType::kF32, {3}, AsBytes(std::vector<float>{1, 2, 3})});
  return t;
}

std::vector<uint8_t> WriteSmall(const std::string& tag) {
  const std::string path = testing::MakeTempDir(tag) + "/m.scm";
  const std::vector<uint8_t> blob = {1, 2, 3, 4, 5, 6, 7};
  absl::Status s = WriteModelFile(path, SmallConfig(), "tiny", blob, SmallTensors());
  EXPECT_TRUE(s.ok()) << s;
  auto bytes = ReadFile(path);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return ToBytes(*bytes);
}

FileHeader HeaderOf(const std::vector<uint8_t>& b) {
  FileHeader h;
  std::memcpy(&h, b.data(), sizeof(h));
  return h;
}
void PutHeader(std::vector<uint8_t>* b, const FileHeader& h) {
  std::memcpy(b->data(), &h, sizeof(h));
}
TensorEntry EntryOf(const std::vector<uint8_t>& b, int i) {
  TensorEntry e;
  std::memcpy(&e, b.data() + HeaderOf(b).tensor_index_offset + i * sizeof(TensorEntry), sizeof(e));
  return e;
}
void PutEntry(std::vector<uint8_t>* b, int i, const TensorEntry& e) {
  std::memcpy(b->data() + HeaderOf(*b).tensor_index_offset + i * sizeof(TensorEntry), &e,
              sizeof(e));
}

TEST(ModelFileTest, RoundTrip) {
  const std::vector<uint8_t> bytes = WriteSmall("mf_roundtrip");
  auto view = ParseModelFile(bytes);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->config.n_layer, 1u);
  EXPECT_EQ(view->config.n_embd, 8u);
  EXPECT_EQ(view->config.n_inner, 32u);
  EXPECT_EQ(view->config.vocab_size, 5u);
  EXPECT_EQ(view->config.eos_token_id, 4u);
  EXPECT_FLOAT_EQ(view->config.layer_norm_eps, 1e-5f);
  EXPECT_EQ(view->model_name, "tiny");
  EXPECT_EQ(std::vector<uint8_t>(view->tokenizer_blob.begin(), view->tokenizer_blob.end()),
            (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7}));
  const auto want = SmallTensors();
  ASSERT_EQ(view->tensors.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const TensorView& t = view->tensors[i];
    EXPECT_EQ(t.name, want[i].name);
    EXPECT_EQ(t.dtype, want[i].dtype);
    EXPECT_EQ(t.shape, want[i].shape);
    ASSERT_EQ(t.nbytes, want[i].data.size());
    EXPECT_EQ(std::memcmp(t.data, want[i].data.data(), t.nbytes), 0) << t.name;
    EXPECT_EQ((t.data - bytes.data()) % kTensorAlign, 0u) << t.name;
    EXPECT_EQ(view->Find(t.name), &t);
  }
  EXPECT_EQ(view->Find("nope"), nullptr);

  // The content hash is SHA-256 of the file with the hash bytes zeroed, computed independently.
  std::vector<uint8_t> zeroed = bytes;
  std::memset(zeroed.data() + offsetof(FileHeader, content_hash), 0, 32);
  EXPECT_EQ(view->HashHex(), HexLower(Sha256::Hash(zeroed)));
  EXPECT_TRUE(VerifyContentHash(bytes).ok());
  EXPECT_EQ(HeaderOf(bytes).file_bytes, bytes.size());
}

TEST(ModelFileTest, DeterministicAndNoTempFileLeft) {
  const std::string dir = testing::MakeTempDir("mf_det");
  const std::vector<uint8_t> blob = {9};
  ASSERT_TRUE(WriteModelFile(dir + "/a.scm", SmallConfig(), "x", blob, SmallTensors()).ok());
  ASSERT_TRUE(WriteModelFile(dir + "/b.scm", SmallConfig(), "x", blob, SmallTensors()).ok());
  EXPECT_EQ(*ReadFile(dir + "/a.scm"), *ReadFile(dir + "/b.scm"));
  EXPECT_EQ(TempFiles(dir), 0);
}

TEST(ModelFileTest, WriterRejectsBadInput) {
  const std::string dir = testing::MakeTempDir("mf_bad_write");
  auto t = SmallTensors();
  t.push_back(t[0]);  // duplicate name
  EXPECT_FALSE(WriteModelFile(dir + "/a.scm", SmallConfig(), "x", {}, t).ok());
  t = SmallTensors();
  t[1].shape = {5, 6};  // I8P needs k % 4 == 0
  EXPECT_FALSE(WriteModelFile(dir + "/a.scm", SmallConfig(), "x", {}, t).ok());
  t = SmallTensors();
  t[0].data.pop_back();  // wrong size
  EXPECT_FALSE(WriteModelFile(dir + "/a.scm", SmallConfig(), "x", {}, t).ok());
  t = SmallTensors();
  t[0].name = std::string(80, 'n');  // name too long
  EXPECT_FALSE(WriteModelFile(dir + "/a.scm", SmallConfig(), "x", {}, t).ok());
  ModelConfig c = SmallConfig();
  c.n_head = 3;
  EXPECT_FALSE(WriteModelFile(dir + "/a.scm", c, "x", {}, SmallTensors()).ok());
  EXPECT_FALSE(std::filesystem::exists(dir + "/a.scm"));
  EXPECT_EQ(TempFiles(dir), 0);

  // Finish() before every tensor was appended fails and leaves nothing behind.
  {
    std::vector<ModelFileWriter::Spec> specs = {{"a", DType::kF32, {2}}, {"b", DType::kF32, {2}}};
    auto w = ModelFileWriter::Create(dir + "/p.scm", SmallConfig(), "x", {}, specs);
    ASSERT_TRUE(w.ok()) << w.status();
    std::vector<uint8_t> eight(8);
    EXPECT_TRUE((*w)->Append(eight).ok());
    EXPECT_FALSE((*w)->Finish().ok());
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/p.scm"));
  EXPECT_EQ(TempFiles(dir), 0);
}

TEST(ModelFileTest, LongModelNameIsTruncated) {
  const std::string dir = testing::MakeTempDir("mf_name");
  ASSERT_TRUE(
      WriteModelFile(dir + "/a.scm", SmallConfig(), std::string(100, 'z'), {}, SmallTensors())
          .ok());
  auto bytes = ToBytes(*ReadFile(dir + "/a.scm"));
  auto view = ParseModelFile(bytes);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->model_name, std::string(63, 'z'));
}

TEST(ModelFileTest, WrongMagicAndVersion) {
  std::vector<uint8_t> b = WriteSmall("mf_magic");
  std::vector<uint8_t> m = b;
  m[0] = 'X';
  auto r = ParseModelFile(m);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "wrong magic: not a selfcond model file");
  FileHeader h = HeaderOf(b);
  h.version = 7;
  PutHeader(&b, h);
  r = ParseModelFile(b);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "unsupported model file version 7 (this build reads 1 and 2)");
}

TEST(ModelFileTest, EveryTruncationIsAnError) {
  const std::vector<uint8_t> b = WriteSmall("mf_trunc");
  for (size_t n = 0; n < b.size(); ++n) {
    // Exact-size heap copy so ASan sees any read past the end.
    std::vector<uint8_t> cut(b.begin(), b.begin() + n);
    auto r = ParseModelFile(cut);
    ASSERT_FALSE(r.ok()) << "length " << n;
    if (n >= sizeof(FileHeader)) {
      EXPECT_EQ(r.status().message(), "truncated: header says " + std::to_string(b.size()) +
                                          " bytes, file has " + std::to_string(n));
    }
    EXPECT_FALSE(VerifyContentHash(cut).ok());
  }
  std::vector<uint8_t> longer = b;
  longer.push_back(0);
  EXPECT_FALSE(ParseModelFile(longer).ok());
}

TEST(ModelFileTest, CorruptedIndexIsAnError) {
  const std::vector<uint8_t> good = WriteSmall("mf_index");
  ASSERT_TRUE(ParseModelFile(good).ok());
  struct Case {
    const char* what;
    std::function<void(TensorEntry*)> edit;
    const char* expect;  // substring of the error
  };
  const std::vector<Case> cases = {
      {"offset past end", [](TensorEntry* e) { e->offset = 1u << 30; }, "past end of file"},
      {"offset overflow", [](TensorEntry* e) { e->offset = ~uint64_t{0} - 63; }, "past end"},
      {"unaligned", [](TensorEntry* e) { e->offset += 4; }, "aligned"},
      {"nbytes", [](TensorEntry* e) { e->nbytes += 4; }, "nbytes"},
      {"dtype", [](TensorEntry* e) { e->dtype = 9; }, "unknown dtype"},
      {"ndim", [](TensorEntry* e) { e->ndim = 3; }, "ndim"},
      {"zero dim", [](TensorEntry* e) { e->shape[0] = 0; }, "dimension"},
      {"name without NUL", [](TensorEntry* e) { std::memset(e->name, 'a', sizeof(e->name)); },
       "NUL"},
      {"empty name", [](TensorEntry* e) { e->name[0] = 0; }, "empty name"},
  };
  for (const Case& c : cases) {
    std::vector<uint8_t> b = good;
    TensorEntry e = EntryOf(b, 0);
    c.edit(&e);
    PutEntry(&b, 0, e);
    auto r = ParseModelFile(b);
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos)
        << c.what << ": " << r.status();
  }
  // Overlap: tensor 4 pointed at tensor 0's data.
  {
    std::vector<uint8_t> b = good;
    TensorEntry e4 = EntryOf(b, 4);
    e4.offset = EntryOf(b, 0).offset;
    PutEntry(&b, 4, e4);
    auto r = ParseModelFile(b);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("overlap"), std::string::npos) << r.status();
  }
  // Duplicate name.
  {
    std::vector<uint8_t> b = good;
    TensorEntry e1 = EntryOf(b, 1);
    std::memcpy(e1.name, EntryOf(b, 0).name, sizeof(e1.name));
    PutEntry(&b, 1, e1);
    auto r = ParseModelFile(b);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("duplicate"), std::string::npos) << r.status();
  }
  // Header sections.
  {
    std::vector<uint8_t> b = good;
    FileHeader h = HeaderOf(b);
    h.n_tensors = 1000;
    PutHeader(&b, h);
    EXPECT_FALSE(ParseModelFile(b).ok());
    h = HeaderOf(good);
    h.tokenizer_bytes = 1u << 20;
    PutHeader(&b, h);
    EXPECT_FALSE(ParseModelFile(b).ok());
    h = HeaderOf(good);
    h.tokenizer_offset = 0;  // over the header
    PutHeader(&b, h);
    EXPECT_FALSE(ParseModelFile(b).ok());
    h = HeaderOf(good);
    h.header_bytes = 128;
    PutHeader(&b, h);
    EXPECT_FALSE(ParseModelFile(b).ok());
  }
}

TEST(ModelFileTest, BadConfigIsAnError) {
  const std::vector<uint8_t> good = WriteSmall("mf_config");
  std::vector<std::function<void(HeaderConfig*)>> edits = {
      [](HeaderConfig* c) { c->n_layer = 0; },
      [](HeaderConfig* c) { c->n_head = 3; },
      [](HeaderConfig* c) {
        c->n_embd = 6;
        c->n_head = 2;
      },
      [](HeaderConfig* c) { c->vocab_size = (1u << 20) + 1; },
      [](HeaderConfig* c) { c->n_inner = 30; },
      [](HeaderConfig* c) { c->eos_token_id = 5; },
      [](HeaderConfig* c) { c->layer_norm_eps = std::numeric_limits<float>::quiet_NaN(); },
      [](HeaderConfig* c) { c->layer_norm_eps = 0; },
      [](HeaderConfig* c) { c->tied_lm_head = 2; },
  };
  for (size_t i = 0; i < edits.size(); ++i) {
    std::vector<uint8_t> b = good;
    FileHeader h = HeaderOf(b);
    edits[i](&h.config);
    PutHeader(&b, h);
    EXPECT_FALSE(ParseModelFile(b).ok()) << "edit " << i;
  }
}

// Every single-bit flip anywhere in the file is caught: by the parser, or else by the hash.
TEST(ModelFileTest, FlippedBytesNeverCrashAndAreDetected) {
  const std::vector<uint8_t> good = WriteSmall("mf_flip");
  for (size_t i = 0; i < good.size(); ++i) {
    for (int bit : {0, 7}) {
      std::vector<uint8_t> b = good;
      b[i] ^= static_cast<uint8_t>(1 << bit);
      auto r = ParseModelFile(b);
      if (r.ok()) {
        for (const TensorView& t : r->tensors) (void)CheckFinite(t);  // touch every tensor
      }
      EXPECT_TRUE(!r.ok() || !VerifyContentHash(b).ok()) << "byte " << i << " bit " << bit;
    }
  }
}

TEST(ModelFileTest, CheckFinite) {
  std::vector<float> v = {1, 2, std::numeric_limits<float>::infinity()};
  TensorView t{"h.0.ln_1.weight", DType::kF32, {3}, reinterpret_cast<const uint8_t*>(v.data()), 12};
  absl::Status s = CheckFinite(t);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("h.0.ln_1.weight"), std::string::npos);
  v[2] = std::nanf("");
  EXPECT_FALSE(CheckFinite(t).ok());
  v[2] = 3;
  EXPECT_TRUE(CheckFinite(t).ok());
}

TEST(ModelFileTest, TensorNBytes) {
  EXPECT_EQ(*TensorNBytes(DType::kF32, std::vector<uint32_t>{3, 5}), 60u);
  EXPECT_EQ(*TensorNBytes(DType::kI8Packed, std::vector<uint32_t>{17, 8}), 32u * 8);
  EXPECT_FALSE(TensorNBytes(DType::kI8Packed, std::vector<uint32_t>{16}).ok());
  EXPECT_FALSE(TensorNBytes(DType::kF32, std::vector<uint32_t>{}).ok());
  EXPECT_EQ(*TensorNBytes(DType::kBF16, std::vector<uint32_t>{3, 5}), 30u);
  EXPECT_EQ(*TensorNBytes(DType::kI4, std::vector<uint32_t>{3, 6}), 9u);
}

}  // namespace
}  // namespace selfcond
