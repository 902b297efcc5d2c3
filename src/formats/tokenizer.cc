// GPT-2 byte-level BPE (see tokenizer.h for the contract).
//
// Serialized blob (Tokenizer::Serialize / Deserialize; stored inside the model file, see
// docs/model-format.md). All integers little-endian, no padding, no trailing bytes:
//
//   offset  size  field
//   0       4     magic "SCTK"
//   4       4     u32 version (= 1)
//   8       4     u32 n_vocab (1 .. 2^24)
//   12      ...   n_vocab entries, in id order: u16 len (>= 1), then len bytes: the token string
//                 exactly as in vocab.json (UTF-8, GPT-2's byte-to-unicode form, e.g. "Ġthe")
//   ...     4     u32 n_merges (0 .. 2^24)
//   ...     ...   n_merges entries, in rank order: u16 len_a, len_a bytes, u16 len_b, len_b bytes
//                 (the two halves of a merges.txt line, same string form)
//
// Deserialize bounds-checks every length against the remaining bytes before reading, then runs
// the same validation as Build (unique tokens, all 256 byte tokens present, merges reference
// known tokens and produce known tokens).
//
// Pre-tokenization matches npm gpt-3-encoder, which runs GPT-2's pattern in JavaScript with the
// /u flag. Its \s is JavaScript's (includes U+FEFF, excludes U+0085), which differs from the
// `regex` module used by OpenAI's encoder.py: texts containing U+0085 or U+FEFF can tokenize
// differently between the two references; we follow gpt-3-encoder. The \p{L}/\p{N} tables come
// from Python's unicodedata (tools/gen_unicode_tables.py); code points assigned in later Unicode
// versions than the table's (kUnicodeVersion) count as "other" here.
//
// BPE merging follows encoder.py's semantics exactly: repeatedly take the adjacent pair of lowest
// rank and merge ALL its occurrences left to right (non-overlapping) before looking at ranks
// again. gpt-3-encoder keys its rank table by `String([a, b])` ("a,b"), so a pair that is not a
// merge can alias one that is when the tokens contain commas (e.g. ('",', '"') vs ('"', ',"'));
// we do not reproduce that bug. The implementation uses a heap of candidate pairs processed one
// rank at a time, so a word of n bytes costs O(n log n) instead of encoder.py's O(n^2).
#include "formats/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "formats/bpe_common.h"
#include "formats/hf_tokenizer.h"
#include "formats/unicode.h"
#include "util/file_util.h"
#include "util/json.h"
#include "util/utf8.h"

namespace selfcond {
namespace {

using bpe::Alphabet;
using bpe::ByteAlphabet;
using bpe::BytesToToken;
using bpe::Merge;
using bpe::MergeMap;
using bpe::PairKey;
using bpe::TokenToBytes;

constexpr char kMagic[4] = {'S', 'C', 'T', 'K'};
constexpr uint32_t kBlobVersion = 1;    // GPT-2: vocab + merges
constexpr uint32_t kHfBlobVersion = 2;  // tokenizer.json
constexpr uint32_t kMaxVocab = 1u << 24;
constexpr uint32_t kMaxMerges = 1u << 24;
constexpr char kEndOfText[] = "<|endoftext|>";

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

CharClass ClassOf(uint32_t cp) {
  if (unicode::IsLetter(cp)) return CharClass::kLetter;
  if (unicode::IsNumber(cp)) return CharClass::kNumber;
  if (unicode::IsJsSpace(cp)) return CharClass::kSpace;
  return CharClass::kOther;
}

// Little-endian reader that never reads past the end.
class BlobReader {
 public:
  explicit BlobReader(absl::Span<const uint8_t> blob) : blob_(blob) {}
  size_t offset() const { return pos_; }
  size_t remaining() const { return blob_.size() - pos_; }

  absl::Status U16(uint16_t* v, absl::string_view what) {
    if (remaining() < 2) return Truncated(what, 2);
    *v = static_cast<uint16_t>(blob_[pos_] | (blob_[pos_ + 1] << 8));
    pos_ += 2;
    return absl::OkStatus();
  }
  absl::Status U32(uint32_t* v, absl::string_view what) {
    if (remaining() < 4) return Truncated(what, 4);
    *v = static_cast<uint32_t>(blob_[pos_]) | (static_cast<uint32_t>(blob_[pos_ + 1]) << 8) |
         (static_cast<uint32_t>(blob_[pos_ + 2]) << 16) |
         (static_cast<uint32_t>(blob_[pos_ + 3]) << 24);
    pos_ += 4;
    return absl::OkStatus();
  }
  absl::Status Bytes(size_t n, std::string* out, absl::string_view what) {
    if (remaining() < n) return Truncated(what, n);
    out->assign(reinterpret_cast<const char*>(blob_.data() + pos_), n);
    pos_ += n;
    return absl::OkStatus();
  }
  // A u16-length-prefixed string.
  absl::Status String(std::string* out, absl::string_view what) {
    uint16_t len = 0;
    if (absl::Status s = U16(&len, what); !s.ok()) return s;
    return Bytes(len, out, what);
  }

 private:
  absl::Status Truncated(absl::string_view what, size_t need) const {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer blob truncated: ", what, " needs ", need, " bytes at offset ", pos_,
                     " but only ", remaining(), " remain (blob size ", blob_.size(), ")"));
  }

  absl::Span<const uint8_t> blob_;
  size_t pos_ = 0;
};

void PutU16(uint16_t v, std::vector<uint8_t>* out) {
  out->push_back(static_cast<uint8_t>(v));
  out->push_back(static_cast<uint8_t>(v >> 8));
}
void PutU32(uint32_t v, std::vector<uint8_t>* out) {
  for (int k = 0; k < 4; ++k) out->push_back(static_cast<uint8_t>(v >> (8 * k)));
}
void PutString(const std::string& s, std::vector<uint8_t>* out) {
  PutU16(static_cast<uint16_t>(s.size()), out);
  out->insert(out->end(), s.begin(), s.end());
}

// Working memory of BytePairEncode, reused across the words of one Encode call.
struct BpeScratch {
  struct Symbol {
    int32_t id;          // token id; -1 once merged into its left neighbour
    int32_t prev, next;  // neighbours in the live list, -1 at the ends
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;          // index of the left symbol
    int32_t left, right;  // ids when pushed; stale if they no longer match
  };
  std::vector<Symbol> sym;      // (word bytes,)
  std::vector<Candidate> heap;  // (pending pairs,)
  std::vector<int32_t> batch;   // (pairs of one rank,)
  std::vector<int32_t> merged;  // (pairs of one rank,)
};

}  // namespace

// Only what encoding and decoding need stays in memory (~4 MB for GPT-2, a third of keeping the
// vocab.json strings too): vocab.json's strings are the bytes of each token under GPT-2's
// byte-to-unicode alphabet, so Serialize rebuilds them from token_bytes.
struct Tokenizer::Impl {
  std::vector<std::string> token_bytes;                // (n_vocab,) raw bytes of each token
  std::vector<std::pair<int32_t, int32_t>> merge_ids;  // (n_merges,) in rank order
  MergeMap merge_of;                                   // PairKey(left id, right id) -> rank, result
  int32_t byte_id[256];  // (256,) id of the single-byte token for each byte
  int32_t eos_id = -1;

  const Merge* FindMerge(int32_t a, int32_t b) const { return merge_of.Find(PairKey(a, b)); }

  void BytePairEncode(std::string_view word, BpeScratch* scratch, std::vector<int32_t>* out) const;
  void Encode(std::string_view text, std::vector<int32_t>* out) const;
};

// encoder.py's bpe() on one pre-token (see the file comment for the algorithm).
void Tokenizer::Impl::BytePairEncode(std::string_view word, BpeScratch* scratch,
                                     std::vector<int32_t>* out) const {
  const int n = static_cast<int>(word.size());
  if (n == 1) {
    out->push_back(byte_id[static_cast<uint8_t>(word[0])]);
    return;
  }
  using Symbol = BpeScratch::Symbol;
  using Candidate = BpeScratch::Candidate;
  std::vector<Symbol>& sym = scratch->sym;
  sym.resize(n);
  for (int i = 0; i < n; ++i) sym[i] = {byte_id[static_cast<uint8_t>(word[i])], i - 1, i + 1};
  sym[n - 1].next = -1;

  // Min-heap on (rank, pos) kept with std::push_heap/pop_heap and a "greater" comparison.
  std::vector<Candidate>& heap = scratch->heap;
  heap.clear();
  const auto greater = [](const Candidate& x, const Candidate& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  const auto push_pair = [&](int32_t pos) {
    if (pos < 0 || sym[pos].next < 0) return;
    const int32_t a = sym[pos].id, b = sym[sym[pos].next].id;
    if (const Merge* m = FindMerge(a, b)) {
      heap.push_back({m->rank, pos, a, b});
      std::push_heap(heap.begin(), heap.end(), greater);
    }
  };
  const auto is_current = [&](const Candidate& c) {
    return sym[c.pos].id == c.left && sym[c.pos].next >= 0 && sym[sym[c.pos].next].id == c.right;
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i);

  std::vector<int32_t>& batch = scratch->batch;    // positions of this rank's pair, ascending
  std::vector<int32_t>& merged = scratch->merged;  // positions merged in this batch
  while (!heap.empty()) {
    const int32_t rank = heap.front().rank;
    batch.clear();
    while (!heap.empty() && heap.front().rank == rank) {
      if (is_current(heap.front())) batch.push_back(heap.front().pos);
      std::pop_heap(heap.begin(), heap.end(), greater);
      heap.pop_back();
    }
    // The heap pops equal ranks by ascending position; duplicates are adjacent.
    batch.erase(std::unique(batch.begin(), batch.end()), batch.end());
    if (batch.empty()) continue;
    const int32_t left = sym[batch[0]].id, right = sym[sym[batch[0]].next].id;
    const int32_t result = FindMerge(left, right)->merged_id;
    merged.clear();
    for (int32_t pos : batch) {
      // Re-check: with left == right an earlier merge in this batch may have consumed this
      // pair's left symbol ("a a a" -> "aa a"), exactly as encoder.py's left-to-right scan.
      if (sym[pos].id != left) continue;
      const int32_t nxt = sym[pos].next;
      if (nxt < 0 || sym[nxt].id != right) continue;
      sym[pos].id = result;
      sym[pos].next = sym[nxt].next;
      if (sym[nxt].next >= 0) sym[sym[nxt].next].prev = pos;
      sym[nxt].id = -1;
      merged.push_back(pos);
    }
    for (int32_t pos : merged) {
      if (sym[pos].id < 0) continue;
      push_pair(sym[pos].prev);
      push_pair(pos);
    }
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out->push_back(sym[i].id);
}

// GPT-2's pattern  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// as a hand-written scanner over decoded characters.
void Tokenizer::Impl::Encode(std::string_view text, std::vector<int32_t>* out) const {
  // Decode once: character k spans bytes [off[k], off[k+1]).
  std::vector<uint32_t> cps;   // (n,) code points (invalid bytes: 0xFFFFFFFF)
  std::vector<CharClass> cls;  // (n,)
  std::vector<uint32_t> off;   // (n + 1,) byte offsets
  cps.reserve(text.size());
  cls.reserve(text.size());
  off.reserve(text.size() + 1);
  for (size_t i = 0; i < text.size();) {
    uint32_t cp;
    size_t len = DecodeUtf8(text, i, &cp);
    off.push_back(static_cast<uint32_t>(i));
    if (len == 0) {  // invalid byte: one "other" character
      cps.push_back(0xFFFFFFFFu);
      cls.push_back(CharClass::kOther);
      len = 1;
    } else {
      cps.push_back(cp);
      cls.push_back(ClassOf(cp));
    }
    i += len;
  }
  const size_t n = cps.size();
  off.push_back(static_cast<uint32_t>(text.size()));

  BpeScratch scratch;
  const auto emit = [&](size_t begin, size_t end) {
    BytePairEncode(text.substr(off[begin], off[end] - off[begin]), &scratch, out);
  };
  const auto run_of = [&](size_t j, CharClass c) {
    while (j < n && cls[j] == c) ++j;
    return j;
  };
  size_t i = 0;
  while (i < n) {
    // Contractions (case-sensitive, ASCII only, tried first at every match start).
    if (cps[i] == '\'' && i + 1 < n) {
      const uint32_t c1 = cps[i + 1], c2 = i + 2 < n ? cps[i + 2] : 0;
      size_t len = 0;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        len = 2;
      } else if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
        len = 3;
      }
      if (len > 0) {
        emit(i, i + len);
        i += len;
        continue;
      }
    }
    // " ?X+" for X in letters, numbers, other: an optional leading U+0020 if a non-space follows.
    const bool lead_space = cps[i] == ' ' && i + 1 < n && cls[i + 1] != CharClass::kSpace;
    const size_t first = lead_space ? i + 1 : i;
    if (cls[first] != CharClass::kSpace) {
      const size_t end = run_of(first, cls[first]);
      emit(i, end);
      i = end;
      continue;
    }
    // Whitespace run: \s+(?!\S) leaves the last space for the next token when a non-space
    // follows and the run is longer than one; otherwise \s+ takes the whole run.
    const size_t end = run_of(i, CharClass::kSpace);
    const size_t take = (end < n && end - i >= 2) ? end - 1 : end;
    emit(i, take);
    i = take;
  }
}

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Build(
    std::vector<std::string> vocab, std::vector<std::pair<std::string, std::string>> merges) {
  if (vocab.empty()) return absl::InvalidArgumentError("tokenizer vocab is empty");
  if (vocab.size() > kMaxVocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer vocab has ", vocab.size(), " tokens (max ", kMaxVocab, ")"));
  }
  if (merges.size() > kMaxMerges) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer has ", merges.size(), " merges (max ", kMaxMerges, ")"));
  }
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  Impl& impl = *tok->impl_;
  std::unordered_map<std::string_view, int32_t> id_of;  // views into vocab
  id_of.reserve(vocab.size());
  impl.token_bytes.resize(vocab.size());
  for (size_t id = 0; id < vocab.size(); ++id) {
    const std::string& t = vocab[id];
    if (t.empty()) return absl::InvalidArgumentError(absl::StrCat("token ", id, " is empty"));
    if (t.size() > 0xFFFF) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", id, " is ", t.size(), " bytes long (max 65535)"));
    }
    if (!TokenToBytes(t, &impl.token_bytes[id])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token ", id, " (", json::Quote(t), ") is not in GPT-2's byte-to-unicode alphabet"));
    }
    auto [it, inserted] = id_of.emplace(t, static_cast<int32_t>(id));
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat("token ", json::Quote(t),
                                                     " appears twice in the vocab (ids ",
                                                     it->second, " and ", id, ")"));
    }
  }
  const ByteAlphabet& alphabet = Alphabet();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    AppendUtf8(alphabet.byte_to_cp[b], &ch);
    auto it = id_of.find(ch);
    if (it == id_of.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocab lacks the single-byte token ", json::Quote(ch), " (byte ", b, ")"));
    }
    impl.byte_id[b] = it->second;
  }
  if (auto it = id_of.find(kEndOfText); it != id_of.end()) {
    impl.eos_id = it->second;
    tok->eos_ids_ = {it->second};
  }

  impl.merge_ids.reserve(merges.size());
  impl.merge_of.Reserve(merges.size());
  std::string joined;
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    const auto ia = id_of.find(a), ib = id_of.find(b);
    if (ia == id_of.end() || ib == id_of.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "merge ", r, " (", json::Quote(a), " ", json::Quote(b),
          ") references a token not in the vocab: ", json::Quote(ia == id_of.end() ? a : b)));
    }
    joined = a + b;
    const auto im = id_of.find(joined);
    if (im == id_of.end()) {
      return absl::InvalidArgumentError(absl::StrCat("merge ", r, " (", json::Quote(a), " ",
                                                     json::Quote(b), ") produces ",
                                                     json::Quote(joined), ", not in the vocab"));
    }
    Merge existing{0, 0};
    if (!impl.merge_of.Insert(PairKey(ia->second, ib->second),
                              Merge{static_cast<int32_t>(r), im->second}, &existing)) {
      return absl::InvalidArgumentError(absl::StrCat("merge ", r, " (", json::Quote(a), " ",
                                                     json::Quote(b), ") duplicates merge ",
                                                     existing.rank));
    }
    impl.merge_ids.emplace_back(ia->second, ib->second);
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFiles(
    const std::string& vocab_json_path, const std::string& merges_txt_path) {
  absl::StatusOr<std::string> vocab_text = ReadFile(vocab_json_path);
  if (!vocab_text.ok()) return vocab_text.status();
  absl::StatusOr<json::Value> doc = json::Parse(*vocab_text);
  if (!doc.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(vocab_json_path, ": ", doc.status().message()));
  }
  if (!doc->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(vocab_json_path, ": expected a JSON object {token: id}"));
  }
  const auto& members = doc->members();
  const size_t n = members.size();
  if (n == 0 || n > kMaxVocab) {
    return absl::InvalidArgumentError(
        absl::StrCat(vocab_json_path, ": vocab has ", n, " tokens (expected 1..", kMaxVocab, ")"));
  }
  std::vector<std::string> vocab(n);
  std::vector<bool> seen(n, false);
  for (const auto& [token, value] : members) {
    const double d = value.is_number() ? value.as_number() : -1;
    if (!value.is_number() || d < 0 || d >= static_cast<double>(n) ||
        d != static_cast<double>(static_cast<int64_t>(d))) {
      return absl::InvalidArgumentError(
          absl::StrCat(vocab_json_path, ": id of token ", json::Quote(token), " is ", value.Dump(),
                       "; ids must be distinct integers 0..", n - 1, " (a dense range)"));
    }
    const size_t id = static_cast<size_t>(d);
    if (seen[id]) {
      return absl::InvalidArgumentError(absl::StrCat(vocab_json_path, ": id ", id,
                                                     " is used twice (second time by ",
                                                     json::Quote(token), ")"));
    }
    seen[id] = true;
    vocab[id] = token;
  }
  // n distinct ids in [0, n) cover the range, so vocab has no holes.

  absl::StatusOr<std::string> merges_text = ReadFile(merges_txt_path);
  if (!merges_text.ok()) return merges_text.status();
  std::vector<std::pair<std::string, std::string>> merges;
  size_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(*merges_text, '\n')) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    if (line_no == 1 && line.substr(0, 8) == "#version") continue;
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(merges_txt_path, " line ", line_no,
                                                     ": expected 2 space-separated tokens, got ",
                                                     parts.size()));
    }
    merges.emplace_back(std::string(parts[0]), std::string(parts[1]));
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Build(std::move(vocab), std::move(merges));
  if (!tok.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(vocab_json_path, " + ", merges_txt_path, ": ", tok.status().message()));
  }
  return tok;
}

std::vector<uint8_t> Tokenizer::Serialize() const {
  std::vector<uint8_t> out(kMagic, kMagic + 4);
  if (hf_ != nullptr) {  // version 2: the end-of-sequence ids, then the tokenizer.json members
    PutU32(kHfBlobVersion, &out);
    PutU32(static_cast<uint32_t>(eos_ids_.size()), &out);
    for (int32_t id : eos_ids_) PutU32(static_cast<uint32_t>(id), &out);
    PutU32(static_cast<uint32_t>(hf_json_.size()), &out);
    out.insert(out.end(), hf_json_.begin(), hf_json_.end());
    return out;
  }
  PutU32(kBlobVersion, &out);
  PutU32(static_cast<uint32_t>(impl_->token_bytes.size()), &out);
  for (const std::string& t : impl_->token_bytes) PutString(BytesToToken(t), &out);
  PutU32(static_cast<uint32_t>(impl_->merge_ids.size()), &out);
  for (const auto& [a, b] : impl_->merge_ids) {
    PutString(BytesToToken(impl_->token_bytes[a]), &out);
    PutString(BytesToToken(impl_->token_bytes[b]), &out);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromTokenizerJson(
    std::string_view text, std::vector<int32_t> eos_ids) {
  absl::StatusOr<json::Value> doc = json::Parse(text);
  if (!doc.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json is not valid JSON: ", doc.status().message()));
  }
  auto hf = HfTokenizer::Build(*doc);
  if (!hf.ok()) return hf.status();
  if (eos_ids.size() > 64) return absl::InvalidArgumentError("more than 64 end-of-sequence ids");
  for (int32_t id : eos_ids) {
    if (id < 0 || id >= (*hf)->vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat("end-of-sequence id ", id,
                                                     " is not in the tokenizer's vocabulary (",
                                                     (*hf)->vocab_size(), " tokens)"));
    }
  }
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  // Keep only what the pipeline reads (a tokenizer.json also holds truncation, padding, ...).
  json::Value kept = json::Value::Object();
  for (const char* key :
       {"added_tokens", "normalizer", "pre_tokenizer", "model", "post_processor", "decoder"}) {
    const json::Value* v = doc->Find(key);
    kept.AppendMember(key, v != nullptr ? *v : json::Value::Null());
  }
  tok->hf_json_ = kept.Dump();
  tok->hf_ = std::move(*hf);
  tok->eos_ids_ = std::move(eos_ids);
  return tok;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Deserialize(absl::Span<const uint8_t> blob) {
  BlobReader r(blob);
  std::string magic;
  if (absl::Status s = r.Bytes(4, &magic, "magic"); !s.ok()) return s;
  if (std::memcmp(magic.data(), kMagic, 4) != 0) {
    return absl::InvalidArgumentError("tokenizer blob: bad magic (expected \"SCTK\")");
  }
  uint32_t version = 0, n_vocab = 0, n_merges = 0;
  if (absl::Status s = r.U32(&version, "version"); !s.ok()) return s;
  if (version == kHfBlobVersion) {
    uint32_t n_eos = 0, json_bytes = 0;
    if (absl::Status s = r.U32(&n_eos, "n_eos"); !s.ok()) return s;
    if (n_eos > 64) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer blob: n_eos ", n_eos, " > 64"));
    }
    std::vector<int32_t> eos(n_eos);
    for (uint32_t i = 0; i < n_eos; ++i) {
      uint32_t id = 0;
      if (absl::Status s = r.U32(&id, "eos id"); !s.ok()) return s;
      eos[i] = static_cast<int32_t>(id);
    }
    if (absl::Status s = r.U32(&json_bytes, "json_bytes"); !s.ok()) return s;
    std::string text;
    if (absl::Status s = r.Bytes(json_bytes, &text, "tokenizer.json"); !s.ok()) return s;
    if (r.remaining() != 0) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer blob: ", r.remaining(),
                                                     " trailing bytes after offset ", r.offset()));
    }
    auto tok = FromTokenizerJson(text, std::move(eos));
    if (!tok.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer blob: ", tok.status().message()));
    }
    return tok;
  }
  if (version != kBlobVersion) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer blob: unsupported version ", version,
                                                   " (this build reads ", kBlobVersion, " and ",
                                                   kHfBlobVersion, ")"));
  }
  if (absl::Status s = r.U32(&n_vocab, "n_vocab"); !s.ok()) return s;
  // Each entry takes at least 3 bytes: reject impossible counts before allocating.
  if (n_vocab == 0 || n_vocab > kMaxVocab || n_vocab > r.remaining() / 3) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer blob: n_vocab ", n_vocab,
                                                   " is impossible (max ", kMaxVocab, ", ",
                                                   r.remaining(), " bytes remain)"));
  }
  std::vector<std::string> vocab(n_vocab);
  for (uint32_t i = 0; i < n_vocab; ++i) {
    if (absl::Status s = r.String(&vocab[i], absl::StrCat("token ", i)); !s.ok()) return s;
  }
  if (absl::Status s = r.U32(&n_merges, "n_merges"); !s.ok()) return s;
  if (n_merges > kMaxMerges || n_merges > r.remaining() / 6) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer blob: n_merges ", n_merges,
                                                   " is impossible (max ", kMaxMerges, ", ",
                                                   r.remaining(), " bytes remain)"));
  }
  std::vector<std::pair<std::string, std::string>> merges(n_merges);
  for (uint32_t i = 0; i < n_merges; ++i) {
    const std::string what = absl::StrCat("merge ", i);
    if (absl::Status s = r.String(&merges[i].first, what); !s.ok()) return s;
    if (absl::Status s = r.String(&merges[i].second, what); !s.ok()) return s;
  }
  if (r.remaining() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer blob: ", r.remaining(),
                                                   " trailing bytes after offset ", r.offset()));
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Build(std::move(vocab), std::move(merges));
  if (!tok.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer blob: ", tok.status().message()));
  }
  return tok;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> ids;
  if (hf_ != nullptr) {
    hf_->Encode(text, &ids);
  } else {
    impl_->Encode(text, &ids);
  }
  return ids;
}

std::vector<int32_t> Tokenizer::EncodeForModel(std::string_view text) const {
  std::vector<int32_t> ids = prefix();
  const std::vector<int32_t> body = Encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  ids.insert(ids.end(), suffix().begin(), suffix().end());
  return ids;
}

const std::vector<int32_t>& Tokenizer::prefix() const {
  return hf_ != nullptr ? hf_->prefix() : none_;
}
const std::vector<int32_t>& Tokenizer::suffix() const {
  return hf_ != nullptr ? hf_->suffix() : none_;
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  if (hf_ != nullptr) return hf_->Decode(ids);
  std::string out;
  for (int32_t id : ids) {
    if (id >= 0 && static_cast<size_t>(id) < impl_->token_bytes.size()) {
      out += impl_->token_bytes[id];
    }
  }
  return out;
}

std::string Tokenizer::DecodeToken(int32_t id) const {
  if (hf_ != nullptr) return hf_->TokenBytes(id);
  if (id < 0 || static_cast<size_t>(id) >= impl_->token_bytes.size()) return std::string();
  return impl_->token_bytes[id];
}

int32_t Tokenizer::vocab_size() const {
  return hf_ != nullptr ? hf_->vocab_size() : static_cast<int32_t>(impl_->token_bytes.size());
}
int32_t Tokenizer::eos_id() const {
  if (hf_ != nullptr) return eos_ids_.empty() ? -1 : eos_ids_[0];
  return impl_->eos_id;
}
const std::vector<int32_t>& Tokenizer::eos_ids() const { return eos_ids_; }
bool Tokenizer::is_eos(int32_t id) const {
  return std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end();
}
bool Tokenizer::is_special(int32_t id) const { return hf_ != nullptr && hf_->IsSpecial(id); }
const char* Tokenizer::kind() const { return hf_ != nullptr ? "tokenizer.json" : "gpt2-bpe"; }

}  // namespace selfcond
