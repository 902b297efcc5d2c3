// GPT-2 byte-level BPE, identical to OpenAI's encoder.py / npm gpt-3-encoder on valid UTF-8.
//
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

class Tokenizer {
 public:
  // vocab: token strings in id order, in GPT-2's byte-to-unicode form (as in vocab.json).
  // merges: ranked pairs (as in merges.txt, without the "#version" line).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Build(
      std::vector<std::string> vocab, std::vector<std::pair<std::string, std::string>> merges);

  // From Hugging Face files: vocab.json (token -> id) and merges.txt.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFiles(const std::string& vocab_json_path,
                                                              const std::string& merges_txt_path);

  // The compact binary form stored in the model file (documented in docs/model-format.md).
  std::vector<uint8_t> Serialize() const;
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Deserialize(absl::Span<const uint8_t> blob);

  std::vector<int32_t> Encode(std::string_view text) const;
  std::string Decode(absl::Span<const int32_t> ids) const;  // ids out of range -> skipped
  std::string DecodeToken(int32_t id) const;  // raw bytes (may be a partial UTF-8 sequence)

  int32_t vocab_size() const;
  int32_t eos_id() const;  // id of "<|endoftext|>" (50256 for GPT-2), -1 if absent

  ~Tokenizer();

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace selfcond

#endif  // SELFCOND_TOKENIZER_H_
