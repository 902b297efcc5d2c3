// Pieces shared by the two BPE tokenizers of the formats layer (tokenizer.cc: GPT-2's files;
// hf_tokenizer.cc: tokenizer.json): GPT-2's byte-to-unicode alphabet and the merge table.
// Internal to src/formats/.
#ifndef SELFCOND_FORMATS_BPE_COMMON_H_
#define SELFCOND_FORMATS_BPE_COMMON_H_

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "util/utf8.h"

namespace selfcond::bpe {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order, so every token is a printable string.
struct ByteAlphabet {
  uint32_t byte_to_cp[256];  // (256,)
  int16_t cp_to_byte[324];   // (324,) inverse over U+0000..U+0143, -1 where unused
  ByteAlphabet() {
    std::fill(std::begin(cp_to_byte), std::end(cp_to_byte), int16_t{-1});
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      byte_to_cp[b] = printable ? b : 256 + n++;
      cp_to_byte[byte_to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

inline const ByteAlphabet& Alphabet() {
  static const ByteAlphabet* alphabet = new ByteAlphabet();
  return *alphabet;
}

// A token's vocab.json string from its bytes.
inline std::string BytesToToken(std::string_view bytes) {
  const ByteAlphabet& alphabet = Alphabet();
  std::string token;
  for (char c : bytes) AppendUtf8(alphabet.byte_to_cp[static_cast<uint8_t>(c)], &token);
  return token;
}

// Maps a vocab string (byte-to-unicode form) back to raw bytes; false if a character is outside
// the 256-character alphabet or the string is not valid UTF-8.
inline bool TokenToBytes(std::string_view token, std::string* bytes) {
  const ByteAlphabet& alphabet = Alphabet();
  bytes->clear();
  uint32_t cp;
  for (size_t i = 0; i < token.size();) {
    const size_t n = DecodeUtf8(token, i, &cp);
    if (n == 0 || cp >= 324 || alphabet.cp_to_byte[cp] < 0) return false;
    bytes->push_back(static_cast<char>(alphabet.cp_to_byte[cp]));
    i += n;
  }
  return true;
}

inline uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Merge {
  int32_t rank;
  int32_t merged_id;
};

// Open-addressing hash map PairKey -> Merge (linear probing, multiplicative hash). Lookups are
// the inner loop of BPE; std::unordered_map's node chasing made them ~3x slower.
class MergeMap {
 public:
  void Reserve(size_t n) {
    size_t cap = 16;
    bits_ = 4;
    while (cap < 2 * n) {
      cap <<= 1;
      ++bits_;
    }
    keys_.assign(cap, kEmpty);
    values_.assign(cap, Merge{0, 0});
  }
  // False if the key is already present (then *existing is its value).
  bool Insert(uint64_t key, Merge value, Merge* existing) {
    for (size_t i = Slot(key);; i = (i + 1) & (keys_.size() - 1)) {
      if (keys_[i] == kEmpty) {
        keys_[i] = key;
        values_[i] = value;
        return true;
      }
      if (keys_[i] == key) {
        *existing = values_[i];
        return false;
      }
    }
  }
  const Merge* Find(uint64_t key) const {
    for (size_t i = Slot(key);; i = (i + 1) & (keys_.size() - 1)) {
      if (keys_[i] == key) return &values_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }

 private:
  // Ids are < 2^24, so no real key has all bits set.
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  size_t Slot(uint64_t key) const {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> (64 - bits_));
  }
  int bits_ = 0;
  std::vector<uint64_t> keys_;  // (capacity,) kEmpty where free
  std::vector<Merge> values_;   // (capacity,)
};

}  // namespace selfcond::bpe

#endif  // SELFCOND_FORMATS_BPE_COMMON_H_
