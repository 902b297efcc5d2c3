// The tokenizer-pattern regex engine (regex.h): a parser to a small syntax tree, a compiler to
// a backtracking program, and a matcher that explores the program depth-first in priority order
// (so the first match found is the leftmost-first one, as in Oniguruma and JavaScript) while
// remembering which (instruction, position) states already failed.
#include "formats/regex.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "formats/unicode.h"
#include "util/utf8.h"

namespace selfcond {
namespace {

// ---- character sets ---------------------------------------------------------------------

enum Prop : uint32_t {
  kPropLetter = 1,
  kPropNumber = 2,
  kPropDigit = 4,
  kPropMark = 8,
  kPropSpace = 16,  // White_Space
  kPropWord = 32,   // letters, marks, decimal digits, '_'
  kPropNotNewline = 64,
  kPropJsSpace = 128,  // JavaScript's \s
};

bool HasProp(uint32_t props, uint32_t cp) {
  if ((props & kPropLetter) && unicode::IsLetter(cp)) return true;
  if ((props & kPropNumber) && unicode::IsNumber(cp)) return true;
  if ((props & kPropDigit) && unicode::IsDigit(cp)) return true;
  if ((props & kPropMark) && unicode::IsMark(cp)) return true;
  if ((props & kPropSpace) && unicode::IsWhiteSpace(cp)) return true;
  if ((props & kPropWord) &&
      (cp == '_' || unicode::IsLetter(cp) || unicode::IsMark(cp) || unicode::IsDigit(cp))) {
    return true;
  }
  if ((props & kPropNotNewline) && cp != '\n') return true;
  if ((props & kPropJsSpace) && unicode::IsJsSpace(cp)) return true;
  return false;
}

struct CharSet {
  std::vector<std::pair<uint32_t, uint32_t>> ranges;  // inclusive
  uint32_t props = 0;                                 // matches if the code point has any of these
  uint32_t not_props = 0;  // ... or lacks any of these (\S, \P{L} inside a class)
  bool negated = false;
  uint64_t ascii[2] = {0, 0};  // the answer for code points < 128, filled by Finish()

  bool MatchSlow(uint32_t cp) const {
    bool in = false;
    for (const auto& [lo, hi] : ranges) {
      if (cp >= lo && cp <= hi) {
        in = true;
        break;
      }
    }
    if (!in && props != 0) in = HasProp(props, cp);
    if (!in && not_props != 0) {
      for (uint32_t bit = 1; bit <= not_props; bit <<= 1) {
        if ((not_props & bit) && !HasProp(bit, cp)) {
          in = true;
          break;
        }
      }
    }
    return in != negated;
  }
  void Finish() {
    for (uint32_t cp = 0; cp < 128; ++cp) {
      if (MatchSlow(cp)) ascii[cp >> 6] |= uint64_t{1} << (cp & 63);
    }
  }
  bool Match(uint32_t cp) const {
    if (cp < 128) return (ascii[cp >> 6] >> (cp & 63)) & 1;
    return MatchSlow(cp);
  }
};

// ---- syntax tree ------------------------------------------------------------------------

struct Node {
  enum Kind { kEmpty, kSet, kConcat, kAlt, kRepeat, kLook, kNegLook, kAtomic, kAssert };
  explicit Node(Kind k) : kind(k) {}
  Kind kind;
  int set = -1;                // kSet: index into the set table
  std::vector<Node> children;  // kConcat, kAlt; one child for kRepeat / kLook / kAtomic
  int min = 0, max = 0;        // kRepeat: max -1 = unbounded
  bool greedy = true;          // kRepeat
  enum AssertKind { kLineStart, kLineEnd, kTextStart, kTextEnd } assert_kind = kLineStart;
};

constexpr int kMaxRepeat = 1000;
constexpr size_t kMaxProgram = 100000;

class Parser {
 public:
  Parser(std::vector<uint32_t> p, std::vector<CharSet>* sets, bool js_whitespace)
      : p_(std::move(p)), sets_(sets), space_(js_whitespace ? kPropJsSpace : kPropSpace) {}

  absl::StatusOr<Node> Parse() {
    auto n = ParseAlt();
    if (!n.ok()) return n.status();
    if (i_ != p_.size()) return Error("unmatched ')'");
    return n;
  }

 private:
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("regex: ", what, " at character ", i_, " of the pattern"));
  }
  bool AtEnd() const { return i_ >= p_.size(); }
  uint32_t Peek(size_t k = 0) const { return i_ + k < p_.size() ? p_[i_ + k] : 0; }
  bool LookingAt(std::string_view s) const {
    for (size_t k = 0; k < s.size(); ++k) {
      if (i_ + k >= p_.size() || p_[i_ + k] != static_cast<uint8_t>(s[k])) return false;
    }
    return true;
  }

  absl::StatusOr<Node> ParseAlt() {
    Node alt(Node::kAlt);
    for (;;) {
      auto seq = ParseConcat();
      if (!seq.ok()) return seq.status();
      alt.children.push_back(std::move(*seq));
      if (AtEnd() || Peek() != '|') break;
      ++i_;
    }
    if (alt.children.size() == 1) return std::move(alt.children[0]);
    return alt;
  }

  absl::StatusOr<Node> ParseConcat() {
    Node seq(Node::kConcat);
    while (!AtEnd() && Peek() != '|' && Peek() != ')') {
      auto atom = ParseAtom();
      if (!atom.ok()) return atom.status();
      auto rep = ParseQuantifiers(std::move(*atom));
      if (!rep.ok()) return rep.status();
      seq.children.push_back(std::move(*rep));
    }
    if (seq.children.size() == 1) return std::move(seq.children[0]);
    if (seq.children.empty()) return Node(Node::kEmpty);
    return seq;
  }

  // {n}, {n,}, {n,m}, {,m}: false (and i_ unchanged) when the brace is not a quantifier.
  bool ParseBraces(int* min, int* max) {
    size_t j = i_ + 1;
    auto number = [&](int* v) {
      const size_t start = j;
      int64_t x = 0;
      while (j < p_.size() && p_[j] >= '0' && p_[j] <= '9') {
        x = std::min<int64_t>(x * 10 + (p_[j] - '0'), int64_t{1} << 30);
        ++j;
      }
      *v = static_cast<int>(x);
      return j > start;
    };
    int lo = 0, hi = -1;
    const bool has_lo = number(&lo);
    if (j < p_.size() && p_[j] == '}') {
      if (!has_lo) return false;
      hi = lo;
    } else if (j < p_.size() && p_[j] == ',') {
      ++j;
      const bool has_hi = number(&hi);
      if (!has_lo && !has_hi) return false;
      if (!has_hi) hi = -1;
      if (j >= p_.size() || p_[j] != '}') return false;
    } else {
      return false;
    }
    i_ = j + 1;
    *min = lo;
    *max = hi;
    return true;
  }

  absl::StatusOr<Node> ParseQuantifiers(Node atom) {
    for (;;) {
      int min = 0, max = 0;
      if (AtEnd()) return atom;
      const uint32_t c = Peek();
      if (c == '?') {
        min = 0, max = 1, ++i_;
      } else if (c == '*') {
        min = 0, max = -1, ++i_;
      } else if (c == '+') {
        min = 1, max = -1, ++i_;
      } else if (c == '{') {
        if (!ParseBraces(&min, &max)) return atom;  // a literal '{' follows the atom
      } else {
        return atom;
      }
      if (atom.kind == Node::kAssert || atom.kind == Node::kLook || atom.kind == Node::kNegLook) {
        return Error("quantifier after an assertion");
      }
      if (min > kMaxRepeat || max > kMaxRepeat || (max >= 0 && max < min)) {
        return Error(
            absl::StrCat("repetition {", min, ",", max, "} out of range (max ", kMaxRepeat, ")"));
      }
      Node rep(Node::kRepeat);
      rep.min = min;
      rep.max = max;
      bool possessive = false;
      if (!AtEnd() && Peek() == '?') {
        rep.greedy = false;
        ++i_;
      } else if (!AtEnd() && Peek() == '+') {
        possessive = true;
        ++i_;
      }
      rep.children.push_back(std::move(atom));
      if (possessive) {
        Node at(Node::kAtomic);
        at.children.push_back(std::move(rep));
        atom = std::move(at);
      } else {
        atom = std::move(rep);
      }
    }
  }

  int AddSet(CharSet s) {
    s.Finish();
    sets_->push_back(std::move(s));
    return static_cast<int>(sets_->size()) - 1;
  }
  Node SetNode(CharSet s) {
    Node n(Node::kSet);
    n.set = AddSet(std::move(s));
    return n;
  }
  void AddLiteral(uint32_t cp, CharSet* s) const {
    s->ranges.push_back({cp, cp});
    if (fold_ && cp < 128 && ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')) {
      s->ranges.push_back({cp ^ 0x20, cp ^ 0x20});
    }
  }

  absl::StatusOr<uint32_t> ParseHex(size_t digits_max, bool braced) {
    uint32_t v = 0;
    size_t n = 0;
    while (!AtEnd() && n < digits_max) {
      const uint32_t c = Peek();
      int d = c >= '0' && c <= '9'                     ? static_cast<int>(c - '0')
              : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? static_cast<int>((c | 0x20) - 'a' + 10)
                                                       : -1;
      if (d < 0) break;
      v = v * 16 + d;
      ++i_;
      ++n;
    }
    if (n == 0 || (!braced && n != digits_max) || v > 0x10FFFF) return Error("bad hex escape");
    return v;
  }

  // Applies escape `c` (after the backslash, already consumed) to a set. Returns false when it
  // is not a class escape (then *literal holds the character it stands for).
  absl::StatusOr<bool> ClassEscape(uint32_t c, CharSet* s, uint32_t* literal) {
    auto prop = [&](bool negate) -> absl::StatusOr<bool> {
      if (AtEnd() || Peek() != '{') return Error("\\p needs {Name}");
      ++i_;
      std::string name;
      while (!AtEnd() && Peek() != '}') name.push_back(static_cast<char>(p_[i_++]));
      if (AtEnd()) return Error("unterminated \\p{");
      ++i_;
      bool neg = negate;
      if (!name.empty() && name[0] == '^') {
        neg = !neg;
        name.erase(0, 1);
      }
      uint32_t bit = 0;
      if (name == "L" || name == "Letter") bit = kPropLetter;
      if (name == "N" || name == "Number") bit = kPropNumber;
      if (name == "Nd" || name == "Decimal_Number" || name == "Digit") bit = kPropDigit;
      if (name == "M" || name == "Mark") bit = kPropMark;
      if (name == "White_Space" || name == "Space") bit = kPropSpace;
      if (bit == 0) return Error(absl::StrCat("unsupported Unicode property \\p{", name, "}"));
      (neg ? s->not_props : s->props) |= bit;
      return true;
    };
    switch (c) {
      case 's':
        s->props |= space_;
        return true;
      case 'S':
        s->not_props |= space_;
        return true;
      case 'd':
        s->props |= kPropDigit;
        return true;
      case 'D':
        s->not_props |= kPropDigit;
        return true;
      case 'w':
        s->props |= kPropWord;
        return true;
      case 'W':
        s->not_props |= kPropWord;
        return true;
      case 'p':
        return prop(false);
      case 'P':
        return prop(true);
      case 'n':
        *literal = '\n';
        return false;
      case 'r':
        *literal = '\r';
        return false;
      case 't':
        *literal = '\t';
        return false;
      case 'f':
        *literal = '\f';
        return false;
      case 'v':
        *literal = '\v';
        return false;
      case 'a':
        *literal = 0x07;
        return false;
      case 'e':
        *literal = 0x1B;
        return false;
      case 'x': {
        const bool braced = !AtEnd() && Peek() == '{';
        if (braced) ++i_;
        auto v = ParseHex(braced ? 8 : 2, braced);
        if (!v.ok()) return v.status();
        if (braced) {
          if (AtEnd() || Peek() != '}') return Error("unterminated \\x{");
          ++i_;
        }
        *literal = *v;
        return false;
      }
      case 'u': {
        auto v = ParseHex(4, false);
        if (!v.ok()) return v.status();
        *literal = *v;
        return false;
      }
      default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
          return Error(absl::StrCat("unsupported escape \\", std::string(1, static_cast<char>(c))));
        }
        *literal = c;  // an escaped metacharacter or punctuation
        return false;
    }
  }

  absl::StatusOr<Node> ParseClass() {
    ++i_;  // '['
    CharSet s;
    if (!AtEnd() && Peek() == '^') {
      s.negated = true;
      ++i_;
    }
    bool first = true;
    for (;;) {
      if (AtEnd()) return Error("unterminated character class");
      uint32_t c = Peek();
      if (c == ']' && !first) {
        ++i_;
        break;
      }
      first = false;
      if (c == '[') return Error("nested character classes are not supported");
      if (c == '&' && Peek(1) == '&') return Error("class intersection (&&) is not supported");
      uint32_t lo;
      ++i_;
      if (c == '\\') {
        if (AtEnd()) return Error("trailing backslash");
        const uint32_t e = p_[i_++];
        auto is_class = ClassEscape(e, &s, &lo);
        if (!is_class.ok()) return is_class.status();
        if (*is_class) continue;
      } else {
        lo = c;
      }
      // A range lo-hi?
      if (!AtEnd() && Peek() == '-' && Peek(1) != ']' && i_ + 1 < p_.size()) {
        ++i_;
        uint32_t hi = Peek();
        ++i_;
        if (hi == '\\') {
          if (AtEnd()) return Error("trailing backslash");
          const uint32_t e = p_[i_++];
          CharSet dummy;
          auto is_class = ClassEscape(e, &dummy, &hi);
          if (!is_class.ok()) return is_class.status();
          if (*is_class) return Error("a class escape cannot end a range");
        }
        if (hi < lo) return Error("range out of order");
        s.ranges.push_back({lo, hi});
        if (fold_) {  // ASCII case folding of the range's letters
          for (uint32_t x = lo; x <= std::min<uint32_t>(hi, 127); ++x) {
            if ((x | 0x20) >= 'a' && (x | 0x20) <= 'z') s.ranges.push_back({x ^ 0x20, x ^ 0x20});
          }
        }
      } else {
        AddLiteral(lo, &s);
      }
    }
    return SetNode(std::move(s));
  }

  absl::StatusOr<Node> ParseGroup() {
    ++i_;                             // '('
    Node::Kind kind = Node::kConcat;  // a plain group: its body as is
    const bool saved_fold = fold_;
    if (LookingAt("?:")) {
      i_ += 2;
    } else if (LookingAt("?i:")) {
      i_ += 3;
      fold_ = true;
    } else if (LookingAt("?=")) {
      i_ += 2;
      kind = Node::kLook;
    } else if (LookingAt("?!")) {
      i_ += 2;
      kind = Node::kNegLook;
    } else if (LookingAt("?>")) {
      i_ += 2;
      kind = Node::kAtomic;
    } else if (LookingAt("?<=") || LookingAt("?<!")) {
      return Error("lookbehind is not supported");
    } else if (LookingAt("?<")) {
      i_ += 2;
      while (!AtEnd() && Peek() != '>') ++i_;
      if (AtEnd()) return Error("unterminated group name");
      ++i_;
    } else if (LookingAt("?")) {
      return Error("unsupported group syntax (?");
    }
    auto body = ParseAlt();
    fold_ = saved_fold;
    if (!body.ok()) return body.status();
    if (AtEnd() || Peek() != ')') return Error("missing ')'");
    ++i_;
    if (kind == Node::kConcat) return body;
    Node g{kind};
    g.children.push_back(std::move(*body));
    return g;
  }

  absl::StatusOr<Node> ParseAtom() {
    const uint32_t c = Peek();
    switch (c) {
      case '(':
        return ParseGroup();
      case '[':
        return ParseClass();
      case '.': {
        ++i_;
        CharSet s;
        s.props = kPropNotNewline;
        return SetNode(std::move(s));
      }
      case '^':
      case '$': {
        ++i_;
        Node a(Node::kAssert);
        a.assert_kind = c == '^' ? Node::kLineStart : Node::kLineEnd;
        return a;
      }
      case '*':
      case '+':
      case '?':
        return Error("quantifier without an atom");
      case '\\': {
        ++i_;
        if (AtEnd()) return Error("trailing backslash");
        const uint32_t e = p_[i_++];
        if (e == 'A' || e == 'z') {
          Node a(Node::kAssert);
          a.assert_kind = e == 'A' ? Node::kTextStart : Node::kTextEnd;
          return a;
        }
        if (e == 'b' || e == 'B' || e == 'G' || e == 'Z' || e == 'k' || (e >= '1' && e <= '9')) {
          --i_;
          return Error(absl::StrCat("unsupported escape \\", std::string(1, static_cast<char>(e))));
        }
        CharSet s;
        uint32_t lit = 0;
        auto is_class = ClassEscape(e, &s, &lit);
        if (!is_class.ok()) return is_class.status();
        if (!*is_class) AddLiteral(lit, &s);
        return SetNode(std::move(s));
      }
      default: {
        ++i_;
        CharSet s;
        AddLiteral(c, &s);
        return SetNode(std::move(s));
      }
    }
  }

  std::vector<uint32_t> p_;
  size_t i_ = 0;
  bool fold_ = false;
  std::vector<CharSet>* sets_;
  uint32_t space_;  // the property \s stands for
};

// ---- program ----------------------------------------------------------------------------

struct Inst {
  enum Op : uint8_t { kSet, kSplit, kJmp, kMatch, kLook, kNegLook, kAtomic, kAssert } op;
  uint8_t assert_kind = 0;
  int32_t x = 0;  // kSet: set; kSplit: preferred; kJmp: target; kLook/kAtomic: body start
  int32_t y = 0;  // kSplit: alternative; kLook/kAtomic: continuation after the body
};

class Compiler {
 public:
  explicit Compiler(std::vector<Inst>* prog) : prog_(prog) {}

  absl::Status Emit(const Node& n) {
    if (prog_->size() > kMaxProgram) {
      return absl::InvalidArgumentError("regex: the pattern is too large once compiled");
    }
    switch (n.kind) {
      case Node::kEmpty:
        return absl::OkStatus();
      case Node::kSet:
        Add({Inst::kSet, 0, n.set, 0});
        return absl::OkStatus();
      case Node::kConcat:
        for (const Node& c : n.children) {
          if (auto st = Emit(c); !st.ok()) return st;
        }
        return absl::OkStatus();
      case Node::kAlt: {
        std::vector<size_t> jumps;
        for (size_t k = 0; k < n.children.size(); ++k) {
          const bool last = k + 1 == n.children.size();
          size_t split = 0;
          if (!last) split = Add({Inst::kSplit, 0, 0, 0});
          if (!last) (*prog_)[split].x = Pc();
          if (auto st = Emit(n.children[k]); !st.ok()) return st;
          if (!last) {
            jumps.push_back(Add({Inst::kJmp, 0, 0, 0}));
            (*prog_)[split].y = Pc();
          }
        }
        for (size_t j : jumps) (*prog_)[j].x = Pc();
        return absl::OkStatus();
      }
      case Node::kRepeat: {
        const Node& body = n.children[0];
        for (int k = 0; k < n.min; ++k) {
          if (auto st = Emit(body); !st.ok()) return st;
        }
        if (n.max < 0) {  // L: split(body, out); body; jmp L; out:
          const size_t split = Add({Inst::kSplit, 0, 0, 0});
          const int32_t body_pc = Pc();
          if (auto st = Emit(body); !st.ok()) return st;
          Add({Inst::kJmp, 0, static_cast<int32_t>(split), 0});
          SetSplit(split, body_pc, Pc(), n.greedy);
          return absl::OkStatus();
        }
        std::vector<size_t> splits;
        for (int k = n.min; k < n.max; ++k) {  // nested optionals: (body (body ...)?)?
          splits.push_back(Add({Inst::kSplit, 0, 0, 0}));
          (*prog_)[splits.back()].x = Pc();
          if (auto st = Emit(body); !st.ok()) return st;
        }
        for (size_t s : splits) SetSplit(s, (*prog_)[s].x, Pc(), n.greedy);
        return absl::OkStatus();
      }
      case Node::kLook:
      case Node::kNegLook:
      case Node::kAtomic: {
        const Inst::Op op = n.kind == Node::kLook      ? Inst::kLook
                            : n.kind == Node::kNegLook ? Inst::kNegLook
                                                       : Inst::kAtomic;
        const size_t at = Add({op, 0, 0, 0});
        (*prog_)[at].x = Pc();
        if (auto st = Emit(n.children[0]); !st.ok()) return st;
        Add({Inst::kMatch, 0, 0, 0});
        (*prog_)[at].y = Pc();
        return absl::OkStatus();
      }
      case Node::kAssert:
        Add({Inst::kAssert, static_cast<uint8_t>(n.assert_kind), 0, 0});
        return absl::OkStatus();
    }
    return absl::InternalError("regex: unknown node");
  }

 private:
  int32_t Pc() const { return static_cast<int32_t>(prog_->size()); }
  size_t Add(Inst i) {
    prog_->push_back(i);
    return prog_->size() - 1;
  }
  void SetSplit(size_t s, int32_t body, int32_t out, bool greedy) {
    (*prog_)[s].x = greedy ? body : out;
    (*prog_)[s].y = greedy ? out : body;
  }
  std::vector<Inst>* prog_;
};

// Visited (instruction, position) states, cleared cheaply by remembering the words set.
class Visited {
 public:
  void Reset(size_t n_inst, size_t n_pos) {
    stride_ = n_pos;
    const size_t words = (n_inst * n_pos + 63) / 64;
    if (bits_.size() < words) bits_.assign(words, 0);
    Clear();
  }
  // True if (pc, pos) was already visited; marks it otherwise.
  bool TestAndSet(size_t pc, size_t pos) {
    const size_t b = pc * stride_ + pos;
    uint64_t& w = bits_[b >> 6];
    const uint64_t m = uint64_t{1} << (b & 63);
    if (w & m) return true;
    if (w == 0) touched_.push_back(b >> 6);
    w |= m;
    return false;
  }
  void Clear() {
    for (size_t t : touched_) bits_[t] = 0;
    touched_.clear();
  }

 private:
  size_t stride_ = 0;
  std::vector<uint64_t> bits_;
  std::vector<size_t> touched_;
};

}  // namespace

struct Regex::Program {
  std::vector<Inst> inst;
  std::vector<CharSet> sets;

  // Runs the program from pc at pos: the end of the first (highest-priority) match, or -1.
  // depth > 0 for the bodies of lookaheads and atomic groups, each with its own visited states
  // (a body that succeeded once leaves states behind that must not block the next run).
  // (A deque: growing it for a nested body keeps the references of the outer runs valid.)
  int64_t Run(const std::vector<uint32_t>& text, int32_t pc, size_t pos,
              std::deque<Visited>* visited, size_t depth) const {
    if (visited->size() <= depth) visited->resize(depth + 1);
    Visited& seen = (*visited)[depth];
    if (depth > 0) seen.Reset(inst.size(), text.size() + 1);
    std::vector<std::pair<int32_t, size_t>> stack = {{pc, pos}};
    const size_t n = text.size();
    while (!stack.empty()) {
      auto [p, at] = stack.back();
      stack.pop_back();
      for (;;) {
        if (seen.TestAndSet(static_cast<size_t>(p), at)) break;
        const Inst& i = inst[p];
        bool ok = true;
        switch (i.op) {
          case Inst::kSet:
            ok = at < n && sets[i.x].Match(text[at]);
            if (ok) ++p, ++at;
            break;
          case Inst::kSplit:
            stack.push_back({i.y, at});
            p = i.x;
            break;
          case Inst::kJmp:
            p = i.x;
            break;
          case Inst::kMatch:
            if (depth > 0) seen.Clear();
            return static_cast<int64_t>(at);
          case Inst::kLook:
          case Inst::kNegLook: {
            const bool found = Run(text, i.x, at, visited, depth + 1) >= 0;
            ok = found == (i.op == Inst::kLook);
            p = i.y;
            break;
          }
          case Inst::kAtomic: {
            const int64_t e = Run(text, i.x, at, visited, depth + 1);
            ok = e >= 0;
            if (ok) at = static_cast<size_t>(e);
            p = i.y;
            break;
          }
          case Inst::kAssert:
            switch (i.assert_kind) {
              case Node::kLineStart:
                ok = at == 0 || text[at - 1] == '\n';
                break;
              case Node::kLineEnd:
                ok = at == n || text[at] == '\n';
                break;
              case Node::kTextStart:
                ok = at == 0;
                break;
              default:
                ok = at == n;
                break;
            }
            ++p;
            break;
        }
        if (!ok) break;
      }
    }
    if (depth > 0) seen.Clear();
    return -1;
  }
};

Regex::~Regex() = default;

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern,
                                                      bool js_whitespace) {
  std::vector<uint32_t> cps;
  for (size_t i = 0; i < pattern.size();) {
    uint32_t cp;
    const size_t n = DecodeUtf8(pattern, i, &cp);
    if (n == 0) return absl::InvalidArgumentError("regex: the pattern is not valid UTF-8");
    cps.push_back(cp);
    i += n;
  }
  std::unique_ptr<Regex> re(new Regex());
  re->prog_ = std::make_unique<Program>();
  re->pattern_ = std::string(pattern);
  Parser parser(std::move(cps), &re->prog_->sets, js_whitespace);
  auto tree = parser.Parse();
  if (!tree.ok()) return tree.status();
  Compiler compiler(&re->prog_->inst);
  if (auto st = compiler.Emit(*tree); !st.ok()) return st;
  re->prog_->inst.push_back({Inst::kMatch, 0, 0, 0});
  return re;
}

bool Regex::Find(const std::vector<uint32_t>& text, size_t from, size_t* begin, size_t* end) const {
  std::deque<Visited> visited(1);
  visited[0].Reset(prog_->inst.size(), text.size() + 1);
  for (size_t start = from; start <= text.size(); ++start) {
    // States that failed from an earlier start fail again: the visited set carries over.
    const int64_t e = prog_->Run(text, 0, start, &visited, 0);
    if (e >= 0) {
      *begin = start;
      *end = static_cast<size_t>(e);
      return true;
    }
  }
  return false;
}

std::vector<std::pair<size_t, size_t>> Regex::FindAll(const std::vector<uint32_t>& text) const {
  std::vector<std::pair<size_t, size_t>> out;
  std::deque<Visited> visited(1);
  visited[0].Reset(prog_->inst.size(), text.size() + 1);
  size_t start = 0;
  while (start <= text.size()) {
    int64_t e = -1;
    size_t b = start;
    for (; b <= text.size(); ++b) {
      e = prog_->Run(text, 0, b, &visited, 0);
      if (e >= 0) break;
    }
    if (e < 0) break;
    // A success leaves its path's states marked: they did not fail, so forget them.
    visited[0].Clear();
    out.push_back({b, static_cast<size_t>(e)});
    start = static_cast<size_t>(e) > b ? static_cast<size_t>(e) : b + 1;
  }
  return out;
}

}  // namespace selfcond
