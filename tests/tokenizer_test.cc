#include "formats/tokenizer.h"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "test_util.h"
#include "util/file_util.h"
#include "util/json.h"

namespace selfcond {
namespace {

using ::selfcond::testing::MiniModelDir;
using ::selfcond::testing::SharedDir;
using ::selfcond::testing::SourceDir;

// The demo model's vocab.json / merges.txt are byte-identical to gpt-3-encoder's
// encoder.json / vocab.bpe (the GPT-2 tokenizer).
const Tokenizer& Gpt2() {
  static const Tokenizer* tok = [] {
    auto t = Tokenizer::FromFiles(MiniModelDir() + "/vocab.json", MiniModelDir() + "/merges.txt");
    if (!t.ok()) {
      std::cerr << "cannot load the GPT-2 tokenizer: " << t.status() << "\n";
      std::abort();
    }
    return t->release();
  }();
  return *tok;
}

json::Value LoadJson(const std::string& path) {
  auto text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return json::Value();
  auto v = json::Parse(*text);
  EXPECT_TRUE(v.ok()) << path << ": " << v.status();
  return v.ok() ? *v : json::Value();
}

std::vector<int32_t> Ids(const json::Value& array) {
  std::vector<int32_t> ids;
  for (const auto& x : array.items()) ids.push_back(static_cast<int32_t>(x.as_number()));
  return ids;
}

// GPT-2's bytes_to_unicode() as a UTF-8 string per byte, written independently of tokenizer.cc.
std::string ByteChar(int b) {
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int k = 0; k < b; ++k) {
      if (!((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || k >= 174)) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

std::string ToByteForm(std::string_view raw) {
  std::string s;
  for (unsigned char c : raw) s += ByteChar(c);
  return s;
}

// encoder.py's bpe(), literally (quadratic, string based), to check the heap-based merging.
std::vector<std::string> ReferenceBpe(
    const std::map<std::pair<std::string, std::string>, int>& ranks,
    std::vector<std::string> word) {
  while (word.size() > 1) {
    int best = std::numeric_limits<int>::max();
    std::pair<std::string, std::string> bigram;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = ranks.find({word[i], word[i + 1]});
      if (it != ranks.end() && it->second < best) {
        best = it->second;
        bigram = it->first;
      }
    }
    if (best == std::numeric_limits<int>::max()) break;
    std::vector<std::string> next;
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == bigram.first && word[i + 1] == bigram.second) {
        next.push_back(bigram.first + bigram.second);
        i += 2;
      } else {
        next.push_back(word[i++]);
      }
    }
    word = std::move(next);
  }
  return word;
}

// ---- (1) reference outputs of the demo model -------------------------------------------------

TEST(TokenizerTest, Gpt2Basics) {
  const Tokenizer& tok = Gpt2();
  EXPECT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(tok.eos_id(), 50256);
  EXPECT_EQ(tok.DecodeToken(50256), "<|endoftext|>");
  EXPECT_EQ(tok.DecodeToken(220), " ");
  EXPECT_EQ(tok.DecodeToken(-1), "");
  EXPECT_EQ(tok.DecodeToken(50257), "");
  // Out-of-range ids are skipped by Decode.
  EXPECT_EQ(tok.Decode({15496, -5, 50257, 995}), "Hello world");
  // "<|endoftext|>" in text is ordinary text.
  EXPECT_NE(tok.Encode("<|endoftext|>"), std::vector<int32_t>{50256});
  EXPECT_TRUE(tok.Encode("").empty());
}

TEST(TokenizerTest, ReferencePrompts) {
  const Tokenizer& tok = Gpt2();
  json::Value ref = LoadJson(MiniModelDir() + "/reference/reference.json");
  const json::Value* cases = ref.Find("cases");
  ASSERT_NE(cases, nullptr);
  ASSERT_EQ(cases->items().size(), 4u);
  for (const json::Value& c : cases->items()) {
    const std::string prompt(c.Find("prompt")->as_string());
    const std::vector<int32_t> ids = Ids(*c.Find("token_ids"));
    EXPECT_EQ(tok.Encode(prompt), ids) << prompt;
    EXPECT_EQ(tok.Decode(ids), prompt);
    EXPECT_EQ(tok.Decode(Ids(*c.Find("greedy20_ids"))), c.Find("greedy20_text")->as_string());
  }
}

// ---- (2) vectors from npm gpt-3-encoder (tests/gen_tokenizer_vectors.js) ----------------------

TEST(TokenizerTest, MatchesReferenceVectors) {
  const Tokenizer& tok = Gpt2();
  json::Value doc = LoadJson(SourceDir() + "/tests/data/tokenizer_vectors.json");
  const json::Value* cases = doc.Find("cases");
  ASSERT_NE(cases, nullptr);
  ASSERT_GE(cases->items().size(), 100u);
  std::map<std::string, int> per_group;
  for (const json::Value& c : cases->items()) {
    const std::string text(c.Find("text")->as_string());
    const std::vector<int32_t> ids = Ids(*c.Find("ids"));
    EXPECT_EQ(tok.Encode(text), ids) << "text: " << json::Quote(text);
    EXPECT_EQ(tok.Decode(ids), text);
    ++per_group[std::string(c.Find("group")->as_string())];
  }
  EXPECT_GE(per_group["handpicked"], 100);
  EXPECT_EQ(per_group["football"], 50);
}

TEST(TokenizerTest, FootballSentencesRoundTrip) {
  const Tokenizer& tok = Gpt2();
  json::Value doc = LoadJson(SharedDir() + "/concepts/football.json");
  const json::Value* sentences = doc.Find("sentences");
  ASSERT_NE(sentences, nullptr);
  std::vector<std::string> texts;
  for (const auto& [label, list] : sentences->members()) {
    for (const json::Value& s : list.items()) texts.emplace_back(s.as_string());
  }
  ASSERT_GT(texts.size(), 1000u);
  size_t n_tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<int32_t>> encoded;
  for (const std::string& t : texts) encoded.push_back(tok.Encode(t));
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  for (size_t i = 0; i < texts.size(); ++i) {
    n_tokens += encoded[i].size();
    EXPECT_EQ(tok.Decode(encoded[i]), texts[i]);
  }
  // Informational only (timings are never asserted).
  std::cout << "encoded " << texts.size() << " sentences (" << n_tokens << " tokens) in " << ms
            << " ms\n";
}

// The heap-based merge loop against encoder.py's literal algorithm on single pre-tokens,
// including repeated characters (a pair merging with itself) and long words.
TEST(TokenizerTest, MergingMatchesLiteralAlgorithm) {
  const Tokenizer& tok = Gpt2();
  std::map<std::pair<std::string, std::string>, int> ranks;
  {
    auto text = ReadFile(MiniModelDir() + "/merges.txt");
    ASSERT_TRUE(text.ok());
    int rank = 0;
    size_t pos = text->find('\n') + 1;  // skip "#version"
    while (pos < text->size()) {
      size_t end = text->find('\n', pos);
      if (end == std::string::npos) end = text->size();
      const std::string line = text->substr(pos, end - pos);
      const size_t sp = line.find(' ');
      if (sp != std::string::npos) ranks[{line.substr(0, sp), line.substr(sp + 1)}] = rank++;
      pos = end + 1;
    }
    ASSERT_EQ(rank, 50000);
  }
  std::map<std::string, int32_t> id_of;
  {
    json::Value vocab = LoadJson(MiniModelDir() + "/vocab.json");
    for (const auto& [k, v] : vocab.members())
      id_of[std::string(k)] = static_cast<int32_t>(v.as_number());
  }
  std::mt19937 rng(7);
  std::vector<std::string> words = {
      "aaaaaaaaaaaaaaaaaaa", " eeeeeeeee",   "llllllllllll", "!!!!!!!!",
      "----------------",    "abababababab", " the",         " tokenization"};
  const std::string letters = "etaoinshrdlucmfwypvbgkqjxz";
  for (int k = 0; k < 300; ++k) {
    std::string w = (k % 2) ? " " : "";
    const int len = 1 + static_cast<int>(rng() % (k < 290 ? 20 : 400));
    for (int i = 0; i < len; ++i) w += letters[std::min<size_t>(rng() % 40, letters.size() - 1)];
    words.push_back(w);
  }
  for (const std::string& w : words) {
    std::vector<std::string> chars;
    for (unsigned char c : w) chars.push_back(ByteChar(c));
    std::vector<int32_t> expected;
    for (const std::string& t : ReferenceBpe(ranks, chars)) expected.push_back(id_of.at(t));
    ASSERT_EQ(tok.Encode(w), expected) << w;
  }
}

// ---- (3) arbitrary bytes ---------------------------------------------------------------------

TEST(TokenizerTest, InvalidUtf8BytesAreOtherCharacters) {
  const Tokenizer& tok = Gpt2();
  const auto cat = [](std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  // An invalid byte ends a letter run and starts an "other" run.
  EXPECT_EQ(tok.Encode("abc\xff"), cat(tok.Encode("abc"), tok.Encode("\xff")));
  EXPECT_EQ(tok.Encode("\xff"
                       "abc"),
            cat(tok.Encode("\xff"), tok.Encode("abc")));
  // ... and joins adjacent punctuation, with the optional leading space, like any "other".
  EXPECT_EQ(tok.Encode("a !\x80!"), cat(tok.Encode("a"), tok.Encode(" !\x80!")));
  // A lone surrogate (ED A0 80), an overlong "/" (C0 AF) and a truncated euro sign (E2 82)
  // are 3, 2 and 2 "other" characters: each run stays one pre-token, unlike letters after it.
  for (const std::string bad : {"\xed\xa0\x80", "\xc0\xaf", "\xe2\x82", "\xf4\x90\x80\x80"}) {
    EXPECT_EQ(tok.Decode(tok.Encode(bad)), bad);
    EXPECT_EQ(tok.Encode("x" + bad + "y"),
              cat(cat(tok.Encode("x"), tok.Encode(bad)), tok.Encode("y")));
  }
  // A single invalid byte is its byte token.
  const std::vector<int32_t> ff = tok.Encode("\xff");
  ASSERT_EQ(ff.size(), 1u);
  EXPECT_EQ(tok.DecodeToken(ff[0]), "\xff");
}

TEST(TokenizerTest, RandomBytesRoundTrip) {
  const Tokenizer& tok = Gpt2();
  std::mt19937 rng(1234);
  const std::vector<std::string> pieces = {"a",
                                           "Z",
                                           " ",
                                           "  ",
                                           "\t",
                                           "\n",
                                           "'s",
                                           "'",
                                           "1",
                                           "42",
                                           "!",
                                           "\xc3\xa9",
                                           "e\xcc\x81",
                                           "\xe4\xbd\xa0",
                                           "\xf0\x9f\x98\x80",
                                           "\xef\xbb\xbf",
                                           "\xc2\xa0",
                                           "\xc2\x85",
                                           "\x80",
                                           "\xff",
                                           "\xc0",
                                           "\xed\xa0\x80",
                                           "\xe2\x82",
                                           "\xf0\x9f",
                                           "\xf8\x88\x80\x80\x80"};
  for (int k = 0; k < 3000; ++k) {
    std::string s;
    const int len = static_cast<int>(rng() % 40);
    for (int i = 0; i < len; ++i) {
      if (k % 2) {
        s.push_back(static_cast<char>(rng() & 0xFF));  // uniformly random bytes
      } else {
        s += pieces[rng() % pieces.size()];
      }
    }
    const std::vector<int32_t> ids = tok.Encode(s);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size());
    ASSERT_EQ(tok.Decode(ids), s) << json::Quote(s);
  }
}

// ---- (4) Serialize / Deserialize ---------------------------------------------------------------

// A small tokenizer: the 256 byte tokens plus a few merges, built through Build().
std::unique_ptr<Tokenizer> SmallTokenizer(
    std::vector<std::pair<std::string, std::string>> merges = {{"a", "b"}, {"ab", "c"}}) {
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.push_back(ByteChar(b));
  for (const auto& [a, b] : merges) vocab.push_back(a + b);
  vocab.push_back("<|endoftext|>");
  auto tok = Tokenizer::Build(vocab, merges);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

TEST(TokenizerTest, BuildSmallVocab) {
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 259);
  EXPECT_EQ(tok->eos_id(), 258);
  EXPECT_EQ(tok->Encode("abc"), std::vector<int32_t>{257});
  EXPECT_EQ(tok->Encode("abab"), (std::vector<int32_t>{256, 256}));
}

// encoder.py merges every occurrence of the lowest-rank pair before looking at ranks again,
// even when a pair formed by that merge has a lower rank ("ab"+"a" here): a plain priority queue
// over positions would produce ["aba", "b"].
TEST(TokenizerTest, MergesOneRankAtATime) {
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.push_back(ByteChar(b));
  vocab.push_back("ab");
  vocab.push_back("aba");
  auto tok = Tokenizer::Build(vocab, {{"ab", "a"}, {"a", "b"}});
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("abab"), (std::vector<int32_t>{256, 256}));
  EXPECT_EQ((*tok)->Encode("aba"), (std::vector<int32_t>{257}));
  EXPECT_EQ((*tok)->eos_id(), -1);
}

TEST(TokenizerTest, SerializeRoundTrip) {
  const Tokenizer& tok = Gpt2();
  const std::vector<uint8_t> blob = tok.Serialize();
  ASSERT_GT(blob.size(), 12u);
  EXPECT_EQ(std::string(blob.begin(), blob.begin() + 4), "SCTK");
  auto back = Tokenizer::Deserialize(blob);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ((*back)->Serialize(), blob);
  EXPECT_EQ((*back)->vocab_size(), 50257);
  EXPECT_EQ((*back)->eos_id(), 50256);
  const std::string text =
      "Hello, world! 1234 \xc3\xbcmlaut na\xc3\xafve \xe2\x80\x94 tokens\n\t x";
  EXPECT_EQ((*back)->Encode(text), tok.Encode(text));
  // A few truncations of the real blob.
  for (size_t len : {size_t{0}, size_t{3}, size_t{4}, size_t{11}, size_t{13}, blob.size() / 2,
                     blob.size() - 1}) {
    auto r = Tokenizer::Deserialize(absl::MakeConstSpan(blob.data(), len));
    EXPECT_FALSE(r.ok()) << "length " << len;
  }
}

TEST(TokenizerTest, DeserializeRejectsCorruptBlobs) {
  auto small = SmallTokenizer();
  ASSERT_NE(small, nullptr);
  const std::vector<uint8_t> blob = small->Serialize();
  ASSERT_TRUE(Tokenizer::Deserialize(blob).ok());
  // Every proper prefix is an error.
  for (size_t len = 0; len < blob.size(); ++len) {
    EXPECT_FALSE(Tokenizer::Deserialize(absl::MakeConstSpan(blob.data(), len)).ok()) << len;
  }
  const auto expect_error = [&](std::vector<uint8_t> b, const std::string& needle) {
    auto r = Tokenizer::Deserialize(b);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status();
  };
  std::vector<uint8_t> b = blob;
  b.push_back(0);
  expect_error(b, "trailing");
  b = blob;
  b[0] = 'X';
  expect_error(b, "magic");
  b = blob;
  b[4] = 3;
  expect_error(b, "version");
  b = blob;
  b[8] = b[9] = b[10] = b[11] = 0xFF;  // n_vocab = 2^32 - 1
  expect_error(b, "n_vocab");
  b = blob;
  b[8] = b[9] = b[10] = b[11] = 0;  // n_vocab = 0
  expect_error(b, "n_vocab");
  b = blob;
  b[12] = 0xFF;  // first token's length 0x00FF..: runs past the end or misaligns
  EXPECT_FALSE(Tokenizer::Deserialize(b).ok());
  b = blob;
  b[12] = 0;  // first token empty
  b[13] = 0;
  EXPECT_FALSE(Tokenizer::Deserialize(b).ok());
  // Renaming a token so that a merge no longer resolves.
  b = blob;
  {
    // Token 256 is "ab" (u16 2, 'a', 'b'); find it after the 256 byte tokens.
    size_t pos = 12;
    for (int i = 0; i < 256; ++i) pos += 2 + (b[pos] | (b[pos + 1] << 8));
    ASSERT_EQ(b[pos], 2);
    ASSERT_EQ(b[pos + 2], 'a');
    b[pos + 3] = 'x';
  }
  expect_error(b, "not in the vocab");
  // Random byte flips never crash (they may or may not be detected).
  std::mt19937 rng(99);
  for (int k = 0; k < 2000; ++k) {
    b = blob;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    auto r = Tokenizer::Deserialize(b);
    if (r.ok()) {
      const std::string s = "abc abcab \xff";
      EXPECT_EQ((*r)->Decode((*r)->Encode(s)), s);
    }
  }
}

// ---- (5) FromFiles / Build errors ------------------------------------------------------------

class FromFilesTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::MakeTempDir("tokenizer"); }

  // vocab.json with the 256 byte tokens plus extras, ids in order.
  std::string VocabJson(const std::vector<std::string>& extra) {
    std::string s = "{";
    int id = 0;
    for (int b = 0; b < 256; ++b) s += json::Quote(ByteChar(b)) + ":" + std::to_string(id++) + ",";
    for (const std::string& e : extra) s += json::Quote(e) + ":" + std::to_string(id++) + ",";
    s.back() = '}';
    return s;
  }

  absl::Status Load(const std::string& vocab, const std::string& merges) {
    EXPECT_TRUE(WriteFile(dir_ + "/vocab.json", vocab).ok());
    EXPECT_TRUE(WriteFile(dir_ + "/merges.txt", merges).ok());
    return Tokenizer::FromFiles(dir_ + "/vocab.json", dir_ + "/merges.txt").status();
  }

  void ExpectError(const std::string& vocab, const std::string& merges, const std::string& needle) {
    absl::Status s = Load(vocab, merges);
    ASSERT_FALSE(s.ok()) << "expected an error containing \"" << needle << "\"";
    EXPECT_NE(s.message().find(needle), std::string::npos) << s;
  }

  std::string dir_;
};

TEST_F(FromFilesTest, AcceptsSmallFiles) {
  EXPECT_TRUE(Load(VocabJson({"ab", "abc"}), "#version: 0.2\na b\nab c\n").ok());
  EXPECT_TRUE(Load(VocabJson({"ab"}), "a b").ok());  // no header, no final newline
  EXPECT_TRUE(Load(VocabJson({"ab"}), "#version: 0.2\r\na b\r\n").ok());
}

TEST_F(FromFilesTest, Errors) {
  EXPECT_FALSE(Tokenizer::FromFiles(dir_ + "/missing.json", dir_ + "/missing.txt").ok());
  ExpectError("{\"a\": 0", "", "vocab.json");  // malformed JSON names the file
  ExpectError("[1, 2]", "", "expected a JSON object");
  ExpectError("{}", "", "vocab has 0 tokens");
  std::string v = VocabJson({"ab"});
  ExpectError(v.substr(0, v.size() - 1) + ",\"x\":1.5}", "", "must be distinct integers");
  ExpectError(v.substr(0, v.size() - 1) + ",\"x\":\"1\"}", "", "must be distinct integers");
  ExpectError(v.substr(0, v.size() - 1) + ",\"x\":300}", "", "dense range");  // gap
  ExpectError(v.substr(0, v.size() - 1) + ",\"x\":-1}", "", "dense range");
  ExpectError(v.substr(0, v.size() - 1) + ",\"x\":5}", "", "used twice");
  ExpectError(v, "#version: 0.2\na b c\n", "line 2: expected 2 space-separated tokens, got 3");
  ExpectError(v, "#version: 0.2\na\n", "got 1");
  ExpectError(v, "zz b\n", "references a token not in the vocab: \"zz\"");
  ExpectError(v, "a c\n", "produces \"ac\", not in the vocab");
  ExpectError(v, "a b\na b\n", "duplicates merge 0");
  ExpectError(v.substr(0, v.size() - 1) + ",\"\\u4e16\":257}", "", "byte-to-unicode alphabet");
  ExpectError(v.substr(0, v.size() - 1) + ",\"\":257}", "", "is empty");
  // Vocab without the byte token for 'a' (0x61): replace it by another string.
  std::string missing = VocabJson({"ab"});
  const std::string needle = "\"a\":97";
  missing.replace(missing.find(needle), needle.size(), "\"qq\":97");
  ExpectError(missing, "", "lacks the single-byte token \"a\"");
}

TEST(TokenizerTest, BuildErrors) {
  EXPECT_FALSE(Tokenizer::Build({}, {}).ok());
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.push_back(ByteChar(b));
  vocab.push_back("\xff");  // not valid UTF-8
  EXPECT_FALSE(Tokenizer::Build(vocab, {}).ok());
  vocab.back() = "a";  // duplicate
  EXPECT_FALSE(Tokenizer::Build(vocab, {}).ok());
  vocab.pop_back();
  EXPECT_TRUE(Tokenizer::Build(vocab, {}).ok());
  EXPECT_EQ(ToByteForm(" \n"), "\xc4\xa0\xc4\x8a");  // "ĠĊ": checks ByteChar itself
}

}  // namespace
}  // namespace selfcond
