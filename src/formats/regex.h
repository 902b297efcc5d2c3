// A small regular-expression engine for tokenizer.json's pre-tokenizer patterns (formats layer).
//
// Hugging Face tokenizers run these patterns with Oniguruma; the reference selfcond is tested
// against (npm @huggingface/tokenizers, tokenizers.js) rewrites them into JavaScript regexes
// with the same meaning. This engine implements the subset real tokenizers use, with
// Oniguruma's meaning and leftmost-first (backtracking) match semantics:
//   literals and escapes  \n \r \t \f \v \a \e \xHH \x{H..} \uHHHH, escaped metacharacters
//   classes               [...] [^...] with ranges; \s \S (White_Space) \d \D (\p{Nd})
//                         \w \W (letters, marks, \p{Nd}, '_'); \p{L} \p{N} \p{Nd} \p{M}
//                         (also \P{..}, long names Letter / Number / Mark) and '.' (not \n)
//   groups                ( ) (?: ) (?i: ) (ASCII case folding, as tokenizers.js does)
//                         (?= ) (?! ) lookahead, (?> ) atomic, (?<name> ) named
//   quantifiers           ? * + {n} {n,} {n,m} {,m}, lazy (x?) and possessive (x+)
//   alternation           |
//   anchors               ^ $ (line), \A \z
// Anything else (lookbehind, backreferences, class intersections, other properties) is refused
// by Compile with a message naming it. Matching is over Unicode code points and runs in time
// O(program size x text length) per Find: states that failed once are never tried again
// (RE2's "bit state" idea), so no pattern can make it exponential.
#ifndef SELFCOND_FORMATS_REGEX_H_
#define SELFCOND_FORMATS_REGEX_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace selfcond {

class Regex {
 public:
  // pattern: UTF-8 text of the pattern. js_whitespace: \s and \S take JavaScript's meaning
  // (U+FEFF is a space, U+0085 is not), for patterns that tokenizers.js runs as native
  // JavaScript regexes (the ByteLevel pre-tokenizer's built-in GPT-2 pattern).
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern,
                                                        bool js_whitespace = false);
  ~Regex();

  // The leftmost-first match in text (code points) starting at or after `from`: true and its
  // [*begin, *end) when there is one. Empty matches are possible.
  bool Find(const std::vector<uint32_t>& text, size_t from, size_t* begin, size_t* end) const;

  // Every match, left to right, as JavaScript's matchAll with the /gu flags: after an empty
  // match the search resumes one code point further. Pairs of [begin, end).
  std::vector<std::pair<size_t, size_t>> FindAll(const std::vector<uint32_t>& text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  struct Program;
  std::unique_ptr<Program> prog_;
  std::string pattern_;
};

}  // namespace selfcond

#endif  // SELFCOND_FORMATS_REGEX_H_
