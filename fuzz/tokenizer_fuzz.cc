// libFuzzer target for the tokenizer: any bytes must encode, decode back to themselves, and
// never crash Deserialize.
//
// The GPT-2 tokenizer is loaded once from $SELFCOND_SHARED_DIR/models/selfcond-mini-30m (default
// ../shared relative to the working directory). Without it, a small built-in tokenizer (the 256
// byte tokens plus a few merges) is fuzzed instead, so the target still runs anywhere.
//
//   ./tokenizer_fuzz -max_total_time=30
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "formats/tokenizer.h"

namespace {

using selfcond::Tokenizer;

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

std::unique_ptr<Tokenizer> LoadTokenizer() {
  const char* env = std::getenv("SELFCOND_SHARED_DIR");
  const std::string dir = std::string(env ? env : "../shared") + "/models/selfcond-mini-30m";
  auto tok = Tokenizer::FromFiles(dir + "/vocab.json", dir + "/merges.txt");
  if (tok.ok()) return std::move(*tok);
  std::fprintf(stderr, "tokenizer_fuzz: %s; fuzzing a small built-in tokenizer instead\n",
               std::string(tok.status().message()).c_str());
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.push_back(ByteChar(b));
  std::vector<std::pair<std::string, std::string>> merges = {
      {"t", "h"}, {"th", "e"}, {"\xc4\xa0", "the"}, {"a", "a"}, {"aa", "aa"}, {"e", "e"}};
  for (const auto& [a, b] : merges) vocab.push_back(a + b);
  vocab.push_back("<|endoftext|>");
  auto small = Tokenizer::Build(vocab, merges);
  if (!small.ok()) std::abort();
  return std::move(*small);
}

const Tokenizer& Tok() {
  static const Tokenizer* tok = LoadTokenizer().release();
  return *tok;
}

void CheckRoundTrip(const Tokenizer& tok, const std::string& text) {
  const std::vector<int32_t> ids = tok.Encode(text);
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) std::abort();
  }
  if (tok.Decode(ids) != text) {
    std::fprintf(stderr, "round trip failed for %zu bytes\n", text.size());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const Tokenizer& tok = Tok();
  CheckRoundTrip(tok, text);

  // The input as a blob, and behind a valid header so the fuzzer reaches the vocab parsing.
  auto blob = Tokenizer::Deserialize(absl::MakeConstSpan(data, size));
  static const uint8_t kHeader[8] = {'S', 'C', 'T', 'K', 1, 0, 0, 0};
  std::vector<uint8_t> framed(kHeader, kHeader + 8);
  framed.insert(framed.end(), data, data + size);
  auto framed_tok = Tokenizer::Deserialize(framed);
  for (auto* t : {&blob, &framed_tok}) {
    if (!t->ok()) continue;
    const Tokenizer& parsed = ***t;
    CheckRoundTrip(parsed, text);
    // The format is canonical: an accepted blob serializes back to exactly its bytes.
    const std::vector<uint8_t> again = parsed.Serialize();
    const std::vector<uint8_t> input =
        t == &blob ? std::vector<uint8_t>(data, data + size) : framed;
    if (again != input) std::abort();
  }
  return 0;
}
