// Hugging Face tokenizer.json BPE tokenizers (formats layer; used through Tokenizer, see
// tokenizer.h). Internal to src/formats/.
//
// The pipeline and its meaning follow npm @huggingface/tokenizers (tokenizers.js), the
// reference the tests compare with, which mirrors the Rust library:
//   added tokens   split out first (longest match, left to right), `lstrip` / `rstrip` trim the
//                  neighbouring text; tokens with `normalized: true` are matched after the
//                  normalizer
//   normalizer     NFC, Prepend, Replace (string or regex), Sequence, or none
//   pre-tokenizer  ByteLevel (GPT-2's pattern, add_prefix_space), Split (regex or string;
//                  behaviours Isolated and Removed, or invert), Digits, Metaspace, Sequence
//   model          BPE: merges by rank (ties: leftmost), ignore_merges, byte_fallback to
//                  <0xNN> tokens, unk_token and fuse_unk
//   post-processor TemplateProcessing (its single-sequence template), ByteLevel, Sequence
//   decoder        ByteLevel; Replace, ByteFallback, Fuse, Strip; Metaspace; Sequence
// Everything else (Unigram or WordPiece models, lowercasing, other pre-tokenizers) is refused
// with a message naming it. Special added tokens decode to no text.
#ifndef SELFCOND_FORMATS_HF_TOKENIZER_H_
#define SELFCOND_FORMATS_HF_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "util/json.h"

namespace selfcond {

class HfTokenizer {
 public:
  // doc: a parsed tokenizer.json (only its normalizer, pre_tokenizer, model, added_tokens,
  // post_processor and decoder members are read).
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Build(const json::Value& doc);
  ~HfTokenizer();

  // Token ids of text, without the post-processor's special tokens.
  void Encode(std::string_view text, std::vector<int32_t>* out) const;
  // The post-processor's special tokens before and after the text (e.g. Llama 3's
  // <|begin_of_text|>); empty when it adds none.
  const std::vector<int32_t>& prefix() const;
  const std::vector<int32_t>& suffix() const;

  int32_t vocab_size() const;  // highest id + 1 (vocab and added tokens)
  // The bytes token `id` decodes to in the middle of a text (special tokens: none; ids out of
  // range: none).
  const std::string& TokenBytes(int32_t id) const;
  // The text of a whole sequence: TokenBytes of each id, then the decoder's start strip.
  std::string Decode(absl::Span<const int32_t> ids) const;
  // The id of a token string (as written in the file), or -1.
  int32_t TokenId(std::string_view token) const;
  // The token string of an id as written in the file ("" when out of range).
  const std::string& TokenString(int32_t id) const;
  bool IsSpecial(int32_t id) const;

 private:
  HfTokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace selfcond

#endif  // SELFCOND_FORMATS_HF_TOKENIZER_H_
