// tokenizer.json BPE tokenizers (see hf_tokenizer.h for the supported pipeline).
//
// Text is handled as UTF-8 throughout; tokenizers.js works on JavaScript strings, so invalid
// UTF-8 input is first replaced by U+FFFD per bad byte (what TextDecoder would give it), and the
// splitting of added tokens, which tokenizers.js does on UTF-16 units, is done on bytes (the same
// matches: every token's text is valid UTF-8 starting at a character boundary).
#include "formats/hf_tokenizer.h"

#include <algorithm>
#include <map>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "formats/bpe_common.h"
#include "formats/regex.h"
#include "formats/unicode.h"
#include "util/utf8.h"

namespace selfcond {
namespace {

using bpe::Alphabet;
using bpe::Merge;
using bpe::MergeMap;
using bpe::PairKey;

constexpr int32_t kMaxVocab = 1 << 24;

// GPT-2's pattern, which tokenizers.js's ByteLevel pre-tokenizer runs as a native JavaScript
// regex (so its \s is JavaScript's).
constexpr char kGpt2Pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

absl::Status Unsupported(const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: ", what, " is not supported by selfcond"));
}
absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", what));
}

std::string TypeOf(const json::Value& v) {
  const json::Value* t = v.Find("type");
  return t != nullptr && t->is_string() ? std::string(t->as_string()) : std::string();
}

bool BoolOr(const json::Value& v, const char* key, bool dflt) {
  const json::Value* b = v.Find(key);
  return b != nullptr && b->is_bool() ? b->as_bool() : dflt;
}

std::string StringOr(const json::Value& v, const char* key, const std::string& dflt) {
  const json::Value* s = v.Find(key);
  return s != nullptr && s->is_string() ? std::string(s->as_string()) : dflt;
}

std::vector<uint32_t> CodePoints(std::string_view s) {
  std::vector<uint32_t> cps;
  cps.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    const size_t n = DecodeUtf8(s, i, &cp);
    cps.push_back(n == 0 ? 0xFFFD : cp);
    i += n == 0 ? 1 : n;
  }
  return cps;
}

std::string Utf8Of(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) AppendUtf8(cps[i], &out);
  return out;
}

// Valid UTF-8: each invalid byte becomes U+FFFD.
std::string Sanitize(std::string_view s) {
  bool valid = true;
  for (size_t i = 0; i < s.size() && valid;) {
    uint32_t cp;
    const size_t n = DecodeUtf8(s, i, &cp);
    valid = n != 0;
    i += n;
  }
  if (valid) return std::string(s);
  const std::vector<uint32_t> cps = CodePoints(s);
  return Utf8Of(cps, 0, cps.size());
}

// JavaScript's trimStart / trimEnd (White Space and Line Terminators).
std::string TrimStart(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp;
    const size_t n = DecodeUtf8(s, i, &cp);
    if (n == 0 || !unicode::IsJsSpace(cp)) break;
    i += n;
  }
  return s.substr(i);
}
std::string TrimEnd(const std::string& s) {
  std::vector<uint32_t> cps = CodePoints(s);
  size_t e = cps.size();
  while (e > 0 && unicode::IsJsSpace(cps[e - 1])) --e;
  return e == cps.size() ? s : Utf8Of(cps, 0, e);
}

std::string ReplaceAll(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t i = 0;
  for (;;) {
    const size_t j = s.find(from, i);
    if (j == std::string::npos) break;
    out.append(s, i, j - i);
    out += to;
    i = j + from.size();
  }
  out.append(s, i, std::string::npos);
  return out;
}

// A trie over byte strings: the longest entry starting at each position (DictionarySplitter).
class Splitter {
 public:
  void Add(const std::string& word) {
    if (word.empty()) return;
    int node = 0;
    for (unsigned char c : word) {
      auto it = nodes_[node].next.find(c);
      if (it == nodes_[node].next.end()) {
        nodes_.push_back({});
        it = nodes_[node].next.emplace(c, static_cast<int>(nodes_.size()) - 1).first;
      }
      node = it->second;
    }
    nodes_[node].end = true;
  }
  // Pieces of text: the text between matches and the matches, in order (empties dropped).
  std::vector<std::string> Split(const std::string& text) const {
    std::vector<std::string> out;
    size_t start = 0, i = 0;
    while (i < text.size()) {
      int node = 0;
      size_t match = 0;
      for (size_t j = i; j < text.size(); ++j) {
        auto it = nodes_[node].next.find(static_cast<unsigned char>(text[j]));
        if (it == nodes_[node].next.end()) break;
        node = it->second;
        if (nodes_[node].end) match = j + 1 - i;
      }
      if (match > 0) {
        if (i > start) out.push_back(text.substr(start, i - start));
        out.push_back(text.substr(i, match));
        i += match;
        start = i;
      } else {
        ++i;
      }
    }
    if (start < text.size()) out.push_back(text.substr(start));
    return out;
  }

 private:
  struct Node {
    std::map<unsigned char, int> next;
    bool end = false;
  };
  std::vector<Node> nodes_ = {Node{}};
};

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool lstrip = false, rstrip = false, normalized = false, special = false;
};

struct NormalizerStep {
  enum Kind { kNfc, kPrepend, kReplace, kReplaceRegex };
  explicit NormalizerStep(Kind k) : kind(k) {}
  Kind kind;
  std::string a, b;  // kPrepend: a; kReplace: a -> b
  std::unique_ptr<Regex> regex;
};

struct PreTokenizerStep {
  enum Kind { kByteLevel, kSplit, kDigits, kMetaspace };
  explicit PreTokenizerStep(Kind k) : kind(k) {}
  Kind kind;
  bool add_prefix_space = false;  // kByteLevel
  bool use_regex = true;          // kByteLevel
  std::unique_ptr<Regex> regex;   // kSplit (and kByteLevel's GPT-2 pattern)
  enum Behavior { kIsolated, kRemoved, kInvert } behavior = kIsolated;  // kSplit
  bool individual_digits = false;                                       // kDigits
  std::string replacement;                                              // kMetaspace
  enum Prepend { kAlways, kFirst, kNever } prepend = kAlways;           // kMetaspace
};

}  // namespace

struct HfTokenizer::Impl {
  std::vector<std::string> vocab;  // (vocab_size) token strings as in the file ("" for holes)
  std::unordered_map<std::string, int32_t> id_of;
  MergeMap merges;
  int32_t unk_id = -1;
  bool byte_fallback = false, fuse_unk = false, ignore_merges = false;
  int32_t byte_token[256];  // <0xNN> ids for byte_fallback (-1 if absent)

  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, int32_t> added_of;  // content (and normalized content) -> id
  Splitter split_unnormalized, split_normalized;
  std::vector<bool> special;  // (vocab_size)

  std::vector<int32_t> prefix, suffix;

  std::vector<std::string> token_bytes;  // (vocab_size) what each token decodes to
  int strip_start = 0;                   // leading spaces the decoder strips from a sequence
  std::string empty;

  // Build's steps: the BPE model's vocabulary with the added tokens, its merges, and what each
  // token decodes to (n_vocab entries).
  absl::Status LoadVocab(const json::Value& doc, const json::Value& model);
  absl::Status LoadMerges(const json::Value& model);
  void BuildTokenBytes(bool byte_level, bool byte_fallback,
                       const std::vector<std::pair<std::string, std::string>>& replace);

  std::string Normalize(std::string s) const;
  void PreTokenize(const std::string& s, size_t section, std::vector<std::string>* out) const;
  void Bpe(const std::string& word, std::vector<int32_t>* out) const;
  void EncodeSection(const std::string& text, size_t section, std::vector<int32_t>* out) const;
};

HfTokenizer::HfTokenizer() : impl_(std::make_unique<Impl>()) {}
HfTokenizer::~HfTokenizer() = default;

namespace {

absl::Status ParseNormalizer(const json::Value& v, std::vector<NormalizerStep>* out) {
  if (v.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(v);
  if (type == "Sequence") {
    const json::Value* list = v.Find("normalizers");
    if (list == nullptr || !list->is_array()) return Bad("Sequence normalizer without a list");
    for (const json::Value& n : list->items()) {
      if (auto st = ParseNormalizer(n, out); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  NormalizerStep step(NormalizerStep::kNfc);
  if (type == "NFC") {
    out->push_back(std::move(step));
    return absl::OkStatus();
  }
  if (type == "Prepend") {
    step.kind = NormalizerStep::kPrepend;
    step.a = StringOr(v, "prepend", "");
    out->push_back(std::move(step));
    return absl::OkStatus();
  }
  if (type == "Replace") {
    const json::Value* pat = v.Find("pattern");
    step.b = StringOr(v, "content", "");
    if (pat != nullptr && pat->Find("String") != nullptr && pat->Find("String")->is_string()) {
      step.kind = NormalizerStep::kReplace;
      step.a = std::string(pat->Find("String")->as_string());
    } else if (pat != nullptr && pat->Find("Regex") != nullptr && pat->Find("Regex")->is_string()) {
      step.kind = NormalizerStep::kReplaceRegex;
      auto re = Regex::Compile(pat->Find("Regex")->as_string());
      if (!re.ok()) return Bad(absl::StrCat("Replace normalizer: ", re.status().message()));
      step.regex = std::move(*re);
    } else {
      return Bad("Replace normalizer without a String or Regex pattern");
    }
    out->push_back(std::move(step));
    return absl::OkStatus();
  }
  return Unsupported(absl::StrCat("the normalizer \"", type, "\""));
}

absl::Status ParsePreTokenizer(const json::Value& v, std::vector<PreTokenizerStep>* out) {
  if (v.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(v);
  if (type == "Sequence") {
    const json::Value* list = v.Find("pretokenizers");
    if (list == nullptr || !list->is_array()) return Bad("Sequence pre-tokenizer without a list");
    for (const json::Value& p : list->items()) {
      if (auto st = ParsePreTokenizer(p, out); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  PreTokenizerStep step(PreTokenizerStep::kByteLevel);
  if (type == "ByteLevel") {
    step.add_prefix_space = BoolOr(v, "add_prefix_space", false);
    step.use_regex = BoolOr(v, "use_regex", true);
    if (step.use_regex) {
      auto re = Regex::Compile(kGpt2Pattern, /*js_whitespace=*/true);
      if (!re.ok()) return re.status();
      step.regex = std::move(*re);
    }
  } else if (type == "Split") {
    step.kind = PreTokenizerStep::kSplit;
    const json::Value* pat = v.Find("pattern");
    std::string source;
    if (pat != nullptr && pat->Find("Regex") != nullptr && pat->Find("Regex")->is_string()) {
      source = std::string(pat->Find("Regex")->as_string());
    } else if (pat != nullptr && pat->Find("String") != nullptr &&
               pat->Find("String")->is_string()) {
      // A literal: escape every character for the regex engine.
      for (uint32_t cp : CodePoints(pat->Find("String")->as_string())) {
        if (cp < 128 && std::string_view("\\^$.|?*+()[]{}-").find(static_cast<char>(cp)) !=
                            std::string_view::npos) {
          source += '\\';
        }
        AppendUtf8(cp, &source);
      }
    } else {
      return Bad("Split pre-tokenizer without a Regex or String pattern");
    }
    auto re = Regex::Compile(source);
    if (!re.ok()) return Bad(absl::StrCat("Split pre-tokenizer: ", re.status().message()));
    step.regex = std::move(*re);
    const std::string behavior = StringOr(v, "behavior", "Isolated");
    if (BoolOr(v, "invert", false)) {
      step.behavior = PreTokenizerStep::kInvert;
    } else if (behavior == "Isolated") {
      step.behavior = PreTokenizerStep::kIsolated;
    } else if (behavior == "Removed") {
      step.behavior = PreTokenizerStep::kRemoved;
    } else {
      return Unsupported(absl::StrCat("the Split behavior \"", behavior, "\""));
    }
  } else if (type == "Digits") {
    step.kind = PreTokenizerStep::kDigits;
    step.individual_digits = BoolOr(v, "individual_digits", false);
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::kMetaspace;
    step.replacement = StringOr(v, "replacement", "\xE2\x96\x81");  // U+2581
    const std::string scheme = StringOr(v, "prepend_scheme", "always");
    if (scheme == "always") {
      step.prepend = PreTokenizerStep::kAlways;
    } else if (scheme == "first") {
      step.prepend = PreTokenizerStep::kFirst;
    } else if (scheme == "never") {
      step.prepend = PreTokenizerStep::kNever;
    } else {
      return Bad(absl::StrCat("Metaspace prepend_scheme \"", scheme, "\""));
    }
    if (BoolOr(v, "split", false)) return Unsupported("a Metaspace pre-tokenizer with split: true");
  } else {
    return Unsupported(absl::StrCat("the pre-tokenizer \"", type, "\""));
  }
  out->push_back(std::move(step));
  return absl::OkStatus();
}

// The decoder chain as what it does to one token and to a whole sequence.
struct DecoderPlan {
  bool byte_level = false;
  std::vector<std::pair<std::string, std::string>> replace;  // per token, in order
  bool byte_fallback = false;
  int strip_start = 0;  // leading spaces stripped from the fused sequence
};

absl::Status ParseDecoder(const json::Value& v, DecoderPlan* plan, bool* fused) {
  if (v.is_null()) return Unsupported("a missing decoder");
  const std::string type = TypeOf(v);
  if (type == "Sequence") {
    const json::Value* list = v.Find("decoders");
    if (list == nullptr || !list->is_array()) return Bad("Sequence decoder without a list");
    for (const json::Value& d : list->items()) {
      if (auto st = ParseDecoder(d, plan, fused); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    plan->byte_level = true;
  } else if (type == "Replace") {
    const json::Value* pat = v.Find("pattern");
    if (pat == nullptr || pat->Find("String") == nullptr || !pat->Find("String")->is_string()) {
      return Unsupported("a Replace decoder without a String pattern");
    }
    plan->replace.emplace_back(std::string(pat->Find("String")->as_string()),
                               StringOr(v, "content", ""));
  } else if (type == "ByteFallback") {
    plan->byte_fallback = true;
  } else if (type == "Fuse") {
    *fused = true;
  } else if (type == "Strip") {
    const json::Value* start = v.Find("start");
    const json::Value* stop = v.Find("stop");
    if (StringOr(v, "content", " ") != " " || (stop != nullptr && stop->as_number() != 0)) {
      return Unsupported("a Strip decoder other than leading spaces");
    }
    if (!*fused) return Unsupported("a Strip decoder before Fuse");
    plan->strip_start += start != nullptr ? static_cast<int>(start->as_number()) : 0;
  } else if (type == "Metaspace") {
    plan->replace.emplace_back(StringOr(v, "replacement", "\xE2\x96\x81"), " ");
    plan->strip_start += 1;  // tokenizers.js drops the first token's leading space
  } else {
    return Unsupported(absl::StrCat("the decoder \"", type, "\""));
  }
  return absl::OkStatus();
}

// The special tokens of a post-processor's single-sequence template, before and after $A.
absl::Status ParsePostProcessor(const json::Value& v,
                                const std::unordered_map<std::string, int32_t>& id_of,
                                std::vector<int32_t>* prefix, std::vector<int32_t>* suffix) {
  if (v.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(v);
  if (type == "ByteLevel") return absl::OkStatus();
  if (type == "Sequence") {
    const json::Value* list = v.Find("processors");
    if (list == nullptr || !list->is_array()) return Bad("Sequence post-processor without a list");
    for (const json::Value& p : list->items()) {
      if (auto st = ParsePostProcessor(p, id_of, prefix, suffix); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  if (type != "TemplateProcessing") {
    return Unsupported(absl::StrCat("the post-processor \"", type, "\""));
  }
  const json::Value* single = v.Find("single");
  if (single == nullptr || !single->is_array()) return Bad("TemplateProcessing without single");
  std::vector<int32_t> before, after;
  bool seen_a = false;
  for (const json::Value& item : single->items()) {
    if (const json::Value* st = item.Find("SpecialToken"); st != nullptr) {
      const std::string name = StringOr(*st, "id", "");
      auto it = id_of.find(name);
      if (it == id_of.end()) {
        return Bad(absl::StrCat("the template's special token ", json::Quote(name),
                                " is not in the vocabulary"));
      }
      (seen_a ? after : before).push_back(it->second);
    } else if (const json::Value* seq = item.Find("Sequence"); seq != nullptr) {
      if (StringOr(*seq, "id", "A") != "A") return Bad("the single template uses sequence B");
      seen_a = true;
    } else {
      return Bad("TemplateProcessing item is neither SpecialToken nor Sequence");
    }
  }
  if (!seen_a) return Bad("TemplateProcessing single template has no $A");
  prefix->insert(prefix->end(), before.begin(), before.end());
  suffix->insert(suffix->begin(), after.begin(), after.end());
  return absl::OkStatus();
}

}  // namespace

absl::Status HfTokenizer::Impl::LoadVocab(const json::Value& doc, const json::Value& model) {
  const json::Value* vocab_json = model.Find("vocab");
  if (vocab_json == nullptr || !vocab_json->is_object()) return Bad("model.vocab is not an object");
  std::vector<std::pair<std::string, int32_t>> entries;
  for (const auto& [token, id] : vocab_json->members()) {
    const double d = id.as_number();
    if (!id.is_number() || d < 0 || d >= kMaxVocab || d != static_cast<int32_t>(d)) {
      return Bad(absl::StrCat("the id of token ", json::Quote(token), " is ", id.Dump()));
    }
    entries.emplace_back(std::string(token), static_cast<int32_t>(d));
  }
  // Added tokens (their ids may lie past the model's vocab).
  const json::Value* added_json = doc.Find("added_tokens");
  if (added_json != nullptr && !added_json->is_null()) {
    if (!added_json->is_array()) return Bad("added_tokens is not an array");
    for (const json::Value& a : added_json->items()) {
      AddedToken t;
      t.content = StringOr(a, "content", "");
      const json::Value* id = a.Find("id");
      if (t.content.empty() || id == nullptr || !id->is_number() || id->as_number() < 0 ||
          id->as_number() >= kMaxVocab ||
          id->as_number() != static_cast<int32_t>(id->as_number())) {
        return Bad("an added token needs a non-empty content and an integer id");
      }
      t.id = static_cast<int32_t>(id->as_number());
      t.lstrip = BoolOr(a, "lstrip", false);
      t.rstrip = BoolOr(a, "rstrip", false);
      t.special = BoolOr(a, "special", false);
      t.normalized = BoolOr(a, "normalized", !t.special);
      added.push_back(std::move(t));
    }
  }
  int32_t n_vocab = 0;
  for (const auto& [token, id] : entries) n_vocab = std::max(n_vocab, id + 1);
  for (const AddedToken& t : added) n_vocab = std::max(n_vocab, t.id + 1);
  if (n_vocab == 0) return Bad("the vocabulary is empty");
  vocab.assign(n_vocab, std::string());
  special.assign(n_vocab, false);
  id_of.reserve(entries.size() + added.size());
  for (auto& [token, id] : entries) {
    if (!vocab[id].empty()) {
      return Bad(absl::StrCat("id ", id, " is used by ", json::Quote(vocab[id]), " and ",
                              json::Quote(token)));
    }
    if (token.size() > 0xFFFF) return Bad(absl::StrCat("token ", id, " is too long"));
    vocab[id] = token;
    id_of[token] = id;
  }
  for (const AddedToken& t : added) {
    // tokenizers.js lets an added token replace the model's token of the same id.
    vocab[t.id] = t.content;
    id_of[t.content] = t.id;
    special[t.id] = t.special;
  }
  return absl::OkStatus();
}

// Merges: "a b" strings or [a, b] pairs; each must join two tokens into a third.
absl::Status HfTokenizer::Impl::LoadMerges(const json::Value& model) {
  const json::Value* list = model.Find("merges");
  if (list == nullptr || !list->is_array()) return Bad("model.merges is not an array");
  merges.Reserve(list->items().size());
  int32_t rank = 0;
  for (const json::Value& mv : list->items()) {
    std::string a, b;
    if (mv.is_string()) {
      const std::string_view s = mv.as_string();
      const size_t sp = s.find(' ', 1);
      if (sp == std::string_view::npos) return Bad(absl::StrCat("merge ", rank, " has no space"));
      a = std::string(s.substr(0, sp));
      b = std::string(s.substr(sp + 1));
    } else if (mv.is_array() && mv.items().size() == 2 && mv.items()[0].is_string() &&
               mv.items()[1].is_string()) {
      a = std::string(mv.items()[0].as_string());
      b = std::string(mv.items()[1].as_string());
    } else {
      return Bad(absl::StrCat("merge ", rank, " is neither \"a b\" nor [a, b]"));
    }
    auto ia = id_of.find(a), ib = id_of.find(b), im = id_of.find(a + b);
    if (ia == id_of.end() || ib == id_of.end() || im == id_of.end()) {
      return Bad(absl::StrCat("merge ", rank, " (", json::Quote(a), " ", json::Quote(b),
                              ") needs tokens that are not in the vocabulary"));
    }
    Merge existing{0, 0};
    // A repeated pair keeps its first (best) rank, as a rank table built in order would.
    merges.Insert(PairKey(ia->second, ib->second), Merge{rank, im->second}, &existing);
    ++rank;
  }
  return absl::OkStatus();
}

void HfTokenizer::Impl::BuildTokenBytes(
    bool byte_level, bool fallback,
    const std::vector<std::pair<std::string, std::string>>& replace) {
  const int32_t n_vocab = static_cast<int32_t>(vocab.size());
  token_bytes.resize(n_vocab);
  std::vector<bool> is_added(n_vocab, false);
  for (const AddedToken& t : added) is_added[t.id] = true;
  for (int32_t id = 0; id < n_vocab; ++id) {
    const std::string& t = vocab[id];
    std::string& out = token_bytes[id];
    if (special[id]) continue;  // special tokens decode to no text
    if (is_added[id]) {         // other added tokens: their content as is
      out = t;
      continue;
    }
    if (byte_level) {
      if (!bpe::TokenToBytes(t, &out)) out = t;  // characters outside the alphabet stay
      continue;
    }
    out = t;
    for (const auto& [from, to] : replace) out = ReplaceAll(out, from, to);
    if (fallback && out.size() == 6 && out.compare(0, 3, "<0x") == 0 && out[5] == '>') {
      const std::string hex = out.substr(3, 2);
      char* end = nullptr;
      const long v = std::strtol(hex.c_str(), &end, 16);
      if (end == hex.c_str() + 2) out = std::string(1, static_cast<char>(v));
    }
  }
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Build(const json::Value& doc) {
  if (!doc.is_object()) return Bad("not a JSON object");
  std::unique_ptr<HfTokenizer> tok(new HfTokenizer());
  Impl& m = *tok->impl_;

  // ---- model: BPE --------------------------------------------------------------------
  const json::Value* model = doc.Find("model");
  if (model == nullptr || !model->is_object()) return Bad("no \"model\"");
  if (const std::string type = TypeOf(*model); type != "BPE") {
    return Unsupported(
        absl::StrCat("the model type \"", type.empty() ? "(none)" : type, "\" (only BPE)"));
  }
  if (const json::Value* d = model->Find("dropout"); d != nullptr && !d->is_null()) {
    if (d->as_number() != 0) return Unsupported("BPE dropout");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json::Value* x = model->Find(key);
    if (x != nullptr && x->is_string() && !x->as_string().empty()) {
      return Unsupported(absl::StrCat("BPE ", key));
    }
  }
  if (auto st = m.LoadVocab(doc, *model); !st.ok()) return st;
  m.byte_fallback = BoolOr(*model, "byte_fallback", false);
  m.fuse_unk = BoolOr(*model, "fuse_unk", false);
  m.ignore_merges = BoolOr(*model, "ignore_merges", false);
  if (const json::Value* unk = model->Find("unk_token"); unk != nullptr && unk->is_string()) {
    auto it = m.id_of.find(std::string(unk->as_string()));
    if (it == m.id_of.end()) return Bad("unk_token is not in the vocabulary");
    m.unk_id = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = m.id_of.find(name);
    m.byte_token[b] = it == m.id_of.end() ? -1 : it->second;
  }
  if (auto st = m.LoadMerges(*model); !st.ok()) return st;

  // ---- the pipeline -------------------------------------------------------------------
  static const json::Value kNull;
  auto member = [&](const char* key) -> const json::Value& {
    const json::Value* v = doc.Find(key);
    return v != nullptr ? *v : kNull;
  };
  if (auto st = ParseNormalizer(member("normalizer"), &m.normalizer); !st.ok()) return st;
  if (auto st = ParsePreTokenizer(member("pre_tokenizer"), &m.pre_tokenizer); !st.ok()) return st;
  if (auto st = ParsePostProcessor(member("post_processor"), m.id_of, &m.prefix, &m.suffix);
      !st.ok()) {
    return st;
  }
  for (const AddedToken& t : m.added) {
    m.added_of[t.content] = t.id;
    if (t.normalized && !m.normalizer.empty()) {
      const std::string norm = m.Normalize(t.content);
      m.added_of[norm] = t.id;
      m.split_normalized.Add(norm);
    } else {
      m.split_unnormalized.Add(t.content);
    }
  }

  // ---- decoding ------------------------------------------------------------------------
  DecoderPlan plan;
  bool fused = false;
  if (auto st = ParseDecoder(member("decoder"), &plan, &fused); !st.ok()) return st;
  m.strip_start = plan.strip_start;
  m.BuildTokenBytes(plan.byte_level, plan.byte_fallback, plan.replace);
  return tok;
}

std::string HfTokenizer::Impl::Normalize(std::string s) const {
  for (const NormalizerStep& n : normalizer) {
    switch (n.kind) {
      case NormalizerStep::kNfc:
        s = unicode::Nfc(s);
        break;
      case NormalizerStep::kPrepend:
        s = n.a + s;
        break;
      case NormalizerStep::kReplace:
        s = ReplaceAll(s, n.a, n.b);
        break;
      case NormalizerStep::kReplaceRegex: {
        const std::vector<uint32_t> cps = CodePoints(s);
        std::string out;
        size_t prev = 0;
        for (const auto& [b, e] : n.regex->FindAll(cps)) {
          out += Utf8Of(cps, prev, b);
          out += n.b;
          prev = e;
        }
        out += Utf8Of(cps, prev, cps.size());
        s = std::move(out);
        break;
      }
    }
  }
  return s;
}

void HfTokenizer::Impl::PreTokenize(const std::string& text, size_t section,
                                    std::vector<std::string>* out) const {
  std::vector<std::string> pieces = {text};
  for (const PreTokenizerStep& step : pre_tokenizer) {
    std::vector<std::string> next;
    for (std::string& piece : pieces) {
      switch (step.kind) {
        case PreTokenizerStep::kByteLevel: {
          if (step.add_prefix_space && (piece.empty() || piece[0] != ' ')) piece = " " + piece;
          std::vector<std::string> words;
          if (step.use_regex) {
            const std::vector<uint32_t> cps = CodePoints(piece);
            for (const auto& [b, e] : step.regex->FindAll(cps)) {
              if (e > b) words.push_back(Utf8Of(cps, b, e));
            }
          } else {
            words.push_back(piece);
          }
          for (const std::string& w : words) next.push_back(bpe::BytesToToken(w));
          break;
        }
        case PreTokenizerStep::kSplit: {
          const std::vector<uint32_t> cps = CodePoints(piece);
          size_t prev = 0;
          for (const auto& [b, e] : step.regex->FindAll(cps)) {
            if (step.behavior != PreTokenizerStep::kInvert && prev < b) {
              next.push_back(Utf8Of(cps, prev, b));
            }
            if (step.behavior != PreTokenizerStep::kRemoved && e > b) {
              next.push_back(Utf8Of(cps, b, e));
            }
            prev = e;
          }
          if (step.behavior != PreTokenizerStep::kInvert && prev < cps.size()) {
            next.push_back(Utf8Of(cps, prev, cps.size()));
          }
          break;
        }
        case PreTokenizerStep::kDigits: {
          // tokenizers.js: /[^\d]+|\d+/gu (\d+ -> \d when individual), \d being ASCII digits.
          size_t i = 0;
          while (i < piece.size()) {
            const bool digit = piece[i] >= '0' && piece[i] <= '9';
            size_t j = i + 1;
            if (!digit) {
              while (j < piece.size() && !(piece[j] >= '0' && piece[j] <= '9')) ++j;
            } else if (!step.individual_digits) {
              while (j < piece.size() && piece[j] >= '0' && piece[j] <= '9') ++j;
            }
            next.push_back(piece.substr(i, j - i));
            i = j;
          }
          break;
        }
        case PreTokenizerStep::kMetaspace: {
          std::string s = ReplaceAll(piece, " ", step.replacement);
          const bool starts = s.compare(0, step.replacement.size(), step.replacement) == 0;
          if (!starts && (step.prepend == PreTokenizerStep::kAlways ||
                          (step.prepend == PreTokenizerStep::kFirst && section == 0))) {
            s = step.replacement + s;
          }
          next.push_back(std::move(s));
          break;
        }
      }
    }
    pieces = std::move(next);
  }
  for (std::string& p : pieces) out->push_back(std::move(p));
}

// BPE over one pre-token: lowest rank first, ties by position (tokenizers.js's queue).
void HfTokenizer::Impl::Bpe(const std::string& word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    if (auto it = id_of.find(word); it != id_of.end()) {
      out->push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id;          // -1: a character not in the vocabulary (kept as text)
    int32_t prev, next;  // -1 at the ends
    bool alive;
    std::string text;  // for id -1 only
  };
  std::vector<Symbol> sym;
  for (size_t i = 0; i < word.size();) {
    uint32_t cp;
    size_t n = DecodeUtf8(word, i, &cp);
    if (n == 0) n = 1;
    const std::string ch = word.substr(i, n);
    auto it = id_of.find(ch);
    const int32_t k = static_cast<int32_t>(sym.size());
    sym.push_back({it == id_of.end() ? -1 : it->second, k - 1, k + 1, true,
                   it == id_of.end() ? ch : std::string()});
    i += n;
  }
  sym.back().next = -1;
  struct Cand {
    int32_t rank, pos, left, right;
  };
  auto greater = [](const Cand& x, const Cand& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  std::vector<Cand> heap;
  auto push = [&](int32_t pos) {
    if (pos < 0 || !sym[pos].alive || sym[pos].next < 0) return;
    const int32_t a = sym[pos].id, b = sym[sym[pos].next].id;
    if (a < 0 || b < 0) return;
    if (const Merge* mg = merges.Find(PairKey(a, b))) {
      heap.push_back({mg->rank, pos, a, b});
      std::push_heap(heap.begin(), heap.end(), greater);
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), greater);
    const Cand c = heap.back();
    heap.pop_back();
    Symbol& s = sym[c.pos];
    if (!s.alive || s.id != c.left || s.next < 0 || sym[s.next].id != c.right) continue;
    Symbol& r = sym[s.next];
    s.id = merges.Find(PairKey(c.left, c.right))->merged_id;
    r.alive = false;
    s.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.pos;
    push(s.prev);
    push(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) {
    const Symbol& s = sym[i];
    if (s.id >= 0) {
      out->push_back(s.id);
      continue;
    }
    bool fell_back = false;
    if (byte_fallback) {
      fell_back = true;
      for (unsigned char b : s.text) fell_back = fell_back && byte_token[b] >= 0;
      if (fell_back) {
        for (unsigned char b : s.text) out->push_back(byte_token[b]);
      }
    }
    if (!fell_back && unk_id >= 0) out->push_back(unk_id);
  }
}

void HfTokenizer::Impl::EncodeSection(const std::string& text, size_t section,
                                      std::vector<int32_t>* out) const {
  std::vector<std::string> words;
  PreTokenize(text, section, &words);
  const size_t first = out->size();
  for (const std::string& w : words) Bpe(w, out);
  if (fuse_unk && unk_id >= 0) {  // runs of unknown tokens become one
    size_t w = first;
    for (size_t r = first; r < out->size(); ++r) {
      if ((*out)[r] == unk_id && w > first && (*out)[w - 1] == unk_id) continue;
      (*out)[w++] = (*out)[r];
    }
    out->resize(w);
  }
}

// Applies lstrip / rstrip of the added tokens among pieces to their neighbours.
static void StripAround(std::vector<std::string>* pieces,
                        const std::unordered_map<std::string, int32_t>& added_of,
                        const std::vector<AddedToken>& added) {
  for (size_t i = 0; i < pieces->size(); ++i) {
    auto it = added_of.find((*pieces)[i]);
    if (it == added_of.end()) continue;
    for (const AddedToken& t : added) {
      if (t.id != it->second) continue;
      if (t.lstrip && i > 0) (*pieces)[i - 1] = TrimEnd((*pieces)[i - 1]);
      if (t.rstrip && i + 1 < pieces->size()) (*pieces)[i + 1] = TrimStart((*pieces)[i + 1]);
      break;
    }
  }
}

void HfTokenizer::Encode(std::string_view text, std::vector<int32_t>* out) const {
  const Impl& m = *impl_;
  std::vector<std::string> sections = m.split_unnormalized.Split(Sanitize(text));
  StripAround(&sections, m.added_of, m.added);
  for (size_t i = 0; i < sections.size(); ++i) {
    const std::string& section = sections[i];
    if (section.empty()) continue;
    if (auto it = m.added_of.find(section); it != m.added_of.end()) {
      out->push_back(it->second);
      continue;
    }
    const std::string normalized = m.Normalize(section);
    if (normalized.empty()) continue;
    std::vector<std::string> subsections = m.split_normalized.Split(normalized);
    StripAround(&subsections, m.added_of, m.added);
    for (const std::string& sub : subsections) {
      if (sub.empty()) continue;
      if (auto it = m.added_of.find(sub); it != m.added_of.end()) {
        out->push_back(it->second);
        continue;
      }
      m.EncodeSection(sub, i, out);
    }
  }
}

const std::vector<int32_t>& HfTokenizer::prefix() const { return impl_->prefix; }
const std::vector<int32_t>& HfTokenizer::suffix() const { return impl_->suffix; }
int32_t HfTokenizer::vocab_size() const { return static_cast<int32_t>(impl_->vocab.size()); }

const std::string& HfTokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return impl_->empty;
  return impl_->token_bytes[id];
}

std::string HfTokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) out += TokenBytes(id);
  int strip = impl_->strip_start;
  size_t cut = 0;
  while (strip-- > 0 && cut < out.size() && out[cut] == ' ') ++cut;
  return out.substr(cut);
}

int32_t HfTokenizer::TokenId(std::string_view token) const {
  auto it = impl_->id_of.find(std::string(token));
  return it == impl_->id_of.end() ? -1 : it->second;
}

const std::string& HfTokenizer::TokenString(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return impl_->empty;
  return impl_->vocab[id];
}

bool HfTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->special[id];
}

}  // namespace selfcond
