// libFuzzer target for tokenizer.json tokenizers and their regex engine. The input's first byte
// picks a mode:
//   0: the rest is a regex pattern: Compile must either refuse it or find matches in a fixed
//      text without crashing or running long (the engine is O(program x text));
//   1: the rest is text, encoded (and decoded) by a small built-in tokenizer.json that uses
//      every pipeline step (added tokens with lstrip/rstrip, NFC, a Split regex, ByteLevel,
//      Digits, ignore_merges, a template);
//   2: the rest is a whole tokenizer.json: building it must refuse bad documents with an error,
//      and a document it accepts must encode a fixed text.
//
//   ./hf_tokenizer_fuzz -max_total_time=30
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "formats/regex.h"
#include "formats/tokenizer.h"
#include "util/utf8.h"

namespace {

using selfcond::Regex;
using selfcond::Tokenizer;

// GPT-2's byte alphabet as tokenizer.json vocab strings, plus a few merges and added tokens.
std::string Builtin() {
  std::string vocab;
  int id = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    int cp = b;
    if (!printable) {
      int n = 0;
      for (int k = 0; k < b; ++k)
        n += !((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || k >= 174);
      cp = 256 + n;
    }
    std::string s;
    selfcond::AppendUtf8(static_cast<uint32_t>(cp), &s);
    if (s == "\"" || s == "\\") s = "\\" + s;
    vocab += (id ? "," : "") + std::string("\"") + s + "\":" + std::to_string(id);
    ++id;
  }
  vocab += ",\"th\":256,\"the\":257,\"\\u0120t\":258,\"\\u0120the\":259,\"12\":260";
  return R"({"added_tokens":[{"id":261,"content":"<s>","special":true},
    {"id":262,"content":"<x>","special":false,"lstrip":true,"rstrip":true,"normalized":false}],
    "normalizer":{"type":"NFC"},
    "pre_tokenizer":{"type":"Sequence","pretokenizers":[
      {"type":"Split","pattern":{"Regex":"(?i:'s|'t)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},
      {"type":"Digits","individual_digits":false},
      {"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]},
    "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>"}},{"Sequence":{"id":"A"}}]},
    "decoder":{"type":"ByteLevel"},
    "model":{"type":"BPE","ignore_merges":true,"merges":["t h","th e","\u0120 t","\u0120 the","1 2"],
      "vocab":{)" +
         vocab + "}}}";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      auto re = Regex::Compile(rest);
      if (re.ok()) {
        std::vector<uint32_t> text;
        for (char c : std::string("It's 12345 the  CAT's\n\n  x\xc3\xa9 "))
          text.push_back(static_cast<unsigned char>(c));
        (void)(*re)->FindAll(text);
      }
      break;
    }
    case 1: {
      static const std::unique_ptr<Tokenizer> tok = [] {
        auto t = Tokenizer::FromTokenizerJson(Builtin(), {261});
        if (!t.ok()) {  // the built-in document must build
          fprintf(stderr, "built-in tokenizer.json: %s\n",
                  std::string(t.status().message()).c_str());
          __builtin_trap();
        }
        return std::move(*t);
      }();
      const std::vector<int32_t> ids = tok->EncodeForModel(rest);
      (void)tok->Decode(ids);
      break;
    }
    default: {
      auto tok = Tokenizer::FromTokenizerJson(rest, {});
      if (tok.ok()) (void)(*tok)->Encode("The cat's 123 <s> sat.");
      break;
    }
  }
  return 0;
}
