// The tokenizer of a model file. Two kinds:
//   - GPT-2's byte-level BPE from vocab.json + merges.txt (Build / FromFiles; blob version 1),
//     identical to OpenAI's encoder.py / npm gpt-3-encoder on valid UTF-8 (below);
//   - a Hugging Face tokenizer.json BPE tokenizer (FromTokenizerJson; blob version 2): byte-level
//     ones (GPT-2, Llama 3, Qwen2, SmolLM2) and SentencePiece-style ones with byte fallback
//     (Llama 2, TinyLlama), as npm @huggingface/tokenizers encodes them
//     (src/formats/hf_tokenizer.h has the supported pipeline).
// Encode gives the text's tokens only; a tokenizer.json's post-processor may add special tokens
// around them (prefix(), suffix(): e.g. Llama 3's <|begin_of_text|>), which EncodeForModel adds.
//
// GPT-2 files:
// Pre-tokenization uses GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with Unicode letter/number tables generated into unicode_tables.inc.
// Invalid UTF-8: each invalid byte is taken as one "other" character (class of punctuation), so
// every byte string encodes, and Decode(Encode(s)) == s for any bytes.
// "<|endoftext|>" in the text is NOT special (as in encoder.py); use eos_id() for EOS.
#ifndef SELFCOND_TOKENIZER_H_
#define SELFCOND_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace selfcond {

class HfTokenizer;  // src/formats/hf_tokenizer.h

class Tokenizer {
 public:
  // vocab: token strings in id order, in GPT-2's byte-to-unicode form (as in vocab.json).
  // merges: ranked pairs (as in merges.txt, without the "#version" line).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Build(
      std::vector<std::string> vocab, std::vector<std::pair<std::string, std::string>> merges);

  // From Hugging Face files: vocab.json (token -> id) and merges.txt.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFiles(const std::string& vocab_json_path,
                                                              const std::string& merges_txt_path);

  // From the text of a tokenizer.json. eos_ids: the end-of-sequence tokens (config.json's and
  // generation_config.json's eos_token_id); each must exist.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromTokenizerJson(std::string_view text,
                                                                      std::vector<int32_t> eos_ids);

  // The compact binary form stored in the model file (documented in docs/model-format.md).
  std::vector<uint8_t> Serialize() const;
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Deserialize(absl::Span<const uint8_t> blob);

  std::vector<int32_t> Encode(std::string_view text) const;
  // prefix() + Encode(text) + suffix(): the ids a model is given for a text on its own.
  std::vector<int32_t> EncodeForModel(std::string_view text) const;
  const std::vector<int32_t>& prefix() const;  // special tokens before a text (e.g. BOS)
  const std::vector<int32_t>& suffix() const;  // and after it
  // Text of a sequence (ids out of range are skipped; special tokens decode to nothing; a
  // SentencePiece-style decoder drops the leading space of the sequence).
  std::string Decode(absl::Span<const int32_t> ids) const;
  // Raw bytes of one token in the middle of a text (may be a partial UTF-8 sequence).
  std::string DecodeToken(int32_t id) const;

  int32_t vocab_size() const;
  // The first end-of-sequence token: "<|endoftext|>" for GPT-2 (50256), tokenizer.json models:
  // the first of eos_ids(); -1 if none.
  int32_t eos_id() const;
  const std::vector<int32_t>& eos_ids() const;  // every end-of-sequence token
  bool is_eos(int32_t id) const;                // one of eos_ids()
  bool is_special(int32_t id) const;            // a special added token (tokenizer.json)
  // "gpt2-bpe" (vocab.json + merges.txt) or "tokenizer.json"
  const char* kind() const;

  ~Tokenizer();

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<HfTokenizer> hf_;  // set for tokenizer.json tokenizers
  std::string hf_json_;              // the tokenizer.json members kept (blob version 2)
  std::vector<int32_t> eos_ids_;
  std::vector<int32_t> none_;
};

}  // namespace selfcond

#endif  // SELFCOND_TOKENIZER_H_
