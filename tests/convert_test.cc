// safetensors reader, Hugging Face -> selfcond converter and synthetic checkpoints: round trips
// in every dtype / key style / sharding / LM-head variant, the demo model, and malformed inputs
// (each must be an error naming the problem, never a crash; run under ASan/UBSan too).
#include "tools/convert.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "formats/model_file.h"
#include "formats/safetensors.h"
#include "formats/tokenizer.h"
#include "kernels/kernels.h"
#include "test_util.h"
#include "tools/synthetic_checkpoint.h"
#include "util/file_util.h"
#include "util/json.h"

namespace selfcond {
namespace {

namespace fs = std::filesystem;
using LmHead = SyntheticCheckpointOptions::LmHead;

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- half / bfloat16 -----------------------------------------------------------

TEST(HalfTest, KnownValues) {
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x03FF), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(Bits(HalfToFloat(0x8000)), 0x80000000u);         // -0
  EXPECT_EQ(HalfToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(HalfToFloat(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7C01)));  // signalling NaN stays NaN
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
}

TEST(HalfTest, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f)))) << h;
    } else {
      ASSERT_EQ(FloatToHalf(f), h) << h;
    }
  }
}

TEST(HalfTest, RoundsToNearestEven) {
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie -> even (down)
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie -> even (up)
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3C01);
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);  // overflow to inf
  EXPECT_EQ(FloatToHalf(1e10f), 0x7C00);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and 2^-24 -> 0
  EXPECT_EQ(FloatToHalf(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 subnormal ulps -> even (2)
  EXPECT_EQ(FloatToHalf(-std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(FloatToHalf(std::nanf("")) & 0x7C00, 0x7C00);
  EXPECT_NE(FloatToHalf(std::nanf("")) & 0x03FF, 0);
}

TEST(BF16Test, Values) {
  EXPECT_EQ(BF16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(BF16ToFloat(0xC0A0), -5.0f);
  EXPECT_EQ(BF16ToFloat(0x7F80), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(BF16ToFloat(0x7FC0)));
  EXPECT_EQ(FloatToBF16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBF16(FromBits(0x3F808000)), 0x3F80);  // tie -> even
  EXPECT_EQ(FloatToBF16(FromBits(0x3F818000)), 0x3F82);  // tie -> even (up)
  EXPECT_EQ(FloatToBF16(FromBits(0x3F808001)), 0x3F81);
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(std::nanf("")))));
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = BF16ToFloat(static_cast<uint16_t>(b));
    if (!std::isnan(f)) {
      ASSERT_EQ(FloatToBF16(f), b);
    }
  }
}

// ---- safetensors ---------------------------------------------------------------

std::vector<uint8_t> MakeSt(const std::string& header, const std::vector<uint8_t>& data) {
  // Reserved up front: GCC 12 warns (-Warray-bounds, a false positive) on insert() growing an
  // 8-byte vector.
  std::vector<uint8_t> b;
  b.reserve(8 + header.size() + data.size());
  for (int i = 0; i < 8; ++i) {
    b.push_back(static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i)));
  }
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::vector<uint8_t> GoodStData() {
  std::vector<uint8_t> d(8 + 8);
  const float f[2] = {1.5f, -2.0f};
  std::memcpy(d.data(), f, 8);
  const uint16_t h[2] = {0x3C00, 0x0001};  // F16 1.0, smallest subnormal
  std::memcpy(d.data() + 8, h, 4);
  const uint16_t b[2] = {0x3F80, 0xC0A0};  // BF16 1.0, -5.0
  std::memcpy(d.data() + 12, b, 4);
  return d;
}
const char kGoodHeader[] =
    R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},)"
    R"("a":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},)"
    R"("c":{"dtype":"BF16","shape":[2],"data_offsets":[12,16]}})";

TEST(SafetensorsTest, ParsesAndConverts) {
  const auto bytes = MakeSt(kGoodHeader, GoodStData());
  auto f = SafetensorsFile::FromBytes(bytes, "mem");
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 3u);
  EXPECT_EQ((*f)->tensors()[0].name, "a");  // data-offset order
  const StTensor* a = (*f)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(*ToFloat(*a), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(*ToFloat(*(*f)->Find("b")), (std::vector<float>{1.0f, std::ldexp(1.0f, -24)}));
  EXPECT_EQ(*ToFloat(*(*f)->Find("c")), (std::vector<float>{1.0f, -5.0f}));
  EXPECT_EQ((*f)->Find("__metadata__"), nullptr);
  EXPECT_EQ((*f)->Find("zz"), nullptr);
}

void ExpectStError(const std::string& header, const std::vector<uint8_t>& data,
                   const std::string& want) {
  auto bytes = MakeSt(header, data);
  auto f = SafetensorsFile::FromBytes(bytes, "mem.safetensors");
  ASSERT_FALSE(f.ok()) << header;
  EXPECT_NE(f.status().message().find(want), std::string::npos) << f.status();
  EXPECT_NE(f.status().message().find("mem.safetensors"), std::string::npos) << f.status();
}

TEST(SafetensorsTest, MalformedHeaders) {
  const auto d = GoodStData();
  ExpectStError(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,800]}})", d, "past end");
  ExpectStError(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", d, "needs 12");
  ExpectStError(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", d,
                "unknown dtype 'Q4'");
  ExpectStError(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                d, "overlap");
  ExpectStError(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                d, "a");
  ExpectStError(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", d, "shape");
  ExpectStError(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", d, "data_offsets");
  ExpectStError(R"({"a":{"dtype":"F32","shape":[2]}})", d, "data_offsets");
  ExpectStError(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", d, "dtype");
  ExpectStError(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", d,
                "too large");
  ExpectStError(R"({"a":)", d, "JSON");
  ExpectStError(R"([1,2])", d, "object");
}

TEST(SafetensorsTest, TruncationsAndHeaderLength) {
  const auto good = MakeSt(kGoodHeader, GoodStData());
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + n);
    EXPECT_FALSE(SafetensorsFile::FromBytes(cut, "cut").ok()) << n;
  }
  std::vector<uint8_t> b = good;
  b[7] = 0x7f;  // header length ~2^63
  auto f = SafetensorsFile::FromBytes(b, "big");
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("header length"), std::string::npos) << f.status();
  EXPECT_NE(f.status().message().find("past end of file"), std::string::npos) << f.status();
}

TEST(SafetensorsTest, UnsupportedDtypeConversionIsAnError) {
  std::vector<uint8_t> d(8, 0);
  auto bytes = MakeSt(R"({"i":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", d);
  auto f = SafetensorsFile::FromBytes(bytes, "mem");
  ASSERT_TRUE(f.ok()) << f.status();
  auto v = ToFloat(*(*f)->Find("i"));
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("'i'"), std::string::npos);
}

// ---- synthetic checkpoints -> converter round trip ---------------------------------

float RoundTo(StDType t, float v) {
  if (t == StDType::kF16) return HalfToFloat(FloatToHalf(v));
  if (t == StDType::kBF16) return BF16ToFloat(FloatToBF16(v));
  return v;
}

std::vector<float> FloatsOf(const TensorView& t) {
  std::vector<float> v(t.nbytes / 4);
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}

struct Loaded {
  std::vector<uint8_t> bytes;
  ModelFileView view;
};

Loaded Load(const std::string& path) {
  Loaded l;
  auto s = ReadFile(path);
  EXPECT_TRUE(s.ok()) << s.status();
  l.bytes.assign(s->begin(), s->end());
  auto v = ParseModelFile(l.bytes);
  EXPECT_TRUE(v.ok()) << v.status();
  if (v.ok()) l.view = *v;
  return l;
}

// Checks an int8 packed matrix against the expected float rows src(n, k): each element within
// half a quantization step, scales consistent with the row max, padding zero, row sums exact.
void ExpectQuantized(const ModelFileView& v, const std::string& base, int n, int k,
                     const std::function<float(int, int)>& src) {
  SCOPED_TRACE(base);
  const TensorView* q = v.Find(base + ".q");
  const TensorView* sc = v.Find(base + ".scale");
  const TensorView* rs = v.Find(base + ".row_sum");
  ASSERT_TRUE(q && sc && rs);
  ASSERT_EQ(q->dtype, DType::kI8Packed);
  ASSERT_EQ(q->shape, (std::vector<uint32_t>{static_cast<uint32_t>(n), static_cast<uint32_t>(k)}));
  const int n_pad = kernels::PaddedRows(n);
  ASSERT_EQ(sc->shape, std::vector<uint32_t>{static_cast<uint32_t>(n_pad)});
  ASSERT_EQ(rs->dtype, DType::kI32);
  const std::vector<float> scale = FloatsOf(*sc);
  std::vector<int32_t> row_sum(n_pad);
  std::memcpy(row_sum.data(), rs->data, rs->nbytes);
  const int8_t* qd = reinterpret_cast<const int8_t*>(q->data);
  int bad = 0;
  for (int r = 0; r < n_pad; ++r) {
    int32_t sum = 0;
    float amax = 0;
    for (int c = 0; c < k; ++c) {
      const int8_t qv = qd[kernels::PackedIndex(r, c, k)];
      sum += qv;
      if (r >= n) {
        if (qv != 0) ++bad;
        continue;
      }
      const float want = src(r, c);
      amax = std::max(amax, std::fabs(want));
      const float got = qv * scale[r];
      if (qv < -127 || std::fabs(got - want) > 0.5f * scale[r] * 1.001f + 1e-12f) ++bad;
    }
    if (r >= n) {
      EXPECT_EQ(scale[r], 0.0f);
    } else {
      EXPECT_NEAR(scale[r], amax / 127.0f, amax * 1e-5f) << "row " << r;
    }
    EXPECT_EQ(row_sum[r], sum) << "row " << r;
  }
  EXPECT_EQ(bad, 0);
}

void ExpectF32(const ModelFileView& v, const std::string& name, std::vector<uint32_t> shape,
               const std::function<float(size_t)>& want) {
  SCOPED_TRACE(name);
  const TensorView* t = v.Find(name);
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->dtype, DType::kF32);
  ASSERT_EQ(t->shape, shape);
  const std::vector<float> got = FloatsOf(*t);
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) bad += got[i] != want(i);
  EXPECT_EQ(bad, 0);
}

// Verifies a converted synthetic checkpoint against SyntheticValue (independent of the reader).
void ExpectMatchesSynthetic(const ModelFileView& v, const SyntheticCheckpointOptions& o,
                            bool keep_float) {
  const uint32_t d = o.n_embd, dff = o.n_inner ? o.n_inner : 4 * d, V = o.vocab_size;
  const StDType dt = o.dtype;
  const uint64_t seed = o.seed;
  auto val = [&](const std::string& name, uint64_t i) {
    return RoundTo(dt, SyntheticValue(name, seed, i));
  };
  EXPECT_EQ(v.config.n_layer, o.n_layer);
  EXPECT_EQ(v.config.n_embd, d);
  EXPECT_EQ(v.config.n_head, o.n_head);
  EXPECT_EQ(v.config.n_ctx, o.n_ctx);
  EXPECT_EQ(v.config.vocab_size, V);
  EXPECT_EQ(v.config.n_inner, dff);
  EXPECT_EQ(v.config.eos_token_id, V - 1);
  EXPECT_FLOAT_EQ(v.config.layer_norm_eps, 1e-5f);
  const bool untied = o.lm_head == LmHead::kUntied;
  EXPECT_EQ(v.config.tied_lm_head, untied ? 0u : 1u);

  size_t expected = 3 + (keep_float ? 1 : 0) + 1 + 2;  // wte (+float), wpe, ln_f
  if (untied) expected += 3 + (keep_float ? 1 : 0);
  expected += o.n_layer * (4 + 4 * (4 + (keep_float ? 1 : 0)));
  EXPECT_EQ(v.tensors.size(), expected);

  // Embeddings: (rows, d) as stored.
  std::vector<std::string> embeddings = {"wte"};
  if (untied) embeddings.push_back("lm_head");
  EXPECT_EQ(v.Find("lm_head.q") != nullptr, untied);
  for (const std::string& e : embeddings) {
    const std::string src = e + ".weight";
    ExpectQuantized(v, e, V, d, [&](int r, int c) { return val(src, uint64_t(r) * d + c); });
    if (keep_float) {
      ExpectF32(v, e + ".weight", {V, d}, [&](size_t i) { return val(src, i); });
    } else {
      EXPECT_EQ(v.Find(e + ".weight"), nullptr);
    }
  }
  ExpectF32(v, "wpe", {o.n_ctx, d}, [&](size_t i) { return val("wpe.weight", i); });
  for (uint32_t l = 0; l < o.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    for (const char* ln : {"ln_1", "ln_2"}) {
      for (const char* p : {".weight", ".bias"}) {
        const std::string name = h + ln + p;
        ExpectF32(v, name, {d}, [&](size_t i) { return val(name, i); });
      }
    }
    struct Lin {
      std::string name;
      uint32_t k, n;
    };
    for (const Lin& lin : {Lin{h + "attn.c_attn", d, 3 * d}, Lin{h + "attn.c_proj", d, d},
                           Lin{h + "mlp.c_fc", d, dff}, Lin{h + "mlp.c_proj", dff, d}}) {
      const std::string w = lin.name + ".weight";
      // HF Conv1D [k, n]: element (r, c) of the (n, k) matrix is source [c][r].
      ExpectQuantized(v, lin.name, lin.n, lin.k,
                      [&](int r, int c) { return val(w, uint64_t(c) * lin.n + r); });
      if (keep_float) {
        ExpectF32(v, w, {lin.n, lin.k},
                  [&](size_t i) { return val(w, uint64_t(i % lin.k) * lin.n + i / lin.k); });
      }
      const std::string b = lin.name + ".bias";
      ExpectF32(v, b, {lin.n}, [&](size_t i) { return val(b, i); });
    }
  }
  for (const char* p : {"ln_f.weight", "ln_f.bias"}) {
    ExpectF32(v, p, {d}, [&](size_t i) { return val(p, i); });
  }
  auto tok = Tokenizer::Deserialize(v.tokenizer_blob);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), static_cast<int32_t>(V));
  EXPECT_EQ((*tok)->eos_id(), static_cast<int32_t>(V - 1));
}

SyntheticCheckpointOptions TinyOptions() {
  SyntheticCheckpointOptions o;
  o.n_layer = 2;
  o.n_embd = 32;
  o.n_head = 4;
  o.n_ctx = 16;
  o.vocab_size = 300;
  o.n_inner = 0;
  o.seed = 7;
  return o;
}

TEST(ConvertTest, RoundTripEveryVariant) {
  const std::string root = testing::MakeTempDir("convert_variants");
  int variant = 0;
  for (StDType dt : {StDType::kF32, StDType::kF16, StDType::kBF16}) {
    for (bool prefix : {true, false}) {
      for (int shards : {1, 3}) {
        for (LmHead lm : {LmHead::kTied, LmHead::kTiedExplicitCopy, LmHead::kUntied}) {
          SyntheticCheckpointOptions o = TinyOptions();
          o.dtype = dt;
          o.prefix = prefix;
          o.n_shards = shards;
          o.lm_head = lm;
          o.attn_bias_buffers = (variant % 2) == 1;
          o.n_inner = (variant % 3) == 2 ? 48 : 0;
          const bool keep_float = (variant % 4) != 3;
          SCOPED_TRACE(::testing::Message()
                       << "variant " << variant << " dtype " << StDTypeName(dt) << " prefix "
                       << prefix << " shards " << shards << " lm_head " << static_cast<int>(lm)
                       << " keep_float " << keep_float);
          const std::string dir = root + "/ckpt" + std::to_string(variant);
          ASSERT_TRUE(WriteSyntheticCheckpoint(dir, o).ok());
          EXPECT_EQ(fs::exists(dir + "/model.safetensors.index.json"), shards > 1);
          const std::string out = root + "/m" + std::to_string(variant) + ".scm";
          std::vector<float> fractions;
          ConvertOptions co;
          co.keep_float = keep_float;
          co.model_name = "tiny";
          absl::Status s =
              ConvertCheckpoint(dir, out, co, [&](float f) { fractions.push_back(f); });
          ASSERT_TRUE(s.ok()) << s;
          ASSERT_FALSE(fractions.empty());
          for (size_t i = 1; i < fractions.size(); ++i) EXPECT_GE(fractions[i], fractions[i - 1]);
          EXPECT_FLOAT_EQ(fractions.back(), 1.0f);
          Loaded l = Load(out);
          EXPECT_TRUE(VerifyContentHash(l.bytes).ok());
          EXPECT_EQ(l.view.model_name, "tiny");
          ExpectMatchesSynthetic(l.view, o, keep_float);
          ++variant;
        }
      }
    }
  }
}

// --weights int4 writes blockwise scales (BF16, (n, k / 32)) where k is a multiple of 32 and
// falls back to per-channel F32 scales where it is not (here mlp.c_proj, k = n_inner = 48); the
// nibbles dequantize to within a step of the float weights either way.
TEST(ConvertTest, Int4IsBlockwiseWhereTheWidthAllows) {
  const std::string root = testing::MakeTempDir("convert_int4");
  SyntheticCheckpointOptions o = TinyOptions();
  o.n_inner = 48;
  ASSERT_TRUE(WriteSyntheticCheckpoint(root + "/ckpt", o).ok());
  ConvertOptions co;
  co.weights = WeightBits::kInt4;
  co.keep_float = true;
  ASSERT_TRUE(ConvertCheckpoint(root + "/ckpt", root + "/m4.scm", co, nullptr).ok());
  Loaded l = Load(root + "/m4.scm");
  const TensorView* fc_s = l.view.Find("h.0.mlp.c_fc.scale");
  ASSERT_NE(fc_s, nullptr);
  EXPECT_EQ(fc_s->dtype, DType::kBF16);
  EXPECT_EQ(fc_s->shape, (std::vector<uint32_t>{48, 1}));
  const TensorView* proj_s = l.view.Find("h.0.mlp.c_proj.scale");
  ASSERT_NE(proj_s, nullptr);
  EXPECT_EQ(proj_s->dtype, DType::kF32);
  EXPECT_EQ(proj_s->shape, (std::vector<uint32_t>{32}));
  // c_fc (48, 32): every weight within a (bf16-rounded) step of its float copy.
  const TensorView* q = l.view.Find("h.0.mlp.c_fc.q");
  const TensorView* w = l.view.Find("h.0.mlp.c_fc.weight");
  ASSERT_NE(q, nullptr);
  ASSERT_NE(w, nullptr);
  const auto* wf = reinterpret_cast<const float*>(w->data);
  const auto* sb = reinterpret_cast<const uint16_t*>(fc_s->data);
  for (int r = 0; r < 48; ++r) {
    const float step = BF16ToFloat(sb[r]);
    EXPECT_GT(step, 0);
    for (int c = 0; c < 32; ++c) {
      const uint8_t byte = q->data[r * 16 + c / 2];
      const int nib = c % 2 == 0 ? (byte & 15) : (byte >> 4);
      // A clipped maximum is off by up to a step (+ the scale's bfloat16 rounding).
      EXPECT_NEAR((nib - 8) * step, wf[r * 32 + c], 1.05 * step) << r << "," << c;
    }
  }
}

TEST(ConvertTest, DeterministicAndShardingInvariant) {
  const std::string root = testing::MakeTempDir("convert_det");
  SyntheticCheckpointOptions o = TinyOptions();
  o.dtype = StDType::kF16;
  ASSERT_TRUE(WriteSyntheticCheckpoint(root + "/a", o).ok());
  o.n_shards = 2;
  o.prefix = false;
  ASSERT_TRUE(WriteSyntheticCheckpoint(root + "/b", o).ok());
  ConvertOptions co;
  co.model_name = "same";
  ASSERT_TRUE(ConvertCheckpoint(root + "/a", root + "/1.scm", co, nullptr).ok());
  ASSERT_TRUE(ConvertCheckpoint(root + "/a", root + "/2.scm", co, nullptr).ok());
  ASSERT_TRUE(ConvertCheckpoint(root + "/b", root + "/3.scm", co, nullptr).ok());
  const std::string a = *ReadFile(root + "/1.scm");
  EXPECT_EQ(a, *ReadFile(root + "/2.scm"));
  EXPECT_EQ(a, *ReadFile(root + "/3.scm"));  // same weights, different packaging
  // Default model name: the directory's.
  ASSERT_TRUE(ConvertCheckpoint(root + "/a/", root + "/4.scm", {}, nullptr).ok());
  EXPECT_EQ(Load(root + "/4.scm").view.model_name, "a");
}

TEST(ConvertTest, DemoModelWithFloatCopiesIsDeterministic) {
  const std::string dir = testing::MiniModelDir();
  if (!fs::exists(dir + "/model.safetensors")) GTEST_SKIP() << "no demo model at " << dir;
  const std::string root = testing::MakeTempDir("convert_demo");
  ConvertOptions co;
  co.keep_float = true;
  // Two fresh conversions (not testing::ConvertedMiniModel's disk cache, which may predate the
  // converter being tested).
  ASSERT_TRUE(ConvertCheckpoint(dir, root + "/a.scm", co, nullptr).ok());
  ASSERT_TRUE(ConvertCheckpoint(dir, root + "/b.scm", co, nullptr).ok());
  Loaded a = Load(root + "/a.scm");
  Loaded b = Load(root + "/b.scm");
  EXPECT_EQ(a.view.HashHex(), b.view.HashHex());
  EXPECT_EQ(a.bytes, b.bytes);
  EXPECT_TRUE(VerifyContentHash(a.bytes).ok());
  const ModelFileView& v = a.view;
  EXPECT_EQ(v.model_name, "selfcond-mini-30m");
  EXPECT_EQ(v.config.n_layer, 6u);
  EXPECT_EQ(v.config.n_embd, 384u);
  EXPECT_EQ(v.config.n_head, 6u);
  EXPECT_EQ(v.config.n_ctx, 256u);
  EXPECT_EQ(v.config.vocab_size, 50257u);
  EXPECT_EQ(v.config.n_inner, 1536u);
  EXPECT_EQ(v.config.eos_token_id, 50256u);
  EXPECT_EQ(v.config.tied_lm_head, 1u);
  EXPECT_EQ(v.tensors.size(), 4u + 1 + 2 + 6 * (4 + 4 * 5));
  EXPECT_EQ(v.Find("wte.q")->shape, (std::vector<uint32_t>{50257, 384}));
  EXPECT_EQ(v.Find("wte.scale")->shape, (std::vector<uint32_t>{50272}));
  EXPECT_EQ(v.Find("wpe")->shape, (std::vector<uint32_t>{256, 384}));
  EXPECT_EQ(v.Find("h.5.attn.c_attn.q")->shape, (std::vector<uint32_t>{1152, 384}));
  EXPECT_EQ(v.Find("h.5.mlp.c_fc.q")->shape, (std::vector<uint32_t>{1536, 384}));
  EXPECT_EQ(v.Find("h.5.mlp.c_proj.q")->shape, (std::vector<uint32_t>{384, 1536}));
  EXPECT_EQ(v.Find("h.5.mlp.c_proj.weight")->shape, (std::vector<uint32_t>{384, 1536}));
  EXPECT_EQ(v.Find("lm_head.q"), nullptr);
  for (const TensorView& t : v.tensors) EXPECT_TRUE(CheckFinite(t).ok()) << t.name;

  // Float copies are the fp16 source values exactly (checked on one matrix against the raw file,
  // transposed); the int8 copy is within half a step of them.
  auto st = SafetensorsFile::Open(dir + "/model.safetensors");
  ASSERT_TRUE(st.ok()) << st.status();
  const StTensor* src = (*st)->Find("transformer.h.2.mlp.c_fc.weight");  // [384, 1536]
  ASSERT_NE(src, nullptr);
  ASSERT_EQ(src->dtype, StDType::kF16);
  auto raw = [&](int r, int c) {  // (n, k) element = source [c][r], fp16 bits decoded here
    uint16_t h;
    std::memcpy(&h, src->data.data() + 2 * (size_t(c) * 1536 + r), 2);
    return HalfToFloat(h);
  };
  ExpectF32(v, "h.2.mlp.c_fc.weight", {1536, 384},
            [&](size_t i) { return raw(int(i / 384), int(i % 384)); });
  ExpectQuantized(v, "h.2.mlp.c_fc", 1536, 384, raw);

  auto tok = Tokenizer::Deserialize(v.tokenizer_blob);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 50257);
  EXPECT_EQ((*tok)->eos_id(), 50256);
}

// The config.json files of the GPT-2 family as published (fields that matter kept verbatim;
// these older configs have no n_inner and no tie_word_embeddings key).
TEST(ConvertConfigTest, GPT2FamilyConfigs) {
  struct Family {
    const char* name;
    int n_layer, n_embd, n_head;
  };
  for (const Family& f : {Family{"gpt2", 12, 768, 12}, Family{"gpt2-medium", 24, 1024, 16},
                          Family{"gpt2-large", 36, 1280, 20}, Family{"gpt2-xl", 48, 1600, 25},
                          Family{"distilgpt2", 6, 768, 12}}) {
    SCOPED_TRACE(f.name);
    const std::string text = absl::StrCat(
        R"({"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],)",
        R"( "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,)",
        R"( "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",)",
        R"( "n_ctx": 1024, "n_embd": )", f.n_embd, R"(, "n_head": )", f.n_head, R"(, "n_layer": )",
        f.n_layer, R"(, "n_positions": 1024, "resid_pdrop": 0.1,)",
        R"( "summary_activation": null, "summary_first_dropout": 0.1, "summary_proj_to_labels": true,)",
        R"( "summary_type": "cls_index", "summary_use_proj": true,)",
        R"( "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},)",
        R"( "vocab_size": 50257})");
    auto j = json::Parse(text);
    ASSERT_TRUE(j.ok()) << j.status();
    auto c = Gpt2ConfigFromHF(*j);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->n_layer, static_cast<uint32_t>(f.n_layer));
    EXPECT_EQ(c->n_embd, static_cast<uint32_t>(f.n_embd));
    EXPECT_EQ(c->n_head, static_cast<uint32_t>(f.n_head));
    EXPECT_EQ(c->n_inner, static_cast<uint32_t>(4 * f.n_embd));
    EXPECT_EQ(c->n_ctx, 1024u);
    EXPECT_EQ(c->vocab_size, 50257u);
    EXPECT_EQ(c->eos_token_id, 50256u);
    EXPECT_EQ(c->tied_lm_head, 1u);
    EXPECT_FLOAT_EQ(c->layer_norm_eps, 1e-5f);
  }
  // Defaults when optional keys are absent; gelu_pytorch_tanh accepted.
  auto j =
      json::Parse(R"({"n_layer": 1, "n_embd": 8, "n_head": 2, "n_ctx": 4, "vocab_size": 60000,)"
                  R"( "activation_function": "gelu_pytorch_tanh", "n_inner": 12})");
  auto c = Gpt2ConfigFromHF(*j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->n_ctx, 4u);
  EXPECT_EQ(c->n_inner, 12u);
  EXPECT_EQ(c->eos_token_id, 50256u);
  for (const char* bad :
       {R"({"n_layer": 1, "n_embd": 8, "n_head": 2, "n_ctx": 4})",  // no vocab
        R"({"n_layer": 1, "n_embd": 10, "n_head": 2, "n_ctx": 4, "vocab_size": 9})",
        R"({"n_layer": 1, "n_embd": 8, "n_head": 2, "n_ctx": 4, "vocab_size": 9,)"
        R"( "activation_function": "gelu"})",
        R"({"n_layer": 1, "n_embd": 8, "n_head": 2, "n_ctx": 4, "vocab_size": 9,)"
        R"( "add_cross_attention": true})",
        R"({"n_layer": 1e300, "n_embd": 8, "n_head": 2, "n_ctx": 4, "vocab_size": 9})", R"([])"}) {
    auto bj = json::Parse(bad);
    ASSERT_TRUE(bj.ok()) << bad;
    EXPECT_FALSE(Gpt2ConfigFromHF(*bj).ok()) << bad;
  }
}

// gpt2-xl's odd head count (25 heads of 64) in miniature: 25 heads of 4.
TEST(ConvertTest, OddHeadCount) {
  const std::string root = testing::MakeTempDir("convert_heads");
  SyntheticCheckpointOptions o = TinyOptions();
  o.n_embd = 100;
  o.n_head = 25;
  o.n_layer = 1;
  ASSERT_TRUE(WriteSyntheticCheckpoint(root + "/c", o).ok());
  ASSERT_TRUE(ConvertCheckpoint(root + "/c", root + "/m.scm", {}, nullptr).ok());
  Loaded l = Load(root + "/m.scm");
  ExpectMatchesSynthetic(l.view, o, /*keep_float=*/false);
}

// ---- malformed checkpoints ---------------------------------------------------------

// Rewrites a safetensors file's header through `edit` (data unchanged).
void EditHeader(const std::string& path,
                const std::function<json::Value(const json::Value&)>& edit) {
  std::string bytes = *ReadFile(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  auto header = json::Parse(bytes.substr(8, n));
  ASSERT_TRUE(header.ok());
  std::string text = edit(*header).Dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<char>(static_cast<uint64_t>(text.size()) >> (8 * i));
  out += text;
  out += bytes.substr(8 + n);
  ASSERT_TRUE(WriteFile(path, out).ok());
}

// A copy of `h` with tensor `name` changed by `f` (or removed when f returns null).
json::Value EditTensor(const json::Value& h, const std::string& name,
                       const std::function<void(json::Value*, bool*)>& f) {
  json::Value out = json::Value::Object();
  for (const auto& [k, v] : h.members()) {
    json::Value copy = v;
    bool keep = true;
    if (k == name) f(&copy, &keep);
    if (keep) out.Set(k, copy);
  }
  return out;
}

class ConvertErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::MakeTempDir("convert_err");
    dir_ = root_ + "/ckpt";
    SyntheticCheckpointOptions o = TinyOptions();
    ASSERT_TRUE(WriteSyntheticCheckpoint(dir_, o).ok());
    st_ = dir_ + "/model.safetensors";
    out_ = root_ + "/out.scm";
  }
  // Converting must fail with a message containing every `want`, and leave no output file.
  void ExpectError(std::initializer_list<std::string> want) {
    absl::Status s = ConvertCheckpoint(dir_, out_, {}, nullptr);
    ASSERT_FALSE(s.ok());
    for (const std::string& w : want) EXPECT_NE(s.message().find(w), std::string::npos) << s;
    EXPECT_FALSE(fs::exists(out_));
    for (const auto& e : fs::directory_iterator(root_)) {  // no temporary file left behind
      EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
    }
  }
  void SetConfig(const std::string& key, json::Value value) {
    auto c = json::Parse(*ReadFile(dir_ + "/config.json"));
    c->Set(key, std::move(value));
    ASSERT_TRUE(WriteFile(dir_ + "/config.json", c->Dump()).ok());
  }
  std::string root_, dir_, st_, out_;
};

TEST_F(ConvertErrorTest, BaselineConverts) {
  EXPECT_TRUE(ConvertCheckpoint(dir_, out_, {}, nullptr).ok());
}

TEST_F(ConvertErrorTest, MissingTensor) {
  EditHeader(st_, [](const json::Value& h) {
    return EditTensor(h, "transformer.h.1.mlp.c_fc.bias",
                      [](json::Value*, bool* keep) { *keep = false; });
  });
  ExpectError({"missing tensor 'h.1.mlp.c_fc.bias'"});
}

TEST_F(ConvertErrorTest, WrongShape) {
  EditHeader(st_, [](const json::Value& h) {
    return EditTensor(h, "transformer.h.0.mlp.c_fc.weight", [](json::Value* t, bool*) {
      t->Set("shape", json::Value::Array({json::Value::Number(128), json::Value::Number(32)}));
    });
  });
  ExpectError({"transformer.h.0.mlp.c_fc.weight", "shape [128, 32]", "[32, 128]"});
}

TEST_F(ConvertErrorTest, UnknownDtype) {
  EditHeader(st_, [](const json::Value& h) {
    return EditTensor(h, "transformer.wpe.weight",
                      [](json::Value* t, bool*) { t->Set("dtype", json::Value::String("F4")); });
  });
  ExpectError({"unknown dtype 'F4'", "transformer.wpe.weight", "model.safetensors"});
}

TEST_F(ConvertErrorTest, UnsupportedDtype) {
  EditHeader(st_, [](const json::Value& h) {
    return EditTensor(h, "transformer.ln_f.bias", [](json::Value* t, bool*) {
      t->Set("dtype", json::Value::String("I32"));  // same element size as F32
    });
  });
  ExpectError({"transformer.ln_f.bias", "I32"});
}

TEST_F(ConvertErrorTest, DataOffsetsPastEnd) {
  EditHeader(st_, [](const json::Value& h) {
    return EditTensor(h, "transformer.ln_f.bias", [](json::Value* t, bool*) {
      t->Set("data_offsets",
             json::Value::Array({json::Value::Number(1e9), json::Value::Number(1e9 + 128)}));
    });
  });
  ExpectError({"past end", "transformer.ln_f.bias"});
}

TEST_F(ConvertErrorTest, TruncatedSafetensors) {
  std::string b = *ReadFile(st_);
  ASSERT_TRUE(WriteFile(st_, b.substr(0, b.size() - 100)).ok());
  ExpectError({"past end"});
  ASSERT_TRUE(WriteFile(st_, b.substr(0, 5)).ok());
  ExpectError({"truncated"});
}

TEST_F(ConvertErrorTest, HeaderLengthPastEnd) {
  std::string b = *ReadFile(st_);
  b[5] = 1;  // header length += 2^40
  ASSERT_TRUE(WriteFile(st_, b).ok());
  ExpectError({"header length", "past end of file"});
}

TEST_F(ConvertErrorTest, NonFiniteWeight) {
  std::string b = *ReadFile(st_);
  auto f = SafetensorsFile::FromBytes(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(b.data()), b.size()), "x");
  ASSERT_TRUE(f.ok());
  const StTensor* t = (*f)->Find("transformer.h.1.mlp.c_proj.weight");
  ASSERT_NE(t, nullptr);
  const size_t off =
      static_cast<size_t>(t->data.data() - reinterpret_cast<const uint8_t*>(b.data())) + 4 * 17;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(&b[off], &nan, 4);
  ASSERT_TRUE(WriteFile(st_, b).ok());
  ExpectError({"transformer.h.1.mlp.c_proj.weight", "non-finite", "element 17"});
}

TEST_F(ConvertErrorTest, MissingTokenizerFiles) {
  fs::remove(dir_ + "/vocab.json");
  ExpectError({"vocab.json"});
  ASSERT_TRUE(WriteSyntheticCheckpoint(dir_, TinyOptions()).ok());
  fs::remove(dir_ + "/merges.txt");
  ExpectError({"merges.txt"});
}

TEST_F(ConvertErrorTest, VocabSizeMismatch) {
  SetConfig("vocab_size", json::Value::Number(301));
  ExpectError({"vocab.json has 300 tokens", "vocab_size 301"});
}

TEST_F(ConvertErrorTest, MissingCheckpoint) {
  fs::remove(st_);
  ExpectError({"model.safetensors"});
}

TEST_F(ConvertErrorTest, BadConfigActivation) {
  SetConfig("activation_function", json::Value::String("relu"));
  ExpectError({"activation_function", "relu"});
}

TEST_F(ConvertErrorTest, BadConfigHeads) {
  SetConfig("n_head", json::Value::Number(5));
  ExpectError({"n_head"});
}

TEST_F(ConvertErrorTest, BadConfigValues) {
  SetConfig("n_layer", json::Value::Number(-1));
  ExpectError({"n_layer"});
  SetConfig("n_layer", json::Value::Number(2.5));
  ExpectError({"n_layer"});
  SetConfig("n_layer", json::Value::Number(3));  // config says 3 layers, checkpoint has 2
  ExpectError({"missing tensor 'h.2."});
  // 2^20 layers: refused at once, before a plan of 12 million tensors is built.
  SetConfig("n_layer", json::Value::Number(1 << 20));
  ExpectError({"missing tensor 'h.1048575.", "1048576 layers"});
  SetConfig("n_layer", json::Value::Number(1));  // checkpoint has more layers than config
  ExpectError({"unexpected tensor", "h.1."});
  SetConfig("n_layer", json::Value::Number(2));
  SetConfig("layer_norm_epsilon", json::Value::Number(-1));
  ExpectError({"layer_norm_epsilon"});
  SetConfig("layer_norm_epsilon", json::Value::Number(1e-5));
  SetConfig("model_type", json::Value::String("bert"));
  ExpectError({"model_type"});
  SetConfig("model_type", json::Value::String("gpt2"));
  SetConfig("scale_attn_by_inverse_layer_idx", json::Value::Bool(true));
  ExpectError({"scale_attn_by_inverse_layer_idx"});
  SetConfig("scale_attn_by_inverse_layer_idx", json::Value::Bool(false));
  EXPECT_TRUE(ConvertCheckpoint(dir_, out_, {}, nullptr).ok());
  fs::remove(out_);
  ASSERT_TRUE(WriteFile(dir_ + "/config.json", "{not json").ok());
  ExpectError({"config.json"});
}

TEST_F(ConvertErrorTest, UntiedHeadNeedsTieFalse) {
  SyntheticCheckpointOptions o = TinyOptions();
  o.lm_head = LmHead::kUntied;
  ASSERT_TRUE(WriteSyntheticCheckpoint(dir_, o).ok());
  EXPECT_TRUE(ConvertCheckpoint(dir_, out_, {}, nullptr).ok());
  fs::remove(out_);
  SetConfig("tie_word_embeddings", json::Value::Bool(true));
  ExpectError({"lm_head.weight differs"});
  // tie_word_embeddings false but no lm_head at all.
  ASSERT_TRUE(WriteSyntheticCheckpoint(dir_, TinyOptions()).ok());
  SetConfig("tie_word_embeddings", json::Value::Bool(false));
  ExpectError({"missing tensor 'lm_head.weight'"});
}

TEST_F(ConvertErrorTest, ShardIndexErrors) {
  SyntheticCheckpointOptions o = TinyOptions();
  o.n_shards = 2;
  ASSERT_TRUE(WriteSyntheticCheckpoint(dir_, o).ok());
  const std::string index = dir_ + "/model.safetensors.index.json";
  auto j = json::Parse(*ReadFile(index));
  ASSERT_TRUE(j.ok());
  json::Value map = *j->Find("weight_map");
  map.Set("transformer.wte.weight", json::Value::String("../../etc/passwd"));
  json::Value bad = json::Value::Object();
  bad.Set("weight_map", map);
  ASSERT_TRUE(WriteFile(index, bad.Dump()).ok());
  ExpectError({"plain file name"});
  map.Set("transformer.wte.weight", json::Value::String("model-00002-of-00002.safetensors"));
  bad.Set("weight_map", map);
  ASSERT_TRUE(WriteFile(index, bad.Dump()).ok());
  ExpectError({"transformer.wte.weight", "does not contain it"});
  map.Set("transformer.wte.weight", json::Value::String("missing.safetensors"));
  bad.Set("weight_map", map);
  ASSERT_TRUE(WriteFile(index, bad.Dump()).ok());
  ExpectError({"missing.safetensors"});
}

TEST(SyntheticCheckpointTest, SyntheticTokenizerIsValidAndSized) {
  const std::string dir = testing::MakeTempDir("synth_tok");
  SyntheticCheckpointOptions o = TinyOptions();
  o.vocab_size = 1000;
  ASSERT_TRUE(WriteSyntheticCheckpoint(dir, o).ok());
  auto tok = Tokenizer::FromFiles(dir + "/vocab.json", dir + "/merges.txt");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 1000);
  EXPECT_EQ((*tok)->eos_id(), 999);
  const std::string text = "the quick brown fox";
  const auto ids = (*tok)->Encode(text);
  EXPECT_LT(ids.size(), text.size());  // merges apply
  EXPECT_EQ((*tok)->Decode(ids), text);
  o.vocab_size = 100;
  EXPECT_FALSE(WriteSyntheticCheckpoint(dir, o).ok());
}

}  // namespace
}  // namespace selfcond
