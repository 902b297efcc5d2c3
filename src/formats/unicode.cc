#include "formats/unicode.h"

#include <algorithm>
#include <vector>

#include "util/utf8.h"

namespace selfcond::unicode {
namespace {

struct CodePointRange {
  uint32_t lo, hi;  // inclusive
};
struct CccEntry {
  uint32_t cp, ccc;
};
struct DecompEntry {
  uint32_t cp, first, second;
};
struct CompEntry {
  uint32_t first, second, composite;
};

#include "formats/unicode_tables.inc"

template <size_t N>
bool InRanges(const CodePointRange (&ranges)[N], uint32_t cp) {
  const CodePointRange* it = std::lower_bound(
      ranges, ranges + N, cp, [](const CodePointRange& r, uint32_t v) { return r.hi < v; });
  return it != ranges + N && it->lo <= cp;
}

// Hangul syllables compose and decompose algorithmically (Unicode 3.12).
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

uint32_t Ccc(uint32_t cp) {
  if (cp < 0x300) return 0;
  const CccEntry* end = kCombiningClass + sizeof(kCombiningClass) / sizeof(kCombiningClass[0]);
  const CccEntry* it = std::lower_bound(kCombiningClass, end, cp,
                                        [](const CccEntry& e, uint32_t v) { return e.cp < v; });
  return it != end && it->cp == cp ? it->ccc : 0;
}

const DecompEntry* FindDecomposition(uint32_t cp) {
  const DecompEntry* end = kDecomposition + sizeof(kDecomposition) / sizeof(kDecomposition[0]);
  const DecompEntry* it = std::lower_bound(
      kDecomposition, end, cp, [](const DecompEntry& e, uint32_t v) { return e.cp < v; });
  return it != end && it->cp == cp ? it : nullptr;
}

// Full canonical decomposition of cp appended to out.
void Decompose(uint32_t cp, std::vector<uint32_t>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  const DecompEntry* d = cp < 0xC0 ? nullptr : FindDecomposition(cp);
  if (d == nullptr) {
    out->push_back(cp);
    return;
  }
  Decompose(d->first, out);
  if (d->second != 0) Decompose(d->second, out);
}

// The primary composite of (a, b), or 0.
uint32_t Compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  const CompEntry* end = kComposition + sizeof(kComposition) / sizeof(kComposition[0]);
  const CompEntry* it =
      std::lower_bound(kComposition, end, std::make_pair(a, b), [](const CompEntry& e, auto v) {
        return e.first != v.first ? e.first < v.first : e.second < v.second;
      });
  return it != end && it->first == a && it->second == b ? it->composite : 0;
}

// NFC of one run of valid code points (decompose, order, compose), appended as UTF-8.
void NfcRun(const std::vector<uint32_t>& cps, std::string* out) {
  std::vector<uint32_t> d;
  d.reserve(cps.size() + 8);
  for (uint32_t cp : cps) Decompose(cp, &d);
  // Canonical ordering: a stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (Ccc(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && Ccc(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j,
                     [](uint32_t x, uint32_t y) { return Ccc(x) < Ccc(y); });
    i = j;
  }
  // Canonical composition: each character composes with the last starter unless a character
  // in between blocks it (same or higher class, or a starter).
  std::vector<uint32_t> r;
  r.reserve(d.size());
  int64_t starter = -1;  // index in r of the last starter
  uint32_t last_ccc = 0;
  for (uint32_t cp : d) {
    const uint32_t c = Ccc(cp);
    if (starter >= 0) {
      const bool blocked = !r.empty() && static_cast<int64_t>(r.size()) - 1 != starter &&
                           (last_ccc == 0 || last_ccc >= c);
      if (!blocked) {
        if (const uint32_t comp = Compose(r[starter], cp); comp != 0) {
          r[starter] = comp;
          continue;
        }
      }
    }
    if (c == 0) starter = static_cast<int64_t>(r.size());
    last_ccc = c;
    r.push_back(cp);
  }
  for (uint32_t cp : r) AppendUtf8(cp, out);
}

}  // namespace

const char* Version() { return kUnicodeVersion; }

bool IsLetter(uint32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return InRanges(kLetterRanges, cp);
}
bool IsNumber(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return InRanges(kNumberRanges, cp);
}
bool IsDigit(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return InRanges(kDigitRanges, cp);
}
bool IsMark(uint32_t cp) { return cp >= 0x300 && InRanges(kMarkRanges, cp); }
bool IsWhiteSpace(uint32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return InRanges(kWhiteSpaceRanges, cp);
}
bool IsJsSpace(uint32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return InRanges(kSpaceRanges, cp);
}

std::string Nfc(std::string_view s) {
  bool simple = true;
  for (size_t i = 0; i < s.size() && simple; ++i) {
    // Lead bytes >= 0xCC start code points >= U+0300.
    simple = static_cast<uint8_t>(s[i]) < 0xCC;
  }
  if (simple) return std::string(s);
  std::string out;
  out.reserve(s.size());
  std::vector<uint32_t> run;
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    const size_t n = DecodeUtf8(s, i, &cp);
    if (n == 0) {  // an invalid byte: flush the run, copy the byte
      NfcRun(run, &out);
      run.clear();
      out.push_back(s[i]);
      ++i;
      continue;
    }
    run.push_back(cp);
    i += n;
  }
  NfcRun(run, &out);
  return out;
}

}  // namespace selfcond::unicode
